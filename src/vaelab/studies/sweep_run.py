"""Running a sweep: each run a `python -m vaelab train` process, N at a time, each with its share
of the cores; a finished run is skipped, a stopped one resumed; SIGINT/SIGTERM/SIGHUP stop the
children cleanly (they checkpoint) and running the sweep again continues it. No run outlives its
sweep: a third stop signal kills the runs, and on Linux a sweep that dies any other way (SIGKILL)
has the kernel send each run SIGTERM. One sweep at a time holds the study's folder.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaelab._interrupt import handling_signals
from vaelab._outputs import COMPARE_PAGE, is_recorded_output
from vaelab._resources import cpu_count
from vaelab.errors import VaelabError
from vaelab.studies.compare_page import write_compare
from vaelab.studies.runs import FINISHED, INCOMPLETE, RUNNING, STOPPED, loss_text, summarize_run
from vaelab.studies.sweep import SweepPlan, SweepRun
from vaelab.studies.sweep_folder import LOGS_DIR, claim_study, study_lock
from vaelab.studies.sweep_memory import check_jobs_memory

COMPARE_FILE = "compare.html"
_POLL_S = 0.1
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# The stop signal that kills the runs and their DataLoader workers: the first is passed on (each
# run checkpoints after its step), the second too (each run stops at once), the third kills.
_KILL_AT_SIGNAL = 3
_END_GRACE_S = 30.0  # a run's time to checkpoint when the sweep fails, before it is killed
_PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent ends
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


class SweepInterrupted(VaelabError):
    """SIGINT or SIGTERM stopped the sweep; its runs checkpointed; the same sweep continues it."""

    def __init__(self, signum: int, finished: int, total: int, again: str) -> None:
        self.signal_name = signal.Signals(signum).name
        super().__init__(
            f"sweep stopped by {self.signal_name}: {finished} of {total} runs finished, the "
            f"others checkpointed where they were; continue with: {again}"
        )
        self.exit_code = 128 + signum


class SweepFailed(VaelabError):
    """Some runs of the sweep failed; the others finished."""

    exit_code = 1


@dataclass
class SweepResult:
    """How each run of a sweep ended: run name -> 'finished', 'failed: ...', 'busy: ...'."""

    outcomes: dict[str, str] = field(default_factory=dict)
    compare: Path | None = None
    table: str = ""

    @property
    def finished(self) -> list[str]:
        """The names of the runs that are finished."""
        return [name for name, how in self.outcomes.items() if how == FINISHED]


def threads_per_run(jobs: int) -> int:
    """Each of `jobs` runs' share of the cores this process may use (at least one)."""
    return max(1, cpu_count() // jobs)


def child_env(jobs: int) -> dict[str, str]:
    """The environment of a run: with more than one job, OMP/MKL threads set to its share of the
    cores unless OMP_NUM_THREADS is set already; one job keeps torch's own default."""
    env = dict(os.environ)
    if jobs > 1 and "OMP_NUM_THREADS" not in env:
        threads = str(threads_per_run(jobs))
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    return env


@dataclass
class _Child:
    run: SweepRun
    process: subprocess.Popen[bytes]
    started: float
    log: Path
    told: int = 0  # the stop signals passed on to it


class _Stop:
    """The stop signals the sweep received, passed on to every child it runs."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.received = 0
        self.children: list[_Child] = []

    def handle(self, signum: int, _frame: Any) -> None:
        self.signum = self.signum or signum
        self.received += 1
        self.pass_on()

    def pass_on(self) -> None:
        """Give each running child every stop signal received so far (one started as a signal
        came too); from the third on, kill its process group."""
        for child in list(self.children):
            while child.told < self.received and child.process.poll() is None:
                child.told += 1
                if child.told >= _KILL_AT_SIGNAL:
                    _kill_group(child.process)
                else:
                    child.process.send_signal(_passed_on(self.signum))

    @contextmanager
    def installed(self) -> Iterator[_Stop]:
        """Pass the stop signals on for the duration (main thread only; elsewhere a no-op)."""
        with handling_signals(_STOP_SIGNALS, self.handle):
            yield self


def run_sweep(
    plan: SweepPlan,
    jobs: int = 1,
    again: str = "the same vaelab sweep command",
    say: Callable[[str], None] = print,
) -> SweepResult:
    """Run every run of `plan` not finished yet, `jobs` at a time; then write STUDY/compare.html.

    Raises SweepInterrupted when a stop signal came (`again` is the command the message tells
    the user to run), SweepFailed when a run failed, after the other runs ended.
    """
    if not 1 <= jobs <= cpu_count():
        raise VaelabError(
            f"jobs {jobs}: runs at once must be from 1 to the {cpu_count()} cores this "
            "process may use (each run needs one)",
            parameters=("jobs",),
        )
    check_jobs_memory(plan, jobs)
    with study_lock(plan.study_dir):
        continued = claim_study(plan)
        _check_compare_page(plan.study_dir / COMPARE_FILE)
        total = len(plan.runs)
        say(f"sweep {plan.study_dir}: {total} runs, {jobs} at a time"
            + (" (continued)" if continued else ""))  # fmt: skip
        result = SweepResult()
        todo = [(run, args) for run in plan.runs if (args := _next_step(plan, run, result, say))]
        stop = _Stop()
        with stop.installed():
            _run_children(plan, todo, jobs, stop, result, say)
        if stop.signum is not None:
            raise SweepInterrupted(stop.signum, len(result.finished), total, again)
        _finish(plan, result, say)
    return result


def _check_compare_page(page: Path) -> None:
    """Refuse, before any run starts, a study whose compare.html the sweep may not redraw: a
    file vaelab did not record writing there (the user's, or an earlier version's page)."""
    if (page.exists() or page.is_symlink()) and not is_recorded_output(page, COMPARE_PAGE):
        raise VaelabError(
            f"{page}: exists and is not a compare page vaelab recorded writing; move it away "
            "(the sweep draws the study's page there once its runs finish)"
        )


def _next_step(plan: SweepPlan, run: SweepRun, result: SweepResult,
               say: Callable[[str], None]) -> list[str] | None:  # fmt: skip
    """The train arguments that bring `run` on, or None when there is nothing to start."""
    run_dir = plan.study_dir / run.name
    if not run_dir.exists():
        return plan.train_args_of(run)
    summary = summarize_run(run_dir, run.name)
    if summary.status == FINISHED:
        result.outcomes[run.name] = FINISHED
        say(f"{run.name}: finished already")
        return None
    if summary.status == STOPPED:
        return plan.resume_args_of(run)
    if summary.status == INCOMPLETE:  # nothing to resume: started again from scratch
        return [*plan.train_args_of(run), "--overwrite"]
    kind = "busy" if summary.status == RUNNING else "failed"
    result.outcomes[run.name] = f"{kind}: {summary.detail}"
    say(f"{run.name}: not started: {summary.detail}")
    return None


def _run_children(
    plan: SweepPlan,
    todo: list[tuple[SweepRun, list[str]]],
    jobs: int,
    stop: _Stop,
    result: SweepResult,
    say: Callable[[str], None],
) -> None:
    pending = list(todo)
    logs = plan.study_dir / LOGS_DIR
    logs.mkdir(exist_ok=True)
    env = child_env(jobs)
    try:
        while pending or stop.children:
            while pending and len(stop.children) < jobs and stop.signum is None:
                run, args = pending.pop(0)
                stop.children.append(_start(run, args, logs / f"{run.name}.log", env, say))
            stop.pass_on()  # a signal that came while a child was being started
            for child in [c for c in stop.children if c.process.poll() is not None]:
                stop.children.remove(child)
                result.outcomes[child.run.name] = _outcome(plan, child, stop, say)
            if stop.signum is not None:
                pending.clear()
            time.sleep(_POLL_S)
    finally:
        _end_children(stop.children)  # the sweep failed: its runs do not outlive it


def _passed_on(signum: int | None) -> int:
    """The signal a run gets for the sweep's: SIGHUP (the terminal closed) as SIGTERM, which a
    run answers with a checkpoint (SIGHUP would end it without one)."""
    return signal.SIGTERM if signum in (None, signal.SIGHUP) else signum


def _end_children(children: list[_Child]) -> None:
    """Stop the children still running: SIGTERM (they checkpoint), then, after _END_GRACE_S,
    SIGKILL to each one's process group."""
    running = [child.process for child in children if child.process.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _END_GRACE_S
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _kill_group(process)
            process.wait()


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a run and whatever it started (its DataLoader workers): its process group."""
    with suppress(ProcessLookupError, PermissionError):  # it ended already
        os.killpg(process.pid, signal.SIGKILL)


def _stop_with_parent(parent: int) -> None:
    """In a run's process, before it starts vaelab: SIGTERM when the sweep ends, even by
    SIGKILL, so that the run checkpoints and stops instead of outliving its sweep (Linux)."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the sweep ended before the prctl
        os.kill(os.getpid(), signal.SIGTERM)


def _start(run: SweepRun, args: list[str], log: Path, env: dict[str, str],
           say: Callable[[str], None]) -> _Child:  # fmt: skip
    command = [sys.executable, "-m", "vaelab", "train", *args]
    with open(log, "ab") as out:
        out.write(f"$ {shlex.join(['vaelab', 'train', *args])}\n".encode())
        out.flush()
        # Detached from the terminal (setsid): Ctrl-C reaches the sweep, which passes it on once.
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, preexec_fn=functools.partial(_stop_with_parent, os.getpid()),
        )  # fmt: skip
    say(f"{run.name}: {'resumed' if '--resume' in args else 'started'} (PID {process.pid})")
    return _Child(run, process, time.perf_counter(), log)


def _outcome(plan: SweepPlan, child: _Child, stop: _Stop, say: Callable[[str], None]) -> str:
    code = child.process.returncode
    seconds = time.perf_counter() - child.started
    summary = summarize_run(plan.study_dir / child.run.name, child.run.name)
    if summary.status == FINISHED:  # even if drawing its figures failed afterwards
        say(f"{child.run.name}: finished in {seconds:.1f}s (test loss "
            f"{loss_text(summary.test_loss, 4)})")  # fmt: skip
        return FINISHED
    if stop.signum is not None:
        say(f"{child.run.name}: stopped ({summary.detail})")
        return f"stopped: {summary.detail}"
    line = _last_line(child.log)
    say(f"{child.run.name}: failed (exit {code}): {line} (log: {child.log})")
    return f"failed: {line}"


def _last_line(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1][:300] if lines else "no output"


def _finish(plan: SweepPlan, result: SweepResult, say: Callable[[str], None]) -> None:
    """Write the compare page of the finished runs; then say which runs failed, if any."""
    finished = [run for run in plan.runs if result.outcomes.get(run.name) == FINISHED]
    if finished:
        groups: dict[str, list[Path]] = {}
        for run in finished:
            groups.setdefault(run.label, []).append(plan.study_dir / run.name)
        page = write_compare(
            [plan.study_dir / run.name for run in finished], plan.study_dir / COMPARE_FILE,
            groups=list(groups.items()), title=f"vaelab sweep: {plan.study_dir.name}",
            overwrite=True,  # the study's own page, drawn again as its runs finish
        )  # fmt: skip
        result.compare, result.table = page.path, page.table
        say(page.table)
        say(f"wrote {page.path}")
    failed = [name for name, how in result.outcomes.items() if how != FINISHED]
    if failed:
        raise SweepFailed(
            f"{len(failed)} of {len(plan.runs)} runs did not finish: {', '.join(failed)}; their "
            f"logs are in {plan.study_dir / LOGS_DIR}; running the sweep again retries them"
        )
