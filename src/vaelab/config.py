"""Typed configuration: the tutorial's defaults, validated at construction, JSON round-trip."""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from vaelab.errors import VaelabError

DEVICES = ("auto", "cpu", "cuda")
LR_SCHEDULES = ("constant", "cosine-tail")
# 'auto': bf16-mixed where the hardware multiplies bf16 natively, else '32' (training/precision.py)
PRECISIONS = ("auto", "32", "bf16-mixed")
ARCHS = ("mlp", "conv")
LIKELIHOODS = (
    "tutorial-mse", "bernoulli", "continuous-bernoulli", "gaussian", "gaussian-per-pixel",
)  # fmt: skip
GAUSSIAN_LIKELIHOODS = ("gaussian", "gaussian-per-pixel")
MLP_HIDDEN = (400, 200, 100, 20)
# The conv architecture reads `hidden` as (channels of conv 1, channels of conv 2, dense width).
CONV_HIDDEN = (32, 64, 256)
MAX_SEED = 2**63 - 1


def _require(condition: bool, message: str, *parameters: str) -> None:
    """Refuse a field value; the message names the field(s) `parameters` in the API's words."""
    if not condition:
        raise VaelabError(message, parameters=parameters)


@dataclass(frozen=True)
class ModelConfig:
    """VAE shape and decoder distribution.

    `arch` 'mlp': `hidden` are the encoder's layer widths (the decoder mirrors them). 'conv' (square
    images, side a multiple of 4): `hidden` is (channels of conv 1, channels of conv 2, dense
    width); left at the MLP default it becomes CONV_HIDDEN. `likelihood` names p(x|z).
    """

    input_dim: int = 784
    hidden: tuple[int, ...] = MLP_HIDDEN
    latent_dim: int = 2
    arch: str = "mlp"
    likelihood: str = "tutorial-mse"

    def __post_init__(self) -> None:
        hidden = tuple(self.hidden)
        if self.arch == "conv" and hidden == MLP_HIDDEN:
            hidden = CONV_HIDDEN
        object.__setattr__(self, "hidden", hidden)
        _require(
            self.arch in ARCHS, f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}", "arch"
        )
        _require(
            self.likelihood in LIKELIHOODS,
            f"likelihood must be one of {', '.join(LIKELIHOODS)}, got {self.likelihood!r}",
            "likelihood",
        )
        _require(
            self.input_dim >= 1, f"input_dim must be at least 1, got {self.input_dim}", "input_dim"
        )
        _require(
            self.latent_dim >= 1, f"latent_dim must be at least 1, got {self.latent_dim}",
            "latent_dim",
        )  # fmt: skip
        _require(
            len(self.hidden) >= 1 and all(isinstance(h, int) and h >= 1 for h in self.hidden),
            f"hidden must list at least one positive layer size, got {list(self.hidden)}",
            "hidden",
        )
        if self.arch == "conv":
            self._check_conv()

    def _check_conv(self) -> None:
        side = math.isqrt(self.input_dim)
        _require(
            side * side == self.input_dim and side % 4 == 0,
            "the conv arch needs square images whose side is a multiple of 4 (28x28 is); "
            f"got {self.input_dim} pixels",
            "arch",
        )
        _require(
            len(self.hidden) == 3,
            "the conv arch reads hidden as (conv 1 channels, conv 2 channels, dense width), "
            f"got {list(self.hidden)}",
            "hidden",
        )


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from: the built-in dataset, or the tutorial's CSV files."""

    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    train_csv: str | None = None
    test_csv: str | None = None

    def __post_init__(self) -> None:
        _require(
            (self.train_csv is None) == (self.test_csv is None),
            "train_csv and test_csv must be given together",
            "train_csv",
            "test_csv",
        )
        for name in ("data_dir", "train_csv", "test_csv"):
            path = getattr(self, name)
            _require(path is None or _is_path_text(path), f"{name} is not a usable path", name)

    def resolved(self) -> DataConfig:
        """The same config with its paths made absolute, so that they mean the same files from
        any working directory."""
        return replace(
            self, **{
                name: str(Path(value).resolve())
                for name in ("data_dir", "train_csv", "test_csv")
                if (value := getattr(self, name)) is not None
            },
        )  # fmt: skip


def _is_path_text(path: str) -> bool:
    """A non-empty path without NUL bytes or lone surrogates (which no file system can take)."""
    if not path or "\0" in path:
        return False
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_seed(seed: int, name: str = "seed") -> None:
    """Refuse a seed that torch's generators cannot take (they hold 0 to 2**63 - 1)."""
    _require(
        isinstance(seed, int) and 0 <= seed <= MAX_SEED,
        f"{name} must be a whole number from 0 to 2**63 - 1, got {str(seed)[:40]}",
        name,
    )


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; defaults are the tutorial's (Adam 1e-3, batch 200, 60 epochs)."""

    epochs: int = 60
    batch_size: int = 200
    test_batch_size: int = 1000
    lr: float = 1e-3
    lr_schedule: str = "cosine-tail"
    seed: int = 0
    device: str = "auto"
    beta: float = 1.0
    kl_warmup: int = 0
    precision: str = "auto"

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}", "epochs")
        _require(
            self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}",
            "batch_size",
        )  # fmt: skip
        _require(
            self.test_batch_size >= 1,
            f"test_batch_size must be at least 1, got {self.test_batch_size}",
            "test_batch_size",
        )
        _require(
            math.isfinite(self.lr) and self.lr > 0,
            f"lr (the learning rate) must be a finite number above 0, got {self.lr}",
            "lr",
        )
        _require(
            self.lr_schedule in LR_SCHEDULES,
            f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}",
            "lr_schedule",
        )
        _require(
            self.device in DEVICES,
            f"device must be one of {', '.join(DEVICES)}, got {self.device!r}",
            "device",
        )
        check_seed(self.seed)
        _require(
            self.precision in PRECISIONS,
            f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}",
            "precision",
        )
        _require(
            math.isfinite(self.beta) and self.beta >= 0,
            f"beta must be a finite number of at least 0, got {self.beta}",
            "beta",
        )
        _require(
            isinstance(self.kl_warmup, int) and self.kl_warmup >= 0,
            f"kl_warmup must be a whole number of epochs, at least 0, got {self.kl_warmup}",
            "kl_warmup",
        )


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run; written to `config.json` in the run directory."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready nested dicts (tuples become lists when dumped)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        """The config of a parsed config.json, every field type-checked (files are untrusted)."""
        return cls(
            model=_build(ModelConfig, raw.get("model", {})),
            data=_build(DataConfig, raw.get("data", {})),
            train=_build(TrainConfig, raw.get("train", {})),
        )


def _build(kind: type, raw: dict[str, Any]) -> Any:
    _require(isinstance(raw, dict), f"{kind.__name__} must be a JSON object, got {_short(raw)}")
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(raw) - known)
    _require(not unknown, f"unknown {kind.__name__} field(s): {', '.join(unknown)}")
    for f in fields(kind):
        if f.name in raw and f.default is not MISSING:
            _require(
                _same_kind(f.default, raw[f.name]),
                f"{f.name} must be {_kind_name(f.default)}, got {_short(raw[f.name])}",
            )
    return kind(**raw)


def _same_kind(default: Any, value: Any) -> bool:
    """Whether a JSON value has the type of a field's default (files are not trusted)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, tuple):
        return isinstance(value, (list, tuple)) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        )
    if default is None:
        return value is None or isinstance(value, str)
    return isinstance(value, type(default))


def _kind_name(default: Any) -> str:
    if isinstance(default, tuple):
        return "a list of integers"
    if default is None:
        return "a string or null"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(type(default), type(default).__name__)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
