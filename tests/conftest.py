"""Shared fixtures: tiny synthetic data for unit tests, the real Fashion-MNIST where it matters."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from vaelab.data import SYSTEM_DATA_DIR, Dataset, find_idx_file, load_fashion_mnist, to_unit_float


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    """Write `array` (uint8) as an IDX file."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def write_csv(path: Path, pixels: np.ndarray, labels: np.ndarray) -> Path:
    header = "label," + ",".join(f"pixel{i + 1}" for i in range(pixels.shape[1]))
    rows = [",".join(map(str, [int(lbl), *row])) for lbl, row in zip(labels, pixels)]
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def synthetic_images(n: int, side: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Blocky uint8 images with labels: two classes that differ in which half is bright."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n)
    images = rng.integers(0, 40, size=(n, side, side))
    images[labels == 0, : side // 2] += 200
    images[labels == 1, side // 2 :] += 200
    return images.astype(np.uint8), labels.astype(np.uint8)


@pytest.fixture
def tiny_dataset() -> Dataset:
    return make_tiny_dataset()


def make_tiny_dataset() -> Dataset:
    """Two classes of blocky 4x4 images: 256 for training, 64 for testing."""
    train_x, train_y = synthetic_images(256, seed=1)
    test_x, test_y = synthetic_images(64, seed=2)
    return Dataset(
        train_images=to_unit_float(train_x),
        train_labels=torch.from_numpy(train_y.astype(np.int64)),
        test_images=to_unit_float(test_x),
        test_labels=torch.from_numpy(test_y.astype(np.int64)),
        image_shape=(4, 4),
        class_names=("top", "bottom"),
        source="synthetic",
    )


@pytest.fixture(scope="session")
def fashion_mnist() -> Dataset:
    """The real dataset from the Debian package; required (not skipped) when `make test` runs."""
    present = all(
        find_idx_file(SYSTEM_DATA_DIR, stem) is not None
        for stem in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")
    )
    if not present:
        if os.environ.get("VAELAB_REQUIRE_REAL_DATA") == "1":
            pytest.fail(f"Fashion-MNIST is not installed in {SYSTEM_DATA_DIR}")
        pytest.skip(
            f"Fashion-MNIST is not installed in {SYSTEM_DATA_DIR} "
            "(apt-get install dataset-fashion-mnist)"
        )
    return load_fashion_mnist(SYSTEM_DATA_DIR)


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def chromium_browser():
    """Headless Debian Chromium driven by Playwright; skipped, with the reason, when absent."""
    if not CHROMIUM.exists():
        if os.environ.get("VAELAB_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"browser test needs {CHROMIUM} (apt-get install chromium); not installed here")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()
