"""`vaelab datasets`: the built-in datasets, and where each is found now; `vaelab prepare`: a
source decoded once into the cache."""

from __future__ import annotations

import sys

import click

from vaelab.cli.group import cli
from vaelab.cli.options import reading_options
from vaelab.config import DataConfig
from vaelab.data.builtin import builtin_datasets
from vaelab.data.prepared import describe
from vaelab.data.sources import prepare_source


@cli.command("datasets")
def datasets_command() -> None:
    """List the built-in datasets: name, image shape, what they are, and where each is found
    (or the address it is downloaded from on first use)."""
    for info in builtin_datasets():
        channels, height, width = info.shape
        click.echo(f"{info.name:<14} {channels}x{height}x{width}  {info.description}")
        click.echo(f"{'':<14} {info.found}")


@cli.command("prepare")
@click.argument("source", metavar="SOURCE")
@click.option(
    "--test-data", "test_source", default=None, metavar="PATH",
    help="A separate test set of the same format.",
)  # fmt: skip
@reading_options
def prepare_command(
    source: str, test_source: str | None, image_size: tuple[int, ...], no_labels: bool,
    array_keys: tuple[str, ...], columns: tuple[str, ...],
) -> None:  # fmt: skip
    """Decode SOURCE (an image folder, IDX or CSV files, an .npz of compressed arrays, Parquet or
    Arrow files, a Hugging Face dataset saved with save_to_disk) once into the cache
    ($VAELAB_CACHE, else ~/.cache/vaelab/prepared), from where training, evaluation and the
    explorer map its images; vaelab train does the same on first use. A source already prepared
    and unchanged is left as it is."""
    config = DataConfig(
        source=source, test_source=test_source, image_size=image_size, labels=not no_labels,
        array_keys=array_keys, columns=columns,
    )  # fmt: skip
    click.echo(describe(prepare_source(config, progress=sys.stderr.isatty())))
