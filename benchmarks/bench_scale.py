"""Data at scale: peak private memory and time to the first step of a conv VAE on N synthetic RGB
64x64 images in a .npy file, vaelab beside a plain PyTorch loop that memory-maps the same file
(benchmarks/scale_reference.py); streaming's throughput beside the data held in memory; a
prepared folder's second start; and evaluate, report and serve on a large run beside a small
one; and a 200,000-image run trained, evaluated, reported and served. Part "cold" starts both
sides on the largest file after dropping its pages from the page cache; part "gather" gathers
2,000 random images of it cold, with the kernel's default read-around and with vaelab's
hints. Writes benchmarks/results/scale-<time>.json and prints the tables. Private memory: see
process_memory.py.

python benchmarks/bench_scale.py [--sizes 20000,100000,200000,1000000] [--steps 30]
    [--data-dir /tmp/vaelab-scale] [--parts memory,cold,gather,throughput,folder,runs,end-to-end]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
from bench_train import machine
from process_memory import Sampler, sampled
from records import write_record

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SIDE = 64
_BLOCK = 20_000


def measured(command: list[str], env: dict[str, str] | None = None) -> dict:
    """Run `command` (a Python child printing one JSON line), sampling its memory."""
    out, sampler = sampled([*command, "--started", repr(time.time())], env=env)
    result = json.loads(out.strip().splitlines()[-1])
    ends = result["step_ends"]
    intervals = [b - a for a, b in zip(ends[4:], ends[5:])]
    return {
        "peak_private_mib": sampler.peak_private / 2**20,
        "peak_anonymous_rss_mib": sampler.peak_anon / 2**20,
        "first_step_sampled_s": result["first_step"],
        "step_ms": 1000 * statistics.median(intervals) if intervals else None,
    }


def first_step(command: list[str], env: dict[str, str] | None = None) -> float:
    """Seconds from launching `command` to the end of its first step, run without the memory
    sampler: reading /proc/PID/smaps_rollup every 10 ms walks the process's page tables under
    its memory-map lock and slows the start it would time."""
    out = subprocess.run(
        [*command, "--started", repr(time.time())], capture_output=True, text=True, check=True,
        cwd=ROOT, env={**os.environ, **(env or {})},
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])["first_step"]


def timed_side(script: str, path: Path, steps: int, env: dict[str, str] | None = None) -> dict:
    """One side's run: its memory sampled over `steps` steps, its first step timed alone."""
    run = measured(python(script, path, "--steps", steps), env)
    run["first_step_s"] = first_step(python(script, path, "--steps", 1), env)
    return run


# ---------------------------------------------------------------- data


def rgb_file(folder: Path, count: int) -> Path:
    """A .npy of `count` random uint8 RGB 64x64 images (N x H x W x C), made once."""
    path = folder / f"rgb64-{count}.npy"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp.npy")
    array = np.lib.format.open_memmap(temp, mode="w+", dtype=np.uint8,
                                      shape=(count, SIDE, SIDE, 3))  # fmt: skip
    rng = np.random.default_rng(count)
    for start in range(0, count, _BLOCK):
        rows = min(_BLOCK, count - start)
        array[start : start + rows] = rng.integers(0, 256, (rows, SIDE, SIDE, 3), dtype=np.uint8)
    array.flush()
    del array
    temp.rename(path)
    return path


def python(script: str, *args: object) -> list[str]:
    return [sys.executable, str(HERE / script), *map(str, args)]


# ---------------------------------------------------------------- parts


def memory_part(sizes: list[int], steps: int, data_dir: Path, repeats: int) -> list[dict]:
    """Each size: the reference and vaelab alternately, `repeats` times; medians of each."""
    rows = []
    for count in sizes:
        path = rgb_file(data_dir, count)
        read_through(path)
        runs: dict[str, list[dict]] = {"reference": [], "vaelab": []}
        for _ in range(repeats):
            runs["reference"].append(timed_side("scale_reference.py", path, steps))
            runs["vaelab"].append(timed_side("scale_vaelab.py", path, steps))
        row = {"images": count, "file_gib": path.stat().st_size / 2**30, "runs": runs,
               **{side: medians(values) for side, values in runs.items()}}  # fmt: skip
        print_row(row)
        rows.append(row)
    return rows


def medians(runs: list[dict]) -> dict:
    """The median of each measure over `runs`."""
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def read_through(path: Path) -> None:
    """Read the file once, so that each side starts with as much of it in the page cache."""
    with open(path, "rb") as handle:
        while handle.read(64 << 20):
            pass


def print_row(row: dict) -> None:
    ref, ours = row["reference"], row["vaelab"]
    print(
        f"{row['images']:>9,} images ({row['file_gib']:.1f} GiB): private memory "
        f"{ours['peak_private_mib']:.0f} MiB vs reference {ref['peak_private_mib']:.0f} MiB "
        f"({ours['peak_private_mib'] / ref['peak_private_mib']:.2f}x); first step "
        f"{ours['first_step_s']:.2f} s vs {ref['first_step_s']:.2f} s "
        f"({ours['first_step_s'] / ref['first_step_s']:.2f}x); step {ours['step_ms']:.0f} ms vs "
        f"{ref['step_ms']:.0f} ms",
        flush=True,
    )


def throughput_part(count: int, steps: int, data_dir: Path, rounds: int = 2) -> dict:
    """Step times with the images held in memory, streamed by workers, and read in process."""
    path = rgb_file(data_dir, count)
    variants = {
        "in_memory": ["--in-memory", "--loader", "memory"],
        "streamed": ["--loader", "stream"],
        "mapped_in_process": ["--loader", "memory"],
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, options in variants.items():
            times[name].append(measured(python("scale_vaelab.py", path, "--steps", steps,
                                               *options))["step_ms"])  # fmt: skip
    result = {name: statistics.median(values) for name, values in times.items()}
    result["streamed_throughput_vs_in_memory"] = result["in_memory"] / result["streamed"]
    print(
        f"{count:,} images: step {result['in_memory']:.0f} ms in memory, "
        f"{result['streamed']:.0f} ms streamed ({result['streamed_throughput_vs_in_memory']:.2f}x "
        f"the throughput), {result['mapped_in_process']:.0f} ms mapped and read in process",
        flush=True,
    )
    return {"images": count, "rounds": rounds, "step_ms": times, **result}


def folder_part(count: int, steps: int, data_dir: Path, repeats: int) -> dict:
    """A PNG folder's first start, then its later starts and the .npy's alternately."""
    from PIL import Image

    npy = rgb_file(data_dir, count)
    folder = data_dir / f"png64-{count}"
    if not folder.is_dir():
        images = np.load(npy, mmap_mode="r")
        temp = folder.with_suffix(".tmp")
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir()
        for i in range(count):
            Image.fromarray(np.asarray(images[i])).save(temp / f"{i:07d}.png", compress_level=1)
        temp.rename(folder)
    cache = data_dir / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    env = {"VAELAB_CACHE": str(cache)}
    first = {"first_step_s": first_step(python("scale_vaelab.py", folder, "--steps", 1), env)}
    runs: dict[str, list[dict]] = {"later_use": [], "npy": []}
    for _ in range(repeats):
        runs["later_use"].append(timed_side("scale_vaelab.py", folder, steps, env))
        runs["npy"].append(timed_side("scale_vaelab.py", npy, steps))
    later, as_npy = medians(runs["later_use"]), medians(runs["npy"])
    print(
        f"{count:,}-image PNG folder: first step {first['first_step_s']:.1f} s on first use "
        f"(preparing), {later['first_step_s']:.2f} s on later ones, .npy "
        f"{as_npy['first_step_s']:.2f} s ({later['first_step_s'] / as_npy['first_step_s']:.2f}x)",
        flush=True,
    )
    return {"images": count, "first_use": first, "runs": runs, "later_use": later, "npy": as_npy}


def evict(path: Path) -> None:
    """Drop the file's pages from the page cache (those no process maps)."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(handle, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(handle)


def cold_gather(path: Path, rows: int, hint: str, seed: int) -> float:
    """Seconds to gather `rows` random images of the mapped file, none in the page cache, in
    blocks of 341 (4 MiB) as a fingerprint does: with the kernel's default read-around
    (`hint` "default"), marked as read at random ("read_at_random"), and with each block's
    rows also asked for at once before the gather ("rows_asked_ahead", what vaelab does)."""
    from vaelab.data.pagecache import read_at_random, will_read_rows

    evict(path)
    images = np.load(path, mmap_mode="r")
    chosen = np.random.default_rng(seed).choice(len(images), rows, replace=False)
    if hint != "default":
        read_at_random(images)
    started = time.perf_counter()
    for first in range(0, rows, 341):
        block = chosen[first : first + 341]
        if hint == "rows_asked_ahead":
            will_read_rows(images, block.tolist())
        np.ascontiguousarray(images[block])
    return time.perf_counter() - started


def cold_part(count: int, steps: int, data_dir: Path, repeats: int) -> dict:
    """A file none of which is in the page cache: the first step of the reference and of vaelab,
    each started after dropping the file's pages."""
    path = rgb_file(data_dir, count)
    runs: dict[str, list[dict]] = {"reference": [], "vaelab": []}
    for _ in range(repeats):
        for side, script in (("reference", "scale_reference.py"), ("vaelab", "scale_vaelab.py")):
            evict(path)
            run = measured(python(script, path, "--steps", steps))
            evict(path)
            run["first_step_s"] = first_step(python(script, path, "--steps", 1))
            runs[side].append(run)
    row = {"images": count, "file_gib": path.stat().st_size / 2**30, "runs": runs,
           **{side: medians(values) for side, values in runs.items()}}  # fmt: skip
    print("from a cold page cache:", end=" ")
    print_row(row)
    return row


def gather_part(count: int, data_dir: Path, repeats: int) -> dict:
    """2,000 random images gathered from a file none of which is in the page cache, each way."""
    path = rgb_file(data_dir, count)
    gathers: dict[str, list[float]] = {"default": [], "read_at_random": [], "rows_asked_ahead": []}
    for repeat in range(repeats):
        for name in gathers:
            gathers[name].append(cold_gather(path, 2000, name, repeat))
    seconds = {name: statistics.median(values) for name, values in gathers.items()}
    print(f"2,000 random images of {count:,} gathered cold: {seconds['default']:.2f} s with the "
          f"default read-around, {seconds['read_at_random']:.2f} s read at random, "
          f"{seconds['rows_asked_ahead']:.2f} s with each block's rows asked for at once",
          flush=True)  # fmt: skip
    return {"images": count, "seconds": seconds, "gathers": gathers}


def grey_file(folder: Path, count: int) -> Path:
    path = folder / f"grey28-{count}.npy"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(count)
        np.save(path, rng.integers(0, 256, (count, 28, 28), dtype=np.uint8))
    return path


def _vaelab(*args: object) -> list[str]:
    return [sys.executable, "-m", "vaelab", *map(str, args)]


def timed_command(command: list[str], cwd: Path) -> dict:
    started = time.perf_counter()
    _, sampler = sampled(command, cwd)
    return {"seconds": time.perf_counter() - started,
            "peak_private_mib": sampler.peak_private / 2**20}  # fmt: skip


def served(run: Path, cwd: Path) -> dict:
    """`vaelab serve RUN`: seconds until its page answers, and its memory then."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.perf_counter()
    process = subprocess.Popen(_vaelab("serve", run, "--port", port), cwd=cwd,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    sampler = Sampler(process.pid)
    sampler.start()
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1):
                    break
            except OSError:
                if process.poll() is not None:
                    failure = process.stderr.read()[-2000:] if process.stderr else ""
                    raise SystemExit(f"vaelab serve failed: {failure}") from None
                time.sleep(0.05)
        ready = time.perf_counter() - started
        time.sleep(0.5)
    finally:
        process.terminate()
        process.wait(timeout=30)
        sampler.done.set()
        sampler.join()
    return {"seconds": ready, "peak_private_mib": sampler.peak_private / 2**20}


def runs_part(sizes: list[int], data_dir: Path, repeats: int) -> list[dict]:
    """evaluate --images 10, report and serve on runs of `sizes` images (10,000 held out): the
    runs trained first, then measured in turn `repeats` times; medians of each."""
    work = data_dir / "runs-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    runs = {}
    for count in sizes:
        name = f"r{count}"
        train = _vaelab("train", "--data", grey_file(data_dir, count), "--test-split", 10000,
                        "--epochs", 1, "--hidden", "64,32", "--name", name, "--no-plots",
                        "--no-tensorboard", "--device", "cpu")  # fmt: skip
        subprocess.run(train, cwd=work, check=True, capture_output=True)
        runs[count] = work / "runs" / name
    measures: dict[int, dict[str, list[dict]]] = {n: {} for n in sizes}
    for _ in range(repeats):
        for count, run in runs.items():
            taken = {
                "evaluate": timed_command(_vaelab("evaluate", run, "--images", 10,
                                                  "--iw-samples", 100, "--device", "cpu"), work),
                "report": timed_command(_vaelab("report", run), work),
                "serve": served(run, work),
            }  # fmt: skip
            for command, measure in taken.items():
                measures[count].setdefault(command, []).append(measure)
    rows = []
    for count in sizes:
        row = {"images": count, "runs": measures[count],
               **{command: medians(m) for command, m in measures[count].items()}}  # fmt: skip
        rows.append(row)
        print(
            f"{count:>9,}-image run: evaluate {row['evaluate']['seconds']:.1f} s "
            f"{row['evaluate']['peak_private_mib']:.0f} MiB, report {row['report']['seconds']:.1f}"
            f" s {row['report']['peak_private_mib']:.0f} MiB, serve ready in "
            f"{row['serve']['seconds']:.1f} s {row['serve']['peak_private_mib']:.0f} MiB",
            flush=True,
        )
    return rows


def end_to_end_part(count: int, data_dir: Path) -> dict:
    """`vaelab train --arch conv` for one epoch on `count` RGB 64x64 images, then evaluate (a few
    images, then the default, which the time budget refuses), report and serve the run."""
    path = rgb_file(data_dir, count)
    work = data_dir / "end-to-end"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    run = work / "runs" / "big"
    steps = {
        "train": timed_command(_vaelab("train", "--data", path, "--arch", "conv", "--epochs", 1,
                                       "--name", "big", "--no-plots", "--no-tensorboard"), work),
        "evaluate": timed_command(_vaelab("evaluate", run, "--images", 100, "--iw-samples",
                                          100), work),
        "report": timed_command(_vaelab("report", run), work),
        "serve": served(run, work),
    }  # fmt: skip
    refused = subprocess.run(_vaelab("evaluate", run), cwd=work, capture_output=True, text=True)
    steps["evaluate_default"] = {"exit": refused.returncode, "said": refused.stderr.strip()}
    for name, measures in steps.items():
        print(f"{count:,} images, {name}: {measures}", flush=True)
    return {"images": count, **steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,100000,200000,1000000")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--throughput-steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--throughput-images", type=int, default=200_000)
    parser.add_argument("--folder-images", type=int, default=20_000)
    parser.add_argument("--run-sizes", default="60000,600000")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/vaelab-scale"))
    parser.add_argument("--parts", default="memory,cold,gather,throughput,folder,runs,end-to-end")
    parser.add_argument("--end-to-end-images", type=int, default=200_000)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    # Both sides import compiled modules (where $PYTHONDONTWRITEBYTECODE keeps Python from
    # writing them, vaelab's would be compiled again at every start).
    compileall.compile_dir(ROOT / "src" / "vaelab", quiet=1)
    record: dict = {"machine": machine(), "python": platform.python_version(),
                    "steps": args.steps}  # fmt: skip
    sizes = [int(n) for n in args.sizes.split(",")]
    if "memory" in parts:
        record["memory"] = memory_part(sizes, args.steps, args.data_dir, args.repeats)
    if "throughput" in parts:
        record["throughput"] = throughput_part(
            args.throughput_images, args.throughput_steps, args.data_dir, args.rounds
        )
    if "folder" in parts:
        record["folder"] = folder_part(args.folder_images, args.steps, args.data_dir, args.repeats)
    if "cold" in parts:
        record["cold"] = cold_part(max(sizes), args.steps, args.data_dir, args.repeats)
    if "gather" in parts:
        record["gather"] = gather_part(max(sizes), args.data_dir, args.repeats)
    if "runs" in parts:
        record["runs"] = runs_part(
            [int(n) for n in args.run_sizes.split(",")], args.data_dir, args.repeats
        )
    if "end-to-end" in parts:
        record["end_to_end"] = end_to_end_part(args.end_to_end_images, args.data_dir)
    write_record(record, "scale")


if __name__ == "__main__":
    main()
