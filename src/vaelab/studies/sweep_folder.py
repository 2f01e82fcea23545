"""A sweep's folder (RUNS_DIR/NAME): held by one sweep at a time, and recording its grid.

The folder is locked as a run directory is (flock on STUDY/.sweep.lock, holding the PID, released
by the kernel however the sweep ends), so a second sweep on it is refused at once instead of
starting the same runs and writing into the same logs. sweep.json records the grid, the seeds and
the train options; a sweep of another grid is refused there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from vaelab._io import atomic_write_text, parse_json, read_text
from vaelab._outputs import require_own_path
from vaelab.errors import VaelabError
from vaelab.rundir.lock import RunBusy, folder_lock
from vaelab.studies.runs import SWEEP_FILE, is_run_dir
from vaelab.studies.sweep import SweepPlan

SWEEP_LOCK_FILE = ".sweep.lock"
LOGS_DIR = "logs"  # STUDY/logs/RUN.log: what each run's `vaelab train` said


class SweepBusy(VaelabError):
    """Another process runs a sweep in this folder now."""

    def __init__(self, folder: Path, pid: int | None) -> None:
        holder = f"PID {pid}" if pid is not None else "PID unknown"
        super().__init__(
            f"{folder}: another vaelab sweep ({holder}) is running in this folder; wait for it "
            "to end or stop it (the same command then continues the sweep)"
        )
        self.folder = folder
        self.pid = pid


@contextmanager
def study_lock(folder: Path) -> Iterator[Path]:
    """Create the sweep's folder if need be and hold its lock for the body; SweepBusy at once
    when another process holds it."""
    if folder.exists() and not folder.is_dir():
        raise VaelabError(f"{folder}: exists and is not a directory")
    if is_run_dir(folder):
        raise VaelabError(f"{folder}: is a run directory, not a sweep's folder; give another "
                          "name", parameters=("name",))  # fmt: skip
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VaelabError(f"{folder}: cannot create the folder ({exc.strerror})") from None
    with ExitStack() as held:
        try:
            held.enter_context(folder_lock(folder, SWEEP_LOCK_FILE))
        except RunBusy as busy:
            raise SweepBusy(folder, busy.pid) from None
        yield folder


def claim_study(plan: SweepPlan) -> bool:
    """Write the study's sweep.json, or check that the one there is this sweep's; True when it
    was there already (the sweep continues). Called under `study_lock`."""
    folder, path = plan.study_dir, plan.study_dir / SWEEP_FILE
    check_study_paths(plan)
    if path.exists():
        saved = parse_json(read_text(path, "a JSON file"), path)
        if saved != plan.record():
            raise VaelabError(
                f"{path}: this study was started with another grid, seeds or options; run "
                "that sweep again to continue it, or give the new one another name",
                parameters=("name",),
            )
        return True
    if any(entry.name != SWEEP_LOCK_FILE for entry in folder.iterdir()):
        raise VaelabError(
            f"{folder}: holds files but no {SWEEP_FILE}; give another name", parameters=("name",)
        )
    atomic_write_text(path, json.dumps(plan.record(), indent=2) + "\n")
    return False


def check_study_paths(plan: SweepPlan) -> None:
    """Refuse a study whose own paths (sweep.json, logs/ and each run's log, each run's folder)
    are something else than the sweep's: a symbolic link, which would have a run or a log written
    where it leads, a pipe, on which a log would block the sweep, a folder where a file goes.
    Before any run starts."""
    folder = plan.study_dir
    _require_own(folder / SWEEP_FILE, folder=False)
    _require_own(folder / LOGS_DIR, folder=True)
    for run in plan.runs:
        _require_own(folder / LOGS_DIR / f"{run.name}.log", folder=False)
        _require_own(folder / run.name, folder=True)


def _require_own(path: Path, folder: bool) -> None:
    what = "folder" if folder else "file"
    require_own_path(path, folder, keeps=f"the sweep keeps a {what} of its own")
