"""The report in a real browser: headless Chromium opens RUN/report.html from disk."""

import io

import matplotlib.image
import numpy as np
import pytest

from tests.helpers import offline_page
from vaelab.config import ModelConfig, RunConfig, TrainConfig
from vaelab.rundir import FIGURE_FILES
from vaelab.training import train
from vaelab.viz import plots
from vaelab.viz.report import write_report

pytestmark = pytest.mark.slow  # a real browser


@pytest.fixture
def report(tiny_dataset, tmp_path):
    config = RunConfig(
        model=ModelConfig(hidden=(8, 4)),
        train=TrainConfig(epochs=2, batch_size=32, test_batch_size=64, device="cpu"),
    )
    train(config, tiny_dataset, run_dir=tmp_path / "run", log=None)
    return plots.open_run(tmp_path / "run", tiny_dataset), write_report(
        tmp_path / "run", dataset=tiny_dataset
    )


def test_report_renders_in_chromium(chromium_browser, report):
    run, path = report
    with offline_page(chromium_browser, path) as (page, problems):
        images = page.eval_on_selector_all(
            "img", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])"
        )
        assert len(images) == len(FIGURE_FILES)
        assert all(done and width > 0 and height > 0 for done, width, height in images), images
        final_test_loss = f"{run.history[-1]['test_loss']:.4f}"
        assert final_test_loss in page.inner_text("#final-metrics")
        assert page.is_visible("#final-metrics")
        screenshot = page.screenshot(full_page=True)
    assert problems == []
    pixels = matplotlib.image.imread(io.BytesIO(screenshot), format="png")[..., :3]
    assert pixels.shape[0] > 2000  # the whole page, six figures tall, not one screen
    assert pixels.std() > 0.1, "the screenshot is blank"
    assert len(np.unique(pixels.reshape(-1, 3)[::97], axis=0)) > 50
