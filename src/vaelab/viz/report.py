"""A run's report: one self-contained HTML file with its numbers, tables and every figure.

Images are embedded as base64 PNGs and the styles inline, so RUN/report.html opens offline and
can be mailed or archived on its own.
"""

from __future__ import annotations

import base64
import math
import platform
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from vaelab._extras import require_extra

require_extra("plots", "matplotlib", "PIL")

import matplotlib
import numpy as np
import torch

from vaelab._io import atomic_write_text, parse_json, read_text
from vaelab._outputs import check_run_file
from vaelab._version import __version__
from vaelab.data import Dataset
from vaelab.diagnostics import PosteriorDiagnosis, diagnose_posterior
from vaelab.errors import VaelabError
from vaelab.evaluation import Metrics, evaluate
from vaelab.rundir import (
    EVAL_FILE,
    FIGURE_FILES,
    FIGURES_DIR,
    METRICS_FILE,
    REPORT_FILE,
    WEIGHTS_FILE,
    Run,
    check_figure_paths,
    figures_weights_sha256,
    loaded_weights_sha256,
    open_run,
    record_figures,
    run_lock,
    weights_sha256,
)  # fmt: skip
from vaelab.viz import plots
from vaelab.viz.describe import data_facts, data_sentence, selection_sentence, weight_selection
from vaelab.viz.page import escape as _e
from vaelab.viz.page import flatten as _flatten
from vaelab.viz.page import keys_table as _keys_table
from vaelab.viz.page import number as _number
from vaelab.viz.page import png_size as _png_size
from vaelab.viz.report_metrics import (
    collapse_paragraph,
    elbo_notes,
    epochs_table,
    evaluation_section,
    final_metrics_table,
    latent_section,
    test_loss_card,
    timing,
)

CAPTIONS = {
    "learning_curves.png": "Train (blue) and test (red) loss per epoch: loss solid, "
    "reconstruction (MSE for the tutorial's loss) dotted, "
    "KLD dashed, as in the tutorial's learning-curve plot.",
    "reconstructions.png": "The first 40 test images, each row of inputs above its "
    "reconstructions decoded from the posterior mean \u03bc(x).",
    "latent.png": "Where the encoder puts the test images: posterior means, one colour and "
    "marker per class.",
    "manifold.png": "What the decoder draws over a regular grid of the latent plane (top row "
    "at the largest value, as in the tutorial); the axes give the coordinates.",
    "samples.png": "New images: decoder outputs for 100 codes drawn from the prior N(0, I).",
    "interpolation.png": "Decoder outputs along straight lines between the posterior means of "
    "test images of different classes, inputs at both ends.",
}
# The page's styles, inlined into every report so that it needs no other file.
STYLE = (resources.files("vaelab.viz") / "report.css").read_text(encoding="utf-8")


def write_report(
    run_dir: str | Path,
    dataset: Dataset | None = None,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = None,
) -> Path:
    """Write RUN/report.html and return its path, holding the run's lock.

    Only what belongs to the current weights is shown: eval.json must record their SHA-256, and
    RUN/figures/ must have been drawn from them (RUN/figures.json records which), else the
    figures are drawn again; the page says so in a sentence when it set something aside.
    """
    check_run_file(Path(run_dir) / REPORT_FILE)
    check_figure_paths(run_dir)  # the figures may be drawn again
    with run_lock(run_dir):
        run = open_run(run_dir, dataset, device=device)
        # The fingerprint of the weights just loaded (the lock keeps vaelab from changing them).
        current = loaded_weights_sha256(run.run_dir) or weights_sha256(run.run_dir)
        evaluation = read_evaluation(run.run_dir)
        stale = []
        if evaluation is not None and evaluation.get("weights_sha256") != current:
            stale.append(_stale_evaluation_sentence(evaluation))
            evaluation = None
        figures, redrawn = _current_figures(run, current, log)
        if redrawn:
            stale.append(
                f"The figures found in {FIGURES_DIR}/ were not drawn from these weights, so they "
                "were drawn again from them."
            )
        metrics = evaluate(
            run.model, run.dataset.test_images, run.config.train.test_batch_size,
            labels=run.test_classes,
        )  # fmt: skip
        posterior = diagnose_posterior(
            run.model, run.dataset.test_images, run.config.train.test_batch_size,
            labels=run.test_classes,
        )  # fmt: skip
        page = render_report(run, metrics, evaluation, figures, stale, posterior)
        path = run.run_dir / REPORT_FILE
        atomic_write_text(path, page)
    return path


def _stale_evaluation_sentence(evaluation: Mapping[str, Any]) -> str:
    why = (
        "records no fingerprint of the weights it evaluated"
        if "weights_sha256" not in evaluation
        else f"was written for other weights than the current {WEIGHTS_FILE}"
    )
    return f"{EVAL_FILE} {why}, so its numbers are not shown."


def _current_figures(
    run: Run, weights: str, log: Callable[[str], None] | None
) -> tuple[dict[str, bytes], bool]:
    """The figures of the current weights, drawn again unless RUN/figures/ records them; and
    whether figures of other (or unknown) weights were found and replaced."""
    folder = run.run_dir / FIGURES_DIR
    paths = [folder / name for name in FIGURE_FILES]
    redrawn = False
    if figures_weights_sha256(run.run_dir) != weights or not all(p.is_file() for p in paths):
        redrawn = any(p.is_file() for p in paths)
        plots.save_figures(run, log=log)
        record_figures(run.run_dir, weights)
    return {p.name: p.read_bytes() for p in paths}, redrawn


def read_evaluation(run_dir: str | Path) -> dict[str, Any] | None:
    """The contents of RUN/eval.json, or None when the run has not been evaluated that way."""
    path = Path(run_dir) / EVAL_FILE
    if not path.is_file():
        return None
    raw = parse_json(read_text(path, "a JSON file"), path)
    if not isinstance(raw, dict):
        raise VaelabError(f"{path}: expected a JSON object")
    return raw


# ---------------------------------------------------------------- HTML


def _versions_now() -> dict[str, str]:
    return {
        "vaelab": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "matplotlib": matplotlib.__version__,
        "python": platform.python_version(),
    }


def captions(run: Run) -> dict[str, str]:
    """CAPTIONS, reworded for what the run has: no labels, a validation split."""
    chosen = dict(CAPTIONS)
    if not run.dataset.labelled:
        chosen["latent.png"] = (
            "Where the encoder puts the test images: posterior means, in one colour (the images "
            "carry no labels)."
        )
        chosen["interpolation.png"] = (
            "Decoder outputs along straight lines between the posterior means of pairs of "
            "consecutive test images, inputs at both ends."
        )
    model = run.config.model
    if model.prior != "gaussian" or model.conditional:
        prior = {"gaussian": "the prior N(0, I)", "vamp": "the VampPrior",
                 "mog": "the mixture prior"}[model.prior]  # fmt: skip
        chosen["samples.png"] = (
            f"New images: codes drawn from {prior}, each decoded as every class (one row per "
            "class)."
            if model.conditional
            else f"New images: decoder outputs for 100 codes drawn from {prior}."
        )
    if model.conditional:
        chosen["reconstructions.png"] += " Each image is encoded and decoded with its class."
        chosen["manifold.png"] += " The grid is decoded as the first class."
    if any(math.isfinite(row.get("val_loss", math.nan)) for row in run.history):
        chosen["learning_curves.png"] = (
            "Train (blue), validation (green) and test (red, where measured) loss per epoch: "
            "loss solid, reconstruction dotted, KLD dashed."
        )
    return chosen


def _figure(name: str, png: bytes, caption: str) -> str:
    width, height = _png_size(png, f"{FIGURES_DIR}/{name}")
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure id="{_e(name.removesuffix(".png"))}">\n'
        f'<img src="data:image/png;base64,{data}" width="{width}" height="{height}" '
        f'alt="{_e(caption)}">\n<figcaption>{_e(caption)} <code>{_e(name)}</code></figcaption>\n'
        "</figure>"
    )


def _summary(run: Run) -> str:
    """One paragraph: the data (source, format, channels, size, labels) and the weights kept."""
    data = data_sentence(data_facts(run.info, run.dataset))
    weights = selection_sentence(weight_selection(run.info), len(run.history))
    return (
        f'<p id="summary">Data: <span id="data-summary">{_e(data)}</span>. '
        f'Weights: <span id="weights-summary">{_e(weights)}</span>.</p>'
    )


def _selection_table(info: Mapping[str, Any]) -> list[str]:
    selection = info.get("selection")
    if not isinstance(selection, Mapping):
        return []
    return ["<h3>Weights kept</h3>", _keys_table(_flatten("", selection), "selection")]


def render_report(
    run: Run,
    metrics: Metrics,
    evaluation: Mapping[str, Any] | None,
    figures: Mapping[str, bytes],
    set_aside: Sequence[str] = (),
    posterior: PosteriorDiagnosis | None = None,
) -> str:
    """The report as an HTML5 document (see `write_report`); `set_aside` are the sentences saying
    what was found in the run but not shown, because it belongs to other weights; `posterior`
    what the latent code carries over the test set (its section, and a warning when it
    collapsed)."""
    info = run.info
    run_path = str(run.run_dir)
    name = run.name
    total, median, time_text = timing(run.history)
    dim = run.dataset.input_dim
    data_info = info.get("dataset", {}) if isinstance(info.get("dataset"), Mapping) else {}
    cards = [
        test_loss_card(run, metrics),
        ("negative ELBO, test (nats/image)", _number(metrics.negative_elbo_nats(dim), 2)),
        ("epochs", str(len(run.history))),
        ("training time", f"{total:.1f} s (median {median:.2f} s/epoch)"),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
        f"<title>vaelab report: {_e(name)}</title>",
        f"<style>{STYLE}</style>",
        "</head>",
        "<body>",
        "<main>",
        f"<h1>vaelab run <code>{_e(name)}</code></h1>",
        f'<p class="muted">{_e(run_path)} \u00b7 data: {_e(data_info.get("source", "unknown"))} '
        f"\u00b7 device: {_e(info.get('device', 'unknown'))}</p>",
        _summary(run),
        '<nav><a href="#metrics">Metrics</a><a href="#figures">Figures</a>'
        '<a href="#epochs-section">Per epoch</a><a href="#run">Run</a></nav>',
        *(f'<p class="stale">{_e(sentence)}</p>' for sentence in set_aside),
        "" if posterior is None else collapse_paragraph(run, posterior),
        '<div class="cards">'
        + "".join(f'<div class="card"><span>{_e(k)}</span><b>{v}</b></div>' for k, v in cards)
        + "</div>",
        "<p>Explore this run interactively: "
        f'<code id="serve-command">vaelab serve {_e(shlex.quote(run_path))}</code></p>',
        '<section id="metrics">',
        "<h2>Final metrics</h2>",
        f'<div class="wide">{final_metrics_table(run, metrics)}</div>',
        elbo_notes(run),
        evaluation_section(evaluation, run_path),
        "" if posterior is None else latent_section(posterior),
        f"<h3>Time</h3>\n<p>{_e(time_text)}</p>",
        "</section>",
        '<section id="figures">',
        "<h2>Figures</h2>",
        *(_figure(file, figures[file], captions(run)[file]) for file in FIGURE_FILES),
        "</section>",
        '<section id="epochs-section">',
        "<h2>Per-epoch metrics</h2>",
        f'<p class="muted">From <code>{METRICS_FILE}</code>; train values are '
        "means over the epoch's batches, validation and test values one pass over their split "
        "after it (a dash: not measured that epoch).</p>",
        epochs_table(run.history),
        "</section>",
        '<section id="run">',
        "<h2>Run</h2>",
        "<h3>Configuration</h3>",
        _keys_table(_flatten("", run.config.to_dict()), "config"),
        "<h3>Data</h3>",
        _keys_table(_flatten("", data_info), "data"),
        *_selection_table(info),
        "<h3>Device and versions</h3>",
        _keys_table(
            [
                ("device (training)", info.get("device", "unknown")),
                ("precision (training)", info.get("precision", "unknown")),
                *_flatten("training", info.get("versions", {})),
                *_flatten("report", _versions_now()),
            ],
            "versions",
        ),
        "</section>",
        f"<footer>Written by vaelab {_e(__version__)} on "
        f"{_e(time.strftime('%Y-%m-%d %H:%M:%S %Z'))}.</footer>",
        "</main>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"
