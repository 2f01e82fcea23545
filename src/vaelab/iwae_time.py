"""How long an IWAE evaluation will take: measured on a few images before it starts, said, and
refused in one line when it is far beyond the time allowed (`vaelab evaluate --time-budget`).

The estimate times `importance_weighted` on the first `PROBE_IMAGES` images, with the same
memory bound and device, after one untimed image (the first call sets up kernels and threads),
and scales it to all of them. The measure draws k samples per image, at most `PROBE_SAMPLES`: a
larger k is measured at that many and scaled (the work grows linearly in k), so that the measure
itself takes a bounded time whatever k is asked for.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from vaelab.data.images import Images
from vaelab.errors import VaelabError
from vaelab.evaluation import importance_weighted
from vaelab.models import VAE

PROBE_IMAGES = 4
PROBE_SAMPLES = 5000  # the default k: a measure at most as long as a default evaluation's
DEFAULT_BUDGET_MINUTES = 60.0


@dataclass(frozen=True)
class TimeEstimate:
    """Seconds an IWAE evaluation of `images` images will take, from `measured_seconds` on
    `measured_images` of them."""

    seconds: float
    images: int
    measured_images: int
    measured_seconds: float
    measured_k: int | None = None  # the samples per image measured, when fewer than k

    def describe(self, k: int) -> str:
        """'IWAE k=5000 on 10,000 images: about 12 min (measured on 4 images)'."""
        at = "" if self.measured_k is None else f" at k={self.measured_k}"
        return (
            f"IWAE k={k} on {self.images:,} images: {approximately(self.seconds)} (measured on "
            f"{self.measured_images} image{'s' if self.measured_images > 1 else ''}{at})"
        )


def approximately(seconds: float) -> str:
    """An estimate of `seconds` for a reader: 'under 10 s' (a measure that short says no more),
    else 'about 40 s', 'about 12 min', 'about 3.5 h'."""
    return "under 10 s" if seconds < 10 else f"about {duration(seconds)}"


def duration(seconds: float) -> str:
    """Seconds for a reader: '40 s', '12 min', '3.5 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_iwae_time(
    model: VAE,
    images: Images | torch.Tensor,
    k: int,
    max_memory: int | str,
    labels: torch.Tensor | None = None,
) -> TimeEstimate | None:
    """The time `importance_weighted(model, images, k, max_memory)` will take, measured on its
    first few images; None when there are too few images for the measure to save anything."""
    count = len(images)
    probe = min(PROBE_IMAGES, count)
    if count <= probe:
        return None
    samples = min(k, PROBE_SAMPLES)
    for size in (1, probe):  # the second is timed
        subset = images.take(torch.arange(size)) if isinstance(images, Images) else images[:size]
        started = time.perf_counter()
        importance_weighted(
            model, subset, samples, max_memory, labels=None if labels is None else labels[:size]
        )
        elapsed = time.perf_counter() - started
    scaled = elapsed / probe * count * (k / samples)
    return TimeEstimate(scaled, count, probe, elapsed, None if samples == k else samples)


def check_budget(budget_minutes: float, name: str = "time_budget") -> None:
    """Refuse a time budget that is not a finite number of minutes of at least 0 (`name`: what
    the caller calls it)."""
    if not (isinstance(budget_minutes, (int, float)) and 0 <= budget_minutes < math.inf):
        raise VaelabError(
            f"{name} must be a finite number of minutes, at least 0 (0: no limit), got "
            f"{str(budget_minutes)[:40]}",
            parameters=(name,),
        )


def require_within(
    estimate: TimeEstimate,
    budget_minutes: float,
    k: int,
    names: tuple[str, str, str] = ("images", "k", "time_budget"),
) -> None:
    """Refuse (one line saying what to change) an evaluation estimated beyond `budget_minutes`;
    a budget of 0 allows any. `names` are what the caller calls the number of images, the
    importance samples and the budget (the command line passes its flags)."""
    check_budget(budget_minutes, names[2])
    if budget_minutes <= 0 or estimate.seconds <= budget_minutes * 60:
        return
    images, samples, budget = names
    raise VaelabError(
        f"{estimate.describe(k)}, beyond the {budget_minutes:g}-minute budget; evaluate fewer "
        f"images with {images} or fewer importance samples with {samples}, or allow the time "
        f"with {budget} (0: no limit)"
    )
