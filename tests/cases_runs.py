"""Bad-input cases of one group (see tests/bad_input_cases.py, which gathers every group)."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from tests.bad_input_cases import Case, csv_pair, saved_run, train_csv_args, trained_run

# Locks held by the cases below on behalf of "another process": flock(2) locks of one process
# still conflict with each other when taken through different open files.
_HOLDERS: list[int] = []


def hold_lock(run: Path, name: str = ".lock") -> Path:
    """Lock RUN/NAME as a writer of the run (or a sweep of the folder) would, with this process's
    PID in it."""
    run.mkdir(parents=True, exist_ok=True)
    fd = os.open(run / name, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HOLDERS.append(fd)
    return run


def busy_trained_run(work: Path) -> Path:
    return hold_lock(trained_run(work))


def killed_before_first_checkpoint(work: Path) -> Path:
    """runs/r as a start SIGKILLed before its first checkpoint leaves it: config.json only."""
    train_csv, test_csv = csv_pair(work)
    run = work / "runs" / "r"
    run.mkdir(parents=True)
    config = {
        "model": {"hidden": [8, 4], "input_dim": 16},
        "data": {"train_csv": train_csv, "test_csv": test_csv},
        "train": {"epochs": 1, "batch_size": 50, "test_batch_size": 50},
    }
    (run / "config.json").write_text(json.dumps(config))
    return run


def config_json_is_a_directory(work: Path) -> Path:
    run = saved_run(work)
    (run / "config.json").unlink()
    (run / "config.json").mkdir()
    return run


BUSY = r"runs/r: another vaelab process \(PID \d+\) is writing this run directory; wait for it"

# fmt: off
CASES: list[Case] = [
    Case("run directory", "train into a run another process is writing",
         lambda w: (hold_lock(w / "runs" / "r"), train_csv_args(w))[1], BUSY, "runs/r"),
    Case("run directory", "--overwrite of a run another process is writing",
         lambda w: (busy_trained_run(w), train_csv_args(w, "--overwrite"))[1], BUSY, "runs/r"),
    Case("resume", "--resume of a run still training",
         lambda w: (busy_trained_run(w), ["train", "--resume", "runs/r", "--no-plots"])[1],
         BUSY, "runs/r"),
    Case("run directory", "evaluate writing into a run being trained",
         lambda w: (busy_trained_run(w), [
             "evaluate", "runs/r", "--iw-samples", "2", "--device", "cpu"])[1],
         BUSY, "runs/r"),
    Case("run directory", "report writing into a run being trained",
         lambda w: (busy_trained_run(w), ["report", "runs/r"])[1], BUSY, "runs/r"),
    Case("resume", "--resume of a start killed before its first checkpoint",
         lambda w: (killed_before_first_checkpoint(w), ["train", "--resume", "runs/r"])[1],
         "runs/r: stopped before its first checkpoint .no checkpoint.safetensors.; nothing to "
         "resume; start it again with --overwrite", "runs/r"),
    Case("run directory", "train into a start killed before its first checkpoint",
         lambda w: (killed_before_first_checkpoint(w), train_csv_args(w))[1],
         "runs/r: run directory already exists; pass --overwrite", "runs/r"),
    Case("resume", "--resume with fewer --epochs than the run is set for",
         lambda w: (trained_run(w), ["train", "--resume", "runs/r", "--epochs", "1"])[1],
         "runs/r: a resume can extend a run, not shorten it: --epochs=1 is below the 2 it is set "
         "for", "--epochs"),
    Case("run directory", "config.json is a directory",
         lambda w: (config_json_is_a_directory(w), ["evaluate", "runs/old", "--device", "cpu"])[1],
         "runs/old/config.json: is a directory", "runs/old/config.json"),
]
# fmt: on
