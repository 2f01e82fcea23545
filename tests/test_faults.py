"""Faults: checkpoints, bit-for-bit resume, SIGKILL, SIGINT, SIGTERM, NaN loss, failed writes."""

from __future__ import annotations

import errno
import json
import os
import random
import re
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from tests.bad_input_cases import csv_pair
from tests.helpers import finish, start_vaelab
from vaelab import rundir
from vaelab.config import ModelConfig, RunConfig, TrainConfig
from vaelab.errors import VaelabError
from vaelab.rundir import CHECKPOINT_FILE, read_safetensors
from vaelab.training import Callback, train
from vaelab.training import guard as guard_module
from vaelab.training.checkpoint import METADATA_KEY
from vaelab.training.guard import NonFiniteLoss, NothingToResume, RunGuard, TrainingInterrupted


def tiny_config(**options) -> RunConfig:
    settings = {"epochs": 3, "batch_size": 32, "test_batch_size": 50, "lr": 3e-3, **options}
    return RunConfig(model=ModelConfig(hidden=(8, 4)), train=TrainConfig(**settings))


def assert_same_run(a: Path, b: Path) -> None:
    """Weights bit for bit and every metric but the wall-clock seconds."""
    weights_a = rundir.read_tensors(a / rundir.WEIGHTS_FILE)
    weights_b = rundir.read_tensors(b / rundir.WEIGHTS_FILE)
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    rows_a, rows_b = rundir.read_metrics(a), rundir.read_metrics(b)
    for row in (*rows_a, *rows_b):
        row.pop("seconds")
    assert rows_a == rows_b


def checkpoint_meta(run_dir: Path) -> dict:
    _, metadata = read_safetensors(run_dir / CHECKPOINT_FILE)
    return json.loads(metadata[METADATA_KEY])


@pytest.fixture
def signal_at_step(monkeypatch):
    """Deliver a real signal to this process right after the n-th optimizer step."""

    def arm(signum: int, at_step: int) -> None:
        original = RunGuard.after_step
        steps = {"done": 0}

        def after_step(self, epoch, progress):
            steps["done"] += 1
            if steps["done"] == at_step:
                signal.raise_signal(signum)
            return original(self, epoch, progress)

        monkeypatch.setattr(RunGuard, "after_step", after_step)

    return arm


# ---------------------------------------------------------------- in-process


@pytest.mark.parametrize(
    ("signum", "at_step", "where"),
    [
        (signal.SIGINT, 13, "at epoch 2, step 5"),
        (signal.SIGTERM, 8, "after epoch 1"),  # the last step of epoch 1: stops after its test pass
    ],
)
def test_signal_checkpoints_then_resume_matches_an_uninterrupted_run(
    tiny_dataset, tmp_path, signal_at_step, monkeypatch, signum, at_step, where
):
    train(tiny_config(), tiny_dataset, run_dir=tmp_path / "ref", log=None)
    handler_before = signal.getsignal(signum)
    signal_at_step(signum, at_step)
    with pytest.raises(TrainingInterrupted) as info:
        train(tiny_config(), tiny_dataset, run_dir=tmp_path / "cut", log=None)
    assert info.value.exit_code == 128 + signum
    name = signal.Signals(signum).name
    assert (info.value.signal_name, info.value.where) == (name, where)
    assert info.value.run_dir == tmp_path / "cut"
    assert str(info.value).startswith(f"stopped by {name} {where}; checkpoint saved; resume=True")
    assert signal.getsignal(signum) is handler_before
    monkeypatch.undo()
    lines = []
    train(tiny_config(), tiny_dataset, run_dir=tmp_path / "cut", resume=True, log=lines.append)
    assert f"resuming {tmp_path / 'cut'} at " in "\n".join(lines)
    assert_same_run(tmp_path / "ref", tmp_path / "cut")


def test_checkpoint_every_n_steps_holds_the_whole_state(tiny_dataset, tmp_path, signal_at_step):
    signal_at_step(signal.SIGINT, 11)
    with pytest.raises(TrainingInterrupted):
        train(tiny_config(), tiny_dataset, run_dir=tmp_path / "r", log=None, checkpoint_every=4)
    tensors, _ = read_safetensors(tmp_path / "r" / CHECKPOINT_FILE)
    meta = checkpoint_meta(tmp_path / "r")
    assert (meta["epochs_done"], meta["step"]) == (1, 3)
    assert len(meta["history"]) == 1 and meta["history"][0]["epoch"] == 1
    assert {"rng/torch", "rng/generator", "rng/numpy", "epoch/order", "epoch/totals"} <= set(
        tensors
    )
    assert any(k.startswith("optimizer/") and k.endswith("exp_avg_sq") for k in tensors)
    assert sorted(tensors["epoch/order"].tolist()) == list(range(256))
    assert meta["scheduler"]["last_epoch"] == 8 + 3
    assert len(meta["rng"]["python"][1]) == 625


def test_resume_is_refused_when_config_or_data_changed(tiny_dataset, tmp_path, signal_at_step):
    signal_at_step(signal.SIGINT, 3)
    with pytest.raises(TrainingInterrupted):
        train(tiny_config(), tiny_dataset, run_dir=tmp_path / "r", log=None)
    before = (tmp_path / "r" / CHECKPOINT_FILE).read_bytes()
    with pytest.raises(VaelabError, match="config.json has changed"):
        train(tiny_config(lr=1e-2), tiny_dataset, run_dir=tmp_path / "r", resume=True, log=None)
    changed = tiny_dataset.train_images.tensor()
    changed[0, 0] = 1.0 - changed[0, 0]
    changed_dataset = replace(tiny_dataset, train_images=changed)
    with pytest.raises(VaelabError, match="data differ"):
        train(tiny_config(), changed_dataset, run_dir=tmp_path / "r", resume=True, log=None)
    assert (tmp_path / "r" / CHECKPOINT_FILE).read_bytes() == before


def test_the_loss_is_read_every_few_steps_and_a_bad_step_is_found_afterwards(
    tiny_dataset, monkeypatch
):
    reads = []
    check = RunGuard._check_losses

    def counting(guard, epoch, step):
        reads.append((epoch, step))
        check(guard, epoch, step)

    monkeypatch.setattr(guard_module, "LOSS_CHECK_EVERY", 3)
    monkeypatch.setattr(RunGuard, "_check_losses", counting)
    train(tiny_config(epochs=1), tiny_dataset, log=None)
    assert reads == [(1, 3), (1, 6), (1, 8)]  # 8 steps per epoch: every 3rd and the last

    reads.clear()
    with pytest.raises(NonFiniteLoss, match=r"became (NaN|infinite) at epoch 1, step 2 of 8;"):
        train(tiny_config(lr=1e6), tiny_dataset, log=None)  # read at step 3, found at step 2
    assert reads == [(1, 3)]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_dataset, tmp_path):
    run = tmp_path / "r"
    with pytest.raises(NonFiniteLoss) as info:
        train(tiny_config(lr=1e6), tiny_dataset, run_dir=run, log=None, checkpoint_every=1)
    message = str(info.value)
    assert re.match(r"the loss became (NaN|infinite) at epoch 1, step 2 of 8; training stopped",
                    message)  # fmt: skip
    assert f"last good checkpoint (at epoch 1, step 1) is kept in {run}" in message
    assert info.value.exit_code == 3
    assert not (run / rundir.WEIGHTS_FILE).exists()
    tensors, _ = read_safetensors(run / CHECKPOINT_FILE)
    assert all(torch.isfinite(t).all() for k, t in tensors.items() if k.startswith("model/"))


def test_non_finite_weights_are_never_saved(tiny_dataset, tmp_path, monkeypatch):
    """A step can break the weights while its loss was finite: the save refuses them."""
    original = RunGuard._save

    def poison_then_save(self, progress):
        if self.state.epochs_done == 1:
            with torch.no_grad():
                self.parts.model.mu_head.weight[0, 0] = float("inf")
        return original(self, progress)

    monkeypatch.setattr(RunGuard, "_save", poison_then_save)
    with pytest.raises(NonFiniteLoss, match=r"the weights \(mu_head.weight\) became non-finite"):
        train(tiny_config(), tiny_dataset, run_dir=tmp_path / "r", log=None)
    # Only the checkpoint of the start existed: the failed attempt leaves no run directory.
    assert not (tmp_path / "r").exists()


def test_non_finite_loss_without_a_run_directory_stops_training(tiny_dataset):
    with pytest.raises(NonFiniteLoss, match="at epoch 1, step 2 of 8; training stopped"):
        train(tiny_config(lr=1e6), tiny_dataset, log=None)


def test_failed_checkpoint_write_keeps_the_earlier_one(tiny_dataset, tmp_path, monkeypatch):
    run = tmp_path / "r"
    train(tiny_config(), tiny_dataset, run_dir=tmp_path / "ref", log=None)
    real_fsync, writes = os.fsync, {"n": 0}

    def disk_full_on_the_fourth_write(fd):
        writes["n"] += 1
        if writes["n"] == 7:  # each write fsyncs its file, then the directory: 4th file's fsync
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    # writes: config.json, the first checkpoint, the checkpoint at step 3, then at step 6 (fails)
    monkeypatch.setattr(os, "fsync", disk_full_on_the_fourth_write)
    with pytest.raises(VaelabError) as info:
        train(tiny_config(), tiny_dataset, run_dir=run, log=None, checkpoint_every=3)
    assert str(info.value) == (
        f"{run / CHECKPOINT_FILE}: could not write (No space left on device); "
        "the previous version is kept"
    )
    assert sorted(p.name for p in run.iterdir()) == [CHECKPOINT_FILE, "config.json"]
    assert (checkpoint_meta(run)["epochs_done"], checkpoint_meta(run)["step"]) == (0, 3)
    monkeypatch.undo()
    train(tiny_config(), tiny_dataset, run_dir=run, resume=True, log=None)
    assert_same_run(tmp_path / "ref", run)


def test_overwrite_removes_the_earlier_runs_files_but_not_the_users(
    tiny_dataset, tmp_path, signal_at_step
):
    signal_at_step(signal.SIGINT, 5)
    with pytest.raises(TrainingInterrupted):
        train(tiny_config(), tiny_dataset, run_dir=tmp_path / "r", log=None)
    (tmp_path / "r" / "notes.txt").write_text("mine")
    rundir.prepare_run_dir(tmp_path / "r", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["notes.txt"]


def test_resume_removes_temp_files_a_crash_left(tiny_dataset, tmp_path):
    train(tiny_config(epochs=1), tiny_dataset, run_dir=tmp_path / "r", log=None)
    stale = tmp_path / "r" / f".{CHECKPOINT_FILE}.x1y2.tmp"
    stale.write_bytes(b"half a checkpoint")
    rundir.prepare_run_dir(tmp_path / "r", resume=True)
    assert not stale.exists()


def test_a_foreign_checkpoint_is_refused(tiny_dataset, tmp_path):
    """Valid safetensors without vaelab's record, or a pickle under the checkpoint's name."""
    train(tiny_config(epochs=1), tiny_dataset, run_dir=tmp_path / "r", log=None)
    path = tmp_path / "r" / CHECKPOINT_FILE
    path.write_bytes(save({"x": torch.zeros(2)}))
    with pytest.raises(VaelabError, match="not a vaelab training checkpoint"):
        train(tiny_config(epochs=1), tiny_dataset, run_dir=tmp_path / "r", resume=True, log=None)
    torch.save({"x": torch.zeros(2)}, path)
    with pytest.raises(VaelabError, match=r"torch.save \(zip\) file, not safetensors; refused"):
        train(tiny_config(epochs=1), tiny_dataset, run_dir=tmp_path / "r", resume=True, log=None)


# ---------------------------------------------------------------- real processes

STEPS_OPTIONS = [
    "--epochs", "5", "--batch-size", "10", "--test-batch-size", "50", "--hidden", "8,4",
    "--lr", "3e-3", "--seed", "3", "--device", "cpu", "--no-plots",
]  # fmt: skip
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def vaelab(work: Path, *args: str) -> subprocess.Popen:
    return start_vaelab("train", *args, cwd=work, env=ENV)


def new_checkpoint(path: Path, since: int, process: subprocess.Popen) -> bool:
    """Wait until `path` is newer than `since` (the process is training); False if it ended."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_mtime_ns != since:
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.005)
    raise AssertionError("no checkpoint within 120 s")


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """An uninterrupted run (checkpoints only at epoch ends) on 300 CSV images, 150 steps."""
    work = tmp_path_factory.mktemp("reference")
    train_csv, test_csv = csv_pair(work)
    process = vaelab(work, *STEPS_OPTIONS, "--train-csv", train_csv, "--test-csv", test_csv,
                     "--name", "ref")  # fmt: skip
    done = finish(process)
    assert done.returncode == 0, done.stderr
    return work / "runs" / "ref"


@pytest.mark.slow
@pytest.mark.parametrize("loader", [(), ("--loader", "stream", "--workers", "2")])
def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path, reference_run, loader):
    """Also with batches read by DataLoader workers: the reference read them in its process."""
    train_csv, test_csv = csv_pair(tmp_path)
    run = tmp_path / "runs" / "cut"
    path = run / CHECKPOINT_FILE
    chooser = random.Random(1201)  # the kill moments vary with timing, not with the clock
    args = [*STEPS_OPTIONS, *loader, "--checkpoint-every", "2", "--train-csv", train_csv,
            "--test-csv", test_csv, "--name", "cut"]  # fmt: skip
    kills, positions = 0, []
    for _attempt in range(8):
        since = path.stat().st_mtime_ns if path.exists() else 0
        process = vaelab(tmp_path, *args)
        if kills < 4 and new_checkpoint(path, since, process):
            time.sleep(chooser.uniform(0, 0.25))
            process.send_signal(signal.SIGKILL)
        err = finish(process).stderr
        if process.returncode == 0:
            break
        assert process.returncode == -signal.SIGKILL, err
        kills += 1
        meta = checkpoint_meta(run)  # whole: the previous checkpoint or the new one
        positions.append((meta["epochs_done"], meta["step"]))
        args = ["--resume", str(run.relative_to(tmp_path)), "--checkpoint-every", "2"]
    print(f"killed at random moments; checkpoints then at (epochs done, step): {positions}")
    assert kills >= 3, f"only {kills} kills landed during training: {positions}"
    assert process.returncode == 0
    assert_same_run(reference_run, run)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_exit_130_and_143_with_how_to_resume(tmp_path, signum, reference_run):
    train_csv, test_csv = csv_pair(tmp_path)
    process = vaelab(tmp_path, *STEPS_OPTIONS, "--checkpoint-every", "1", "--train-csv",
                     train_csv, "--test-csv", test_csv, "--name", "r")  # fmt: skip
    assert new_checkpoint(tmp_path / "runs" / "r" / CHECKPOINT_FILE, 0, process)
    process.send_signal(signum)
    err = finish(process).stderr
    assert process.returncode == 128 + signum
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"vaelab: stopped by {signal.Signals(signum).name} ")
    assert last.endswith("; checkpoint saved; resume with: vaelab train --resume runs/r")
    assert "Traceback" not in err
    if signum == signal.SIGTERM:
        resumed = finish(vaelab(tmp_path, "--resume", "runs/r"))
        assert resumed.returncode == 0, resumed.stderr
        assert_same_run(reference_run, tmp_path / "runs" / "r")


# ---------------------------------------------------------------- failed starts, finished runs


def test_a_start_that_fails_before_its_first_checkpoint_leaves_nothing(
    tiny_dataset, tmp_path, monkeypatch
):
    def full_disk(*_args, **_kwargs):
        raise VaelabError("checkpoint.safetensors: could not write (No space left on device)")

    monkeypatch.setattr("vaelab.training.guard.save_checkpoint", full_disk)
    with pytest.raises(VaelabError, match="No space left"):
        train(tiny_config(epochs=1), tiny_dataset, run_dir=tmp_path / "r", log=None)
    assert not (tmp_path / "r").exists()
    monkeypatch.undo()
    train(tiny_config(epochs=1), tiny_dataset, run_dir=tmp_path / "r", log=None)  # no "exists"
    assert (tmp_path / "r" / rundir.WEIGHTS_FILE).is_file()


def test_a_non_finite_loss_before_any_progress_checkpoint_leaves_nothing(tiny_dataset, tmp_path):
    run = tmp_path / "r"
    with pytest.raises(NonFiniteLoss) as info:
        train(tiny_config(lr=1e6), tiny_dataset, run_dir=run, log=None)
    assert f"nothing was checkpointed past the start, so {run} keeps nothing" in str(info.value)
    assert not run.exists()
    train(tiny_config(epochs=1), tiny_dataset, run_dir=run, log=None)


def test_a_failed_overwrite_keeps_the_users_files_and_removes_its_own(tiny_dataset, tmp_path):
    run = tmp_path / "r"
    train(tiny_config(epochs=1), tiny_dataset, run_dir=run, log=None)
    (run / "notes.txt").write_text("mine")
    with pytest.raises(NonFiniteLoss):
        train(tiny_config(lr=1e6), tiny_dataset, run_dir=run, overwrite=True, log=None)
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]


def test_overwrite_removes_every_file_vaelab_wrote_and_nothing_else(tiny_dataset, tmp_path):
    run = tmp_path / "r"
    train(tiny_config(epochs=1), tiny_dataset, run_dir=run, log=None)
    figures = run / rundir.FIGURES_DIR
    figures.mkdir()
    for name in (*rundir.FIGURE_FILES, ".latent.png.k3j.tmp"):
        (figures / name).write_bytes(b"drawn")
    written = (rundir.EVAL_FILE, rundir.REPORT_FILE, rundir.FIGURES_RECORD, ".eval.json.a1.tmp")
    for name in (*written, ".report.html.b.tmp", ".figures.json.c.tmp"):
        (run / name).write_text("written")
    (run / "notes.txt").write_text("mine")
    (figures / "mine.png").write_bytes(b"mine")
    rundir.prepare_run_dir(run, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == ["figures", "notes.txt"]
    assert [p.name for p in figures.iterdir()] == ["mine.png"]
    (figures / "mine.png").unlink()
    train(tiny_config(epochs=1), tiny_dataset, run_dir=run, overwrite=True, log=None)
    assert not figures.exists()  # emptied of vaelab's files, the folder goes too


def test_the_next_writer_removes_temp_files_a_kill_left(tiny_dataset, tmp_path):
    """SIGKILL during an eval.json, figure or report write leaves `.NAME.*.tmp`."""
    run = tmp_path / "r"
    train(tiny_config(epochs=1), tiny_dataset, run_dir=run, log=None)
    (run / "figures").mkdir()
    stale = [
        run / ".eval.json.x1y2.tmp",
        run / ".report.html.q9.tmp",
        run / "figures" / ".manifold.png.z8.tmp",
    ]
    for path in stale:
        path.write_bytes(b"half")
    (run / ".mine.tmp").write_text("a user's file")
    with rundir.run_lock(run):
        pass
    assert not any(path.exists() for path in stale)
    assert (run / ".mine.tmp").exists()
    assert not (run / rundir.LOCK_FILE).exists()  # the lock file goes with the lock


def test_resume_of_a_finished_run_says_there_is_nothing_to_do(tiny_dataset, tmp_path):
    run = tmp_path / "r"
    train(tiny_config(epochs=1), tiny_dataset, run_dir=run, log=None)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(NothingToResume, match="finished all 1 epochs already; nothing to resume"):
        train(tiny_config(epochs=1), tiny_dataset, run_dir=run, resume=True, log=None)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_resume_of_a_run_killed_before_saving_its_weights_saves_them(tiny_dataset, tmp_path):
    run = tmp_path / "r"
    first = train(tiny_config(epochs=1), tiny_dataset, run_dir=run, log=None)
    (run / rundir.WEIGHTS_FILE).unlink()  # the last checkpoint was written, the weights not
    again = train(tiny_config(epochs=1), tiny_dataset, run_dir=run, resume=True, log=None)
    weights = rundir.read_tensors(run / rundir.WEIGHTS_FILE)
    assert all(torch.equal(weights[k], v) for k, v in first.model.state_dict().items())
    assert len(again.history) == 1


def _files(run_dir: Path) -> dict[str, bytes]:
    """Every file under `run_dir` (tensorboard/ too) by its path there, with its bytes."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


def test_cli_resume_of_a_finished_run_exits_0_with_one_line(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    train_csv, test_csv = csv_pair(tmp_path)
    common = ["--epochs", 1, "--batch-size", 50, "--hidden", "8,4", "--device", "cpu"]
    made = cli("train", *common, "--train-csv", train_csv, "--test-csv", test_csv, "--name", "r",
               "--no-plots")  # fmt: skip
    assert made.code == 0, made.err
    before = _files(tmp_path / "runs" / "r")
    resumed = cli("train", "--resume", "runs/r")
    assert resumed.code == 0 and resumed.err == ""
    lines = resumed.out.splitlines()
    assert lines[-1] == (
        "runs/r: finished all 1 epochs already; nothing to resume (--epochs above 1 trains it "
        "further)"
    )
    assert not any("resuming" in line or "saved" in line for line in lines)
    assert _files(tmp_path / "runs" / "r") == before


def test_extending_a_constant_lr_run_equals_training_it_that_long_at_once(tiny_dataset, tmp_path):
    constant = {"lr_schedule": "constant"}
    train(tiny_config(epochs=2, **constant), tiny_dataset, run_dir=tmp_path / "short", log=None)
    notes = []
    extended = train(
        tiny_config(epochs=3, **constant), tiny_dataset, run_dir=tmp_path / "short", resume=True,
        log=notes.append,
    )  # fmt: skip
    train(tiny_config(epochs=3, **constant), tiny_dataset, run_dir=tmp_path / "long", log=None)
    assert_same_run(tmp_path / "short", tmp_path / "long")
    assert [row.epoch for row in extended.history] == [1, 2, 3]
    assert rundir.load_config(tmp_path / "short").train.epochs == 3
    assert any("extending the run from 2 to 3 epochs" in note for note in notes)


def test_an_extension_follows_the_longer_schedule_from_the_current_step(
    tiny_dataset, tmp_path, monkeypatch
):
    from vaelab.training.epoch import lr_factor

    run = tmp_path / "r"
    # autograd's loop calls Adam.step, where the rate of each step is seen
    train(tiny_config(epochs=3, backward="autograd"), tiny_dataset, run_dir=run, log=None)
    seen: list[float] = []
    original = torch.optim.Adam.step

    class Training(Callback):  # steps of the loop only (loading a checkpoint steps a scratch Adam)
        on = False

        def on_epoch_start(self, epoch, steps):
            Training.on = True

    def step(self, *args, **kwargs):
        if Training.on:
            seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    train(tiny_config(epochs=6, backward="autograd"), tiny_dataset, run_dir=run, resume=True,
          log=None, callbacks=[Training()])  # fmt: skip
    steps = 256 // 32
    expected = [3e-3 * lr_factor("cosine-tail", s, 6 * steps) for s in range(3 * steps, 6 * steps)]
    assert seen == pytest.approx(expected)
    assert seen[0] == pytest.approx(3e-3)  # the 6-epoch schedule holds the full rate at step 24


def test_a_resume_cannot_shorten_a_run_or_change_other_settings(tiny_dataset, tmp_path):
    run = tmp_path / "r"
    train(tiny_config(epochs=2), tiny_dataset, run_dir=run, log=None)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(VaelabError, match="not shorten it: epochs=1 is below the 2 it is set for"):
        train(tiny_config(epochs=1), tiny_dataset, run_dir=run, resume=True, log=None)
    with pytest.raises(VaelabError, match="config.json has changed"):
        train(tiny_config(epochs=3, lr=1e-3), tiny_dataset, run_dir=run, resume=True, log=None)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_cli_resume_with_epochs_trains_the_run_further(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    train_csv, test_csv = csv_pair(tmp_path)
    common = ["--batch-size", 50, "--hidden", "8,4", "--device", "cpu", "--no-plots"]
    made = cli("train", "--epochs", 1, *common, "--train-csv", train_csv, "--test-csv", test_csv,
               "--name", "r")  # fmt: skip
    assert made.code == 0, made.err
    extended = cli("train", "--resume", "runs/r", "--epochs", 2, "--no-plots")
    assert extended.code == 0, extended.err
    assert "extending the run from 1 to 2 epochs" in extended.out
    assert [row["epoch"] for row in rundir.read_metrics(tmp_path / "runs" / "r")] == [1, 2]
    refused = cli("train", "--resume", "runs/r", "--epochs", 2, "--lr", 0.1)
    assert refused.code == 2 and "drop --lr" in refused.err
    shorter = cli("train", "--resume", "runs/r", "--epochs", 1)
    assert shorter.code == 2
    assert shorter.err == (
        "vaelab: error: runs/r: a resume can extend a run, not shorten it: --epochs=1 is below "
        "the 2 it is set for\n"
    )
