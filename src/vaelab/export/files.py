"""`export_model`: a model's encoder and decoder written as ONNX or TorchScript files, each checked
against PyTorch before it is renamed into place, and a JSON record of what was written."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaelab._outputs import EXPORT, check_output, output_folder_lock, record_outputs
from vaelab._version import __version__
from vaelab.errors import VaelabError
from vaelab.export.formats import (
    SUFFIXES,
    as_tuple,
    check_format,
    load_runner,
    onnx_opset,
    require_format,
    serialize,
)
from vaelab.export.parts import Part, make_part, parts_named
from vaelab.models import VAE
from vaelab.rundir import (
    image_shape,
    load_model,
    load_run_info,
    loaded_weights_sha256,
    weights_sha256,
)

# An exported part must match PyTorch to this (absolute, fp32) on every value of the check.
TOLERANCE = 1e-5
# The batch the parts are traced with, and the batches they are checked at: other sizes than the
# trace's, so a batch size fixed into a file by mistake fails the check.
TRACE_BATCH = 2
CHECK_BATCHES = (1, 7)
CHECK_SEED = 0


def record_name(format: str) -> str:
    """The JSON written beside the files of `format`: export-onnx.json, export-torchscript.json."""
    return f"export-{format}.json"


@dataclass(frozen=True)
class Source:
    """The model to export, and the run it came from (None for a model given as an object)."""

    model: VAE
    run_dir: Path | None
    weights_sha256: str | None
    image_shape: list[int] | None


@dataclass(frozen=True)
class Staged:
    """A part written to a temporary file in the output folder, checked, not yet renamed."""

    part: Part
    temp: Path
    target: Path
    max_abs_difference: float


def export_model(
    model_or_run_dir: VAE | str | Path,
    out_dir: str | Path,
    format: str = "onnx",
    part: str = "both",
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Write the encoder and/or decoder of a VAE (or of a run directory's model) into `out_dir`.

    `format` is 'onnx' (needs ``vaelab[export]``) or 'torchscript'; `part` is 'encoder',
    'decoder' or 'both'. The encoder maps flat images x (N, D), D = C*H*W channel-major, floats
    in [0, 1], to (mu, logvar), each (N, latent_dim); the decoder maps codes z (N, latent_dim)
    to the expected image x_mean (N, D). N is free. Files are encoder.onnx / decoder.onnx
    (or .pt) and export-FORMAT.json, which records names, shapes, the latent size, the image
    shape, the vaelab version and the source run's weights SHA-256. Each file is checked
    against PyTorch on random inputs (max abs difference under 1e-5) before it is renamed into
    place. An existing file is replaced only with `overwrite`, and only when it is an export
    file vaelab wrote (`vaelab._outputs`); nothing is written inside a run directory. Returns
    the paths written.
    """
    check_format(format)
    names = parts_named(part)
    source = _source(model_or_run_dir)
    out = Path(out_dir)
    targets = [out / f"{name}{SUFFIXES[format]}" for name in names]
    record = out / record_name(format)
    for path in (*targets, record):
        check_output(path, EXPORT, overwrite, option="out_dir")
    require_format(format)
    created = _make_folder(out)
    staged: list[Staged] = []
    try:
        for name, target in zip(names, targets):
            staged.append(_stage(make_part(source.model, name), format, target))
        payload = _record(source, format, staged)
        with output_folder_lock(out):
            for path in (*targets, record):  # again: another process may have written meanwhile
                check_output(path, EXPORT, overwrite, option="out_dir")
            for item in staged:
                _commit(item.temp, item.target)
            _write_record(record, payload)
            record_outputs([*(item.target for item in staged), record], EXPORT)
    except BaseException:
        _discard(staged, out if created else None)
        raise
    for item in staged:
        difference = item.max_abs_difference
        _say(log, f"wrote {item.target} (max abs difference from PyTorch {difference:.2e})")
    _say(log, f"wrote {record}")
    return [*(item.target for item in staged), record]


# ---------------------------------------------------------------- the source


def _source(model_or_run_dir: VAE | str | Path) -> Source:
    """The model in fp32 on the CPU, in eval mode (a copy: the caller's model is left as it is)."""
    if isinstance(model_or_run_dir, VAE):
        _check_exportable(model_or_run_dir, "the model")
        model = copy.deepcopy(model_or_run_dir).to("cpu", torch.float32).eval()
        return Source(model, None, None, _image_shape(model, {}))
    if not isinstance(model_or_run_dir, (str, Path)):
        raise VaelabError(
            f"expected a VAE or a run directory, got {type(model_or_run_dir).__name__}"
        )
    run_dir = Path(model_or_run_dir)
    model = load_model(run_dir)
    _check_exportable(model, run_dir)
    info = load_run_info(run_dir)
    sha256 = loaded_weights_sha256(run_dir) or weights_sha256(run_dir)
    return Source(model, run_dir, sha256, _image_shape(model, info))


def _check_exportable(model: VAE, where: str | Path) -> None:
    """Refuse a conditional model: its exported parts would need the class as a second input."""
    if model.config.conditional:
        raise VaelabError(
            f"{where}: a conditional model takes each image's class as well; export writes "
            "the encoder and decoder of unconditional models"
        )


def _image_shape(model: VAE, info: dict[str, Any]) -> list[int] | None:
    """(C, H, W) of the model's images, or None when nothing says it (a non-square MLP)."""
    if model.config.image_shape:
        return list(model.config.image_shape)
    try:
        height, width = image_shape(info, model.config.input_dim, "the model")
    except VaelabError:
        return None
    return [1, height, width]


# ---------------------------------------------------------------- the output folder


def _make_folder(out: Path) -> bool:
    """Make the output folder if it is missing; True when this call made it."""
    if out.is_dir():
        return False
    if out.exists() or out.is_symlink():
        raise VaelabError(f"{out}: is not a folder; the export needs a folder to write into")
    try:
        out.mkdir(parents=True)
    except OSError as exc:
        raise VaelabError(f"{out}: cannot make this folder ({exc.strerror or exc})") from None
    return True


def _stage(part: Part, format: str, target: Path) -> Staged:
    """`part` written to a temporary file beside `target`, loaded back and checked."""
    generator = torch.Generator().manual_seed(CHECK_SEED)
    payload = serialize(part, format, part.example(TRACE_BATCH, generator))
    temp = _write_temp(target, payload)
    try:
        difference = max_abs_difference(part, load_runner(temp, format), generator)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    staged = Staged(part, temp, target, difference)
    if not difference <= TOLERANCE:  # NaN fails too
        temp.unlink(missing_ok=True)
        raise VaelabError(
            f"{target}: the exported {part.name} differs from PyTorch by up to {difference:.3g} "
            f"on random inputs (more than {TOLERANCE:g}); nothing was written"
        )
    return staged


def max_abs_difference(
    part: Part, run: Callable[[torch.Tensor], list[np.ndarray]], generator: torch.Generator
) -> float:
    """The largest |exported - PyTorch| over random batches of CHECK_BATCHES sizes."""
    worst = 0.0
    for batch in CHECK_BATCHES:
        inputs = part.example(batch, generator)
        with torch.no_grad():
            expected = [t.numpy() for t in as_tuple(part.module(inputs))]
        got = run(inputs)
        for want, have, spec in zip(expected, got, part.outputs):
            if have.shape != want.shape:
                raise VaelabError(
                    f"the exported {part.name} gives {spec.name} of shape {list(have.shape)} for "
                    f"a batch of {batch}, PyTorch {list(want.shape)}"
                )
            worst = max(worst, float(np.max(np.abs(have.astype(np.float64) - want))))
    return worst


def _write_temp(target: Path, payload: bytes) -> Path:
    """`payload` in a new temporary file beside `target`, fsynced, with the umask's mode."""
    try:
        handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise VaelabError(f"{target.parent}: cannot write here ({exc.strerror or exc})") from None
    temp = Path(name)
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.fchmod(handle, 0o666 & ~mask)
        with os.fdopen(handle, "wb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise VaelabError(f"{target}: could not write ({exc.strerror or exc})") from None
    return temp


def _commit(temp: Path, target: Path) -> None:
    try:
        os.replace(temp, target)
    except OSError as exc:
        raise VaelabError(f"{target}: could not write ({exc.strerror or exc})") from None


def _write_record(record: Path, payload: dict[str, Any]) -> None:
    text = json.dumps(payload, indent=2) + "\n"
    _commit(_write_temp(record, text.encode("utf-8")), record)


def _discard(staged: list[Staged], made: Path | None) -> None:
    """Remove what a failed export left: its temporary files, and the folder if it made it."""
    for item in staged:
        item.temp.unlink(missing_ok=True)
    if made is not None:
        with contextlib.suppress(OSError):  # not empty: a file renamed into place stays
            made.rmdir()


# ---------------------------------------------------------------- the record


def _record(source: Source, format: str, staged: list[Staged]) -> dict[str, Any]:
    """export-FORMAT.json: what each file takes and gives, and where the weights came from."""
    config = source.model.config
    parts = {}
    for item in staged:
        parts[item.part.name] = {
            "file": item.target.name,
            "sha256": hashlib.sha256(item.temp.read_bytes()).hexdigest(),
            **item.part.record(),
            "max_abs_difference": item.max_abs_difference,
        }
    extra = {"onnx_opset": onnx_opset(staged[0].temp)} if format == "onnx" else {}
    return {
        "format": format,
        **extra,
        "parts": parts,
        "input_dim": config.input_dim,
        "latent_dim": config.latent_dim,
        "image_shape": source.image_shape,
        "layout": "x and x_mean are flat C*H*W images, channel-major, floats in [0, 1]",
        "arch": config.arch,
        "likelihood": config.likelihood,
        "vaelab_version": __version__,
        "torch_version": torch.__version__,
        "source_run": None if source.run_dir is None else str(source.run_dir),
        "weights_sha256": source.weights_sha256,
    }


def _say(log: Callable[[str], None] | None, line: str) -> None:
    if log is not None:
        log(line)
