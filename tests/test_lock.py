"""Two processes on one run: the lock of a run directory, tested with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.bad_input_cases import csv_pair
from tests.helpers import finish, run_vaelab, start_vaelab
from vaelab import rundir

pytestmark = pytest.mark.slow

TRAIN = ["train", "--batch-size", "50", "--test-batch-size", "50", "--hidden", "8,4"]
TRAIN += ["--device", "cpu", "--no-plots", "--runs-dir", "runs", "--name", "r"]


def train_args(work: Path, *options: str) -> list[str]:
    train_csv, test_csv = csv_pair(work)
    return [*TRAIN, *options, "--train-csv", train_csv, "--test-csv", test_csv]


def wait_for(condition, what: str, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    return lines[0]


def test_a_second_writer_is_refused_naming_the_pid_and_a_killed_holder_leaves_no_lock(tmp_path):
    run = tmp_path / "runs" / "r"
    args = train_args(tmp_path, "--epochs", "100000")
    trainer = start_vaelab(*args, cwd=tmp_path)
    try:
        lock = run / rundir.LOCK_FILE
        wait_for(
            lambda: (
                (run / rundir.CHECKPOINT_FILE).is_file()
                and lock.is_file()
                and lock.read_text().strip() == str(trainer.pid)
            ),
            "the first checkpoint",
        )
        busy = f"runs/r: another vaelab process (PID {trainer.pid}) is writing this run directory"
        for attempt in (args, [*args, "--overwrite"], ["train", "--resume", "runs/r"]):
            assert one_line(run_vaelab(*attempt, cwd=tmp_path)).startswith(f"vaelab: error: {busy}")
        assert (run / rundir.CHECKPOINT_FILE).is_file() and trainer.poll() is None
    finally:
        trainer.send_signal(signal.SIGKILL)
        finish(trainer)
    assert (run / rundir.LOCK_FILE).read_text().strip() == str(trainer.pid)  # left behind...
    with rundir.run_lock(run):  # ...but not locked: the kernel released it with the process
        assert (run / rundir.LOCK_FILE).read_text().strip() == str(os.getpid())


def test_of_two_starts_of_one_run_exactly_one_wins(tmp_path):
    args = train_args(tmp_path, "--epochs", "2")
    both = [start_vaelab(*args, cwd=tmp_path) for _ in range(2)]
    results = [finish(process) for process in both]
    codes = sorted(result.returncode for result in results)
    assert codes == [0, 2], [result.stderr for result in results]
    loser = next(result for result in results if result.returncode == 2)
    line = one_line(loser)
    assert "runs/r: " in line and (
        "is writing this run directory" in line or "already exists" in line
    ), line
    assert (tmp_path / "runs" / "r" / rundir.WEIGHTS_FILE).is_file()
    assert not (tmp_path / "runs" / "r" / rundir.LOCK_FILE).exists()


def test_a_start_killed_before_its_first_checkpoint_is_handled_in_one_line(tmp_path):
    """SIGKILL between config.json and the first checkpoint: the next start says what to do."""
    run = tmp_path / "runs" / "r"
    args = train_args(tmp_path, "--epochs", "1")
    # Stand-in for the kill: config.json written, then the process dies before its checkpoint.
    code = (
        "import os, sys, vaelab.training.guard as g\n"
        "g.save_checkpoint = lambda *a, **k: os.kill(os.getpid(), 9)\n"
        "from vaelab.cli import main\n"
        f"sys.argv = ['vaelab', *{args!r}]\n"
        "main()\n"
    )
    killed = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    assert (run / rundir.CONFIG_FILE).is_file() and not (run / rundir.CHECKPOINT_FILE).exists()
    again = one_line(run_vaelab(*args, cwd=tmp_path))
    assert "runs/r: run directory already exists; pass --overwrite" in again
    resumed = one_line(run_vaelab("train", "--resume", "runs/r", cwd=tmp_path))
    assert "stopped before its first checkpoint" in resumed and "--overwrite" in resumed
    assert run_vaelab(*args, "--overwrite", cwd=tmp_path).returncode == 0
