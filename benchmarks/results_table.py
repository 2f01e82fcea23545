"""The README's results table: the tutorial's model and four variants on Fashion-MNIST, trained,
then scored on the test set in nats (negative ELBO and the IWAE estimate of -log p(x)).

Each model is trained with `vaelab.train` into RUNS_DIR/NAME and evaluated with
`vaelab.evaluation.evaluate_likelihood` (which also writes RUN/eval.json); the table goes to
stdout and, with the full record, to benchmarks/results/results-table-<device>.{md,json}.

    python benchmarks/results_table.py                     # 60 epochs, k=5000, all 10,000 images
    python benchmarks/results_table.py --epochs 1 --train-images 2000 --iw-samples 50 \
        --images 200 --runs-dir /tmp/quick --overwrite                 # a quick look
    python benchmarks/results_table.py --reuse --iw-samples 5000   # re-evaluate trained runs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

import vaelab
from vaelab import rundir
from vaelab._io import atomic_write_text
from vaelab.config import ModelConfig, RunConfig, TrainConfig
from vaelab.data import load_fashion_mnist
from vaelab.evaluation import evaluate_likelihood, save_eval
from vaelab.training import train
from vaelab.training.distributed import resolve_device
from vaelab.training.precision import resolve_precision

RESULTS_DIR = Path(__file__).parent / "results"
MODELS = {
    "tutorial": ("tutorial (MLP, tutorial-mse, latent 2)", ModelConfig()),
    "bernoulli-2": ("MLP, bernoulli, latent 2", ModelConfig(likelihood="bernoulli")),
    "bernoulli-20": (
        "MLP, bernoulli, latent 20",
        ModelConfig(likelihood="bernoulli", latent_dim=20),
    ),
    "cb-20": (
        "MLP, continuous-bernoulli, latent 20",
        ModelConfig(likelihood="continuous-bernoulli", latent_dim=20),
    ),
    "conv-20": (
        "conv, bernoulli, latent 20",
        ModelConfig(arch="conv", likelihood="bernoulli", latent_dim=20),
    ),
}


def trained_run(name: str, args: argparse.Namespace, dataset) -> tuple[Path, float]:
    """Train model `name` into its run directory (or reuse it); returns it and training seconds."""
    run_dir = args.runs_dir / name
    if args.reuse and (run_dir / rundir.WEIGHTS_FILE).is_file():
        seconds = sum(row["seconds"] for row in rundir.read_metrics(run_dir))
        return run_dir, seconds
    config = RunConfig(
        model=MODELS[name][1],
        train=TrainConfig(epochs=args.epochs, device=args.device, precision=args.precision),
    )
    print(f"== {name}: {MODELS[name][0]}, {args.epochs} epochs", flush=True)
    result = train(config, dataset, run_dir=run_dir, overwrite=args.overwrite)
    return run_dir, result.total_seconds


def measure(name: str, args: argparse.Namespace, dataset, device: torch.device) -> dict:
    run_dir, train_seconds = trained_run(name, args, dataset)
    model = rundir.load_model(run_dir, device=device)
    images = dataset.test_images[: args.images]
    report = evaluate_likelihood(
        model, images, args.iw_samples, max_memory=args.max_memory, progress=True
    )
    save_eval(run_dir, report)
    metrics = rundir.read_metrics(run_dir)
    row = {
        "name": name,
        "model": MODELS[name][0],
        "epochs": len(metrics),
        "train_seconds": train_seconds,
        "run_info": rundir.load_run_info(run_dir),
        **asdict(report),
    }
    print(json.dumps({k: v for k, v in row.items() if k != "run_info"}), flush=True)
    return row


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | epochs | train time | negative ELBO (nats) | IWAE -log p(x) (nats) "
        "| IWAE k, images, time |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['epochs']} | {row['train_seconds']:.0f} s "
            f"| {row['negative_elbo_nats']:.2f} "
            f"| {row['iwae_nll_nats']:.2f} ± {row['iwae_stderr_nats']:.2f} "
            f"| {row['iw_samples']}, {row['images']}, {row['seconds']:.0f} s |"
        )
    return "\n".join(lines) + "\n"


def machine(device: torch.device) -> dict[str, object]:
    info = {
        "device": str(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "vaelab": vaelab.__version__,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def save_table(stem: Path, record: dict) -> None:
    """The record as STEM.json and its markdown table as STEM.md, each written atomically."""
    atomic_write_text(stem.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
    atomic_write_text(stem.with_suffix(".md"), record["table"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--iw-samples", type=int, default=5000)
    parser.add_argument("--images", type=int, default=10_000, help="first N test images")
    parser.add_argument("--train-images", type=int, default=None, help="first N training images")
    parser.add_argument("--max-memory", default="1GB")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default="auto", choices=["auto", "32", "bf16-mixed"])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/results"))
    parser.add_argument("--only", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--reuse", action="store_true", help="evaluate runs already trained")
    parser.add_argument("--overwrite", action="store_true", help="retrain over existing runs")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()

    device = resolve_device(args.device)
    dataset = load_fashion_mnist(args.data_dir)
    if args.train_images:
        count = args.train_images
        dataset = replace(
            dataset,
            train_images=dataset.train_images[:count],
            train_labels=dataset.train_labels[:count],
        )
    record = {
        "command": "python benchmarks/results_table.py " + " ".join(sys.argv[1:]),
        "machine": machine(device),
        "precision": resolve_precision(args.precision, device),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "rows": [],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"results-table-{device.type}"
    for name in args.only:
        record["rows"].append(measure(name, args, dataset, device))
        # Written after every model, so that an interrupted run keeps what it measured.
        record["table"] = markdown(record["rows"])
        save_table(stem, record)
    print(record["table"])
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
