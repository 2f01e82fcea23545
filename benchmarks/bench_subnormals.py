"""What flushing subnormal floats does to a training epoch, and how many Adam makes.

`train_epoch` runs with subnormal floats flushed to zero on every intra-op thread
(`vaelab.training.cpu.subnormals_flushed`). In one process this trains two copies of the same
model from the same seed, epoch by epoch in alternation, one through `train_epoch` and one through
the same function without the flush (`train_epoch.__wrapped__`), and prints per epoch: both
times, both training losses, and the fraction of Adam's first-moment entries that are subnormal.

    python benchmarks/bench_subnormals.py                    # fp32, 6 epochs of 60,000 images
    python benchmarks/bench_subnormals.py --precision bf16-mixed --epochs 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
from records import RESULTS_DIR, write_record

from vaelab.config import ModelConfig, TrainConfig
from vaelab.data import load_fashion_mnist
from vaelab.data.dataset import as_unit_images
from vaelab.models import VAE
from vaelab.training.distributed import SINGLE_PROCESS
from vaelab.training.epoch import make_objective, make_optimizer, make_scheduler, train_epoch

SMALLEST_NORMAL = torch.finfo(torch.float32).tiny


def subnormal_fraction(optimizer: torch.optim.Optimizer) -> float:
    """The fraction of Adam's first-moment entries that are subnormal (nonzero, below 1.2e-38)."""
    moments = torch.cat([state["exp_avg"].reshape(-1) for state in optimizer.state.values()])
    subnormal = (moments != 0) & (moments.abs() < SMALLEST_NORMAL)
    return subnormal.float().mean().item()


def make_loop(images: torch.Tensor, precision: str, flush: bool, epochs: int):
    """One epoch of a fresh seeded run per call: (seconds, loss, subnormal fraction)."""
    config = replace(TrainConfig(), epochs=epochs)
    torch.manual_seed(0)
    model = VAE(ModelConfig())
    objective = make_objective(model, SINGLE_PROCESS, precision, config)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, len(images) // config.batch_size)
    generator = torch.Generator().manual_seed(0)
    epoch = train_epoch if flush else train_epoch.__wrapped__  # type: ignore[attr-defined]

    def run() -> tuple[float, float, float]:
        start = time.perf_counter()
        loss = epoch(model, optimizer, scheduler, images, config, generator, precision,
                     objective=objective)[0]  # fmt: skip
        return time.perf_counter() - start, loss, subnormal_fraction(optimizer)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--subset", type=int, default=60000)
    parser.add_argument("--precision", default="32", choices=["32", "bf16-mixed"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = load_fashion_mnist()
    images = as_unit_images(dataset.train_images[: args.subset]).reshape(args.subset, -1)
    loops = {
        "flushed": make_loop(images, args.precision, True, args.epochs),
        "ieee": make_loop(images, args.precision, False, args.epochs),
    }
    rows = []
    for index in range(args.epochs):
        row: dict[str, float | int] = {"epoch": index + 1}
        for name, run in loops.items():
            seconds, loss, subnormal = run()
            row |= {f"{name}_s": seconds, f"{name}_loss": loss, f"{name}_subnormal": subnormal}
        row["ratio"] = row["flushed_s"] / row["ieee_s"]
        rows.append(row)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
    later = [row["ratio"] for row in rows[2:]] or [row["ratio"] for row in rows]
    print(f"flushed / ieee epoch time, median from epoch 3 on: {statistics.median(later):.3f}")
    record = {"precision": args.precision, "threads": args.threads, "subset": args.subset,
              "rows": rows, "median_ratio_from_epoch_3": statistics.median(later)}  # fmt: skip
    write_record(record, "subnormals-cpu", args.out)


if __name__ == "__main__":
    main()
