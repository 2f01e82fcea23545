"""The run directory: what a run leaves on disk, written atomically, and the one loader of a run.

RUN/config.json (the config and what was recorded beside it), metrics.csv (one row per epoch),
model.safetensors (the weights), checkpoint.safetensors (the resumable training state, see
`vaelab.training.checkpoint`), eval.json, figures/ and report.html. A process writing a run holds
RUN/.lock (`run_lock`), so two writers cannot mix their files.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import hashlib
import io
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save

from vaelab._io import atomic_write_bytes, atomic_write_text, read_bytes, remove_stale_temp_files
from vaelab.config import DataConfig, RunConfig
from vaelab.data import Dataset, load_dataset, require_image_size
from vaelab.data.dataset import test_fingerprint
from vaelab.errors import VaelabError
from vaelab.models import VAE

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
WEIGHTS_FILE = "model.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"
EVAL_FILE = "eval.json"
REPORT_FILE = "report.html"
FIGURES_DIR = "figures"
# The figures vaelab draws into RUN/figures/ (the same names as `vaelab.viz.plots.FIGURE_FILES`),
# and RUN/figures.json, the record of which weights they were drawn from.
FIGURE_FILES = (
    "learning_curves.png",
    "reconstructions.png",
    "latent.png",
    "manifold.png",
    "samples.png",
    "interpolation.png",
)
FIGURES_RECORD = "figures.json"
# The advisory lock held by the process writing a run; it holds that process's PID.
LOCK_FILE = ".lock"
_PROBE_FILE = ".write-test"
# The files of a run that a new one could be mixed up with.
RUN_FILES = (CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE, CHECKPOINT_FILE)
# Every file vaelab writes at the top of a run directory: what overwrite=True removes.
VAELAB_FILES = (*RUN_FILES, EVAL_FILE, REPORT_FILE, FIGURES_RECORD)


class RunExists(VaelabError):
    """A run directory that already holds a run, and neither overwrite nor resume was asked for."""

    def __init__(self, run_dir: Path, resumable: bool) -> None:
        hint = ", or resume=True to continue it" if resumable else ""
        super().__init__(
            f"{run_dir}: run directory already exists; pass overwrite=True to replace it{hint}",
            parameters=("overwrite", "resume"),
        )
        self.run_dir = run_dir
        self.resumable = resumable


class RunBusy(VaelabError):
    """Another process holds the run directory's lock: it is writing that run now."""

    def __init__(self, run_dir: Path, pid: int | None) -> None:
        holder = f"PID {pid}" if pid is not None else "PID unknown"
        super().__init__(
            f"{run_dir}: another vaelab process ({holder}) is writing this run directory; "
            "wait for it to finish or stop it"
        )
        self.run_dir = run_dir
        self.pid = pid


# ---------------------------------------------------------------- the lock of a run directory

# Locks this process holds: resolved run directory -> [file descriptor, depth]. A process that
# already holds a run's lock may take it again (train, then draw the figures of the same run).
_HELD: dict[str, list[int]] = {}


def _lock_holder(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _acquire(run_dir: Path) -> int:
    """flock RUN/.lock without waiting and write this PID into it; refuse if another holds it.

    The kernel releases the lock when its holder dies, even by SIGKILL, so it is never stale.
    A lock file unlinked by its previous holder between our open and our flock is opened again.
    """
    if not run_dir.is_dir():
        raise VaelabError(f"{run_dir}: run directory not found")
    path = run_dir / LOCK_FILE
    for _ in range(10):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise VaelabError(
                f"{run_dir}: cannot write the run directory ({exc.strerror})"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            pid = _lock_holder(fd)
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                raise RunBusy(run_dir, pid) from None
            raise VaelabError(
                f"{run_dir}: cannot lock the run directory ({exc.strerror})"
            ) from None
        try:
            current = os.path.samestat(os.fstat(fd), os.stat(path))
        except OSError:
            current = False
        if current:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            return fd
        os.close(fd)
    raise VaelabError(f"{run_dir}: cannot lock the run directory (its lock file keeps changing)")


def _release(run_dir: Path, fd: int) -> None:
    try:
        (run_dir / LOCK_FILE).unlink(missing_ok=True)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold the run directory's lock while writing it; another writer is refused at once.

    The lock is RUN/.lock, locked with flock(2) and holding the PID of its holder; the kernel
    releases it when the process ends however it ends. Taking it removes the temporary files
    that a write cut short by a crash left (`.NAME.*.tmp`). Reentrant within one process.
    """
    run_dir = Path(run_dir)
    key = str(run_dir.resolve())
    held = _HELD.get(key)
    if held is not None:
        held[1] += 1
        try:
            yield run_dir
        finally:
            held[1] -= 1
        return
    fd = _acquire(run_dir)
    _HELD[key] = [fd, 1]
    try:
        remove_temp_files(run_dir)
        yield run_dir
    finally:
        del _HELD[key]
        _release(run_dir, fd)


def remove_temp_files(run_dir: Path) -> None:
    """Remove what writes of vaelab's files that a crash cut short left (`.NAME.*.tmp`)."""
    remove_stale_temp_files(run_dir, (*VAELAB_FILES, _PROBE_FILE))
    figures = run_dir / FIGURES_DIR
    if figures.is_dir():
        remove_stale_temp_files(figures, FIGURE_FILES)


def remove_run_files(run_dir: Path) -> None:
    """Remove every file vaelab wrote in `run_dir`, and nothing else (a user's files stay)."""
    for name in (*VAELAB_FILES, _PROBE_FILE):
        (run_dir / name).unlink(missing_ok=True)
    figures = run_dir / FIGURES_DIR
    if figures.is_dir():
        for name in FIGURE_FILES:
            (figures / name).unlink(missing_ok=True)
        remove_stale_temp_files(figures, FIGURE_FILES)
        with suppress(OSError):
            figures.rmdir()  # only when empty: a user's file there keeps it
    remove_temp_files(run_dir)


def _holds_something(run_dir: Path) -> bool:
    """Whether `run_dir` holds anything besides the lock and what crashed writes left."""
    remove_temp_files(run_dir)
    return any(p.name not in (LOCK_FILE, _PROBE_FILE) for p in run_dir.iterdir())


@dataclass
class Claim:
    """A run directory this process holds for writing (see `claim_run_dir`).

    `created`: this attempt made the directory. `keep`: what the attempt wrote stays if it
    fails; it starts True for a resumed run and is set by the training loop otherwise.
    """

    run_dir: Path
    created: bool
    keep: bool


def _make_dir(run_dir: Path) -> bool:
    """Create `run_dir` atomically (mkdir without exist_ok); False when it was already there."""
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        run_dir.mkdir()
        return True
    except FileExistsError:
        if not run_dir.is_dir():
            raise VaelabError(f"{run_dir}: exists and is not a directory") from None
        return False
    except OSError as exc:
        raise VaelabError(f"{run_dir}: cannot write the run directory ({exc.strerror})") from None


def _probe(run_dir: Path) -> None:
    try:
        probe = run_dir / _PROBE_FILE
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise VaelabError(f"{run_dir}: cannot write the run directory ({exc.strerror})") from None


def _check_resumable(run_dir: Path) -> None:
    if (run_dir / CHECKPOINT_FILE).is_file():
        return
    if not run_dir.is_dir():
        raise VaelabError(f"{run_dir}: run directory not found; nothing to resume")
    if (run_dir / WEIGHTS_FILE).is_file() or not (run_dir / CONFIG_FILE).is_file():
        raise VaelabError(f"{run_dir}: no {CHECKPOINT_FILE}; nothing to resume")
    raise VaelabError(
        f"{run_dir}: stopped before its first checkpoint (no {CHECKPOINT_FILE}); nothing to "
        "resume; start it again with overwrite=True",
        parameters=("overwrite",),
    )


@contextmanager
def claim_run_dir(run_dir: Path, overwrite: bool = False, resume: bool = False) -> Iterator[Claim]:
    """Create `run_dir` (or reopen it to resume), lock it, and check that it can be written.

    A new directory is made by one atomic mkdir, so of two processes starting the same run one
    wins. A directory that already holds something is refused unless `overwrite` (which removes
    every file vaelab wrote there, and nothing else) or `resume` (which needs its checkpoint);
    another process writing it is refused at once, naming its PID. If the body fails and
    `Claim.keep` is False, what this attempt wrote is removed again (and the directory, if this
    attempt made it and nothing else is in it), so a failed start does not block the next one.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise VaelabError(f"{run_dir}: exists and is not a directory")
    if resume:
        if not run_dir.is_dir():
            _check_resumable(run_dir)  # says it is not found
        created = False
    else:
        created = _make_dir(run_dir)
    claim = Claim(run_dir, created, keep=resume)
    try:
        with run_lock(run_dir):  # before anything else: a run being written is refused at once
            _probe(run_dir)
            if resume:
                _check_resumable(run_dir)
            elif not created and _holds_something(run_dir):
                if not overwrite:
                    raise RunExists(run_dir, resumable=(run_dir / CHECKPOINT_FILE).is_file())
                remove_run_files(run_dir)
            try:
                yield claim
            except BaseException:
                if not claim.keep:
                    remove_run_files(run_dir)
                raise
    except BaseException:
        if claim.created and not claim.keep:
            with suppress(OSError):
                run_dir.rmdir()  # only when empty
        raise


def prepare_run_dir(run_dir: Path, overwrite: bool = False, resume: bool = False) -> Path:
    """Create `run_dir` (or reopen it to resume) and check that it can be written.

    A directory that already holds something is refused unless `overwrite` (which removes the
    earlier run's files) or `resume` (which needs its checkpoint). See `claim_run_dir`, which
    also keeps the directory locked while it is written.
    """
    with claim_run_dir(run_dir, overwrite, resume) as claim:
        claim.keep = True
    return run_dir


# ---------------------------------------------------------------- fingerprints of the weights

# The SHA-256 of the weights file as `load_model` last read it, by resolved path: what a later
# write about those weights (eval.json) checks the file against.
_LOADED_WEIGHTS: dict[str, str] = {}


def weights_sha256(run_dir: str | Path) -> str:
    """The SHA-256 (hex) of RUN/model.safetensors: the fingerprint of the weights of a run."""
    return hashlib.sha256(read_bytes(Path(run_dir) / WEIGHTS_FILE)).hexdigest()


def loaded_weights_sha256(run_dir: str | Path) -> str | None:
    """The fingerprint of RUN/model.safetensors as this process last loaded it, if it did."""
    return _LOADED_WEIGHTS.get(str((Path(run_dir) / WEIGHTS_FILE).resolve()))


def figures_weights_sha256(run_dir: str | Path) -> str | None:
    """The fingerprint of the weights RUN/figures/ was drawn from, None when not recorded."""
    path = Path(run_dir) / FIGURES_RECORD
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return None
    value = raw.get("weights_sha256") if isinstance(raw, dict) else None
    return value if isinstance(value, str) else None


def record_figures(run_dir: str | Path, sha256: str) -> None:
    """Record in RUN/figures.json the fingerprint of the weights RUN/figures/ was drawn from."""
    path = Path(run_dir) / FIGURES_RECORD
    atomic_write_text(path, json.dumps({"weights_sha256": sha256}) + "\n")


def save_config(run_dir: Path, config: RunConfig, extra: dict[str, Any]) -> None:
    """Write RUN/config.json: the config, and what vaelab records beside it (`extra`)."""
    payload = {**config.to_dict(), **extra}
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(payload, indent=2) + "\n")


def load_run_info(run_dir: str | Path) -> dict[str, Any]:
    """The whole config.json, including what vaelab recorded beside the config (versions, data)."""
    if not Path(run_dir).is_dir():
        raise VaelabError(f"{run_dir}: run directory not found")
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise VaelabError(f"{path}: not found; is {run_dir} a vaelab run directory?")
    try:
        raw = json.loads(read_bytes(path).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VaelabError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise VaelabError(f"{path}: expected a JSON object")
    return raw


def load_config(run_dir: str | Path) -> RunConfig:
    """The RunConfig of a run directory, every field checked."""
    raw = load_run_info(run_dir)
    try:
        return RunConfig.from_dict({key: raw.get(key, {}) for key in ("model", "data", "train")})
    except (TypeError, VaelabError) as exc:
        raise VaelabError(f"{Path(run_dir) / CONFIG_FILE}: {exc}") from None


# Columns renamed since vaelab 0.1: runs written then are read under the new names.
_OLD_METRIC_NAMES = {"train_mse": "train_reconstruction", "test_mse": "test_reconstruction"}


def save_metrics(run_dir: Path, history: list[Any]) -> None:
    """Write one row per epoch (a list of dataclass instances) as metrics.csv."""
    if not history:
        return
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[f.name for f in fields(history[0])])
    writer.writeheader()
    for row in history:
        writer.writerow(asdict(row))
    atomic_write_text(run_dir / METRICS_FILE, out.getvalue())


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """The rows of RUN/metrics.csv as floats, under today's column names."""
    path = Path(run_dir) / METRICS_FILE
    text = read_bytes(path).decode("utf-8", errors="replace")
    try:
        return [
            {_OLD_METRIC_NAMES.get(key, key): float(value) for key, value in row.items()}
            for row in csv.DictReader(io.StringIO(text, newline=""))
        ]
    except (ValueError, TypeError) as exc:
        raise VaelabError(f"{path}: not a vaelab metrics file ({exc})") from None


def save_weights(run_dir: Path, model: VAE) -> None:
    """Write the model's weights to RUN/model.safetensors."""
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    atomic_write_bytes(run_dir / WEIGHTS_FILE, save(tensors))


# Told apart only to explain a refusal: a zip archive (torch.save's format since 1.6) or a
# pickle stream of protocol 2-5. safetensors itself never runs code from a file.
_FOREIGN_SIGNATURES = (
    ((b"PK\x03\x04",), "a torch.save (zip) file"),
    ((b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"), "a Python pickle"),
)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; anything else is refused and never unpickled."""
    return read_safetensors(path)[0]


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the string metadata of a safetensors file; never unpickles anything."""
    return _tensors_of(path, read_bytes(path, expected="a safetensors file"))


def _tensors_of(path: Path, raw: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        tensors = load_safetensors(raw)
    except (SafetensorError, ValueError, TypeError, OverflowError, RuntimeError) as exc:
        for signatures, kind in _FOREIGN_SIGNATURES:
            if raw.startswith(signatures):
                raise VaelabError(
                    f"{path}: is {kind}, not safetensors; refused and not unpickled "
                    "(vaelab loads only safetensors)"
                ) from None
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise VaelabError(f"{path}: not a valid safetensors file ({reason})") from None
    # The header was just validated by safetensors: 8 bytes of length, then a JSON object.
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    return tensors, header.get("__metadata__") or {}


def load_weights(path: Path, model: VAE) -> VAE:
    """Load safetensors weights into `model`, naming any mismatch; never unpickles anything."""
    state = read_tensors(path)
    check_weights(path, state, model.state_dict())
    model.load_state_dict(state)
    return model


def check_weights(
    path: Path, state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]
) -> None:
    """Refuse tensors whose names, shapes or kinds differ from `expected`, or that hold NaN/inf."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise VaelabError(
            f"{path}: weights do not match the model (missing: {', '.join(missing) or 'none'}; "
            f"unexpected: {', '.join(unexpected) or 'none'})"
        )
    for name, tensor in expected.items():
        got = state[name]
        if got.shape != tensor.shape:
            raise VaelabError(
                f"{path}: {name} has shape {tuple(got.shape)}, "
                f"the model expects {tuple(tensor.shape)}"
            )
        if got.is_floating_point() != tensor.is_floating_point():
            raise VaelabError(
                f"{path}: {name} has dtype {got.dtype}, the model expects {tensor.dtype}"
            )
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise VaelabError(f"{path}: {name} holds non-finite values; the file is damaged")


def model_skeleton(config: RunConfig, source: Path) -> VAE:
    """The model `config` describes, on the meta device: its shapes without allocating memory.

    A config.json is not trusted: its sizes are checked against the weights file before any real
    tensor of that size is made.
    """
    try:
        with torch.device("meta"):
            return VAE(config.model)
    except (RuntimeError, ValueError, OverflowError, TypeError, MemoryError) as exc:
        raise VaelabError(f"{source}: describes a model that cannot be built ({exc})") from None


def load_model(run_dir: str | Path, device: str | torch.device = "cpu") -> VAE:
    """Rebuild the model of a run directory from config.json and model.safetensors, in eval mode."""
    run_dir = Path(run_dir)
    config = load_config(run_dir)
    path = run_dir / WEIGHTS_FILE
    raw = read_bytes(path, expected="a safetensors file")
    state = _tensors_of(path, raw)[0]
    check_weights(path, state, model_skeleton(config, run_dir / CONFIG_FILE).state_dict())
    _LOADED_WEIGHTS[str(path.resolve())] = hashlib.sha256(raw).hexdigest()
    model = VAE(config.model)
    model.load_state_dict(state)
    return model.to(device).eval()


def image_shape(info: dict[str, Any], input_dim: int, run_dir: str | Path) -> tuple[int, int]:
    """(height, width) of a run's images as its config.json recorded them, else square."""
    dataset = info.get("dataset")
    shape = dataset.get("image_shape") if isinstance(dataset, dict) else None
    if (
        isinstance(shape, list)
        and len(shape) == 2
        and all(type(v) is int for v in shape)
        and shape[0] * shape[1] == input_dim
    ):
        return shape[0], shape[1]
    side = math.isqrt(input_dim)
    if side * side != input_dim:
        raise VaelabError(f"{run_dir}: config.json does not say the shape of its images")
    return side, side


@dataclass(frozen=True)
class Run:
    """A saved run opened for use: its model, config, the record beside the config, and its data."""

    run_dir: Path
    model: VAE
    config: RunConfig
    info: dict[str, Any]
    dataset: Dataset

    @cached_property
    def history(self) -> list[dict[str, float]]:
        """The rows of RUN/metrics.csv."""
        return read_metrics(self.run_dir)

    @property
    def name(self) -> str:
        """The run directory's own name."""
        return self.run_dir.resolve().name


def open_run(
    run_dir: str | Path,
    dataset: Dataset | None = None,
    data_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    data: DataConfig | None = None,
) -> Run:
    """Open a run: its model (in eval mode on `device`), config and data.

    The data is `dataset`, else the data `data` names, else Fashion-MNIST from `data_dir`, else
    what the run was trained on. Data whose images have another size than the model's, or whose
    test split differs from the one the run recorded, is refused.
    """
    run_dir = Path(run_dir)
    model = load_model(run_dir, device)
    config = load_config(run_dir)
    info = load_run_info(run_dir)
    if dataset is None:
        if data is None:
            data = config.data if data_dir is None else DataConfig(data_dir=str(data_dir))
        dataset = load_dataset(data)
    require_image_size(dataset, model.config.input_dim, run_dir)
    require_same_test_data(info, dataset, run_dir)
    return Run(run_dir, model, config, info, dataset)


def require_same_test_data(info: dict[str, Any], dataset: Dataset, run_dir: str | Path) -> None:
    """Refuse a test set other than the one the run recorded (runs of vaelab 0.1 recorded none)."""
    recorded = (
        info.get("dataset", {}).get("test_sha256")
        if isinstance(info.get("dataset"), dict)
        else None
    )
    if recorded is None or recorded == test_fingerprint(dataset):
        return
    raise VaelabError(
        f"{run_dir}: the test images of {dataset.source} are not those this run was tested on; "
        "point vaelab at the run's data with data_dir, or train_csv and test_csv",
        parameters=("data_dir", "train_csv", "test_csv"),
    )
