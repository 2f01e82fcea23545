"""Bad-input cases of one group (see tests/bad_input_cases.py, which gathers every group):
`vaelab export` of what is not a run, of weights that do not load, into a folder it cannot write,
over an earlier export, and with an unknown format or part."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.bad_input_cases import Case, other_architecture, saved_run, truncate_weights


def export_spoiled(change: Callable[[Path], None], *options: str) -> Callable[[Path], list[str]]:
    """`vaelab export runs/old --out out` of a saved run that `change` spoils."""

    def build(work: Path) -> list[str]:
        change(saved_run(work))
        return ["export", "runs/old", "--out", "out", *options]

    return build


def export_into(make: Callable[[Path], None], out: str, *options: str):
    """`vaelab export runs/old --out OUT` of a good run, after `make` prepared the work dir."""

    def build(work: Path) -> list[str]:
        saved_run(work)
        make(work)
        return ["export", "runs/old", "--out", out, *options]

    return build


def not_a_run(work: Path) -> list[str]:
    (work / "photos").mkdir()
    (work / "photos" / "cat.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return ["export", "photos", "--out", "out"]


def earlier_export(*names: str) -> Callable[[Path], None]:
    def make(work: Path) -> None:
        (work / "out").mkdir()
        for name in names:
            (work / "out" / name).write_text("an earlier export")

    return make


def a_file(name: str) -> Callable[[Path], None]:
    return lambda work: (work / name).write_text("a file")


# fmt: off
CASES: list[Case] = [
    Case("export", "run directory missing", lambda w: ["export", "runs/none", "--out", "out"],
         "run directory not found", "runs/none"),
    Case("export", "a folder that is not a run", not_a_run,
         "not found; is photos a vaelab run directory", "photos/config.json"),
    Case("export", "weights file missing",
         export_spoiled(lambda r: (r / "model.safetensors").unlink()),
         "not found", "runs/old/model.safetensors"),
    Case("export", "weights file truncated", export_spoiled(truncate_weights),
         "not a valid safetensors file", "runs/old/model.safetensors"),
    Case("export", "weights of another architecture", export_spoiled(other_architecture),
         r"mu_head.weight has shape \(3, 4\), the model expects \(2, 4\)",
         "runs/old/model.safetensors"),
    Case("export", "--out is a file", export_into(a_file("out"), "out"),
         "is not a folder", "out"),
    Case("export", "--out inside a file", export_into(a_file("blocker"), "blocker/out"),
         r"cannot make this folder \(Not a directory\)", "blocker/out"),
    Case("export", "a file not written by vaelab, named like an export's, in --out",
         export_into(earlier_export("decoder.onnx"), "out", "--overwrite"),
         "exists and is not an export file vaelab wrote", "out/decoder.onnx"),
    Case("export", "a file not written by vaelab, named like an export's record, in --out",
         export_into(earlier_export("export-torchscript.json"), "out", "--format", "torchscript"),
         "exists and is not an export file vaelab wrote", "out/export-torchscript.json"),
    Case("export", "unknown --format", export_into(lambda w: None, "out", "--format", "tflite"),
         "Invalid value for '--format': 'tflite' is not one of", "--format"),
    Case("export", "unknown --part", export_into(lambda w: None, "out", "--part", "head"),
         "Invalid value for '--part': 'head' is not one of", "--part"),
    Case("export", "--out not given", lambda w: (saved_run(w), ["export", "runs/old"])[1],
         "Missing option '--out'", "--out"),
]
# fmt: on
