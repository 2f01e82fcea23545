"""Throughput of `torchrun --nproc-per-node N -m vaelab train` (gloo, CPU) against one process.

Each configuration trains the tutorial's model for a few epochs on Fashion-MNIST; the seconds per
epoch come from the run's metrics.csv (training and the test pass, without start-up). One process
uses all cores as torch threads; N ranks use cores/N threads each.

    python benchmarks/bench_distributed.py [--epochs 3] [--ranks 2] [--precision 32]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from records import RESULTS_DIR, write_record

TRAIN_IMAGES = 60000


def run(ranks: int, epochs: int, precision: str, runs: Path) -> list[float]:
    """Seconds of each epoch after the first (which pays for warm-up)."""
    cores = os.cpu_count() or 1
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // ranks))}
    name = f"ranks{ranks}"
    args = [
        "-m", "vaelab", "train", "--epochs", str(epochs), "--precision", precision,
        "--name", name, "--runs-dir", str(runs), "--overwrite", "--no-plots",
    ]  # fmt: skip
    if ranks > 1:
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
        args = launcher + args
    subprocess.run([sys.executable, *args], check=True, env=env, stdout=subprocess.DEVNULL)
    with (runs / name / "metrics.csv").open() as metrics:
        return [float(row["seconds"]) for row in csv.DictReader(metrics)][1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--precision", default="32")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    record = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "cores": os.cpu_count(), "runs": {}}
    with tempfile.TemporaryDirectory() as runs:
        for ranks in (1, args.ranks):
            seconds = run(ranks, args.epochs, args.precision, Path(runs))
            median = statistics.median(seconds)
            record["runs"][f"{ranks} rank(s)"] = {
                "epoch_s": seconds,
                "images_per_s": TRAIN_IMAGES / median,
            }
            print(f"{ranks} rank(s), precision {args.precision}: {median:.2f} s/epoch, "
                  f"{TRAIN_IMAGES / median:,.0f} images/s")  # fmt: skip
    write_record(record, "distributed", args.out)


if __name__ == "__main__":
    main()
