"""An IWAE evaluation's time is measured on a few images before it starts, and one far beyond
the time allowed is refused in one line that says what to change."""

from __future__ import annotations

import itertools

import pytest
import torch

from tests.helpers import make_tiny_dataset
from vaelab import iwae_time
from vaelab.config import ModelConfig
from vaelab.errors import VaelabError
from vaelab.iwae_time import (
    TimeEstimate,
    approximately,
    duration,
    estimate_iwae_time,
    require_within,
)
from vaelab.models import VAE


def model() -> VAE:
    torch.manual_seed(0)
    return VAE(ModelConfig(input_dim=16, hidden=(8,))).eval()


def test_the_probe_is_timed_after_one_untimed_image_and_scaled(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(
        iwae_time, "importance_weighted", lambda m, x, *a, **o: calls.append(len(x))
    )
    clock = itertools.count(0.0, 0.5)  # each reading half a second after the last
    monkeypatch.setattr(iwae_time.time, "perf_counter", lambda: next(clock))
    images = make_tiny_dataset().test_images  # 64
    estimate = estimate_iwae_time(model(), images, 10, "1GB")
    assert calls == [1, 4]
    assert estimate == TimeEstimate(0.5 / 4 * 64, 64, 4, 0.5)


def test_a_few_images_are_not_measured():
    images = make_tiny_dataset().test_images.take(torch.arange(4))
    assert estimate_iwae_time(model(), images, 10, "1GB") is None


def test_the_real_probe_runs_on_images_and_tensors():
    images = make_tiny_dataset().test_images
    for given in (images, images.tensor()):
        estimate = estimate_iwae_time(model(), given, 3, "1GB")
        assert estimate is not None and estimate.images == 64 and estimate.seconds > 0


def test_beyond_the_budget_is_refused_and_0_allows_any():
    estimate = TimeEstimate(7200.0, 20_000, 4, 1.44)
    assert estimate.describe(5000) == (
        "IWAE k=5000 on 20,000 images: about 2.0 h (measured on 4 images)"
    )
    with pytest.raises(VaelabError, match="beyond the 60-minute budget; evaluate fewer images"):
        require_within(estimate, 60, 5000)
    require_within(estimate, 0, 5000)
    require_within(estimate, 121, 5000)


@pytest.mark.parametrize(("seconds", "said"), [(3, "3 s"), (600, "10 min"), (36000, "10.0 h")])
def test_durations_read_in_their_unit(seconds, said):
    assert duration(seconds) == said


@pytest.mark.parametrize(
    ("seconds", "said"),
    [(0.4, "under 10 s"), (9.9, "under 10 s"), (40, "about 40 s"), (600, "about 10 min")],
)
def test_estimates_shorter_than_10_s_say_no_more(seconds, said):
    assert approximately(seconds) == said
