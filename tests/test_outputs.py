"""The one policy for every file vaelab writes at a path the user names (`vaelab._outputs`): every
command that writes, aimed at a run's files, a user's data file and a directory, is refused in
one line and changes nothing; an output vaelab wrote is replaced only with --overwrite."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.bad_input_cases import SMALL, csv_pair, saved_run, trained_run
from vaelab import rundir
from vaelab._outputs import (
    COMPARE_PAGE,
    RECORD_FILE,
    SAMPLES,
    check_output,
    check_run_file,
    check_run_folder,
    is_recorded_output,
    output_folder_lock,
    run_directory_holding,
    write_output,
)
from vaelab.errors import VaelabError

USER_BYTES = b"the user's own bytes\n"


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under `root`: a file's bytes, None for a folder."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


# ---------------------------------------------------------------- every command that writes


@dataclass(frozen=True)
class Writer:
    """A command that writes at a path the user names: `args` of that path; `suffix` of the file
    it writes ('' for a folder); whether it has --overwrite."""

    name: str
    args: Callable[[str], list[str]]
    suffix: str
    overwrite: bool = True


def _train(target: str) -> list[str]:
    where = Path(target)
    return ["train", *SMALL, "--train-csv", "train.csv", "--test-csv", "test.csv",
            "--runs-dir", str(where.parent), "--name", where.name, "--no-plots",
            "--no-tensorboard"]  # fmt: skip


def _sweep(target: str) -> list[str]:
    where = Path(target)
    return ["sweep", "--set", "beta=1,2", "--runs-dir", str(where.parent), "--name", where.name,
            "--epochs", "1", "--train-csv", "train.csv", "--test-csv", "test.csv"]  # fmt: skip


WRITERS = [
    Writer("compare", lambda t: ["compare", "runs/old", "--out", t], ".html"),
    Writer("sample", lambda t: ["sample", "runs/old", "--n", "4", "--out", t], ".npy"),
    Writer("sample png", lambda t: ["sample", "runs/old", "--n", "4", "--out", t], ".png"),
    Writer("export", lambda t: ["export", "runs/old", "--format", "torchscript", "--out", t], ""),
    Writer("train", _train, ""),
    Writer("sweep", _sweep, "", overwrite=False),
]
# What each writer's output folder would hold, for a folder of the user's with a file so named.
_FOLDER_FILE = {"export": "encoder.pt", "train": "config.json", "sweep": "config.json"}


def _target(work: Path, writer: Writer, aim: str) -> str:
    """Make what `aim` names in `work` and return the path the writer is given."""
    if aim == "a run's config.json":
        return "runs/old/config.json"
    if aim == "a run's weights":
        return "runs/old/model.safetensors"
    if aim == "a new output inside a run":
        return f"runs/old/new{writer.suffix}"
    if aim == "the run directory itself":
        return "runs/old"
    if aim == "a data file":
        name = f"data{writer.suffix or '.npy'}"
        np.save(work / "data.npy", np.random.default_rng(0).random((10, 4, 4), np.float32))
        if name != "data.npy":
            (work / name).write_bytes(USER_BYTES)
        return name
    assert aim == "a directory"
    folder = work / f"folder{writer.suffix}"
    folder.mkdir()
    (folder / _FOLDER_FILE.get(writer.name, "notes.txt")).write_bytes(USER_BYTES)
    return folder.name


AIMS = ["a run's config.json", "a run's weights", "a new output inside a run",
        "the run directory itself", "a data file", "a directory"]  # fmt: skip
WALK = [
    pytest.param(writer, aim, overwrite, id=f"{writer.name}-{aim}-{'over' if overwrite else 'new'}")
    for writer in WRITERS
    for aim in AIMS
    for overwrite in ((False, True) if writer.overwrite else (False,))
    if not (aim == "the run directory itself" and writer.suffix)  # a folder, not a file name
    if not (aim == "the run directory itself" and writer.name == "train" and overwrite)
]


@pytest.mark.parametrize(("writer", "aim", "overwrite"), WALK)
def test_every_writer_against_a_run_a_data_file_and_a_directory_is_refused_changing_nothing(
    writer, aim, overwrite, tmp_path, monkeypatch, cli
):
    monkeypatch.chdir(tmp_path)
    saved_run(tmp_path)
    target = _target(tmp_path, writer, aim)
    before = tree(tmp_path)
    args = writer.args(target) + (["--overwrite"] if overwrite else [])
    code, _, err = cli(*args)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("vaelab: error: "), err
    assert tree(tmp_path) == before


def test_train_overwrite_replaces_a_run_but_not_a_folder_of_the_users(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    csv_pair(tmp_path)
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "config.json").write_text('{"mine": true}')
    refused = cli(*_train("project"), "--overwrite")
    assert refused.code == 2 and "holds files but no vaelab run" in refused.err
    assert "--overwrite leaves it as it is" in refused.err
    assert json.loads((tmp_path / "project" / "config.json").read_text()) == {"mine": True}
    assert cli(*_train("runs/r")).code == 0
    assert cli(*_train("runs/r"), "--overwrite").code == 0


# ---------------------------------------------------------------- outputs vaelab wrote


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    return trained_run(tmp_path_factory.mktemp("outputs"))


@pytest.mark.parametrize(
    ("command", "out"),
    [
        (["sample", "--n", "4", "--out"], "s.npy"),
        (["sample", "--n", "4", "--out"], "s.png"),
        (["compare", "--out"], "page.html"),
        (["export", "--format", "torchscript", "--out"], "exported"),
    ],
    ids=["sample npy", "sample png", "compare", "export"],
)
def test_an_output_vaelab_wrote_is_replaced_only_with_overwrite_and_not_once_edited(
    command, out, finished_run, tmp_path, monkeypatch, cli
):
    monkeypatch.chdir(tmp_path)
    args = [command[0], str(finished_run), *command[1:], out]
    assert cli(*args).code == 0
    written = tree(tmp_path)
    again = cli(*args)
    assert again.code == 2 and "already exists; pass --overwrite to replace it" in again.err
    assert tree(tmp_path) == written
    assert cli(*args, "--overwrite").code == 0
    edited = tmp_path / out / "encoder.pt" if command[0] == "export" else tmp_path / out
    edited.write_bytes(edited.read_bytes() + b"edited by hand")
    kept = cli(*args, "--overwrite")
    assert kept.code == 2 and "is not" in kept.err and "vaelab wrote" in kept.err
    assert edited.read_bytes().endswith(b"edited by hand")


def test_a_sweeps_compare_page_is_its_own_and_drawn_again(finished_run, tmp_path):
    from vaelab.studies.compare_page import write_compare

    study = tmp_path / "study"
    study.mkdir()
    shutil.copytree(finished_run, study / "r")
    write_compare([study / "r"], study / "compare.html")
    write_compare([study / "r"], study / "compare.html", overwrite=True)
    assert is_recorded_output(study / "compare.html", COMPARE_PAGE)


# ---------------------------------------------------------------- the policy's pieces


def test_the_record_names_each_output_with_its_kind_and_fingerprint(tmp_path):
    write_output(tmp_path / "a.npy", SAMPLES, b"one")
    write_output(tmp_path / "b.html", COMPARE_PAGE, b"two")
    record = json.loads((tmp_path / RECORD_FILE).read_text())
    assert record["format"] == "vaelab-outputs-1"
    assert record["files"]["a.npy"]["kind"] == "samples"
    assert set(record["files"]) == {"a.npy", "b.html"}
    assert is_recorded_output(tmp_path / "a.npy", SAMPLES)
    assert not is_recorded_output(tmp_path / "a.npy", COMPARE_PAGE)  # another kind
    (tmp_path / "b.html").unlink()
    write_output(tmp_path / "a.npy", SAMPLES, b"three", overwrite=True)
    assert set(json.loads((tmp_path / RECORD_FILE).read_text())["files"]) == {"a.npy"}


def _write_in_thread(path: Path, payload: bytes) -> tuple[threading.Thread, list[BaseException]]:
    failures: list[BaseException] = []

    def write() -> None:
        try:
            write_output(path, SAMPLES, payload)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            failures.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    return thread, failures


def test_a_writer_waits_for_the_folders_lock_and_checks_again_under_it(tmp_path):
    with output_folder_lock(tmp_path):
        thread, failures = _write_in_thread(tmp_path / "a.npy", b"vaelab's")
        thread.join(timeout=0.5)
        assert thread.is_alive()  # waiting for the lock, nothing written yet
        assert not (tmp_path / "a.npy").exists()
        (tmp_path / "a.npy").write_bytes(USER_BYTES)  # another process wrote it meanwhile
    thread.join()
    assert (tmp_path / "a.npy").read_bytes() == USER_BYTES
    assert len(failures) == 1 and "exists and is not a samples file" in str(failures[0])


def test_writers_into_one_folder_keep_every_entry_of_the_record(tmp_path):
    started = [_write_in_thread(tmp_path / f"s{i}.npy", bytes([i])) for i in range(16)]
    for thread, failures in started:
        thread.join()
        assert not failures
    record = json.loads((tmp_path / RECORD_FILE).read_text())
    assert set(record["files"]) == {f"s{i}.npy" for i in range(16)}


def test_a_damaged_record_recognises_nothing(tmp_path):
    write_output(tmp_path / "a.npy", SAMPLES, b"one")
    (tmp_path / RECORD_FILE).write_text("{not json")
    with pytest.raises(VaelabError, match="is not a samples file vaelab wrote"):
        check_output(tmp_path / "a.npy", SAMPLES, overwrite=True)


def test_a_symlink_to_an_output_is_not_replaced(tmp_path):
    write_output(tmp_path / "a.npy", SAMPLES, b"one")
    (tmp_path / "link.npy").symlink_to(tmp_path / "a.npy")
    with pytest.raises(VaelabError, match="link.npy: exists and is not a samples file"):
        check_output(tmp_path / "link.npy", SAMPLES, overwrite=True)


def test_a_run_directory_is_known_by_its_weights_or_vaelabs_config(tmp_path):
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "config.json").write_text('{"name": "another tool"}')
    assert run_directory_holding(tmp_path / "project" / "sub") is None
    (tmp_path / "project" / "config.json").write_text('{"model": {}, "data": {}, "train": {}}')
    assert run_directory_holding(tmp_path / "project" / "sub") == tmp_path / "project"
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "checkpoint.safetensors").write_bytes(b"")
    assert run_directory_holding(tmp_path / "weights") == tmp_path / "weights"


def test_a_runs_own_files_and_folders_must_be_what_vaelab_writes_there(tmp_path):
    (tmp_path / "report.html").mkdir()
    (tmp_path / "figures").write_bytes(USER_BYTES)
    with pytest.raises(VaelabError, match="report.html: is not a file"):
        check_run_file(tmp_path / "report.html")
    with pytest.raises(VaelabError, match="figures: is not a folder"):
        check_run_folder(tmp_path / "figures", "figures")
    check_run_file(tmp_path / "eval.json")  # missing: written fresh
    check_run_folder(tmp_path / "tensorboard", "TensorBoard logs")


def test_a_link_in_a_run_is_refused_whether_it_leads_to_a_file_or_a_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "samples.png").write_bytes(USER_BYTES)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "figures").symlink_to(tmp_path / "mine")
    (tmp_path / "run" / "report.html").symlink_to(tmp_path / "mine" / "samples.png")
    with pytest.raises(VaelabError, match="figures: is a symbolic link, and vaelab keeps"):
        check_run_folder(tmp_path / "run" / "figures", "figures")
    with pytest.raises(VaelabError, match="report.html: is a symbolic link, and vaelab writes"):
        check_run_file(tmp_path / "run" / "report.html")


def test_overwriting_a_run_removes_nothing_through_a_link_in_it(tmp_path):
    """The figures a run's overwrite would remove are looked for in the run only: a figures/ that
    links to a folder of the user's stops the overwrite before anything is removed."""
    run = saved_run(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "samples.png").write_bytes(USER_BYTES)
    (run / "figures").symlink_to(tmp_path / "mine")
    before = tree(tmp_path)
    with pytest.raises(VaelabError, match="figures: is a symbolic link"):
        rundir.prepare_run_dir(run, overwrite=True)
    assert tree(tmp_path) == before


def test_an_output_is_not_written_where_its_record_could_not_be(tmp_path):
    (tmp_path / RECORD_FILE).mkdir()
    with pytest.raises(VaelabError, match="is not the file in which vaelab records its outputs"):
        write_output(tmp_path / "s.npy", SAMPLES, b"samples")
    assert not (tmp_path / "s.npy").exists()
    (tmp_path / RECORD_FILE).rmdir()
    (tmp_path / RECORD_FILE).symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(VaelabError, match="is not the file in which vaelab records its outputs"):
        check_output(tmp_path / "s.npy", SAMPLES)


def test_a_link_where_vaelab_keeps_a_run_s_lock_or_probe_is_never_written_through(tmp_path):
    run = saved_run(tmp_path)
    (tmp_path / "mine.txt").write_bytes(USER_BYTES)
    (run / ".write-test").symlink_to(tmp_path / "mine.txt")
    rundir.prepare_run_dir(run, overwrite=True)  # the probe's link is removed, not written
    assert (tmp_path / "mine.txt").read_bytes() == USER_BYTES
    (run / ".lock").symlink_to(tmp_path / "mine.txt")
    with pytest.raises(VaelabError, match=r"\.lock: is a symbolic link"), rundir.run_lock(run):
        pass
    assert (tmp_path / "mine.txt").read_bytes() == USER_BYTES
