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
import sys
from types import TracebackType

INTERRUPTED_LINE = "vaelab: interrupted"
INTERRUPTED_STATUS = 130  # 128 + SIGINT, what a shell reports for a job stopped by Ctrl-C
_SCRIPT_NAMES = ("vaelab", "vaelab.exe", "vaelab-script.py")


def started_as_command() -> bool:
    """Whether this process is the `vaelab` command line rather than a program importing it."""
    if sys.argv and os.path.basename(sys.argv[0]) in _SCRIPT_NAMES:
        return True
    given = list(getattr(sys, "orig_argv", ()))
    return any(flag == "-m" and module == "vaelab" for flag, module in zip(given, given[1:]))


def say_interrupted() -> None:
    """Print the one line an interrupted command ends with (what it printed before is flushed)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):  # closed, or not a file
            stream.flush()
    print(INTERRUPTED_LINE, file=sys.stderr, flush=True)


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
