"""Ctrl-C while the `vaelab` command starts: one line and exit status 130, not a traceback.

The package imports this module first, so that it acts before torch loads (seconds). It acts only
in a process started as the command line (the `vaelab` script, `python -m vaelab`), never in a
program that imports vaelab: there a KeyboardInterrupt stays the program's own. Once the command
runs, `vaelab.cli.main` says the same of an interrupt, and training's own handlers take SIGINT
over to stop after a checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from types import FrameType, TracebackType
from typing import Any

INTERRUPTED_LINE = "vaelab: interrupted"
INTERRUPTED_STATUS = 130  # 128 + SIGINT, what a shell reports for a job stopped by Ctrl-C
TERMINATED_LINE = "vaelab: terminated"
TERMINATED_STATUS = 143  # 128 + SIGTERM
_SCRIPT_NAMES = ("vaelab", "vaelab.exe", "vaelab-script.py")


def started_as_command() -> bool:
    """Whether this process is the `vaelab` command line rather than a program importing it."""
    if sys.argv and os.path.basename(sys.argv[0]) in _SCRIPT_NAMES:
        return True
    given = list(getattr(sys, "orig_argv", ()))
    return any(flag == "-m" and module == "vaelab" for flag, module in zip(given, given[1:]))


def say_interrupted(line: str = INTERRUPTED_LINE) -> None:
    """Print the one line an interrupted command ends with (what it printed before is flushed)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):  # closed, or not a file
            stream.flush()
    print(line, file=sys.stderr, flush=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command is, so that what it was writing is cleaned up (a
    temporary file beside an output is removed) before the process ends."""


def _raise_terminated(_signum: int, _frame: FrameType | None) -> None:
    raise Terminated


@contextlib.contextmanager
def handling_signals(
    signums: Iterable[int], handler: Callable[[int, FrameType | None], Any]
) -> Iterator[None]:
    """`handler` for each of `signums` while inside, the previous handlers back afterwards. Python
    installs handlers in the main thread only: in another thread nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield
    finally:
        for signum, earlier in previous.items():
            signal.signal(signum, earlier)


@contextlib.contextmanager
def terminate_as_exception() -> Iterator[None]:
    """While a command runs, SIGTERM raises `Terminated` instead of killing the process at once
    (the default), so every `finally` runs; training replaces this with its own clean stop. A
    SIGTERM that was ignored or handled already stays so."""
    default = signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with handling_signals((signal.SIGTERM,) if default else (), _raise_terminated):
        yield


def _interrupt_is_one_line(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    if not issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, traceback)
        return
    say_interrupted()
    os._exit(INTERRUPTED_STATUS)  # nothing of the command has started: nothing to clean up


if started_as_command():
    sys.excepthook = _interrupt_is_one_line
