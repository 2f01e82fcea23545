"""Running a sweep: each run a `python -m vaelab train` process, N at a time, each with its share
of the cores; a finished run is skipped, a stopped one resumed; SIGINT/SIGTERM stop the children
cleanly (they checkpoint) and running the sweep again continues it.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaelab.errors import VaelabError
from vaelab.studies.compare_page import write_compare
from vaelab.studies.runs import FINISHED, INCOMPLETE, RUNNING, STOPPED, loss_text, summarize_run
from vaelab.studies.sweep import SweepPlan, SweepRun, claim_study

LOGS_DIR = "logs"
COMPARE_FILE = "compare.html"
_POLL_S = 0.1
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores // jobs)


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


class _Stop:
    """The first stop signal the sweep received, passed on to every child it runs."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.children: list[_Child] = []

    def handle(self, signum: int, _frame: Any) -> None:
        self.signum = self.signum or signum
        for child in list(self.children):
            if child.process.poll() is None:
                child.process.send_signal(signum)

    @contextmanager
    def installed(self) -> Iterator[_Stop]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {signum: signal.signal(signum, self.handle) for signum in _STOP_SIGNALS}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


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
    if jobs < 1:
        raise VaelabError(f"jobs must be at least 1, got {jobs}", parameters=("jobs",))
    continued = claim_study(plan)
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
    while pending or stop.children:
        while pending and len(stop.children) < jobs and stop.signum is None:
            run, args = pending.pop(0)
            stop.children.append(_start(run, args, logs / f"{run.name}.log", env, say))
        for child in [c for c in stop.children if c.process.poll() is not None]:
            stop.children.remove(child)
            result.outcomes[child.run.name] = _outcome(plan, child, stop, say)
        if stop.signum is not None:
            pending.clear()
        time.sleep(_POLL_S)


def _start(run: SweepRun, args: list[str], log: Path, env: dict[str, str],
           say: Callable[[str], None]) -> _Child:  # fmt: skip
    command = [sys.executable, "-m", "vaelab", "train", *args]
    with open(log, "ab") as out:
        out.write(f"$ {shlex.join(['vaelab', 'train', *args])}\n".encode())
        out.flush()
        # Detached from the terminal (setsid): Ctrl-C reaches the sweep, which passes it on once.
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
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
            overwrite=True,  # the study's own page, drawn again as its runs finish
