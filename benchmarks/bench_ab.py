"""The tutorial's run on this checkout beside the same run on another (a release, a branch): epoch
seconds side by side, rounds alternating, and whether the two trained the same numbers.

python benchmarks/bench_ab.py --baseline-src OTHER/src [--epochs 3] [--rounds 2]

Each round trains `vaelab train --epochs N` (the tutorial's model on Fashion-MNIST, no figures,
no TensorBoard) once with each `src` folder first on PYTHONPATH, in fresh processes; the record
holds every epoch's seconds, their medians and the metrics of both, which must be equal.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_train import machine
from records import write_record

HERE = Path(__file__).resolve().parent
THIS_SRC = HERE.parent / "src"


def run(src: Path, epochs: int, work: Path, name: str) -> list[dict[str, str]]:
    """Train the tutorial's run with vaelab from `src`; its metrics.csv rows."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    command = [
        sys.executable, "-m", "vaelab", "train", "--epochs", str(epochs), "--name", name,
        "--runs-dir", str(work), "--no-plots", "--no-tensorboard", "--overwrite",
    ]  # fmt: skip
    subprocess.run(command, env=env, check=True, capture_output=True)
    with open(work / name / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-src", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    sources = {"this": THIS_SRC, "baseline": args.baseline_src.resolve()}
    seconds: dict[str, list[float]] = {name: [] for name in sources}
    metrics: dict[str, list[dict[str, str]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):
            for name, src in sources.items():
                rows = run(src, args.epochs, Path(folder), f"{name}-{round_}")
                seconds[name] += [float(row["seconds"]) for row in rows]
                metrics[name] = [{k: v for k, v in row.items() if k != "seconds"} for row in rows]
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    same = metrics["this"] == metrics["baseline"]
    print(
        f"epoch {medians['this']:.2f} s here, {medians['baseline']:.2f} s at the baseline "
        f"({medians['this'] / medians['baseline']:.3f}x); metrics "
        f"{'the same' if same else 'DIFFERENT'}"
    )
    write_record(
        {"machine": machine(), "epochs": args.epochs, "rounds": args.rounds,
         "baseline_src": str(sources["baseline"]), "epoch_seconds": seconds,
         "median_epoch_seconds": medians, "same_metrics": same, "metrics": metrics},
        "ab",
    )  # fmt: skip


if __name__ == "__main__":
    main()
