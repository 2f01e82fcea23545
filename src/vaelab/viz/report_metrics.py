"""The report's numbers: the final metrics, the negative ELBO and its notes, the importance-weighted
evaluation, the time taken and the per-epoch table, as HTML.

Values a run did not measure (a validation split it has not, test passes it skipped) are NaN in
metrics.csv; their columns are left out, and single epochs show a dash.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from vaelab.diagnostics import (
    ACTIVE_VARIANCE,
    SPREAD_FRACTION,
    PosteriorDiagnosis,
    collapse_warning,
    planned_steps,
)
from vaelab.evaluation import Metrics
from vaelab.models.likelihoods import gaussian_constant
from vaelab.rundir import EVAL_FILE, Run
from vaelab.viz.describe import selected_epoch
from vaelab.viz.page import escape as _e
from vaelab.viz.page import number as _number
from vaelab.viz.page import table as _table

# eval.json (written by `vaelab evaluate`): its keys in display order, with labels.
EVAL_LABELS = {
    "likelihood": "decoder likelihood p(x|z)",
    "images": "test images",
    "negative_elbo_nats": "negative ELBO (nats per image)",
    "reconstruction_nats": "reconstruction, E_q[-log p(x|z)] (nats per image)",
    "kl_nats": "KL(q(z|x) || p(z)) (nats per image)",
    "iw_samples": "importance samples k",
    "iwae_nll_nats": "IWAE estimate of -log p(x) (nats per image)",
    "iwae_stderr_nats": "standard error of the IWAE estimate (nats)",
    "seed": "seed",
    "seconds": "seconds taken",
    "weights_sha256": "SHA-256 of the weights evaluated",
}


def kept_row(run: Run) -> Mapping[str, float]:
    """The metrics.csv row of the epoch whose weights were kept (the last, unless the best
    validation epoch was kept)."""
    kept = selected_epoch(run.info)
    rows = [row for row in run.history if kept is not None and int(row["epoch"]) == kept]
    return rows[0] if rows else run.history[-1]


def _measured(row: Mapping[str, float], key: str) -> bool:
    return math.isfinite(row.get(key, math.nan))


def final_metrics_table(run: Run, metrics: Metrics) -> str:
    """The final train, validation and test metrics as logged, and the test set evaluated now."""
    last = kept_row(run)
    likelihood = run.config.model.likelihood
    dim = run.dataset.input_dim
    epoch = int(last["epoch"])

    def logged(split: str) -> Metrics:
        loss, reconstruction, kld = (
            last.get(f"{split}_{t}", math.nan) for t in ("loss", "reconstruction", "kld")
        )
        return Metrics(loss, reconstruction, kld, images=0, likelihood=likelihood)

    splits = [("train", f"train (epoch {epoch})")] + [
        (split, f"{name} (epoch {epoch}, as logged)")
        for split, name in (("val", "validation"), ("test", "test"))
        if _measured(last, f"{split}_loss")
    ]
    columns = [*(logged(split) for split, _ in splits), metrics]
    reconstruction = "MSE (sum of squares / 2)" if likelihood == "tutorial-mse" else (
        "reconstruction, -log p(x|z) (nats)"
    )  # fmt: skip
    rows = [
        ["loss (training units)", *(_number(m.loss) for m in columns)],
        [reconstruction, *(_number(m.reconstruction) for m in columns)],
        ["KLD", *(_number(m.kld) for m in columns)],
        ["negative ELBO (nats per image)", *(_number(_elbo(m, dim)) for m in columns)],
    ]
    headers = [
        "per image",
        *(header for _, header in splits),
        f"test (saved weights, evaluated now on {metrics.images:,} images)",
    ]
    return _table(headers, rows, "final-metrics")


def _elbo(metrics: Metrics, input_dim: int) -> float:
    """The negative ELBO from the two parts, so a KL weight used in training does not enter it."""
    unweighted = replace(metrics, loss=metrics.reconstruction + metrics.kld)
    return unweighted.negative_elbo_nats(input_dim)


def elbo_notes(run: Run) -> str:
    """Notes under the metrics: a weighted KL term, the likelihood's constant, the seeded
    test pass."""
    dim = run.dataset.input_dim
    train = run.config.train
    weighted = (
        f'<p class="muted">Training weighted the KL term (\u03b2 = {train.beta:g}, warm-up '
        f"{train.kl_warmup} epochs), so the train loss is the weighted one; the negative ELBO "
        "adds reconstruction and KL unweighted.</p>"
        if train.beta != 1 or train.kl_warmup
        else ""
    )
    seed = (
        '<p class="muted">The test pass samples z with a fixed seed, so evaluating the saved '
        "weights again gives the logged number (up to float rounding when the report runs on "
        "another device than training did).</p>"
    )
    return weighted + _likelihood_note(run.config.model.likelihood, dim) + seed


def _likelihood_note(likelihood: str, dim: int) -> str:
    if likelihood != "tutorial-mse":
        return (
            f'<p class="muted">Likelihood <code>{_e(likelihood)}</code>: the '
            "loss is already the negative ELBO in nats, every constant included.</p>"
        )
    return (
        '<p class="muted">The tutorial\'s loss is the negative ELBO of a unit-variance Gaussian '
        f"decoder without its constant (D/2) log 2\u03c0 = {gaussian_constant(dim):.2f} nats for "
        f"D = {dim} pixels; the last row adds it back.</p>"
    )


def evaluation_section(evaluation: Mapping[str, Any] | None, run_dir: str) -> str:
    """RUN/eval.json as a table, or a note on how to write it."""
    if evaluation is None:
        return (
            '<p class="muted">No importance-weighted evaluation yet: '
            f"<code>vaelab evaluate {_e(shlex.quote(run_dir))}</code> writes "
            f"<code>{EVAL_FILE}</code>, and this report then shows it.</p>"
        )
    shown = set(evaluation) - {"posterior"}  # the latent code has its own section
    keys = [k for k in EVAL_LABELS if k in shown] + sorted(shown - set(EVAL_LABELS))
    rows = [[_e(EVAL_LABELS.get(k, k)), _number(evaluation[k])] for k in keys]
    return f"<h3>Likelihood evaluation (<code>{EVAL_FILE}</code>)</h3>\n" + _table(
        ["quantity", "value"], rows, "evaluation"
    )


def collapse_paragraph(run: Run, posterior: PosteriorDiagnosis) -> str:
    """The one-line warning of a collapsed posterior as a paragraph; empty when it did not."""
    steps = planned_steps(run.config.train, run.info)
    warning = collapse_warning(posterior, *steps, run.config.model.likelihood)
    return "" if warning is None else f'<p class="warning" id="collapse-warning">{_e(warning)}</p>'


def latent_section(posterior: PosteriorDiagnosis) -> str:
    """What the latent code carries over the test set: active units, the KL of each dimension,
    and the spread of the reconstructions against the images'."""
    ratio = posterior.spread_ratio
    rows = [
        ["active dimensions (variance of E_q[z_d|x] over images > "
         f"{ACTIVE_VARIANCE:g})", f"{posterior.active_units} of {len(posterior.kl_per_dim)}"],
        ["KL(q(z|x) || p(z)), sum of the dimensions (nats per image)",
         _number(posterior.kl_nats)],
        ["reconstruction spread (per-pixel variance across images)",
         _number(posterior.reconstruction_spread, 6)],
        ["the images' spread", _number(posterior.data_spread, 6)],
        [f"ratio (below {SPREAD_FRACTION:g}: nearly all the same image)",
         "n/a" if math.isnan(ratio) else _number(ratio)],
    ]  # fmt: skip
    pairs = zip(posterior.kl_per_dim, posterior.mean_variance_per_dim)
    dims = [[str(d + 1), _number(kl), _number(var)] for d, (kl, var) in enumerate(pairs)]
    headers = ["dimension", "KL (nats per image)", "variance of E_q[z_d|x]"]
    return (
        f"<h3>Latent code (test set, {posterior.images:,} images)</h3>\n"
        + _table(["quantity", "value"], rows, "latent-code")
        + f'<div class="scroll">{_table(headers, dims, "latent-dimensions")}</div>'
    )


def timing(history: Sequence[Mapping[str, float]]) -> tuple[float, float, str]:
    """Total and median epoch seconds, and a sentence about them."""
    seconds = [row["seconds"] for row in history]
    total = float(sum(seconds))
    median = float(np.median(seconds))
    text = (
        f"{total:.1f} s of training over {len(seconds)} epochs (the sum of the epoch times): "
        f"{total / len(seconds):.2f} s per epoch on average, median {median:.2f} s, "
        f"first epoch {seconds[0]:.2f} s, slowest {max(seconds):.2f} s."
    )
    return total, median, text


def epochs_table(history: Sequence[Mapping[str, float]]) -> str:
    """Every measured column of metrics.csv; a value not measured in an epoch is a dash."""
    headers = [k for k in history[0] if any(_measured(row, k) for row in history)]

    def cell(key: str, value: float) -> str:
        if not math.isfinite(value):
            return "\u2014"
        if key == "epoch":
            return str(int(value))
        return f"{value:.2f}" if key == "seconds" else f"{value:.4f}"

    rows = [[cell(k, row.get(k, math.nan)) for k in headers] for row in history]
    return f'<div class="scroll">{_table(headers, rows, "epochs")}</div>'


def test_loss_card(run: Run, metrics: Metrics) -> tuple[str, str]:
    """The logged test loss of the kept weights' epoch, else the one evaluated now."""
    kept = kept_row(run)
    if not _measured(kept, "test_loss"):
        return "test loss (saved weights)", _number(metrics.loss)
    if kept is run.history[-1]:
        return "final test loss", _number(kept["test_loss"])
    return f"test loss (epoch {int(kept['epoch'])}, kept)", _number(kept["test_loss"])
