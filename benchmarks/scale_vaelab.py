"""vaelab's side of bench_scale.py: `vaelab.train` (what `vaelab train` calls, with
--no-plots --no-tensorboard) on a .npy source, stopped after a number of steps by a callback.

It prints one JSON line: when the first step ended and the steps' times.

python benchmarks/scale_vaelab.py DATA.npy --steps 30 --started TIME [--loader stream]
    [--in-memory] [--run-dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time

import numpy as np

import vaelab
from vaelab import Callback
from vaelab.config import DataConfig, ModelConfig, RunConfig, TrainConfig


class Enough(Exception):
    """Raised by the callback once the steps asked for are done."""


class StepTimes(Callback):
    """Records when each step ends; stops the run after `steps`."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.ends: list[float] = []

    def on_step_end(self, step: object) -> None:
        self.ends.append(time.time())
        if len(self.ends) >= self.steps:
            raise Enough


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--started", type=float, required=True, help="time.time() at launch")
    parser.add_argument("--loader", default="auto", choices=["auto", "memory", "stream"])
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--in-memory", action="store_true", help="np.load the file whole first")
    parser.add_argument("--test-split", type=int, default=2000)
    parser.add_argument("--run-dir", default=None)
    args = parser.parse_args()
    config = RunConfig(
        model=ModelConfig(arch="conv", hidden=(32, 64, 256)),
        data=DataConfig(test_split=args.test_split, loader=args.loader, workers=args.workers),
        train=TrainConfig(epochs=1, precision="32", device="cpu"),
    )
    data = np.load(args.data) if args.in_memory else args.data
    probe = StepTimes(args.steps)
    run_dir = args.run_dir or tempfile.mkdtemp(prefix="vaelab-scale-")
    with contextlib.suppress(Enough):
        vaelab.train(config, data=data, run_dir=f"{run_dir}/run", callbacks=[probe], log=None)
    print(json.dumps({"first_step": probe.ends[0] - args.started, "step_ends": probe.ends}))


if __name__ == "__main__":
    main()
