"""Typed configuration: the tutorial's defaults, validated at construction, JSON round-trip."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from vaelab.errors import VaelabError

DEVICES = ("auto", "cpu", "cuda")
LR_SCHEDULES = ("constant", "cosine-tail")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise VaelabError(message)


@dataclass(frozen=True)
class ModelConfig:
    """MLP VAE shape: input size, encoder hidden sizes (the decoder mirrors them), latent size."""

    input_dim: int = 784
    hidden: tuple[int, ...] = (400, 200, 100, 20)
    latent_dim: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(self.hidden))
        _require(self.input_dim >= 1, f"input_dim must be at least 1, got {self.input_dim}")
        _require(self.latent_dim >= 1, f"latent dim must be at least 1, got {self.latent_dim}")
        _require(
            all(isinstance(h, int) and h >= 1 for h in self.hidden),
            f"hidden sizes must be positive integers, got {list(self.hidden)}",
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
            "--train-csv and --test-csv must be given together",
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

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}")
        _require(self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}")
        _require(
            self.test_batch_size >= 1,
            f"test batch size must be at least 1, got {self.test_batch_size}",
        )
        _require(
            math.isfinite(self.lr) and self.lr > 0,
            f"learning rate must be a finite number above 0, got {self.lr}",
        )
        _require(
            self.lr_schedule in LR_SCHEDULES,
            f"lr schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}",
        )
        _require(self.device in DEVICES, f"device must be one of {', '.join(DEVICES)}")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run; written to `config.json` in the run directory."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        return cls(
            model=_build(ModelConfig, raw.get("model", {})),
            data=_build(DataConfig, raw.get("data", {})),
            train=_build(TrainConfig, raw.get("train", {})),
        )


def _build(kind: type, raw: dict[str, Any]) -> Any:
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(raw) - known)
    _require(not unknown, f"unknown {kind.__name__} field(s): {', '.join(unknown)}")
    return kind(**raw)
