"""Time to draw and write the six figures of a run for the 10,000 Fashion-MNIST test images.

    python benchmarks/bench_plots.py RUN        # a trained run (e.g. runs/demo)
    python benchmarks/bench_plots.py            # an untrained tutorial-shaped model in a temp run

Loading the model and the data is timed apart from the figures; the target is the six figures
together under 10 s on a 2-core CPU. Each repeat writes RUN/figures/ again; the median is kept.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from records import RESULTS_DIR, write_record

import vaelab
from vaelab import _io, rundir
from vaelab.config import RunConfig
from vaelab.models import VAE
from vaelab.rundir import FIGURE_FILES
from vaelab.viz import plots

TARGET_S = 10.0


def untrained_run(scratch: Path) -> Path:
    """A run directory holding the tutorial's model, untrained, and one row of metrics."""
    run_dir = rundir.prepare_run_dir(scratch / "run")
    config = RunConfig()
    torch.manual_seed(0)
    rundir.save_config(run_dir, config, {})
    rundir.save_weights(run_dir, VAE(config.model))
    row = (
        "epoch,seconds,train_loss,train_reconstruction,train_kld,test_loss,"
        "test_reconstruction,test_kld\n"
    )
    _io.atomic_write_text(run_dir / "metrics.csv", row + "1,1,50,45,5,48,44,4\n")
    return run_dir


def time_figures(run: plots.RunData) -> dict[str, float]:
    """Seconds to draw, render and write each figure, in order."""
    out_dir = run.run_dir / plots.FIGURES_DIR
    out_dir.mkdir(exist_ok=True)
    model, data = run.model, run.dataset
    images, labels, names, shape = (
        data.test_images,
        data.test_labels,
        data.class_names,
        data.image_shape,
    )
    seconds = {}
    for name, draw in (
        ("learning_curves.png", lambda: plots.learning_curves(run.history)),
        ("reconstructions.png", lambda: plots.reconstructions(model, images, shape)),
        ("latent.png", lambda: plots.latent_scatter(model, images, labels, names)),
        ("manifold.png", lambda: plots.manifold(model, shape, images=images)),
        ("samples.png", lambda: plots.samples(model, shape)),
        ("interpolation.png", lambda: plots.interpolation(model, images, labels, names, shape)),
    ):
        started = time.perf_counter()
        _io.atomic_write_bytes(out_dir / name, plots.figure_png(draw()))
        seconds[name] = time.perf_counter() - started
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", type=Path, help="a run directory (default: untrained)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = args.run or untrained_run(Path(scratch))
        started = time.perf_counter()
        run = plots.open_run(run_dir)
        load_s = time.perf_counter() - started
        repeats = [time_figures(run) for _ in range(args.repeats)]
    totals = [sum(r.values()) for r in repeats]
    median = statistics.median(totals)
    count = len(run.dataset.test_images)
    print(f"run {run_dir}: load model + data {load_s:.2f} s; {count} test images")
    for name in FIGURE_FILES:
        print(f"  {name:22s} {statistics.median(r[name] for r in repeats):.2f} s")
    verdict = "met" if median < TARGET_S else "MISSED"
    print(
        f"six figures: median {median:.2f} s over {args.repeats} repeats "
        f"(all: {', '.join(f'{t:.2f}' for t in totals)}); target < {TARGET_S:g} s: {verdict}"
    )
    record = {
        "vaelab": vaelab.__version__, "torch": torch.__version__, "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "test_images": count,
        "load_s": load_s, "figures_s": totals, "median_s": median, "target_s": TARGET_S,
    }  # fmt: skip
    write_record(record, "plots", args.out)
    if median >= TARGET_S:
        sys.exit(1)


if __name__ == "__main__":
    main()
