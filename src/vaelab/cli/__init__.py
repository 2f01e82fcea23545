"""Command line: a thin layer that builds configs, calls the Python API, and speaks in flags.

`main` is the `vaelab` program: every user error is one line on stderr and the error's exit status.
"""

from __future__ import annotations

import sys

import click

from vaelab._interrupt import (
    INTERRUPTED_STATUS,
    TERMINATED_LINE,
    TERMINATED_STATUS,
    Terminated,
    say_interrupted,
    terminate_as_exception,
)
from vaelab.cli import data, export, runs, studies, train  # noqa: F401  (registers the commands)
from vaelab.cli.group import Refusal, cli, translate
from vaelab.errors import VaelabError, one_line
from vaelab.training import TrainingInterrupted
from vaelab.training.cpu import maybe_reexec_with_mkl_override

__all__ = ["cli", "main", "translate"]


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and the error's exit status; Ctrl-C
    is 'vaelab: interrupted' and exit status 130, SIGTERM 'vaelab: terminated' and 143 (both
    after the command's temporary files are removed)."""
    try:
        with terminate_as_exception():
            maybe_reexec_with_mkl_override(
                sys.argv[1:] if argv is None else argv, say=lambda line: click.echo(line, err=True)
            )
            cli.main(args=argv, prog_name="vaelab", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt) as stop:  # click makes Ctrl-C an Abort
        if isinstance(stop, Terminated) or isinstance(stop.__cause__, Terminated):
            say_interrupted(TERMINATED_LINE)
            sys.exit(TERMINATED_STATUS)
        say_interrupted()
        sys.exit(INTERRUPTED_STATUS)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        click.echo(f"vaelab: error: {one_line(exc.format_message() + hint)}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"Error: {one_line(exc.format_message())}", err=True)
        sys.exit(exc.exit_code)
    except Refusal as refusal:
        prefix = "" if isinstance(refusal.error, TrainingInterrupted) else "error: "
        click.echo(f"vaelab: {prefix}{one_line(refusal.text)}", err=True)
        sys.exit(refusal.error.exit_code)
    except VaelabError as exc:
        click.echo(f"vaelab: error: {one_line(str(exc))}", err=True)
        sys.exit(exc.exit_code)
