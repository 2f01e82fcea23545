"""Reading the tutorial's CSV layout: 60,000 Fashion-MNIST rows written to a temporary file, timed.

python benchmarks/bench_data.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from vaelab.data import load_fashion_mnist, read_csv


def write_training_csv(path: Path) -> None:
    data = load_fashion_mnist()
    pixels = (data.train_images.tensor().numpy() * 255).round().astype(np.uint8)
    labels = data.train_labels.numpy()
    with path.open("w") as out:
        out.write("label," + ",".join(f"pixel{i + 1}" for i in range(pixels.shape[1])) + "\n")
        np.savetxt(out, np.column_stack([labels, pixels]), fmt="%d", delimiter=",")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fashion-mnist_train.csv"
        write_training_csv(path)
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            images, _ = read_csv(path)
            seconds.append(time.perf_counter() - start)
    size_mb = images.size / 1e6
    print(
        f"read_csv: {len(images):,} rows ({size_mb:.0f} M pixels) in "
        f"{statistics.median(seconds):.2f} s median (min {min(seconds):.2f}, target < 5 s)"
    )


if __name__ == "__main__":
    main()
