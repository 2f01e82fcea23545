"""Reading users' own images: the 60,000 Fashion-MNIST training images as a folder of 28x28 PNGs
(in one process and in a pool of processes) and as an .npz file, in images per second.

    python benchmarks/bench_read.py [--repeats 3] [--images 60000]

The files are written to a temporary folder first (not timed). The target: the PNG folder read
in under 10 s with the default (pooled) reading.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from records import RESULTS_DIR, write_record

import vaelab
from vaelab.config import DataConfig
from vaelab.data import imagefile, load_dataset, load_fashion_mnist

TARGET_S = 10.0


def write_files(scratch: Path, count: int) -> tuple[Path, Path]:
    """scratch/png/NNNNN.png and scratch/fm.npz holding the first `count` training images."""
    data = load_fashion_mnist()
    pixels = (data.train_images[:count].numpy() * 255).round().astype(np.uint8)
    pixels = pixels.reshape(-1, 28, 28)
    folder = scratch / "png"
    folder.mkdir()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: Image.fromarray(pixels[i]).save(folder / f"{i:05d}.png"),
                      range(len(pixels))))  # fmt: skip
    np.savez(scratch / "fm.npz", images=pixels, labels=data.train_labels[:count].numpy())
    os.sync()  # write-back of the new files would otherwise compete with the timed reads
    return folder, scratch / "fm.npz"


def timed(read: Callable[[], object], repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        read()
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=60_000)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder, npz = write_files(Path(scratch), args.images)
        files = tuple(sorted(folder.iterdir()))
        workers = imagefile.default_workers(len(files))
        results = {
            "folder, 1 process": timed(
                lambda: imagefile.decode_all(files, folder, None, workers=1), args.repeats
            ),
            f"folder, {workers} processes": timed(
                lambda: imagefile.decode_all(files, folder, None, workers=workers), args.repeats
            ),
            "folder as a source (listing, split, Dataset)": timed(
                lambda: load_dataset(DataConfig(source=str(folder))), args.repeats
            ),
            ".npz as a source": timed(
                lambda: load_dataset(DataConfig(source=str(npz))), args.repeats
            ),
        }
    medians = {name: statistics.median(seconds) for name, seconds in results.items()}
    for name, median in medians.items():
        best = min(results[name])
        print(
            f"{name:46s} {median:6.2f} s median ({args.images / median:7,.0f} images/s), "
            f"best {best:5.2f} s ({args.images / best:7,.0f} images/s)"
        )
    source_s = medians["folder as a source (listing, split, Dataset)"]
    verdict = "met" if source_s < TARGET_S else "MISSED"
    print(f"PNG folder as a source: {source_s:.2f} s; target < {TARGET_S:g} s: {verdict}")
    record = {
        "vaelab": vaelab.__version__, "torch": torch.__version__, "cpus": os.cpu_count(),
        "images": args.images, "workers": workers, "seconds": results, "median_s": medians,
        "images_per_s": {name: args.images / s for name, s in medians.items()},
        "target_s": TARGET_S,
    }  # fmt: skip
    write_record(record, "read", args.out)
    if source_s >= TARGET_S:
        sys.exit(1)


if __name__ == "__main__":
    main()
