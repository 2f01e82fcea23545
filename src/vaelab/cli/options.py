"""Parsers of `vaelab train`'s option values: comma lists, sizes, splits; and the options that
say how a source is read, which `vaelab train` and `vaelab prepare` share."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import click


def parse_hidden(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, ...]:
    """'400,200,100' -> (400, 200, 100): positive layer sizes."""
    try:
        sizes = tuple(int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not sizes or any(size < 1 for size in sizes):
        raise click.BadParameter(f"hidden sizes must be positive, got {value!r}")
    return sizes


_SIDE = re.compile(r"[0-9]{1,18}")  # ASCII digits, few enough for int(); the reader bounds sides


def parse_image_size(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> tuple[int, ...]:
    """'32x24' -> (32, 24): height and width in pixels; None -> ()."""
    if value is None:
        return ()
    parts = [part.strip() for part in value.lower().split("x")]
    if len(parts) != 2 or not all(_SIDE.fullmatch(part) and int(part) >= 1 for part in parts):
        raise click.BadParameter(f"expected HEIGHTxWIDTH in pixels, e.g. 32x32, got {value!r}")
    return int(parts[0]), int(parts[1])


def parse_names(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[str, ...]:
    """'a,b,c' -> ('a', 'b', 'c'): non-empty names; None -> ()."""
    if value is None:
        return ()
    names = tuple(part.strip() for part in value.split(","))
    if not all(names):
        raise click.BadParameter(f"expected comma-separated names, got {value!r}")
    return names


def parse_folder_name(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> str | None:
    """A run's or a study's folder name: one name inside its folder (RUNS_DIR), never a path
    that leads elsewhere ('a/b', '..') and never empty; None stays None."""
    if value is None:
        return None
    if value in ("", ".", "..") or "/" in value or os.sep in value or "\0" in value:
        raise click.BadParameter(
            f"expected one folder name (no '/', not '.' or '..'), got {value!r}; the folder it "
            "names is made in --runs-dir"
        )
    return value


def parse_split(_ctx: click.Context, _param: click.Parameter, value: str) -> float:
    """'0.1' is a fraction of the images, '5000' a number of them."""
    try:
        return int(value) if value.strip().isdigit() else float(value)
    except ValueError:
        raise click.BadParameter(
            f"expected a fraction such as 0.1 or a number of images, got {value!r}"
        ) from None


def reading_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--image-size, --no-labels, --npz-keys and --columns: how a source's images are read."""
    options = [
        click.option(
            "--image-size", default=None, callback=parse_image_size, metavar="HxW",
            help="Resize the images of a folder or of Parquet/Arrow files to H x W pixels (else "
            "images of mixed sizes are refused).",
        ),
        click.option("--no-labels", is_flag=True, help="Ignore any labels the data has."),
        click.option(
            "--npz-keys", "array_keys", default=None, callback=parse_names, metavar="KEYS",
            help="The .npz arrays to read: X_TRAIN,Y_TRAIN,X_TEST,Y_TEST or IMAGES,LABELS  "
            "[default: x_train/y_train/x_test/y_test, or images/labels]",
        ),
        click.option(
            "--columns", default=None, callback=parse_names, metavar="IMAGE[,LABEL]",
            help="The Parquet/Arrow columns to read: the images, and the labels  [default: the "
            "Hugging Face Image and ClassLabel columns, else the one column of image bytes and "
            "an integer column label or labels]",
        ),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command
