"""Users' own data end to end: each format trains, plots, reports, evaluates and serves from the
command line, and opens in the Python API, as the tutorial's data does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import vaelab
from tests.helpers import synthetic_images, write_idx
from vaelab.explorer.app import create_app

N_TRAIN, N_TEST = 120, 40


def _rgb(n: int, seed: int) -> np.ndarray:
    """RGB 10x7 images (N x H x W x 3) whose colour says their class."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(n, 10, 7, 3)).astype(np.uint8)
    images[np.arange(n) % 2 == 0, :, :, 0] += 180
    return images


def png_folder(work: Path) -> tuple[str, ...]:
    for split, n, seed in (("train", N_TRAIN, 1), ("test", N_TEST, 2)):
        for index, image in enumerate(_rgb(n, seed)):
            folder = work / "photos" / split / ("red" if index % 2 == 0 else "grey")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{index:04d}.png")
    return ("--data", "photos")


def npy_file(work: Path) -> tuple[str, ...]:
    np.save(work / "x.npy", _rgb(N_TRAIN + N_TEST, 3).transpose(0, 3, 1, 2))  # N x C x H x W
    return ("--data", "x.npy")


def npz_file(work: Path) -> tuple[str, ...]:
    train_x, train_y = synthetic_images(N_TRAIN, side=6, seed=1)
    test_x, test_y = synthetic_images(N_TEST, side=6, seed=2)
    np.savez(work / "d.npz", x_train=train_x.astype(np.uint8), y_train=train_y,
             x_test=test_x.astype(np.uint8), y_test=test_y)  # fmt: skip
    return ("--data", "d.npz", "--class-names", "top,bottom")


def idx_folder(work: Path) -> tuple[str, ...]:
    folder = work / "kana"
    folder.mkdir()
    for split, n, seed in (("train", N_TRAIN, 1), ("t10k", N_TEST, 2)):
        images, labels = synthetic_images(n, side=5, seed=seed)
        write_idx(folder / f"{split}-imgs-idx3-ubyte", images.astype(np.uint8))
        write_idx(folder / f"{split}-lbls-idx1-ubyte", labels.astype(np.uint8), compress=True)
    return ("--data", "kana")


def csv_without_labels(work: Path) -> tuple[str, ...]:
    images, _ = synthetic_images(N_TRAIN + N_TEST, side=4, seed=4)
    header = ",".join(f"pixel{i + 1}" for i in range(16))
    rows = [",".join(map(str, row)) for row in images.reshape(len(images), -1)]
    (work / "plain.csv").write_text("\n".join([header, *rows]) + "\n")
    return ("--data", "plain.csv")


FORMATS = {
    "png folder (RGB, 10x7, classes)": (png_folder, (3, 10, 7), True),
    "npy (N x C x H x W, unlabelled)": (npy_file, (3, 10, 7), False),
    "npz (6x6, class names)": (npz_file, (1, 6, 6), True),
    "IDX of other names": (idx_folder, (1, 5, 5), True),
    "CSV without labels": (csv_without_labels, (1, 4, 4), False),
}


@pytest.mark.parametrize("name", list(FORMATS))
def test_each_format_trains_plots_reports_evaluates_and_serves(name, tmp_path, monkeypatch, cli):
    build, shape, labelled = FORMATS[name]
    monkeypatch.chdir(tmp_path)
    data = build(tmp_path)
    small = ["--epochs", 2, "--batch-size", 20, "--hidden", "16,8", "--device", "cpu",
             "--no-tensorboard", "--val-split", 0.2]  # fmt: skip
    trained = cli("train", *data, *small, "--name", "r")
    assert trained.code == 0, trained.err
    run = tmp_path / "runs" / "r"
    info = json.loads((run / "config.json").read_text())["dataset"]
    assert (info["channels"], *info["image_shape"]) == shape and info["labelled"] is labelled
    assert all((run / "figures" / f).is_file() for f in vaelab.rundir.FIGURE_FILES)
    evaluated = cli("evaluate", "runs/r", "--iw-samples", 3, "--device", "cpu")
    assert evaluated.code == 0, evaluated.err
    record = json.loads((run / "eval.json").read_text())
    assert record["images"] == len(vaelab.open_run(run).dataset.test_images)
    assert np.isfinite(record["iwae_nll_nats"])
    reported = cli("report", "runs/r")
    assert reported.code == 0, reported.err
    assert info["source"] in (run / "report.html").read_text()
    explorer = TestClient(create_app(run))
    points = explorer.get("/api/points").json()
    assert points["channels"] == shape[0] and (points["labels"] is not None) is labelled
    opened = vaelab.open_run(run)
    assert opened.dataset.shape == shape and opened.model.config.shape == shape
