"""Every GPU figure of docs/speed.md in one run: training speed, the 60-epoch time and quality
(eager and with the step replayed from a CUDA graph), IWAE on the whole test set, bf16-mixed over
seeds, torchrun with NCCL, resume bit-identity, and a conv run whose batches are streamed by
DataLoader workers (pinned) beside the same run with its images copied to the GPU once.

    python benchmarks/gpu_checks.py --out DIR              # on a CUDA machine (about 8 minutes)
    python benchmarks/gpu_checks.py --device cpu --quick   # the same steps, small, on a CPU

Each step runs vaelab as a user does (the CLI in a subprocess, or bench_train.py), is timed, and
lands in DIR/gpu-checks.json as soon as it ends, so a run cut short keeps what it measured. A
step that fails is recorded with its error and the next one runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from safetensors.torch import load_file

HERE = Path(__file__).parent


def vaelab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m vaelab ARGS`, its output captured; raises with the output's tail on failure."""
    done = subprocess.run(
        [sys.executable, "-m", "vaelab", *args], capture_output=True, text=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"vaelab {' '.join(args)}: {(done.stdout + done.stderr)[-800:]}")
    return done


def history(run: Path) -> list[dict[str, float]]:
    with open(run / "metrics.csv", newline="") as rows:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(rows)]


def train_run(runs: Path, name: str, device: str, epochs: int, *extra: str) -> dict[str, float]:
    """Train one run; its training seconds (the epochs' sum), wall time and last test loss."""
    started = time.perf_counter()
    vaelab("train", "--device", device, "--epochs", str(epochs), "--runs-dir", str(runs),
           "--name", name, "--overwrite", "--no-plots", *extra)  # fmt: skip
    rows = history(runs / name)
    return {
        "epochs": epochs,
        "train_seconds": sum(row["seconds"] for row in rows),
        "wall_s": time.perf_counter() - started,
        "final_test_loss": rows[-1]["test_loss"],
    }


def same_weights(a: Path, b: Path) -> dict[str, object]:
    """Whether two runs' weights are equal bit for bit, else their largest difference."""
    first, second = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    if first.keys() != second.keys():
        return {"identical": False, "why": "different tensors"}
    worst = max(float((first[k].double() - second[k].double()).abs().max()) for k in first)
    return {"identical": all((first[k] == second[k]).all() for k in first), "max_abs_diff": worst}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--quick", action="store_true", help="a few epochs and samples only")
    args = parser.parse_args()
    quick = args.quick
    epochs = 2 if quick else 60
    runs = args.out / "gpu-runs"
    record: dict[str, object] = {"device": args.device, "quick": quick}
    out_file = args.out / ("gpu-checks-quick.json" if quick else "gpu-checks.json")
    args.out.mkdir(parents=True, exist_ok=True)

    def step(name: str, work: Callable[[], object]) -> None:
        started = time.perf_counter()
        try:
            record[name] = work()
        except Exception as exc:  # a failed step is recorded; the next one still runs
            record[name] = {"error": str(exc)[-800:]}
        print(f"{name}: {json.dumps(record[name])[:400]} ({time.perf_counter() - started:.0f}s)")
        out_file.write_text(json.dumps(record, indent=2) + "\n")

    def machine() -> dict[str, object]:
        import torch

        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
        return {"torch": torch.__version__, "gpu": gpu, "cuda": torch.version.cuda}

    step("machine", machine)
    step("tutorial_fp32_seed0", lambda: train_run(runs, "fp32-s0", args.device, epochs,
                                                  "--precision", "32"))  # fmt: skip
    step("tutorial_auto_seed0", lambda: train_run(runs, "auto-s0", args.device, epochs))

    def cuda_graphs() -> dict[str, object]:
        # the same run as tutorial_fp32_seed0 with its step replayed from a CUDA graph: its
        # time, and whether its weights are those of the eager run, bit for bit
        if args.device != "cuda":
            return {"skipped": "CUDA graphs need --device cuda"}
        timed = train_run(runs, "graphs-s0", args.device, epochs, "--precision", "32",
                          "--cuda-graphs")  # fmt: skip
        return {**timed, "same_weights_as_eager": same_weights(runs / "fp32-s0",
                                                               runs / "graphs-s0")}  # fmt: skip

    step("tutorial_fp32_cuda_graphs_seed0", cuda_graphs)

    def iwae_whole_test_set() -> dict[str, object]:
        started = time.perf_counter()
        k = "50" if quick else "5000"
        shown = vaelab("evaluate", str(runs / "fp32-s0"), "--device", args.device,
                       "--iw-samples", k, *(["--images", "200"] if quick else []))  # fmt: skip
        return {"k": int(k), "seconds": time.perf_counter() - started,
                "output": shown.stdout.strip().splitlines()[-4:]}  # fmt: skip

    step("iwae", iwae_whole_test_set)

    def seeds() -> dict[str, object]:
        # Quality only (these runs share the GPU, so their times are not speed figures).
        jobs = [(p, s) for p in ("32", "bf16-mixed") for s in (0, 1, 2)]
        with ThreadPoolExecutor(len(jobs)) as pool:
            results = pool.map(lambda job: train_run(
                runs, f"q-{job[0]}-s{job[1]}", args.device, epochs, "--precision", job[0],
                "--seed", str(job[1]),
            ), jobs)  # fmt: skip
            losses = {f"{p} seed {s}": r["final_test_loss"] for (p, s), r in zip(jobs, results)}
        return losses

    step("quality_over_seeds", seeds)

    def torchrun() -> dict[str, object]:
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1", "-m",
             "vaelab", "train", "--device", args.device, "--epochs", "2", "--runs-dir",
             str(runs), "--name", "torchrun", "--overwrite", "--no-plots"],
            capture_output=True, text=True,
        )  # fmt: skip
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        return {"exit": done.returncode, "seconds": time.perf_counter() - started, "tail": tail}

    step("torchrun_nproc1", torchrun)

    def resume_identity() -> dict[str, object]:
        # 4 epochs straight against 2 then resumed to 4 (a constant rate, so that both runs
        # follow one schedule: cosine-tail's depends on the epochs a run is set for)
        total, half = (4, 2)
        train_run(runs, "straight", args.device, total, "--lr-schedule", "constant")
        train_run(runs, "resumed", args.device, half, "--lr-schedule", "constant")
        vaelab("train", "--resume", str(runs / "resumed"), "--epochs", str(total), "--no-plots")
        return same_weights(runs / "straight", runs / "resumed")

    step("resume_bit_identity", resume_identity)

    def bench_train() -> dict[str, object]:
        command = [
            sys.executable,
            str(HERE / "bench_train.py"),
            "--device",
            args.device,
            "--epochs",
            "1" if quick else "3",
            "--rss-epochs",
            "0",
            "--iwae-images",
            "200" if quick else "10000",
            "--conv-epochs",
            "1",
            "--out",
            str(args.out),
        ]
        if quick:
            command += ["--subset", "4000", "--conv-subset", "1000", "--iwae-k", "50"]
        done = subprocess.run(command, capture_output=True, text=True)
        return {"exit": done.returncode, "table": (done.stdout + done.stderr)[-3000:]}

    step("bench_train", bench_train)

    def streamed() -> dict[str, object]:
        # A conv run on RGB 64x64 images in a .npy, its batches gathered and pinned by
        # DataLoader workers and copied to the GPU, beside the same run with the images copied
        # to the GPU once: epoch seconds, and whether the two trained the same weights
        import numpy as np

        count = 4_000 if quick else 60_000  # 0.7 GB: under the 1 GiB copied to a GPU
        data = runs / f"rgb64-{count}.npy"
        if not data.exists():
            rng = np.random.default_rng(0)
            np.save(data, rng.integers(0, 256, (count, 64, 64, 3), dtype=np.uint8))
        conv = ["--data", str(data), "--arch", "conv", "--hidden", "32,64,256",
                "--test-split", "2000", "--precision", "32"]  # fmt: skip
        timed = {
            loader: train_run(runs, f"conv-{loader}", args.device, 1 if quick else 3, *conv,
                              "--loader", loader, *extra)
            for loader, extra in (("memory", []), ("stream", ["--workers", "4"]))
        }  # fmt: skip
        ratio = timed["memory"]["train_seconds"] / timed["stream"]["train_seconds"]
        weights = same_weights(runs / "conv-memory", runs / "conv-stream")
        return {**timed, "streamed_throughput_vs_on_gpu": ratio, "same_weights": weights}

    step("streamed_pinned", streamed)


if __name__ == "__main__":
    main()
