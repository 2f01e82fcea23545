"""What fault handling costs, and whether resume is bit-identical on this device.

In one process it times, alternately, epochs of vaelab's training loop
  (bare)   no per-step hook;
  (guard)  the per-step non-finite check of RunGuard (what every run pays);
  (every)  the guard plus a full checkpoint every 50 steps into a temporary run directory;
then the cost of one call of the per-step guard alone, the time to write and to load one full
checkpoint of the tutorial's model, and finally trains a small run uninterrupted and once stopped
by SIGINT mid-epoch and resumed, reporting whether the final weights are bit-identical. Writes a
JSON record to benchmarks/results/.

    python benchmarks/bench_faults.py                 # 5 alternating epochs of each
    python benchmarks/bench_faults.py --epochs 0      # no epoch timing (for a busy machine)
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from records import write_record

from vaelab.config import ModelConfig, RunConfig, TrainConfig
from vaelab.data import SYSTEM_DATA_DIR, Dataset, load_fashion_mnist, to_unit_float
from vaelab.models import VAE
from vaelab.training import train
from vaelab.training.checkpoint import (
    EpochProgress,
    Trainables,
    TrainingState,
    load_checkpoint,
    run_identity,
    save_checkpoint,
)
from vaelab.training.distributed import resolve_device
from vaelab.training.epoch import make_optimizer, make_scheduler, train_epoch
from vaelab.training.guard import RunGuard, TrainingInterrupted
from vaelab.training.precision import resolve_precision
from vaelab.training.start import run_layout


def dataset(subset: int | None) -> Dataset:
    """Fashion-MNIST when installed, else random images of its shape (speed is what is timed)."""
    try:
        data = load_fashion_mnist(SYSTEM_DATA_DIR)
    except Exception:  # noqa: BLE001 - any failure means: not installed here
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (70000, 28, 28), dtype=np.uint8)
        labels = torch.from_numpy(rng.integers(0, 10, 70000))
        data = Dataset(
            to_unit_float(images[:60000]), labels[:60000], to_unit_float(images[60000:]),
            labels[60000:], (28, 28), tuple(map(str, range(10))), "random 28x28",
        )  # fmt: skip
    if subset:
        data = replace(data, train_images=data.train_images[:subset])
    return data


def setup(config: RunConfig, data: Dataset, device: torch.device):
    torch.manual_seed(config.train.seed)
    model = VAE(config.model).to(device)
    optimizer = make_optimizer(model, config.train)
    steps = len(data.train_images) // config.train.batch_size
    scheduler = make_scheduler(optimizer, config.train, steps)
    generator = torch.Generator(device=device).manual_seed(config.train.seed)
    return Trainables(model, optimizer, scheduler, generator), steps


def time_epochs(config: RunConfig, data: Dataset, device: torch.device, epochs: int) -> dict:
    parts, steps = setup(config, data, device)
    images = data.train_images.to(device)
    precision = resolve_precision(config.train.precision, device)
    layout = run_layout(config, data, steps)
    work = Path(tempfile.mkdtemp(prefix="vaelab-bench-"))
    identity = run_identity(config.to_dict(), (data.train_images,), device, precision)
    guards = {
        "bare": None,
        "guard": RunGuard(None, parts, layout, {}),
        "every": RunGuard(work, parts, layout, identity, checkpoint_every=50),
    }
    seconds: dict[str, list[float]] = {name: [] for name in guards}
    for epoch in range(epochs + 1):  # epoch 0 warms up
        for name, guard in guards.items():
            hook = None if guard is None else partial(guard.after_step, 1)
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            train_epoch(parts.model, parts.optimizer, parts.scheduler, images, config.train,
                        parts.generator, precision, after_step=hook)  # fmt: skip
            if device.type == "cuda":
                torch.cuda.synchronize()
            if epoch:
                seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def time_after_step(config: RunConfig, data: Dataset, device: torch.device) -> float:
    """Microseconds one call of the per-step guard costs (the non-finite check, no saving)."""
    parts, steps = setup(config, data, device)
    guard = RunGuard(None, parts, run_layout(config, data, steps), {})
    progress = EpochProgress(5, torch.arange(10), torch.ones(3, device=device))
    calls = 20000
    start = time.perf_counter()
    for _ in range(calls):
        guard.after_step(1, progress)
    return (time.perf_counter() - start) / calls * 1e6


def time_checkpoint(config: RunConfig, data: Dataset, device: torch.device) -> dict:
    parts, steps = setup(config, data, device)
    images = data.train_images[: config.train.batch_size * 2].to(device)
    train_epoch(
        parts.model, parts.optimizer, parts.scheduler, images, config.train, parts.generator
    )
    path = Path(tempfile.mkdtemp(prefix="vaelab-bench-")) / "checkpoint.safetensors"
    identity = run_identity(config.to_dict(), (data.train_images,), device, "32")
    progress = EpochProgress(2, torch.randperm(len(data.train_images)), torch.zeros(3))
    start = time.perf_counter()
    save_checkpoint(path, parts, TrainingState(0, progress), identity)
    saved = time.perf_counter() - start
    fresh, _ = setup(config, data, device)
    start = time.perf_counter()
    load_checkpoint(path, fresh, run_layout(config, data, steps), identity)
    return {"save_s": saved, "load_s": time.perf_counter() - start, "bytes": path.stat().st_size}


def resume_is_bit_identical(config: RunConfig, data: Dataset) -> bool:
    work = Path(tempfile.mkdtemp(prefix="vaelab-bench-"))
    reference = train(config, data, run_dir=work / "ref", log=None).model.state_dict()
    original, seen = RunGuard.after_step, {"steps": 0}

    def interrupt_once(self, epoch, progress):
        seen["steps"] += 1
        if seen["steps"] == 7:
            signal.raise_signal(signal.SIGINT)
        return original(self, epoch, progress)

    RunGuard.after_step = interrupt_once
    try:
        train(config, data, run_dir=work / "cut", log=None)
    except TrainingInterrupted:
        pass
    finally:
        RunGuard.after_step = original
    resumed = train(config, data, run_dir=work / "cut", resume=True, log=None).model.state_dict()
    return all(torch.equal(reference[k], resumed[k]) for k in reference)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--subset", type=int, default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    data = dataset(args.subset)
    config = RunConfig(model=ModelConfig(input_dim=data.input_dim),
                       train=TrainConfig(device=device.type))  # fmt: skip
    epoch_seconds = time_epochs(config, data, device, args.epochs) if args.epochs else {}
    small = replace(data, train_images=data.train_images[:2000], test_images=data.test_images[:500])
    small_config = RunConfig(model=config.model, train=TrainConfig(epochs=2, device=device.type))
    record = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "data": data.source,
        "train_images": len(data.train_images),
        "epoch_seconds": epoch_seconds,
        "after_step_us": time_after_step(config, data, device),
        "checkpoint": time_checkpoint(config, data, device),
        "resume_bit_identical": resume_is_bit_identical(small_config, small),
    }
    print(json.dumps(record, indent=2))
    write_record(record, f"faults-{device.type}")


if __name__ == "__main__":
    main()
