"""How long an IWAE evaluation will take: measured on a few images before it starts, said, and
refused in one line when it is far beyond the time allowed (`vaelab evaluate --time-budget`).

The estimate times `importance_weighted` on the first `PROBE_IMAGES` images, with the same k,
memory bound and device, after one untimed image (the first call sets up kernels and threads),
and scales it to all of them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from vaelab.data.images import Images
from vaelab.errors import VaelabError
from vaelab.evaluation import importance_weighted
from vaelab.models import VAE

PROBE_IMAGES = 4
DEFAULT_BUDGET_MINUTES = 60.0


@dataclass(frozen=True)
class TimeEstimate:
    """Seconds an IWAE evaluation of `images` images will take, from `measured_seconds` on
    `measured_images` of them."""

    seconds: float
    images: int
    measured_images: int
    measured_seconds: float

    def describe(self, k: int) -> str:
        """'IWAE k=5000 on 10,000 images: about 12 min (measured on 4 images)'."""
        return (
            f"IWAE k={k} on {self.images:,} images: {approximately(self.seconds)} (measured on "
            f"{self.measured_images} image{'s' if self.measured_images > 1 else ''})"
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
    for size in (1, probe):  # the second is timed
        subset = images.take(torch.arange(size)) if isinstance(images, Images) else images[:size]
        started = time.perf_counter()
        importance_weighted(
            model, subset, k, max_memory, labels=None if labels is None else labels[:size]
        )
        elapsed = time.perf_counter() - started
    return TimeEstimate(elapsed / probe * count, count, probe, elapsed)


def require_within(
    estimate: TimeEstimate,
    budget_minutes: float,
    k: int,
    names: tuple[str, str, str] = ("images", "k", "time_budget"),
) -> None:
    """Refuse (one line saying what to change) an evaluation estimated beyond `budget_minutes`;
    a budget of 0 allows any. `names` are what the caller calls the number of images, the
    importance samples and the budget (the command line passes its flags)."""
    if budget_minutes <= 0 or estimate.seconds <= budget_minutes * 60:
        return
    images, samples, budget = names
    raise VaelabError(
        f"{estimate.describe(k)}, beyond the {budget_minutes:g}-minute budget; evaluate fewer "
        f"images with {images} or fewer importance samples with {samples}, or allow the time "
        f"with {budget} (0: no limit)"
    )
