"""The training loop reports through callbacks: every event once and in order, the tutorial's line
by default, a progress bar on request."""

from __future__ import annotations

import io
from dataclasses import asdict

import pytest
import torch

from tests.helpers import make_tiny_dataset, stop_training_at
from vaelab.config import ModelConfig, RunConfig, TrainConfig
from vaelab.models import VAE
from vaelab.training import Callback, EpochLog, ProgressBar, TrainingInterrupted, train
from vaelab.training.epoch import make_optimizer, make_scheduler, train_epoch
from vaelab.training.precision import Bf16Copy


def tiny_config(epochs: int = 2) -> RunConfig:
    return RunConfig(
        model=ModelConfig(hidden=(8, 4)),
        train=TrainConfig(epochs=epochs, batch_size=64, test_batch_size=64, precision="32"),
    )


class Recorder(Callback):
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_run_start(self, start):
        self.events.append(("start", start.steps_per_epoch, str(start.device), start.precision))

    def on_epoch_start(self, epoch, steps):
        self.events.append(("epoch start", epoch, steps))

    def on_step_end(self, step):
        self.events.append(("step", step.epoch, step.step, float(step.terms.loss.detach())))

    def on_epoch_end(self, metrics):
        self.events.append(("epoch end", metrics.epoch))

    def on_note(self, text):
        self.events.append(("note", text))

    def on_run_end(self, result):
        self.events.append(("end", len(result.history)))


def test_every_event_arrives_once_and_in_order(capsys):
    recorder = Recorder()
    result = train(tiny_config(), make_tiny_dataset(), log=None, callbacks=[recorder])
    kinds = [event[0] for event in recorder.events]
    # a run of 8 steps is noted as one far from the thousands a VAE usually needs
    assert kinds == ["start", "note", *(["epoch start", *["step"] * 4, "epoch end"] * 2), "end"]
    assert recorder.events[0] == ("start", 4, "cpu", "32")
    steps = [event[1:3] for event in recorder.events if event[0] == "step"]
    assert steps == [(epoch, step) for epoch in (1, 2) for step in (1, 2, 3, 4)]
    losses = [event[3] for event in recorder.events if event[0] == "step"]
    assert sum(losses[:4]) / 4 == pytest.approx(result.history[0].train_loss, rel=1e-5)
    assert capsys.readouterr().out == ""  # log=None: nothing printed


def test_the_tutorials_lines_come_by_default(capsys):
    result = train(tiny_config(epochs=1), make_tiny_dataset())
    lines = capsys.readouterr().out.splitlines()
    lines = [line for line in lines if not line.startswith(("note: ", "warning: "))]
    row = result.history[0]
    assert lines[0] == "device cpu, precision 32"
    assert lines[1].startswith(f"epoch 01 - {row.seconds:.1f}s - loss {row.train_loss:.2f} - ")
    assert lines[1].endswith(f"(MSE {row.test_reconstruction:.2f} | KLD {row.test_kld:.2f})")
    assert lines[2] == f"total {result.total_seconds:.1f}s for 1 epochs"


def test_a_resumed_run_notes_where_it_resumes(tmp_path, monkeypatch):
    stop_training_at(monkeypatch, epoch=2, step=2)
    with pytest.raises(TrainingInterrupted):
        train(tiny_config(), make_tiny_dataset(), run_dir=tmp_path / "r", log=None)
    monkeypatch.undo()
    recorder, lines = Recorder(), []
    train(tiny_config(), make_tiny_dataset(), run_dir=tmp_path / "r", resume=True,
          log=lines.append, callbacks=[recorder])  # fmt: skip
    assert ("note", f"resuming {tmp_path / 'r'} at epoch 2, step 2") in recorder.events
    assert ("epoch start", 2, 2) in recorder.events  # two steps of epoch 2 were left
    assert f"resuming {tmp_path / 'r'} at epoch 2, step 2" in lines


def test_progress_bar_counts_the_steps_of_each_epoch():
    out = io.StringIO()
    train(
        tiny_config(),
        make_tiny_dataset(),
        log=None,
        callbacks=[ProgressBar(file=out, mininterval=0)],
    )
    text = out.getvalue()
    assert "epoch 01" in text and "epoch 02" in text and "4/4" in text


def test_epoch_log_writes_where_it_is_told():
    lines: list[str] = []
    result = train(tiny_config(epochs=1), make_tiny_dataset(), log=None,
                   callbacks=[EpochLog(lines.append)])  # fmt: skip
    lines = [line for line in lines if not line.startswith(("note: ", "warning: "))]
    assert len(lines) == 3 and lines[1].startswith("epoch 01")
    assert asdict(result.history[0])["test_reconstruction"] > 0


def test_train_epoch_without_an_objective_does_not_copy_the_model(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("train_epoch made a bf16 copy of the model")

    monkeypatch.setattr(Bf16Copy, "__init__", refuse)
    torch.manual_seed(0)
    config = tiny_config(epochs=1)
    model = VAE(replace_input(config.model, 16))
    optimizer = make_optimizer(model, config.train)
    scheduler = make_scheduler(optimizer, config.train, 4)
    images = make_tiny_dataset().train_images
    generator = torch.Generator().manual_seed(0)
    loss, reconstruction, kld = train_epoch(
        model, optimizer, scheduler, images, config.train, generator, precision="bf16-mixed"
    )
    assert loss == pytest.approx(reconstruction + kld, rel=1e-5)


def replace_input(config: ModelConfig, input_dim: int) -> ModelConfig:
    return ModelConfig(input_dim=input_dim, hidden=config.hidden, latent_dim=config.latent_dim)


def test_step_events_carry_the_learning_rate_and_kl_weight_of_the_step(tiny_dataset):
    from vaelab.training.epoch import lr_factor
    from vaelab.training.events import Callback

    seen = []

    class Steps(Callback):
        def on_run_start(self, start):
            assert start.model is not None and start.optimizer is not None
            assert start.test_images is not None and len(start.test_images) == 64

        def on_step_end(self, step):
            seen.append((step.lr, step.kl_weight))

    config = RunConfig(
        model=ModelConfig(hidden=(8, 4)),
        train=TrainConfig(epochs=3, batch_size=64, lr=1e-2, kl_warmup=2, device="cpu"),
    )
    train(config, tiny_dataset, log=None, callbacks=[Steps()])
    steps = 256 // 64
    assert [lr for lr, _ in seen] == pytest.approx(
        [1e-2 * lr_factor("cosine-tail", s, 3 * steps) for s in range(3 * steps)]
    )
    weights = [w for _, w in seen]
    assert weights[0] < weights[steps] < weights[-1] == pytest.approx(1.0)
