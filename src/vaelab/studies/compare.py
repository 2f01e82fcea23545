"""Runs side by side: their numbers (per run, or mean and spread over the seeds of a setting),
the settings in which their configs differ, and their learning curves and images.

`write_compare` writes the page (see `vaelab.studies.compare_page`); the functions here gather
what it shows and can be used on their own.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from vaelab.diagnostics import PosteriorDiagnosis, recorded_posterior
from vaelab.errors import VaelabError
from vaelab.rundir import METRICS_FILE, load_config, load_run_info, read_metrics
from vaelab.studies.runs import (
    DAMAGED,
    RunSummary,
    age_text,
    loss_text,
    summarize_run,
    text_table,
)


@dataclass(frozen=True)
class ComparedRun:
    """A run as the comparison reads it: its summary, metrics.csv rows and flattened config, and
    what its latent code carries as recorded for its current weights (`recorded_posterior`)."""

    summary: RunSummary
    history: list[dict[str, float]]
    config: dict[str, str]
    posterior: PosteriorDiagnosis | None = None

    @property
    def name(self) -> str:
        """The run's name on the page."""
        return self.summary.name


@dataclass(frozen=True)
class Group:
    """Runs that share one setting of a sweep and differ only in their seed."""

    label: str
    runs: list[ComparedRun] = field(default_factory=list)


class Spread(NamedTuple):
    """Mean, spread (sample standard deviation; 0 for one value) and how many values."""

    mean: float
    deviation: float
    n: int

    def text(self, digits: int = 2) -> str:
        """'15.04 ± 0.12' (the spread only for more than one value)."""
        if self.n < 2:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} \u00b1 {self.deviation:.{digits}f}"


def spread(values: Sequence[float | None]) -> Spread | None:
    """The mean and standard deviation of the known values, None when none is known."""
    known = [v for v in values if v is not None and math.isfinite(v)]
    if not known:
        return None
    deviation = statistics.stdev(known) if len(known) > 1 else 0.0
    return Spread(statistics.fmean(known), deviation, len(known))


def compared_run(run_dir: str | Path, name: str | None = None) -> ComparedRun:
    """Read a run for the comparison; one whose config.json cannot be read is refused."""
    run_dir = Path(run_dir)
    summary = summarize_run(run_dir, name)
    if summary.status == DAMAGED:
        raise VaelabError(f"{run_dir}: cannot be compared: {summary.detail}")
    load_run_info(run_dir)
    config = dict(_flatten("", load_config(run_dir).to_dict()))
    return ComparedRun(summary, _metrics(run_dir), config, recorded_posterior(run_dir))


def _metrics(run_dir: Path) -> list[dict[str, float]]:
    """The rows of RUN/metrics.csv; none before the first epoch (no file), and a file there that
    cannot be read is refused: the run's curves would be left off the page without a word."""
    if not (run_dir / METRICS_FILE).exists() and not (run_dir / METRICS_FILE).is_symlink():
        return []
    try:
        return read_metrics(run_dir)
    except VaelabError as exc:
        raise VaelabError(f"{run_dir}: cannot be compared: {exc}") from None


def _flatten(prefix: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, Mapping):
        pairs = []
        for key, inner in value.items():
            pairs += _flatten(f"{prefix}.{key}" if prefix else str(key), inner)
        return pairs
    if isinstance(value, (list, tuple)):
        return [(prefix, ",".join(map(str, value)))]
    return [(prefix, "none" if value is None else str(value))]


def config_differences(runs: Sequence[ComparedRun]) -> list[str]:
    """The config settings (dotted keys) whose values are not the same in every run."""
    keys: list[str] = []
    for run in runs:
        keys += [key for key in run.config if key not in keys]
    return [key for key in keys if len({run.config.get(key, "-") for run in runs}) > 1]


# ---------------------------------------------------------------- the metrics table

RUN_HEADERS = ("run", "status", "model", "epochs", "best val loss", "final test loss",
               "IWAE NLL (nats)", "active dims", "age")  # fmt: skip
GROUP_HEADERS = ("setting", "runs", "best val loss", "final test loss", "IWAE NLL (nats)")


@dataclass(frozen=True)
class Cell:
    """A table cell: its text, and the number a sort orders it by (None: text, last if empty)."""

    text: str
    sort: float | None = None


def run_rows(runs: Sequence[ComparedRun], now: float) -> list[list[Cell]]:
    """One row per run: status, model, epochs and losses."""
    rows = []
    for run in runs:
        s = run.summary
        epochs = "-" if s.epochs is None else f"{s.epochs_done or 0}/{s.epochs}"
        rows.append([
            Cell(s.name), Cell(s.detail), Cell(s.model), Cell(epochs, s.epochs_done),
            _loss(s.best_val_loss), _loss(s.test_loss), _loss(s.iwae_nll),
            active_cell(run.posterior), Cell(age_text(now - s.modified), now - s.modified),
        ])  # fmt: skip
    return rows


def active_cell(posterior: PosteriorDiagnosis | None) -> Cell:
    """'2/2', or '0/2 collapsed' when the posterior collapsed; '-' when not recorded."""
    if posterior is None:
        return Cell("-", None)
    text = f"{posterior.active_units}/{len(posterior.kl_per_dim)}"
    return Cell(f"{text} collapsed" if posterior.collapsed else text, posterior.active_units)


def group_rows(groups: Sequence[Group]) -> list[list[Cell]]:
    """One row per setting: how many runs, and each loss as mean ± spread over its seeds."""
    rows = []
    for group in groups:
        summaries = [run.summary for run in group.runs]
        rows.append([
            Cell(group.label), Cell(str(len(summaries)), len(summaries)),
            _spread([s.best_val_loss for s in summaries]),
            _spread([s.test_loss for s in summaries]),
            _spread([s.iwae_nll for s in summaries]),
        ])  # fmt: skip
    return rows


def _loss(value: float | None) -> Cell:
    return Cell(loss_text(value, 4), value)


def _spread(values: Sequence[float | None]) -> Cell:
    result = spread(values)
    return Cell("-", None) if result is None else Cell(result.text(4), result.mean)


def metrics_text(runs: Sequence[ComparedRun], groups: Sequence[Group], now: float) -> str:
    """The page's metrics table as plain text: per setting when there are groups, else per run."""
    if groups:
        rows = group_rows(groups)
        return text_table(list(GROUP_HEADERS), [[c.text for c in row] for row in rows])
    rows = run_rows(runs, now)
    return text_table(list(RUN_HEADERS), [[c.text for c in row] for row in rows])
