"""Who writes a run directory: it is created atomically (mkdir, never check-then-create) and held
by a kernel lock (flock on RUN/.lock) while one process writes it; overwriting removes every
file vaelab wrote there."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from vaelab._io import remove_stale_temp_files
from vaelab._outputs import check_output_folder, is_vaelab_run
from vaelab.errors import VaelabError
from vaelab.rundir.files import (
    _PROBE_FILE,
    CHECKPOINT_FILE,
    CONFIG_FILE,
    EVENTS_PREFIX,
    FIGURE_FILES,
    FIGURES_DIR,
    LOCK_FILE,
    TENSORBOARD_DIR,
    VAELAB_FILES,
    WEIGHTS_FILE,
    check_run_paths,
)


class RunExists(VaelabError):
    """A run directory that already holds a run, and neither overwrite nor resume was asked for."""

    def __init__(self, run_dir: Path, resumable: bool) -> None:
        hint = ", or resume=True to continue it" if resumable else ""
        super().__init__(
            f"{run_dir}: run directory already exists; pass overwrite=True to replace it{hint}",
            parameters=("overwrite", "resume"),
        )
        self.run_dir = run_dir
        self.resumable = resumable


class RunBusy(VaelabError):
    """Another process holds the run directory's lock: it is writing that run now."""

    def __init__(self, run_dir: Path, pid: int | None) -> None:
        holder = f"PID {pid}" if pid is not None else "PID unknown"
        super().__init__(
            f"{run_dir}: another vaelab process ({holder}) is writing this run directory; "
            "wait for it to finish or stop it"
        )
        self.run_dir = run_dir
        self.pid = pid


# ---------------------------------------------------------------- the lock of a run directory

# Locks this process holds: resolved run directory -> [file descriptor, depth]. A process that
# already holds a run's lock may take it again (train, then draw the figures of the same run).
_HELD: dict[str, list[int]] = {}


def _lock_holder(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class LockState(NamedTuple):
    """Whether a live process holds a run directory's lock, and its PID when the lock says it."""

    held: bool
    pid: int | None


def lock_state(run_dir: str | Path) -> LockState:
    """Whether a live process holds RUN/.lock now: asked without waiting, and without creating it.

    A shared flock is tried without blocking and dropped at once: refused means a writer holds
    the lock (the kernel drops the lock of a process that died, so a lock is never stale). For
    the microseconds the probe holds it, a writer starting at that instant is refused as busy.
    """
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return LockState(False, None)  # no lock file (or a link): nobody writes the run
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        held = exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES)
        return LockState(held, _lock_holder(fd) if held else None)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return LockState(False, None)
    finally:
        os.close(fd)


def _acquire(run_dir: Path, lock_file: str = LOCK_FILE) -> int:
    """flock RUN/.lock without waiting and write this PID into it; refuse if another holds it.

    The kernel releases the lock when its holder dies, even by SIGKILL, so it is never stale.
    A lock file unlinked by its previous holder between our open and our flock is opened again.
    """
    if not run_dir.is_dir():
        raise VaelabError(f"{run_dir}: run directory not found")
    path = run_dir / lock_file
    for _ in range(10):
        fd = _open_lock_file(path, run_dir)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            pid = _lock_holder(fd)
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                raise RunBusy(run_dir, pid) from None
            raise VaelabError(
                f"{run_dir}: cannot lock the run directory ({exc.strerror})"
            ) from None
        try:
            current = os.path.samestat(os.fstat(fd), os.stat(path))
        except OSError:
            current = False
        if current:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            return fd
        os.close(fd)
    raise VaelabError(f"{run_dir}: cannot lock the run directory (its lock file keeps changing)")


# A lock file is opened without following a link (a user's file it leads to would get our PID)
# and without waiting on a pipe; what is not a regular file is refused.
_LOCK_OPEN = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK


def _open_lock_file(path: Path, run_dir: Path) -> int:
    """The descriptor of the lock file `path`, created if missing; one line if it is a link, a
    pipe, a folder or anything else than a regular file."""
    try:
        fd = os.open(path, _LOCK_OPEN, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise VaelabError(
                f"{path}: is a symbolic link, and vaelab keeps the lock of {run_dir} here; move "
                "it away"
            ) from None
        if exc.errno == errno.EISDIR:
            raise _not_a_lock_file(path, run_dir) from None
        raise VaelabError(f"{run_dir}: cannot write the run directory ({exc.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _not_a_lock_file(path, run_dir)
    return fd


def _not_a_lock_file(path: Path, run_dir: Path) -> VaelabError:
    return VaelabError(
        f"{path}: is not a file, and vaelab keeps the lock of {run_dir} here; move it away"
    )


def _release(run_dir: Path, fd: int, lock_file: str = LOCK_FILE) -> None:
    try:
        (run_dir / lock_file).unlink(missing_ok=True)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold the run directory's lock while writing it; another writer is refused at once.

    The lock is RUN/.lock, locked with flock(2) and holding the PID of its holder; the kernel
    releases it when the process ends however it ends. Taking it removes the temporary files
    that a write cut short by a crash left (`.NAME.*.tmp`). Reentrant within one process.
    """
    run_dir = Path(run_dir)
    key = str(run_dir.resolve())
    held = _HELD.get(key)
    if held is not None:
        held[1] += 1
        try:
            yield run_dir
        finally:
            held[1] -= 1
        return
    fd = _acquire(run_dir)
    _HELD[key] = [fd, 1]
    try:
        remove_temp_files(run_dir)
        yield run_dir
    finally:
        del _HELD[key]
        _release(run_dir, fd)


@contextmanager
def folder_lock(folder: Path, lock_file: str) -> Iterator[Path]:
    """Hold FOLDER/LOCK_FILE as `run_lock` holds a run's (flock, this PID in it, released however
    the process ends), for a folder of vaelab's that is not a run; RunBusy when another holds it."""
    fd = _acquire(folder, lock_file)
    try:
        yield folder
    finally:
        _release(folder, fd, lock_file)


def remove_temp_files(run_dir: Path) -> None:
    """Remove what writes of vaelab's files that a crash cut short left (`.NAME.*.tmp`)."""
    remove_stale_temp_files(run_dir, (*VAELAB_FILES, _PROBE_FILE))
    figures = run_dir / FIGURES_DIR
    if figures.is_dir():
        remove_stale_temp_files(figures, FIGURE_FILES)


def remove_run_files(run_dir: Path) -> None:
    """Remove every file vaelab wrote in `run_dir`, and nothing else (a user's files stay)."""
    for name in (*VAELAB_FILES, _PROBE_FILE):
        (run_dir / name).unlink(missing_ok=True)
    figures = run_dir / FIGURES_DIR
    if figures.is_dir():
        for name in FIGURE_FILES:
            (figures / name).unlink(missing_ok=True)
        remove_stale_temp_files(figures, FIGURE_FILES)
        with suppress(OSError):
            figures.rmdir()  # only when empty: a user's file there keeps it
    _remove_event_files(run_dir / TENSORBOARD_DIR)
    remove_temp_files(run_dir)


def _remove_event_files(folder: Path) -> None:
    """Remove the TensorBoard event files in `folder` and its subfolders (events.out.tfevents.*,
    which only TensorBoard's writer names so), then each folder left empty: a file of the user's
    there stays, and so do the folders that hold it. Links are not followed."""
    if folder.is_symlink() or not folder.is_dir():
        return
    folders = [folder]
    for parent, subfolders, files in os.walk(folder):  # os.walk follows no link to a folder
        folders += [Path(parent) / name for name in subfolders]
        for name in files:
            path = Path(parent) / name
            if name.startswith(EVENTS_PREFIX) and not path.is_symlink():
                path.unlink(missing_ok=True)
    for empty in sorted(folders, key=lambda path: len(path.parts), reverse=True):
        with suppress(OSError):
            empty.rmdir()  # only when empty


def _names_run_files(run_dir: Path) -> bool:
    """Whether `run_dir` holds anything `remove_run_files` would remove."""
    figures = run_dir / FIGURES_DIR
    return (
        any((run_dir / name).exists() for name in VAELAB_FILES)
        or any((figures / name).exists() for name in FIGURE_FILES)
        or (run_dir / TENSORBOARD_DIR).exists()
    )


def _holds_something(run_dir: Path) -> bool:
    """Whether `run_dir` holds anything besides the lock and what crashed writes left."""
    remove_temp_files(run_dir)
    return any(p.name not in (LOCK_FILE, _PROBE_FILE) for p in run_dir.iterdir())


@dataclass
class Claim:
    """A run directory this process holds for writing (see `claim_run_dir`).

    `created`: this attempt made the directory. `keep`: what the attempt wrote stays if it
    fails; it starts True for a resumed run and is set by the training loop otherwise.
    """

    run_dir: Path
    created: bool
    keep: bool


def _make_dir(run_dir: Path) -> bool:
    """Create `run_dir` atomically (mkdir without exist_ok); False when it was already there."""
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        run_dir.mkdir()
        return True
    except FileExistsError:
        if not run_dir.is_dir():
            raise VaelabError(f"{run_dir}: exists and is not a directory") from None
        return False
    except OSError as exc:
        raise VaelabError(f"{run_dir}: cannot write the run directory ({exc.strerror})") from None


def _probe(run_dir: Path) -> None:
    try:
        probe = run_dir / _PROBE_FILE
        probe.unlink(missing_ok=True)  # a leftover, or a link: never written through
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise VaelabError(f"{run_dir}: cannot write the run directory ({exc.strerror})") from None


def _check_resumable(run_dir: Path) -> None:
    if (run_dir / CHECKPOINT_FILE).is_file():
        return
    if not run_dir.is_dir():
        raise VaelabError(f"{run_dir}: run directory not found; nothing to resume")
    if (run_dir / WEIGHTS_FILE).is_file() or not (run_dir / CONFIG_FILE).is_file():
        raise VaelabError(f"{run_dir}: no {CHECKPOINT_FILE}; nothing to resume")
    raise VaelabError(
        f"{run_dir}: stopped before its first checkpoint (no {CHECKPOINT_FILE}); nothing to "
        "resume; start it again with overwrite=True",
        parameters=("overwrite",),
    )


@contextmanager
def claim_run_dir(run_dir: Path, overwrite: bool = False, resume: bool = False) -> Iterator[Claim]:
    """Create `run_dir` (or reopen it to resume), lock it, and check that it can be written.

    A new directory is made by one atomic mkdir, so of two processes starting the same run one
    wins. A directory that already holds something is refused unless `overwrite` (which removes
    every file vaelab wrote there, and nothing else) or `resume` (which needs its checkpoint);
    another process writing it is refused at once, naming its PID. If the body fails and
    `Claim.keep` is False, what this attempt wrote is removed again (and the directory, if this
    attempt made it and nothing else is in it), so a failed start does not block the next one.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise VaelabError(f"{run_dir}: exists and is not a directory")
    if resume:
        if not run_dir.is_dir():
            _check_resumable(run_dir)  # says it is not found
        created = False
    else:
        check_output_folder(run_dir.parent, "runs_dir")  # not a run inside another run
        created = _make_dir(run_dir)
    claim = Claim(run_dir, created, keep=resume)
    try:
        with run_lock(run_dir):  # before anything else: a run being written is refused at once
            _probe(run_dir)
            if not created:
                check_run_paths(run_dir)
            if resume:
                _check_resumable(run_dir)
            elif not created and _holds_something(run_dir):
                if not overwrite:
                    raise RunExists(run_dir, resumable=(run_dir / CHECKPOINT_FILE).is_file())
                if not is_vaelab_run(run_dir) and _names_run_files(run_dir):
                    raise VaelabError(  # a folder of the user's: its config.json stays
                        f"{run_dir}: holds files but no vaelab run, so overwrite=True leaves it "
                        "as it is (it replaces only a run directory)",
                        parameters=("overwrite",),
                    )
                remove_run_files(run_dir)
            try:
                yield claim
            except BaseException:
                if not claim.keep:
                    remove_run_files(run_dir)
                raise
    except BaseException:
        if claim.created and not claim.keep:
            with suppress(OSError):
                run_dir.rmdir()  # only when empty
        raise


def prepare_run_dir(run_dir: Path, overwrite: bool = False, resume: bool = False) -> Path:
    """Create `run_dir` (or reopen it to resume) and check that it can be written.

    A directory that already holds something is refused unless `overwrite` (which removes the
    earlier run's files) or `resume` (which needs its checkpoint). See `claim_run_dir`, which
    also keeps the directory locked while it is written.
    """
    with claim_run_dir(run_dir, overwrite, resume) as claim:
        claim.keep = True
    return run_dir
