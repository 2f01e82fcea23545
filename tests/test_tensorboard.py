"""The TensorBoard logger: its event files read back with TensorBoard's own reader agree with
metrics.csv, hold images of the data's size and the hparams, and a resumed run appends to them."""

from __future__ import annotations

import io
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("tensorboard")

from PIL import Image  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData  # noqa: E402

from tests.helpers import make_tiny_dataset, run_vaelab, synthetic_images, write_csv  # noqa: E402
from vaelab.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from vaelab.data import Dataset  # noqa: E402
from vaelab.rundir import TENSORBOARD_DIR, read_metrics, remove_run_files  # noqa: E402
from vaelab.training import Callback, train  # noqa: E402
from vaelab.training.tensorboard import (  # noqa: E402
    TensorBoardLogger,
    flat_settings,
    image_grid,
)

STEPS = 256 // 64  # steps per epoch of the tiny runs


def tiny_config(epochs: int = 3, **train: object) -> RunConfig:
    return RunConfig(
        model=ModelConfig(hidden=(8, 4)),
        train=TrainConfig(epochs=epochs, batch_size=64, lr=1e-2, device="cpu", **train),
    )


def read_events(log_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def scalars(events: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in events.Scalars(tag)]


def same_points(logged: list[tuple[int, float]], expected: list[tuple[int, float]]) -> bool:
    """The same steps, and values equal up to TensorBoard's float32."""
    steps, values = zip(*logged) if logged else ((), ())
    want_steps, want_values = zip(*expected) if expected else ((), ())
    return steps == want_steps and list(values) == pytest.approx(list(want_values), rel=1e-6)


def csv_points(run_dir: Path, column: str, steps: int = STEPS) -> list[tuple[int, float]]:
    """metrics.csv's column as TensorBoard has it: at each epoch's last step, NaN left out."""
    return [
        (int(row["epoch"]) * steps, row[column])
        for row in read_metrics(run_dir)
        if not math.isnan(row[column])
    ]


class StepRecorder(Callback):
    def __init__(self) -> None:
        self.steps: dict[int, tuple[float, float, float]] = {}

    def on_step_end(self, step):
        number = (step.epoch - 1) * step.steps_per_epoch + step.step
        self.steps[number] = (step.terms.loss.item(), step.lr, step.kl_weight)


# ---------------------------------------------------------------- scalars


def test_epoch_scalars_are_metrics_csv_at_each_epochs_last_step(tmp_path, tiny_dataset):
    run_dir = tmp_path / "run"
    logger = TensorBoardLogger(run_dir / TENSORBOARD_DIR, images_every=0)
    train(tiny_config(), tiny_dataset, run_dir=run_dir, log=None, callbacks=[logger])
    events = read_events(run_dir / TENSORBOARD_DIR)
    for split in ("train", "test"):
        for term in ("loss", "reconstruction", "kld"):
            logged = scalars(events, f"{split}/{term}")
            assert same_points(logged, csv_points(run_dir, f"{split}_{term}"))
            assert [step for step, _ in logged] == [4, 8, 12]
    assert same_points(scalars(events, "epoch/seconds"), csv_points(run_dir, "seconds"))
    assert scalars(events, "epoch/epoch") == [(4, 1.0), (8, 2.0), (12, 3.0)]
    assert not any(tag.startswith("val/") for tag in events.Tags()["scalars"])  # never ran


def test_a_validation_run_logs_val_and_leaves_out_the_test_pass_it_did_not_run(
    tmp_path, tiny_dataset
):
    run_dir = tmp_path / "run"
    config = tiny_config()
    config = RunConfig(model=config.model, train=config.train, data=DataConfig(val_split=64))
    logger = TensorBoardLogger(run_dir / TENSORBOARD_DIR, images_every=0)
    train(config, tiny_dataset, run_dir=run_dir, log=None, callbacks=[logger])
    events = read_events(run_dir / TENSORBOARD_DIR)
    assert same_points(scalars(events, "val/loss"), csv_points(run_dir, "val_loss", 192 // 64))
    assert not any(tag.startswith("test/") for tag in events.Tags()["scalars"])


def test_step_curves_are_logged_every_k_steps_with_the_steps_values(tmp_path, tiny_dataset):
    recorder = StepRecorder()
    logger = TensorBoardLogger(tmp_path / "tb", images_every=0, steps_every=5)
    train(tiny_config(), tiny_dataset, log=None, callbacks=[recorder, logger])
    events = read_events(tmp_path / "tb")
    for index, tag in enumerate(("step/loss", "step/lr", "step/kl_weight")):
        expected = [(step, recorder.steps[step][index]) for step in (5, 10)]
        assert same_points(scalars(events, tag), expected)


def test_the_logger_changes_nothing_that_is_trained(tmp_path, tiny_dataset):
    plain = train(tiny_config(), tiny_dataset, log=None)
    logger = TensorBoardLogger(tmp_path / "tb", images_every=1, steps_every=1)
    logged = train(tiny_config(), tiny_dataset, log=None, callbacks=[logger])
    assert [row.train_loss for row in logged.history] == [row.train_loss for row in plain.history]
    assert [row.test_loss for row in logged.history] == [row.test_loss for row in plain.history]


# ---------------------------------------------------------------- images


def rgb_dataset() -> Dataset:
    """Colour images of 3 x 8 x 6: each class bright in another channel, so the colours tell."""
    generator = torch.Generator().manual_seed(0)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, 3, (n,), generator=generator)
        images = torch.rand(n, 3, 8, 6, generator=generator) * 0.2
        images[torch.arange(n), labels] += 0.7
        return images.reshape(n, -1), labels

    (train_x, train_y), (test_x, test_y) = split(256), split(64)
    return Dataset(
        train_images=train_x, train_labels=train_y, test_images=test_x, test_labels=test_y,
        image_shape=(8, 6), class_names=("red", "green", "blue"), source="synthetic", channels=3,
    )  # fmt: skip


def decoded(event) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))


@pytest.mark.parametrize(
    ("dataset", "shape"), [(make_tiny_dataset, (1, 4, 4)), (rgb_dataset, (3, 8, 6))]
)
def test_images_show_the_test_images_above_their_reconstructions_and_prior_samples(
    tmp_path, dataset, shape
):
    data = dataset()
    logger = TensorBoardLogger(tmp_path / "tb", images_every=2)
    result = train(tiny_config(), data, log=None, callbacks=[logger])
    events = read_events(tmp_path / "tb")
    channels, height, width = shape
    for tag in ("images/reconstructions", "images/samples"):
        images = events.Images(tag)
        assert [image.step for image in images] == [2 * STEPS, 3 * STEPS]  # epoch 2, and the end
        assert all((im.height, im.width) == (2 * height, 8 * width) for im in images)
    top_left = decoded(events.Images("images/reconstructions")[-1])[:height, :width]
    first = data.test_images[0].reshape(channels, height, width).permute(1, 2, 0).numpy()
    expected = np.broadcast_to(first, (height, width, 3)) * 255  # grey is drawn as R = G = B
    assert np.abs(top_left.astype(float) - expected).max() <= 1.0
    from vaelab.latent import sample

    samples = sample(result.model, 16, seed=0)[0].reshape(channels, height, width)
    drawn = decoded(events.Images("images/samples")[-1])[:height, :width].astype(float)
    want = np.broadcast_to(samples.permute(1, 2, 0).numpy(), (height, width, 3)) * 255
    assert np.abs(drawn - want).max() <= 1.0  # the last images are of the model the run ends with


def test_image_grid_tiles_channel_major_images_row_by_row():
    images = torch.arange(5 * 2 * 3 * 4, dtype=torch.float32).reshape(5, -1) / 200
    grid = image_grid(images, (2, 3, 4), columns=2)
    assert grid.shape == (2, 3 * 3, 2 * 4)
    assert torch.equal(grid[:, 3:6, 4:8], images[3].reshape(2, 3, 4))
    assert torch.equal(grid[:, 6:9, 4:8], torch.zeros(2, 3, 4))  # the short last row


# ---------------------------------------------------------------- hparams


def test_the_config_is_logged_as_hparams_with_the_final_metrics(tmp_path, tiny_dataset):
    logger = TensorBoardLogger(tmp_path / "tb", images_every=0)
    result = train(tiny_config(), tiny_dataset, log=None, callbacks=[logger])
    events = read_events(tmp_path / "tb")
    metadata = events.SummaryMetadata("_hparams_/session_start_info")
    start = HParamsPluginData.FromString(metadata.plugin_data.content).session_start_info
    assert start.hparams["train.lr"].number_value == pytest.approx(1e-2)
    assert start.hparams["model.latent_dim"].number_value == 2
    assert start.hparams["model.likelihood"].string_value == "tutorial-mse"
    assert "model.hidden" not in start.hparams  # a list: only scalar settings are hparams
    final = result.history[-1]
    assert same_points(scalars(events, "hparams/test_loss"), [(3 * STEPS, final.test_loss)])
    assert same_points(scalars(events, "hparams/train_loss"), [(3 * STEPS, final.train_loss)])


def test_flat_settings_keeps_the_scalars_under_dotted_names():
    settings = {"model": {"hidden": [1, 2], "beta": 1.0, "arch": "mlp"}, "seed": 3, "dir": None}
    assert flat_settings(settings) == {"model.beta": 1.0, "model.arch": "mlp", "seed": 3}


# ---------------------------------------------------------------- resuming


class CrashAt(Callback):
    """Fails the run after the logger saw global step `step` (and, at an epoch's end, the epoch)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, step):
        if (step.epoch - 1) * step.steps_per_epoch + step.step == self.step and self.step % STEPS:
            raise RuntimeError("crash")

    def on_epoch_end(self, metrics):
        if metrics.epoch * STEPS == self.step:
            raise RuntimeError("crash")  # after the test pass was logged, before the checkpoint


@pytest.mark.parametrize(
    ("crash_step", "checkpoint_every"),
    [(2 * STEPS, None), (STEPS + 3, 2)],  # the end of epoch 2; epoch 2, step 3 (checkpoint at 2)
)
def test_a_resumed_run_appends_without_duplicate_steps(
    tmp_path, tiny_dataset, crash_step, checkpoint_every
):
    run_dir = tmp_path / "run"
    log_dir = run_dir / TENSORBOARD_DIR
    first = TensorBoardLogger(log_dir, images_every=1, steps_every=1)
    with pytest.raises(RuntimeError, match="crash"):
        train(
            tiny_config(), tiny_dataset, run_dir=run_dir, log=None,
            callbacks=[first, CrashAt(crash_step)], checkpoint_every=checkpoint_every,
        )  # fmt: skip
    first.close()
    (orphaned,) = log_dir.iterdir()
    assert max(step for step, _ in scalars(read_events(orphaned), "step/loss")) == crash_step
    second = TensorBoardLogger(log_dir, images_every=1, steps_every=1)
    train(
        tiny_config(), tiny_dataset, run_dir=run_dir, log=None, callbacks=[second], resume=True,
        checkpoint_every=checkpoint_every,
    )  # fmt: skip
    assert len(list(log_dir.iterdir())) == 2
    events = read_events(log_dir)
    assert [step for step, _ in scalars(events, "step/loss")] == list(range(1, 3 * STEPS + 1))
    for column in ("train_loss", "test_loss", "test_kld"):
        tag = column.replace("_", "/", 1)
        assert same_points(scalars(events, tag), csv_points(run_dir, column))
    assert [image.step for image in events.Images("images/samples")] == [4, 8, 12]


def test_a_new_event_file_sorts_after_one_of_the_same_second(tmp_path):
    second = int(time.time()) + 1  # this second or the next one: the new file's, unless it waits
    earlier = tmp_path / f"events.out.tfevents.{second:010d}.zzzz.99999.99"
    earlier.write_bytes(b"")  # TensorBoard reads a directory's files in the order of their names
    logger = TensorBoardLogger(tmp_path)
    logger.writer = logger._open(purge_step=5)  # as on_epoch_start does for a resumed run
    logger.close()
    names = sorted(path.name for path in tmp_path.iterdir())
    assert len(names) == 2 and names[0] == earlier.name


def test_a_logger_given_a_finished_run_to_resume_writes_nothing(tmp_path, tiny_dataset):
    from vaelab.training.guard import NothingToResume

    run_dir = tmp_path / "run"
    train(tiny_config(epochs=1), tiny_dataset, run_dir=run_dir, log=None)
    with pytest.raises(NothingToResume):
        train(
            tiny_config(epochs=1), tiny_dataset, run_dir=run_dir, log=None, resume=True,
            callbacks=[TensorBoardLogger(run_dir / TENSORBOARD_DIR)],
        )  # fmt: skip
    assert not (run_dir / TENSORBOARD_DIR).exists()


def test_overwriting_a_run_removes_its_tensorboard_directory_and_keeps_other_files(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / TENSORBOARD_DIR / "old").mkdir(parents=True)
    (run_dir / TENSORBOARD_DIR / "events.out.tfevents.1.host.1.0").write_bytes(b"x")
    (run_dir / "notes.txt").write_text("mine")
    remove_run_files(run_dir)
    assert sorted(p.name for p in run_dir.iterdir()) == ["notes.txt"]


# ---------------------------------------------------------------- the command line


@pytest.fixture
def csv_args(tmp_path) -> list[object]:
    train_x, train_y = synthetic_images(300, side=4, seed=1)
    test_x, test_y = synthetic_images(100, side=4, seed=2)
    train_csv = write_csv(tmp_path / "train.csv", train_x.reshape(300, -1), train_y)
    test_csv = write_csv(tmp_path / "test.csv", test_x.reshape(100, -1), test_y)
    return [
        "--batch-size", 50, "--hidden", "8,4", "--train-csv", train_csv, "--test-csv", test_csv,
        "--runs-dir", tmp_path / "runs", "--no-plots",
    ]  # fmt: skip


def test_train_logs_for_tensorboard_by_default_resumes_into_it_and_overwrites_it(
    tmp_path, csv_args, cli
):
    run_dir = tmp_path / "runs" / "tb"
    trained = cli("train", *csv_args, "--name", "tb", "--epochs", 2)
    assert trained.code == 0, trained.err
    events = read_events(run_dir / TENSORBOARD_DIR)
    assert same_points(scalars(events, "train/loss"), csv_points(run_dir, "train_loss", 6))
    assert [image.step for image in events.Images("images/samples")] == [12]  # the end
    resumed = cli("train", "--resume", run_dir, "--epochs", 3, "--tensorboard-images-every", 1)
    assert resumed.code == 0, resumed.err
    events = read_events(run_dir / TENSORBOARD_DIR)
    assert [step for step, _ in scalars(events, "train/loss")] == [6, 12, 18]
    assert [image.step for image in events.Images("images/samples")] == [12, 18]
    again = cli("train", *csv_args, "--name", "tb", "--epochs", 1, "--overwrite")
    assert again.code == 0, again.err
    events = read_events(run_dir / TENSORBOARD_DIR)
    assert [step for step, _ in scalars(events, "train/loss")] == [6]  # the earlier run's are gone


def test_no_tensorboard_writes_no_event_files(tmp_path, csv_args, cli):
    trained = cli("train", *csv_args, "--name", "off", "--epochs", 1, "--no-tensorboard")
    assert trained.code == 0, trained.err
    assert not (tmp_path / "runs" / "off" / TENSORBOARD_DIR).exists()


def test_tensorboard_without_the_package_is_one_line_naming_the_extra(
    tmp_path, csv_args, cli, monkeypatch
):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` fails
    refused = cli("train", *csv_args, "--name", "on", "--epochs", 1, "--tensorboard")
    assert refused.code == 2
    (line,) = refused.err.strip().splitlines()
    assert line.startswith("vaelab: error: ") and "pip install 'vaelab[tensorboard]'" in line
    assert not (tmp_path / "runs" / "on").exists()
    default = cli("train", *csv_args, "--name", "default", "--epochs", 1)
    assert default.code == 0, default.err  # off by default without the package
    assert not (tmp_path / "runs" / "default" / TENSORBOARD_DIR).exists()


@pytest.mark.slow
def test_train_in_a_real_process_writes_event_files_tensorboard_reads(tmp_path, csv_args):
    result = run_vaelab("train", *csv_args, "--name", "proc", "--epochs", 2, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "runs" / "proc"
    events = read_events(run_dir / TENSORBOARD_DIR)
    assert same_points(scalars(events, "test/loss"), csv_points(run_dir, "test_loss", 6))
    assert events.Images("images/reconstructions")


# ---------------------------------------------------------------- the documentation's example


def test_the_documented_logger_of_your_own_runs(tmp_path, tiny_dataset):
    page = (Path(__file__).parent.parent / "docs" / "studies.md").read_text()
    section = page.split("## Writing your own logger", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    namespace: dict[str, object] = {}
    exec(code.group(1), namespace)
    metrics: list[tuple[str, float, int]] = []
    params: dict[str, object] = {}
    tracker = namespace["TrackerLogger"](  # type: ignore[operator]
        log_metric=lambda name, value, step: metrics.append((name, value, step)),
        log_params=params.update,
    )
    result = train(tiny_config(epochs=2), tiny_dataset, log=None, callbacks=[tracker])
    assert params["train.lr"] == pytest.approx(1e-2)
    assert ("test_loss", result.history[1].test_loss, 2) in metrics
    assert not any(name.startswith("val_") for name, _, _ in metrics)  # NaN: not measured


def test_overwriting_a_run_keeps_a_users_file_in_its_tensorboard_directory(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / TENSORBOARD_DIR / "old").mkdir(parents=True)
    (run_dir / TENSORBOARD_DIR / "old" / "events.out.tfevents.1.host.1.0").write_bytes(b"x")
    (run_dir / TENSORBOARD_DIR / "events.out.tfevents.2.host.1.0").write_bytes(b"x")
    (run_dir / TENSORBOARD_DIR / "notes.txt").write_text("mine")
    remove_run_files(run_dir)
    assert sorted(p.name for p in (run_dir / TENSORBOARD_DIR).iterdir()) == ["notes.txt"]
