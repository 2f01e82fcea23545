"""Studies: many runs listed (`list_runs`), compared side by side (`write_compare`, needs
vaelab[plots]) and swept over a grid of settings (`plan_sweep`, then `run_sweep`)."""

from vaelab.studies.runs import RunSummary, list_runs, summarize_run
from vaelab.studies.sweep import Setting, SweepPlan, SweepRun, parse_seeds, parse_set, plan_sweep

__all__ = [
    "RunSummary",
    "Setting",
    "SweepPlan",
    "SweepRun",
    "list_runs",
    "parse_seeds",
    "parse_set",
    "plan_sweep",
    "summarize_run",
]
