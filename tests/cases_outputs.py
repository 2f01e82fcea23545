"""Bad-input cases of the files vaelab writes (see tests/bad_input_cases.py, which gathers every
group): outputs aimed at a run's files, at a user's data file, at a directory, over an earlier
output without --overwrite; a run's own outputs where something else is in their place; and the
messages' promises (real option names, one line whatever a path holds, a range hint that fits)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.bad_input_cases import SMALL, Case, saved_run, train_csv_args
from tests.cases_sources import train_on
from vaelab._outputs import COMPARE_PAGE, SAMPLES, write_output

USER_BYTES = b"the user's own file\n"


def with_run(make: Callable[[Path], None], *args: str) -> Callable[[Path], list[str]]:
    """`vaelab ARGS` after runs/old (a saved run) is made and `make` prepared the work dir."""

    def build(work: Path) -> list[str]:
        saved_run(work)
        make(work)
        return list(args)

    return build


def nothing(work: Path) -> None:
    """Nothing more than the saved run."""


def user_file(name: str) -> Callable[[Path], None]:
    """A file of the user's (not one vaelab wrote) at `name`."""

    def make(work: Path) -> None:
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_bytes(USER_BYTES)

    return make


def user_images(work: Path) -> None:
    """data.npy: the user's float32 images in [0, 1], shaped like `vaelab sample` output."""
    images = np.random.default_rng(0).random((10, 4, 4), dtype=np.float32)
    np.save(work / "data.npy", images, allow_pickle=False)


def directory(name: str) -> Callable[[Path], None]:
    return lambda work: (work / name).mkdir(parents=True)


def earlier_page(work: Path) -> None:
    """compare.html: a compare page vaelab wrote earlier (recorded as such beside it)."""
    write_output(work / "compare.html", COMPARE_PAGE, b"<!DOCTYPE html><title>earlier</title>")


def earlier_samples(work: Path) -> None:
    write_output(work / "s.npy", SAMPLES, b"\x93NUMPY earlier samples")


def figures_is_a_file(work: Path) -> None:
    (work / "runs" / "old" / "figures").write_bytes(USER_BYTES)


def report_is_a_folder(work: Path) -> None:
    (work / "runs" / "old" / "report.html").mkdir()


def record_is_a_folder(work: Path) -> None:
    """The folder's record of vaelab's outputs is a folder: an output could not be recorded."""
    (work / ".vaelab-outputs.json").mkdir()


def linked_to_user_file(name: str) -> Callable[[Path], None]:
    """runs/old/NAME: a symbolic link to mine.txt, a file of the user's beside runs/."""

    def make(work: Path) -> None:
        (work / "mine.txt").write_bytes(USER_BYTES)
        link = work / "runs" / "old" / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../" * name.count("/")) / ".." / ".." / "mine.txt")

    return make


def linked_to_user_folder(name: str) -> Callable[[Path], None]:
    """runs/old/NAME: a symbolic link to mine/, a folder of the user's holding a file named as
    vaelab names the run's files (so that writing or removing through the link would show)."""

    def make(work: Path) -> None:
        (work / "mine").mkdir()
        for inside in ("samples.png", "events.out.tfevents.1"):
            (work / "mine" / inside).write_bytes(USER_BYTES)
        (work / "runs" / "old" / name).symlink_to(Path("..") / ".." / "mine")

    return make


def run_file_is_a_folder(name: str) -> Callable[[Path], None]:
    return lambda work: (work / "runs" / "old" / name).mkdir()


def overwrite_old(work: Path) -> list[str]:
    """`vaelab train --overwrite` of runs/old (its CSV files beside it)."""
    return ["train", *SMALL, "--train-csv", "train.csv", "--test-csv", "test.csv",
            "--runs-dir", "runs", "--name", "old", "--overwrite"]  # fmt: skip


def digits_like(work: Path) -> list[str]:
    """x.npy: float images whose values are the levels 0-16 of scikit-learn's digits."""
    levels = np.random.default_rng(0).integers(0, 17, (100, 6, 6)).astype(np.float32)
    levels[0, 0, 0] = 16
    np.save(work / "x.npy", levels)
    return train_on("x.npy")


SAMPLE = ["sample", "runs/old", "--n", "4", "--out"]
EXPORT = ["export", "runs/old", "--format", "torchscript", "--out"]

# fmt: off
CASES: list[Case] = [
    Case("outputs", "compare --out a run's config.json",
         with_run(nothing, "compare", "runs/old", "--out", "runs/old/config.json", "--overwrite"),
         r"runs/old: is a run directory, which holds only the run's own files; give --out a "
         "path outside it", "runs/old"),
    Case("outputs", "compare --out a run's weights",
         with_run(nothing, "compare", "runs/old", "--out", "runs/old/model.safetensors"),
         "is a run directory", "runs/old"),
    Case("outputs", "compare --out a page inside a run's folder",
         with_run(nothing, "compare", "runs/old", "--out", "runs/old/figures/compare.html"),
         "runs/old/figures: is inside the run directory runs/old", "runs/old/figures"),
    Case("outputs", "compare --out --overwrite a user's HTML file",
         with_run(user_file("notes.html"), "compare", "runs/old", "--out", "notes.html",
                  "--overwrite"),
         r"notes.html: exists and is not a compare page vaelab wrote, so it is left as it is "
         r"\(--overwrite replaces only vaelab's own outputs\); give --out another name",
         "notes.html"),
    Case("outputs", "compare --out a user's data file",
         with_run(user_images, "compare", "runs/old", "--out", "data.npy", "--overwrite"),
         r"data.npy: a compare page must end in .html or .htm; give --out such a name",
         "data.npy"),
    Case("outputs", "compare --out an earlier page without --overwrite",
         with_run(earlier_page, "compare", "runs/old", "--out", "compare.html"),
         r"compare.html: already exists; pass --overwrite to replace it \(a compare page",
         "compare.html"),
    Case("outputs", "sample --out --overwrite a user's data file",
         with_run(user_images, *SAMPLE, "data.npy", "--overwrite"),
         "data.npy: exists and is not a samples file vaelab wrote", "data.npy"),
    Case("outputs", "sample --out inside a run directory",
         with_run(nothing, *SAMPLE, "runs/old/samples.png"),
         "runs/old: is a run directory", "--out"),
    Case("outputs", "sample --out a directory",
         with_run(directory("pictures.png"), *SAMPLE, "pictures.png"),
         "pictures.png: is a directory; give --out a file name", "pictures.png"),
    Case("outputs", "sample --out earlier samples without --overwrite",
         with_run(earlier_samples, *SAMPLE, "s.npy"),
         "s.npy: already exists; pass --overwrite to replace it", "s.npy"),
    Case("outputs", "export --out a run directory",
         with_run(nothing, *EXPORT, "runs/old"), "runs/old: is a run directory", "--out"),
    Case("outputs", "export --out --overwrite over a user's file of the same name",
         with_run(user_file("models/encoder.pt"), *EXPORT, "models", "--overwrite"),
         "models/encoder.pt: exists and is not an export file vaelab wrote", "models/encoder.pt"),
    Case("outputs", "plot where the run's figures folder is a file",
         with_run(figures_is_a_file, "plot", "runs/old"),
         "runs/old/figures: is not a folder, and vaelab keeps the run's figures here",
         "runs/old/figures"),
    Case("outputs", "report where the run's report.html is a folder",
         with_run(report_is_a_folder, "report", "runs/old"),
         "runs/old/report.html: is not a file, and vaelab writes a file of the run here",
         "runs/old/report.html"),
    Case("outputs", "sample --out into a folder whose record of outputs is a folder",
         with_run(record_is_a_folder, *SAMPLE, "s.png"),
         r"^vaelab: error: \.vaelab-outputs\.json: is not the file in which vaelab records its "
         "outputs in this folder, so nothing is written here; move it away$",
         ".vaelab-outputs.json"),
    Case("outputs", "plot where the run's figures folder is a link to a user's folder",
         with_run(linked_to_user_folder("figures"), "plot", "runs/old"),
         "runs/old/figures: is a symbolic link, and vaelab keeps the run's figures here; move it "
         "away", "runs/old/figures"),
    Case("outputs", "plot where one figure is a link to a user's file",
         with_run(linked_to_user_file("figures/samples.png"), "plot", "runs/old"),
         "runs/old/figures/samples.png: is a symbolic link, and vaelab writes a file of the run "
         "here", "runs/old/figures/samples.png"),
    Case("outputs", "plot where the run's figures.json is a folder",
         with_run(run_file_is_a_folder("figures.json"), "plot", "runs/old"),
         "runs/old/figures.json: is not a file, and vaelab writes a file of the run here",
         "runs/old/figures.json"),
    Case("outputs", "report where report.html is a link to a user's file",
         with_run(linked_to_user_file("report.html"), "report", "runs/old"),
         "runs/old/report.html: is a symbolic link", "runs/old/report.html"),
    Case("outputs", "evaluate where eval.json is a folder",
         with_run(run_file_is_a_folder("eval.json"), "evaluate", "runs/old", "--device", "cpu"),
         "runs/old/eval.json: is not a file, and vaelab writes a file of the run here",
         "runs/old/eval.json"),
    Case("outputs", "evaluate where eval.json is a link to a user's file",
         with_run(linked_to_user_file("eval.json"), "evaluate", "runs/old", "--device", "cpu"),
         "runs/old/eval.json: is a symbolic link", "runs/old/eval.json"),
    Case("outputs", "train --overwrite where the run's tensorboard folder is a link",
         lambda w: (saved_run(w), linked_to_user_folder("tensorboard")(w), overwrite_old(w))[2],
         "runs/old/tensorboard: is a symbolic link, and vaelab keeps the run's TensorBoard logs "
         "here", "runs/old/tensorboard"),
    Case("outputs", "train --overwrite where a run's file is a link to a user's file",
         lambda w: (saved_run(w), linked_to_user_file("metrics.csv")(w), overwrite_old(w))[2],
         "runs/old/metrics.csv: is a symbolic link", "runs/old/metrics.csv"),
    Case("outputs", "evaluate where the run's .lock is a link to a user's file",
         with_run(linked_to_user_file(".lock"), "evaluate", "runs/old", "--device", "cpu"),
         r"^vaelab: error: runs/old/\.lock: is a symbolic link, and vaelab keeps the lock of "
         "runs/old here; move it away$", "runs/old/.lock"),
    Case("outputs", "plot where the run's .lock is a pipe",
         with_run(lambda w: os.mkfifo(w / "runs" / "old" / ".lock"), "plot", "runs/old"),
         r"runs/old/\.lock: is not a file, and vaelab keeps the lock of runs/old here",
         "runs/old/.lock"),
    Case("outputs", "train --name that leads out of --runs-dir",
         lambda w: train_csv_args(w)[:-2] + ["--name", "../../elsewhere"],
         r"Invalid value for '--name': expected one folder name \(no '/', not '\.' or '\.\.'\), "
         "got '../../elsewhere'", "--name"),
    Case("outputs", "sweep --name ..",
         lambda w: ["sweep", "--set", "latent_dim=2", "--runs-dir", "runs", "--name", ".."],
         r"Invalid value for '--name': expected one folder name", "--name"),
    # messages
    Case("messages", "a path holding a newline", lambda w: ["evaluate", "runs/no\nne"],
         r"^vaelab: error: runs/no\\nne: run directory not found$", "runs/no\\nne"),
    Case("messages", "a path holding an escape sequence",
         lambda w: ["compare", "runs/\x1b[2Jold", "--out", "c.html"],
         r"runs/\\x1b\[2Jold: run directory not found", "runs/\\x1b"),
    Case("messages", "evaluate --test-data without --data names evaluate's own options",
         with_run(nothing, "evaluate", "runs/old", "--test-data", "test.csv"),
         r"^vaelab: error: --test-data needs --data \(the training data\)$", "--test-data"),
    Case("messages", "--resume with --config names the option as it is spelt",
         lambda w: ["train", "--resume", "runs/r", "--config", "c.toml"],
         r"settings in its config.json; drop --config$", "--config"),
    Case("messages", "float pixels 0-16 (scikit-learn's digits)", digits_like,
         r"found min 0 and max 16; values 0-16 .* divide by their own maximum \(16\), not by "
         "255", "x.npy"),
]
# fmt: on
