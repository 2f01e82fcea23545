"""Small synthetic data for the tests: blocky images, and the files vaelab reads (IDX, CSV);
and the launchers of tests that need vaelab in a process of its own."""

from __future__ import annotations

import gzip
import os
import signal
import struct
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaelab.data import Dataset, to_unit_float


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    """Write `array` (uint8) as an IDX file."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def write_idx_files(
    folder: Path,
    names: dict[str, str],
    side: int = 4,
    counts: tuple[int, int] = (30, 10),
    compress: bool | None = None,
) -> dict[str, np.ndarray]:
    """Tiny synthetic train/test images and labels as IDX files, named by role ('train-images',
    'train-labels', 'test-images', 'test-labels' -> file name); gzipped when `compress`, or
    (None) when the name ends in .gz. Returns the arrays by role."""
    folder.mkdir(parents=True, exist_ok=True)
    train_x, train_y = synthetic_images(counts[0], side=side, seed=1)
    test_x, test_y = synthetic_images(counts[1], side=side, seed=2)
    arrays = {"train-images": train_x, "train-labels": train_y,
              "test-images": test_x, "test-labels": test_y}  # fmt: skip
    for role, name in names.items():
        packed = name.endswith(".gz") if compress is None else compress
        write_idx(folder / name, arrays[role], compress=packed)
    return arrays


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


# ---------------------------------------------------------------- other processes

TIMEOUT_S = 300  # a hung child fails its test instead of hanging the suite


def child_env(env: dict[str, str | None] | None = None) -> dict[str, str]:
    """This process's environment with `env` laid over it; a None value removes the variable."""
    merged = dict(os.environ)
    for name, value in (env or {}).items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


def vaelab_command(*args: object, ranks: int = 1) -> list[str]:
    """`python -m vaelab ARGS`, or the same under torchrun with `ranks` processes."""
    launcher = [sys.executable]
    if ranks > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
    return [*launcher, "-m", "vaelab", *map(str, args)]


def start_vaelab(
    *args: object,
    cwd: Path | None = None,
    env: dict[str, str | None] | None = None,
    ranks: int = 1,
    **popen,
) -> subprocess.Popen:
    """`vaelab ARGS` in a process of its own, its stdout and stderr piped as text."""
    return subprocess.Popen(
        vaelab_command(*args, ranks=ranks), cwd=cwd, env=child_env(env),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen,
    )  # fmt: skip


def finish(process: subprocess.Popen, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    """Wait for `process` (killed if it outlives `timeout`) and collect what it printed."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def run_vaelab(
    *args: object,
    cwd: Path | None = None,
    env: dict[str, str | None] | None = None,
    ranks: int = 1,
    timeout: float = TIMEOUT_S,
) -> subprocess.CompletedProcess:
    """Run `vaelab ARGS` to the end in a process of its own: returncode, stdout, stderr."""
    return finish(start_vaelab(*args, cwd=cwd, env=env, ranks=ranks), timeout)


def run_python(
    code: str, env: dict[str, str | None] | None = None, timeout: float = TIMEOUT_S
) -> subprocess.CompletedProcess:
    """Run `python -c CODE` in a fresh interpreter: returncode, stdout, stderr."""
    return subprocess.run(
        [sys.executable, "-c", code], env=child_env(env), capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def stop_training_at(patch, epoch: int, step: int, signum: int = signal.SIGINT) -> None:
    """Make training stop after `step` of `epoch` as if `signum` had arrived then (`patch` is a
    pytest MonkeyPatch; undo it to train normally again)."""
    from vaelab.training.guard import RunGuard

    original = RunGuard.after_step

    def after_step(self, at_epoch, progress):
        if (at_epoch, progress.step) == (epoch, step):
            self.stop.signum = signum
        return original(self, at_epoch, progress)

    patch.setattr(RunGuard, "after_step", after_step)


# ---------------------------------------------------------------- browsers


@contextmanager
def offline_page(browser, path: Path) -> Iterator[tuple[Any, list[str]]]:
    """`path` opened in a new page of `browser` (Playwright), with the list of what went wrong
    there: console errors, page errors and any request that leaves the file (none is expected
    of vaelab's self-contained pages). The page closes on leaving."""
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on(
        "request",
        lambda r: None if r.url.startswith(("file:", "data:")) else problems.append(r.url),
    )
    try:
        page.goto(path.resolve().as_uri(), wait_until="load")
        yield page, problems
    finally:
        page.close()


def fit_in_quarters(model, data, steps: int, labels=None):
    """Adam (lr 1e-2) on `data` in four batches taken in turn, z drawn from a seeded generator;
    `labels` go to a conditional model. Returns the model in eval mode."""
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator, size = torch.Generator().manual_seed(0), len(data) // 4
    for step in range(steps):
        rows = slice((step % 4) * size, (step % 4 + 1) * size)
        given = None if labels is None else labels[rows]
        loss = model.loss(data[rows], generator, labels=given).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()
