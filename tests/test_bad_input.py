"""Bad input: every case of the catalogue gives one line, exit 2, no traceback, nothing written;
random and mutated bytes given to the file readers raise VaelabError and nothing else."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save

from tests.bad_input_cases import CASES, Case, pickle_bomb, saved_run
from tests.helpers import run_vaelab, synthetic_images, write_csv, write_idx
from vaelab import rundir
from vaelab.config import ModelConfig, RunConfig, TrainConfig
from vaelab.data import Dataset, read_csv, read_idx, read_idx_split, to_unit_float
from vaelab.errors import VaelabError
from vaelab.models import VAE
from vaelab.training import train
from vaelab.training.checkpoint import METADATA_KEY, Trainables, load_checkpoint, run_identity
from vaelab.training.epoch import make_optimizer, make_scheduler
from vaelab.training.guard import RunGuard, TrainingInterrupted
from vaelab.training.start import run_layout


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes, to prove a refused command wrote nothing."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case.group}: {case.what}")
def test_bad_input_is_one_line_exit_2_nothing_written(case: Case, tmp_path, monkeypatch, cli):
    if "cuda" in case.what and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    monkeypatch.chdir(tmp_path)
    args = case.build(tmp_path)
    runs_before = snapshot(tmp_path / "runs")
    code, _, err = cli(*args)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("vaelab: error: "), err
    assert re.search(case.expect, lines[0]), lines[0]
    assert case.names in lines[0]
    assert snapshot(tmp_path / "runs") == runs_before
    assert not (tmp_path / "PWNED").exists()


def _run_case_process(case: Case, work: Path) -> str | None:
    """Run one case as `python -m vaelab ...` in `work`; what went wrong, or None."""
    work.mkdir()
    args = case.build(work)
    before = snapshot(work)
    result = run_vaelab(*args, cwd=work, timeout=120)
    lines = result.stderr.strip().splitlines()
    problems = []
    if result.returncode != 2:
        problems.append(f"exit {result.returncode}")
    if "Traceback" in result.stderr:
        problems.append("a traceback")
    if len(lines) != 1 or not lines[0].startswith("vaelab: error: "):
        problems.append(f"{len(lines)} lines on stderr")
    elif not re.search(case.expect, lines[0]) or case.names not in lines[0]:
        problems.append("another message")
    if snapshot(work) != before:
        problems.append("files written or changed")
    if (work / "PWNED").exists():
        problems.append("a pickle's payload ran")
    if problems:
        return f"{case.group}: {case.what}: {', '.join(problems)}: {result.stderr.strip()[:300]}"
    return None


@pytest.mark.slow
def test_every_case_as_a_real_process_is_one_line_exit_2_nothing_changed(tmp_path):
    """The whole catalogue again, each case a `python -m vaelab` process of its own: exit 2, one
    line, no traceback, and every file of its working directory byte-identical afterwards."""
    cases = [c for c in CASES if not ("cuda" in c.what and torch.cuda.is_available())]
    with ThreadPoolExecutor(max_workers=max(os.cpu_count() or 1, 2)) as pool:
        failures = pool.map(
            lambda numbered: _run_case_process(numbered[1], tmp_path / f"case{numbered[0]}"),
            enumerate(cases),
        )
        found = [failure for failure in failures if failure is not None]
    assert not found, "\n".join(found)


@pytest.mark.slow
def test_cli_process_refuses_a_pickle_without_running_it(tmp_path):
    """A real process: exit 2, one line, no traceback, and the pickle's payload never ran."""
    run = saved_run(tmp_path)
    pickle_bomb(run)
    result = run_vaelab("evaluate", "runs/old", "--device", "cpu", cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "vaelab: error: runs/old/model.safetensors: is a Python pickle, not safetensors; "
        "refused and not unpickled (vaelab loads only safetensors)"
    ]
    assert not (tmp_path / "PWNED").exists()


def test_unwritable_run_directory_is_refused_before_training(
    tmp_path, monkeypatch, cli, tiny_dataset
):
    """Permission denied on the probe write (as root chmod would not stop us, so simulate it)."""
    monkeypatch.chdir(tmp_path)
    real_write = Path.write_bytes

    def denied(self, data):
        if self.name == ".write-test":
            raise PermissionError(13, "Permission denied")
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", denied)
    monkeypatch.setattr("vaelab.cli.train.load_dataset", lambda config: tiny_dataset)
    code, out, err = cli("train", "--epochs", 1, "--batch-size", 32, "--name", "r")
    assert code == 2 and "epoch 01" not in out
    assert (
        err.strip() == "vaelab: error: runs/r: cannot write the run directory (Permission denied)"
    )


# ---------------------------------------------------------------- property tests

FUZZ = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
TRICKY_FIELDS = [
    "", " ", "-1", "256", "3.5", "1e3", "nan", "inf", "0x10", "1_0", "\uff11", "+7", "--3",
    "9" * 30, '"5"', "\x00", "5 5", "\t255",
]  # fmt: skip


@st.composite
def mutations(draw, original: bytes) -> bytes:
    """`original` with a few bytes flipped, inserted or deleted, or cut short."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        else:
            del data[pos:]
    return bytes(data)


def fuzz_file(payload: bytes, name: str = "f") -> Path:
    directory = Path(tempfile.mkdtemp(prefix="vaelab-fuzz-"))
    path = directory / name
    path.write_bytes(payload)
    return path


def only_vaelab_errors(read, payload: bytes, name: str = "f") -> None:
    path = fuzz_file(payload, name)
    try:
        read(path)
    except VaelabError as exc:
        assert "\n" not in str(exc)
    finally:
        for child in path.parent.iterdir():
            child.unlink()
        path.parent.rmdir()


def _idx_bytes(array: np.ndarray, compress: bool) -> bytes:
    path = fuzz_file(b"")
    write_idx(path, array, compress=compress)
    payload = path.read_bytes()
    path.unlink()
    path.parent.rmdir()
    return payload


IMAGES, LABELS = synthetic_images(5, side=4)
VALID_IDX = [_idx_bytes(IMAGES, False), _idx_bytes(IMAGES, True), _idx_bytes(LABELS, True)]


class TestIdxReaderProperties:
    @FUZZ
    @given(st.binary(max_size=300))
    def test_random_bytes_raise_only_vaelab_errors(self, payload):
        only_vaelab_errors(read_idx, payload)

    @FUZZ
    @given(st.sampled_from(VALID_IDX).flatmap(mutations))
    def test_mutated_files_raise_only_vaelab_errors(self, payload):
        only_vaelab_errors(read_idx, payload)

    @FUZZ
    @given(st.sampled_from(VALID_IDX).flatmap(mutations))
    def test_mutated_images_beside_valid_labels_raise_only_vaelab_errors(self, payload):
        labels = fuzz_file(VALID_IDX[2])
        try:
            only_vaelab_errors(lambda path: read_idx_split(path, labels), payload)
        finally:
            labels.unlink()
            labels.parent.rmdir()


def _valid_csv() -> str:
    pixels, labels = synthetic_images(4, side=2)
    path = fuzz_file(b"")
    write_csv(path, pixels.reshape(4, -1), labels)
    text = path.read_text()
    path.unlink()
    path.parent.rmdir()
    return text


VALID_CSV = _valid_csv()


@st.composite
def csv_with_a_tricky_field(draw) -> bytes:
    rows = [line.split(",") for line in VALID_CSV.splitlines()]
    row = draw(st.integers(0, len(rows) - 1))
    col = draw(st.integers(0, len(rows[row]) - 1))
    rows[row][col] = draw(st.sampled_from(TRICKY_FIELDS) | st.text(max_size=6))
    return ("\n".join(",".join(r) for r in rows) + "\n").encode("utf-8", "surrogatepass")


class TestCsvReaderProperties:
    @FUZZ
    @given(st.binary(max_size=300))
    def test_random_bytes_raise_only_vaelab_errors(self, payload):
        only_vaelab_errors(read_csv, payload)

    @FUZZ
    @given(mutations(VALID_CSV.encode()))
    def test_mutated_files_raise_only_vaelab_errors(self, payload):
        only_vaelab_errors(read_csv, payload)

    @FUZZ
    @given(csv_with_a_tricky_field())
    def test_a_tricky_field_is_refused_or_read_as_an_integer_0_255(self, payload):
        path = fuzz_file(payload)
        try:
            pixels, labels = read_csv(path)
        except VaelabError as exc:
            assert str(path) in str(exc)
        else:
            assert pixels.dtype == np.uint8 and labels.min() >= 0 and labels.max() <= 255
        finally:
            path.unlink()
            path.parent.rmdir()


@pytest.mark.parametrize("field", ["1_0", "\uff11", "5.0", "1e2", "0x10", "5 5", "--3"])
def test_integers_must_be_plain_ascii_digits(tmp_path, field):
    """Python's int() takes '1_0' and non-ASCII digits; a CSV of pixels must not."""
    path = tmp_path / "a.csv"
    path.write_text(f"label,a,b,c,d\n1,2,{field},4,5\n", encoding="utf-8")
    with pytest.raises(VaelabError, match=r"line 2, column 3 \(pixel2\): .* is not an integer"):
        read_csv(path)


TINY = ModelConfig(input_dim=4, hidden=(3,), latent_dim=1)


def _tiny_weights() -> bytes:
    """A TINY model's weights as safetensors bytes, the same on every run."""
    torch.manual_seed(0)
    return save({k: v.contiguous() for k, v in VAE(TINY).state_dict().items()})


VALID_WEIGHTS = _tiny_weights()


def _load_tiny(path: Path) -> None:
    rundir.load_weights(path, VAE(TINY))


class TestCheckpointReaderProperties:
    @FUZZ
    @given(st.binary(max_size=300))
    def test_random_bytes_raise_only_vaelab_errors(self, payload):
        only_vaelab_errors(_load_tiny, payload, "model.safetensors")

    @FUZZ
    @given(mutations(VALID_WEIGHTS))
    def test_mutated_weights_raise_only_vaelab_errors(self, payload):
        only_vaelab_errors(_load_tiny, payload, "model.safetensors")

    @FUZZ
    @given(mutations(json.dumps(RunConfig(model=TINY).to_dict()).encode()))
    def test_mutated_config_json_raises_only_vaelab_errors(self, payload):
        only_vaelab_errors(lambda path: rundir.load_config(path.parent), payload, "config.json")

    @FUZZ
    @given(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
            max_leaves=8,
        ),
        st.sampled_from(["model", "data", "train"]),
        st.sampled_from(["input_dim", "hidden", "latent_dim", "epochs", "lr", "train_csv", "x"]),
    )
    def test_config_json_values_of_any_type_raise_only_vaelab_errors(self, value, section, key):
        payload = json.dumps({section: {key: value}}).encode()
        only_vaelab_errors(lambda path: rundir.load_config(path.parent), payload, "config.json")

    def test_a_huge_model_in_config_json_is_refused_without_allocating_it(self, tmp_path):
        run = saved_run(tmp_path)
        config = json.loads((run / "config.json").read_text())
        config["model"]["hidden"] = [2**40, 4]
        (run / "config.json").write_text(json.dumps(config))
        with pytest.raises(VaelabError, match=r"config.json: model: each of hidden and latent_dim"):
            rundir.load_model(run)


# ---------------------------------------------------------------- training checkpoints

FUZZ_RUN = RunConfig(
    model=ModelConfig(input_dim=16, hidden=(4,), latent_dim=1),
    train=TrainConfig(epochs=2, batch_size=32, test_batch_size=64, precision="32"),
)


def _fuzz_dataset() -> Dataset:
    train_x, train_y = synthetic_images(96, seed=1)
    test_x, test_y = synthetic_images(32, seed=2)
    return Dataset(
        to_unit_float(train_x), torch.from_numpy(train_y.astype(np.int64)),
        to_unit_float(test_x), torch.from_numpy(test_y.astype(np.int64)),
        (4, 4), ("a", "b"), "synthetic",
    )  # fmt: skip


@pytest.fixture(scope="module")
def mid_epoch_checkpoint(tmp_path_factory) -> tuple[dict[str, torch.Tensor], dict]:
    """A real checkpoint written by a SIGINT inside epoch 2: every kind of field is present."""
    run = tmp_path_factory.mktemp("fuzz") / "run"
    original = RunGuard.after_step

    def interrupt_at_step_2_of_epoch_2(self, epoch, progress):
        if (epoch, progress.step) == (2, 2):
            signal.raise_signal(signal.SIGINT)
        return original(self, epoch, progress)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RunGuard, "after_step", interrupt_at_step_2_of_epoch_2)
        with pytest.raises(TrainingInterrupted):
            train(FUZZ_RUN, _fuzz_dataset(), run_dir=run, log=None)
    tensors, metadata = rundir.read_safetensors(run / rundir.CHECKPOINT_FILE)
    return tensors, json.loads(metadata[METADATA_KEY])


def _restore_into_a_fresh_run(path: Path) -> None:
    dataset = _fuzz_dataset()
    config = replace(
        FUZZ_RUN, model=replace(FUZZ_RUN.model, input_dim=16, image_shape=dataset.shape)
    )
    torch.manual_seed(0)
    model = VAE(config.model)
    optimizer = make_optimizer(model, config.train)
    steps = len(dataset.train_images) // config.train.batch_size
    parts = Trainables(
        model, optimizer, make_scheduler(optimizer, config.train, steps), torch.Generator()
    )
    identity = run_identity(
        config.to_dict(), (dataset.train_images, dataset.test_images), torch.device("cpu"), "32"
    )
    load_checkpoint(path, parts, run_layout(config, len(dataset.train_images), steps), identity)


def _paths(value, prefix=()):
    """Every path into a JSON value, for the mutations to pick from."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:3]):
            yield from _paths(item, (*prefix, index))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
TENSORS = st.sampled_from([
    torch.zeros(0), torch.zeros(3), torch.full((2, 2), float("nan")), torch.zeros(96),
    torch.arange(96), torch.zeros(5056, dtype=torch.uint8), torch.ones(624, dtype=torch.int64),
    torch.zeros(3, dtype=torch.float64), torch.arange(96).flip(0),
])  # fmt: skip


class TestTrainingCheckpointProperties:
    def test_the_unmutated_checkpoint_restores_into_a_fresh_run(
        self, mid_epoch_checkpoint, tmp_path
    ):
        tensors, meta = mid_epoch_checkpoint
        path = tmp_path / "checkpoint.safetensors"
        path.write_bytes(save(tensors, metadata={METADATA_KEY: json.dumps(meta)}))
        _restore_into_a_fresh_run(path)

    @FUZZ
    @given(data=st.data())
    def test_mutated_bytes_raise_only_vaelab_errors(self, mid_epoch_checkpoint, data):
        tensors, meta = mid_epoch_checkpoint
        valid = save(tensors, metadata={METADATA_KEY: json.dumps(meta)})
        payload = data.draw(mutations(valid))
        only_vaelab_errors(_restore_into_a_fresh_run, payload, "checkpoint.safetensors")

    @FUZZ
    @given(data=st.data())
    def test_a_mutated_json_record_raises_only_vaelab_errors(self, mid_epoch_checkpoint, data):
        """A well-formed safetensors file whose JSON record has one value replaced."""
        tensors, meta = mid_epoch_checkpoint
        meta = json.loads(json.dumps(meta))
        path = data.draw(st.sampled_from(list(_paths(meta))[1:]))
        target = meta
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = data.draw(JSON_VALUES)
        payload = save(tensors, metadata={METADATA_KEY: json.dumps(meta)})
        only_vaelab_errors(_restore_into_a_fresh_run, payload, "checkpoint.safetensors")

    @FUZZ
    @given(data=st.data())
    def test_a_tensor_replaced_or_removed_raises_only_vaelab_errors(
        self, mid_epoch_checkpoint, data
    ):
        tensors, meta = mid_epoch_checkpoint
        tensors = dict(tensors)
        name = data.draw(st.sampled_from(sorted(tensors)))
        if data.draw(st.booleans()):
            del tensors[name]
        else:
            tensors[name] = data.draw(TENSORS).clone()
        payload = save(tensors, metadata={METADATA_KEY: json.dumps(meta)})
        only_vaelab_errors(_restore_into_a_fresh_run, payload, "checkpoint.safetensors")


def test_fuzz_leaves_no_temporary_directories_behind():
    """The helpers clean up after themselves, so the property tests do not litter /tmp."""
    before = set(os.listdir(tempfile.gettempdir()))
    only_vaelab_errors(read_idx, gzip.compress(b"\x00\x00\x08\x01"))
    assert set(os.listdir(tempfile.gettempdir())) == before
