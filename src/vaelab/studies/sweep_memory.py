"""The memory of a sweep's runs trained at once, checked before any of them starts.

Each run checks its own footprint against the free memory when it starts (`vaelab.training.
footprint`), but runs started together all see the same free memory: four runs that each fit
alone may not fit side by side. `check_jobs_memory` adds up the footprints of the `jobs`
largest runs (each a process of its own, with torch loaded) and refuses in one line, naming
--jobs, a sweep whose runs at once would not fit.
"""

from __future__ import annotations

from vaelab._io import size_words
from vaelab._resources import available_memory, not_enough
from vaelab.config import RunConfig
from vaelab.errors import VaelabError
from vaelab.studies.sweep import SweepPlan
from vaelab.training.footprint import estimate_footprint

# What a run's process holds beside its training: Python, torch and their libraries. Measured as
# the peak resident memory of `vaelab train` on a tiny model: 337 MiB (Linux, torch 2.13.0 CPU,
# `/usr/bin/time -v vaelab train --hidden 8,4 --epochs 1` on 500 8x8 images).
PROCESS_BYTES = 320 << 20


def check_jobs_memory(plan: SweepPlan, jobs: int) -> None:
    """Refuse a sweep whose `jobs` largest runs would not fit in the free memory side by side
    (a sweep of one run at a time leaves the check to the run)."""
    if jobs < 2 or len(plan.runs) < 2:
        return
    available = available_memory()
    if available is None:
        return
    peaks = sorted(_peaks(plan), reverse=True)[:jobs]
    needed = sum(peaks) + PROCESS_BYTES * len(peaks)  # each run is a process of its own
    if needed <= available:
        return
    refusal = not_enough(
        f"{len(peaks)} runs at once (the largest {size_words(peaks[0])} each, with their "
        "processes)",
        needed,
        available,
        "memory",
    )
    raise VaelabError(f"{refusal}; give fewer jobs", parameters=("jobs",))


def _peaks(plan: SweepPlan) -> list[int]:
    """Each run's training footprint; runs whose footprint depends on the same settings are
    measured once."""
    measured: dict[str, int] = {}
    peaks = []
    for run in plan.runs:
        config = plan.config_of(run)
        key = _footprint_key(config)
        if key not in measured:
            measured[key] = estimate_footprint(config).peak
        peaks.append(measured[key])
    return peaks


def _footprint_key(config: RunConfig) -> str:
    """The settings a run's footprint depends on (not its seed, learning rate or epochs)."""
    train, data = config.train, config.data
    return repr((config.model, train.batch_size, train.test_batch_size, train.train_samples,
                 train.objective, train.precision, data.val_split, data.binarize))  # fmt: skip
