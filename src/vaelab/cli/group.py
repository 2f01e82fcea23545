"""The command group, its shared options, and errors told in the words of the command that failed.

The library's errors name the API's words (``checkpoint_every``); `translate` shows each as the
failing command's flag in one line, with the exit status the error carries.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from vaelab._resources import is_allocation_failure, out_of_memory
from vaelab.config import DEVICES, DataConfig
from vaelab.data.registry import is_builtin_name
from vaelab.errors import VaelabError
from vaelab.rundir import RunExists, load_config
from vaelab.training import TrainingInterrupted


def command_flags(command: click.Command | None) -> dict[str, str]:
    """API name -> how the command line spells it: its flag, or its argument's metavar."""
    if command is None:
        return {}
    names = {}
    for param in command.params:
        if isinstance(param, click.Option) and param.name:
            names[param.name] = max(param.opts, key=len)
        elif isinstance(param, click.Argument) and param.name:
            names[param.name] = param.name.upper()
    return names


# Config fields that the run data options of evaluate, report, plot and serve (`run_data_options`)
# set under other names: DataConfig.source is their --data, test_source their --test-data.
_RUN_DATA_ALIASES = {"source": "data", "test_source": "test_data"}


def translate(error: VaelabError, command: click.Command | None) -> str:
    """The error's message with each parameter it names shown as this command's flag."""
    message = str(error)
    if isinstance(error, RunExists):
        hint = f"--resume {error.run_dir} to continue it, " if error.resumable else ""
        return (
            f"{error.run_dir}: run directory already exists; pass {hint}--overwrite to replace "
            "it or --name to choose another"
        )
    if isinstance(error, TrainingInterrupted):
        return (
            f"stopped by {error.signal_name} {error.where}; checkpoint saved; resume with: "
            f"vaelab train --resume {error.run_dir}"
        )
    flags = command_flags(command)
    for name in error.parameters:
        word = rf"(?<![\w./-]){re.escape(name)}"
        negation = flags.get(f"no_{name}")  # labels=False is said as --no-labels
        if negation is not None:
            message = re.sub(word + r"=False\b", negation, message)
        flag = flags.get(name) or flags.get(_RUN_DATA_ALIASES.get(name, ""))
        if flag is None:
            continue
        message = re.sub(word + r"=True\b", flag, message)
        message = re.sub(word + r"(?![\w/-]|\.\w)", flag, message)  # not out.png, a file
    return message


class Refusal(Exception):
    """A VaelabError with its message in the words of the command it left."""

    def __init__(self, error: VaelabError, text: str) -> None:
        super().__init__(text)
        self.error = error
        self.text = text


class _Commands(click.Group):
    """The command group; a VaelabError leaving a command is told in that command's flags, a
    failed allocation as one line naming the command and the bytes."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand; a VaelabError leaves as a Refusal in its flags."""
        try:
            return super().invoke(ctx)
        except VaelabError as exc:
            name = ctx.invoked_subcommand
            command = self.get_command(ctx, name) if name else None
            raise Refusal(exc, translate(exc, command)) from exc
        except (MemoryError, RuntimeError) as exc:
            if not is_allocation_failure(exc):
                raise
            refusal = out_of_memory(exc, f"{ctx.command_path} {ctx.invoked_subcommand}")
            raise Refusal(refusal, str(refusal)) from None


# ---------------------------------------------------------------- shared options


def device_option(default: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The --device option with `default`."""
    return click.option(
        "--device", type=click.Choice(list(DEVICES)), default=default,
        help="'auto' uses CUDA when present, else the CPU.",
    )  # fmt: skip


RUN = click.argument("run", type=click.Path(path_type=Path))


def _keep_run_data(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if param.name is not None:
        ctx.meta.setdefault("vaelab.run_data", {})[param.name] = value


def _run_data_option(*flags: str, help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        *flags, type=click.Path(path_type=Path), default=None, expose_value=False,
        callback=_keep_run_data, help=help,
    )  # fmt: skip


def run_data_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--data, --test-data, --data-dir, --train-csv and --test-csv: where a saved run's data is
    now, if it has moved (read back with `run_data`)."""
    for option in reversed((
        _run_data_option("--data", help="The run's training data (a path or a built-in name), "
                         "if it has moved; the run's other data settings still apply."),
        _run_data_option("--test-data", help="The run's separate test data, if it has moved."),
        _run_data_option("--data-dir", help="Use the built-in dataset from this folder instead "
                         "of where the run found it."),
        _run_data_option("--train-csv", help="The run's training CSV, if it has moved (with "
                         "--test-csv)."),
        _run_data_option("--test-csv", help="The run's test CSV, if it has moved (with "
                         "--train-csv)."),
    )):  # fmt: skip
        command = option(command)
    return command


def run_data(run: Path) -> DataConfig | None:
    """The run's data config with the paths the data options name, or None when none is given
    (the data the run recorded). Other data settings (labels, splits, binarization) are kept."""
    given = {
        name: str(value)
        for name, value in click.get_current_context().meta.get("vaelab.run_data", {}).items()
        if value is not None
    }
    if not given:
        return None
    saved = load_config(run).data
    if "data" in given or "test_data" in given:
        return replace(
            saved, source=given.get("data", saved.source),
            test_source=given.get("test_data", saved.test_source), train_csv=None, test_csv=None,
        )  # fmt: skip
    if "train_csv" in given or "test_csv" in given:
        return replace(
            saved, train_csv=given.get("train_csv"), test_csv=given.get("test_csv"), source=None,
            test_source=None,
        )  # fmt: skip
    builtin = saved.source if saved.source is not None and is_builtin_name(saved.source) else None
    return replace(
        saved, data_dir=given["data_dir"], source=builtin, test_source=None, train_csv=None,
        test_csv=None,
    )  # fmt: skip


@click.group(
    cls=_Commands, context_settings={"help_option_names": ["-h", "--help"], "show_default": True}
)
@click.version_option(package_name="vaelab")
def cli() -> None:
    """vaelab: train, evaluate and inspect variational auto-encoders on image data.

    The defaults reproduce the Fashion-MNIST VAE tutorial: an MLP 784-400-200-100-20-2 trained with
    Adam (lr 1e-3, batch 200) for 60 epochs.
    """


def optional_str(path: Path | None) -> str | None:
    """A path as the config's string, None as None."""
    return None if path is None else str(path)
