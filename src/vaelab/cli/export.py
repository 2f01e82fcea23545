"""The export command: a saved run's encoder and decoder as ONNX or TorchScript files."""

from __future__ import annotations

from pathlib import Path

import click

from vaelab.cli.group import RUN, cli
from vaelab.export import FORMATS, PART_CHOICES, export_model


@cli.command("export")
@RUN
@click.option(
    "--format", "format", type=click.Choice(list(FORMATS)), default="onnx",
    help="onnx (run by onnxruntime; needs vaelab[export]) or torchscript (torch.jit.load).",
)  # fmt: skip
@click.option(
    "--part", type=click.Choice(list(PART_CHOICES)), default="both",
    help="The encoder (x -> mu, logvar), the decoder (z -> expected image), or both.",
)  # fmt: skip
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path), required=True,
    help="Folder to write into (made if missing): encoder/decoder files and export-FORMAT.json.",
)  # fmt: skip
@click.option(
    "--overwrite", is_flag=True,
    help="Replace the files of an earlier export vaelab wrote in --out (never any other file).",
)  # fmt: skip
def export_command(run: Path, format: str, part: str, out_dir: Path, overwrite: bool) -> None:
    """Export a saved run's model for use outside vaelab, each file checked against PyTorch.

    The encoder takes x (N, C*H*W channel-major, floats in [0, 1]) and returns mu and logvar
    (N, latent_dim); the decoder takes z (N, latent_dim) and returns x_mean (N, C*H*W), the
    expected image. N is free. Prints the largest difference from PyTorch on random inputs,
    and fails when it is above 1e-5.
    """
    export_model(run, out_dir, format=format, part=part, overwrite=overwrite, log=click.echo)
