"""`vaelab datasets`: the built-in datasets, and where each is found now."""

from __future__ import annotations

import click

from vaelab.cli.group import cli
from vaelab.data.builtin import builtin_datasets


@cli.command("datasets")
def datasets_command() -> None:
    """List the built-in datasets: name, image shape, what they are, and where each is found
    (or the address it is downloaded from on first use)."""
    for info in builtin_datasets():
        channels, height, width = info.shape
        click.echo(f"{info.name:<14} {channels}x{height}x{width}  {info.description}")
        click.echo(f"{'':<14} {info.found}")
