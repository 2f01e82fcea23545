"""The command group, its shared options, and errors told in the words of the command that failed.

The library's errors name the API's words (``checkpoint_every``); `translate` shows each as the
failing command's flag in one line, with the exit status the error carries.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from vaelab.config import DEVICES, DataConfig
from vaelab.errors import VaelabError
from vaelab.rundir import RunExists
from vaelab.training import TrainingInterrupted


def _flags(command: click.Command | None) -> dict[str, str]:
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
    flags = _flags(command)
    for name in error.parameters:
        flag = flags.get(name)
        if flag is None:
            continue
        word = rf"(?<![\w./-]){re.escape(name)}"
        message = re.sub(word + r"=True\b", flag, message)
        message = re.sub(word + r"(?![\w/-])", flag, message)
    return message


class Refusal(Exception):
    """A VaelabError with its message in the words of the command it left."""

    def __init__(self, error: VaelabError, text: str) -> None:
        super().__init__(text)
        self.error = error
        self.text = text


class _Commands(click.Group):
    """The command group; a VaelabError leaving a command is told in that command's flags."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand; a VaelabError leaves as a Refusal in its flags."""
        try:
            return super().invoke(ctx)
        except VaelabError as exc:
            name = ctx.invoked_subcommand
            command = self.get_command(ctx, name) if name else None
            raise Refusal(exc, translate(exc, command)) from exc


# ---------------------------------------------------------------- shared options


def device_option(default: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The --device option with `default`."""
    return click.option(
        "--device", type=click.Choice(list(DEVICES)), default=default,
        help="'auto' uses CUDA when present, else the CPU.",
    )  # fmt: skip


RUN_DATA_DIR = click.option(
    "--data-dir", type=click.Path(path_type=Path), default=None,
    help="Use the dataset from this folder instead of where the run found it.",
)  # fmt: skip
RUN = click.argument("run", type=click.Path(path_type=Path))


def run_data_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--data-dir, --train-csv and --test-csv: where a saved run's data is now."""
    for option in reversed((
        RUN_DATA_DIR,
        click.option(
            "--train-csv", type=click.Path(path_type=Path), default=None,
            help="The run's training CSV, if it has moved (with --test-csv).",
        ),
        click.option(
            "--test-csv", type=click.Path(path_type=Path), default=None,
            help="The run's test CSV, if it has moved (with --train-csv).",
        ),
    )):  # fmt: skip
        command = option(command)
    return command


def run_data(
    data_dir: Path | None, train_csv: Path | None, test_csv: Path | None
) -> DataConfig | None:
    """The data those options name, or None for the data the run recorded."""
    if data_dir is None and train_csv is None and test_csv is None:
        return None
    return DataConfig(
        data_dir=optional_str(data_dir),
        train_csv=optional_str(train_csv),
        test_csv=optional_str(test_csv),
    )


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
