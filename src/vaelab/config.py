"""Typed configuration: the tutorial's defaults, validated at construction, JSON round-trip."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from vaelab.config_sections import build_section, require_sections, short
from vaelab.errors import VaelabError

DEVICES = ("auto", "cpu", "cuda")
LR_SCHEDULES = ("constant", "cosine-tail")
# 'auto': bf16-mixed where the hardware multiplies bf16 natively, else '32' (training/precision.py)
PRECISIONS = ("auto", "32", "bf16-mixed")
# 'gated': gated dense layers, h * sigmoid(g) (Dauphin et al. 2017), as the VampPrior paper's MLPs;
# 'custom': networks of the user's own, given to `VAE(config, encoder=..., decoder=...)`.
ARCHS = ("mlp", "gated", "conv", "custom")
# p(z): N(0, I); the VampPrior (Tomczak & Welling 2018), a mixture of the posteriors of learned
# pseudo-inputs; or a mixture of learned diagonal Gaussians.
PRIORS = ("gaussian", "vamp", "mog")
OBJECTIVES = ("elbo", "iwae")
# 'auto': the MLP's hand-written backward pass where it covers the model (training/mlp_step.py)
BACKWARDS = ("auto", "autograd")
LIKELIHOODS = (
    "tutorial-mse", "bernoulli", "continuous-bernoulli", "gaussian", "gaussian-per-pixel",
)  # fmt: skip
GAUSSIAN_LIKELIHOODS = ("gaussian", "gaussian-per-pixel")
MLP_HIDDEN = (400, 200, 100, 20)
GATED_HIDDEN = (300, 300)  # the VampPrior paper's two gated layers of 300 units
# The conv architecture reads `hidden` as (channels of conv 1, channels of conv 2, dense width).
CONV_HIDDEN = (32, 64, 256)
MAX_SEED = 2**63 - 1
# The widest layer, latent code or image a config may declare: far past vaelab's cap on weights
# (models.vae.MAX_PARAMETERS, which refuses the models in between with their count), and small
# enough that the weights between two such layers are counted within torch's 64-bit integers.
MAX_WIDTH = 2**31 - 1
MAX_LAYERS = 100  # of the encoder (the decoder mirrors them); published models have 2 to 4
# A million epochs: 500 times the longest published schedule (2000), and a typo (10**12) is
# refused before a run that would never end is started. Warm-up and patience count epochs too.
MAX_EPOCHS = 1_000_000
# Whether the test set is evaluated after every epoch: 'auto' does unless a validation split is
# held out (then the test set is used once, by `vaelab evaluate`).
TEST_EACH_EPOCH = ("auto", "yes", "no")


def _require(condition: bool, message: str, *parameters: str) -> None:
    """Refuse a field value; the message names the field(s) `parameters` in the API's words."""
    if not condition:
        raise VaelabError(message, parameters=parameters)


@dataclass(frozen=True)
class ModelConfig:
    """VAE shape and decoder distribution.

    `input_dim` is the values per image, C*H*W; `image_shape` is (C, H, W) (empty: one channel of
    a square image, as vaelab 0.1 recorded it). `arch` 'mlp': `hidden` are the encoder's layer
    widths (the decoder mirrors them). 'conv' (any C, H, W): `hidden` is (channels of conv 1,
    channels of conv 2, dense width); left at the MLP default it becomes CONV_HIDDEN.
    `likelihood` names p(x|z), applied to every value (each channel of each pixel). 'gated' is
    the MLP with gated layers (left at the MLP default, `hidden` becomes GATED_HIDDEN).
    `prior` names p(z) ('vamp' and 'mog' have `components` pseudo-inputs or Gaussians).
    `stochastic_layers` 2 is the hierarchical VAE z2 -> z1 -> x, both of `latent_dim`.
    `conditional` feeds the one-hot class (of `classes`) to the encoder and decoder.
    """

    input_dim: int = 784
    hidden: tuple[int, ...] = MLP_HIDDEN
    latent_dim: int = 2
    arch: str = "mlp"
    likelihood: str = "tutorial-mse"
    image_shape: tuple[int, ...] = ()
    prior: str = "gaussian"
    components: int = 500
    stochastic_layers: int = 1
    conditional: bool = False
    classes: int = 0

    def __post_init__(self) -> None:
        hidden = tuple(self.hidden)
        if self.arch == "conv" and hidden == MLP_HIDDEN:
            hidden = CONV_HIDDEN
        if self.arch == "gated" and hidden == MLP_HIDDEN:
            hidden = GATED_HIDDEN
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
            _positive_int(self.input_dim),
            f"input_dim must be at least 1, got {short(self.input_dim)}",
            "input_dim",
        )
        _require(
            _positive_int(self.latent_dim),
            f"latent_dim must be at least 1, got {short(self.latent_dim)}",
            "latent_dim",
        )  # fmt: skip
        _require(
            len(self.hidden) >= 1 and all(isinstance(h, int) and h >= 1 for h in self.hidden),
            f"hidden must list at least one positive layer size, got {short(list(self.hidden))}",
            "hidden",
        )
        _require(
            len(self.hidden) <= MAX_LAYERS,
            f"hidden must list at most {MAX_LAYERS} layer sizes, got {len(self.hidden):,}",
            "hidden",
        )
        widest = max(self.latent_dim, *self.hidden)
        _require(
            widest <= MAX_WIDTH,
            f"each of hidden and latent_dim must be at most {MAX_WIDTH:,}, got {widest:,}",
            "hidden",
            "latent_dim",
        )
        _require(
            self.input_dim <= MAX_WIDTH,
            f"input_dim must be at most {MAX_WIDTH:,} values per image, got {self.input_dim:,}",
            "input_dim",
        )
        object.__setattr__(self, "image_shape", tuple(self.image_shape))
        if self.image_shape:
            _require(
                len(self.image_shape) == 3
                and all(isinstance(n, int) and n >= 1 for n in self.image_shape)
                and math.prod(self.image_shape) == self.input_dim,
                f"image_shape must be (channels, height, width) of input_dim {self.input_dim} "
                f"values, got {list(self.image_shape)}",
                "image_shape",
            )
        if self.arch == "conv":
            self._check_conv()
        self._check_latent_model()

    def _check_latent_model(self) -> None:
        _require(
            self.prior in PRIORS,
            f"prior must be one of {', '.join(PRIORS)}, got {self.prior!r}",
            "prior",
        )
        _require(
            _positive_int(self.components) and self.components <= 100_000,
            f"components must be from 1 to 100000 (the VampPrior's pseudo-inputs, the mixture's "
            f"Gaussians), got {self.components}",
            "components",
        )
        _require(
            self.stochastic_layers in (1, 2),
            f"stochastic_layers must be 1 or 2, got {self.stochastic_layers}",
            "stochastic_layers",
        )
        _require(
            isinstance(self.classes, int) and 0 <= self.classes <= MAX_WIDTH,
            f"classes must be a whole number from 0 to {MAX_WIDTH:,}, got {short(self.classes)}",
            "classes",
        )
        if self.conditional:
            _require(
                self.stochastic_layers == 1 and self.prior == "gaussian",
                "conditional is built for one stochastic layer and the gaussian prior",
                "conditional",
            )
            _require(
                self.arch != "custom",
                "conditional feeds the class to vaelab's own networks, not to custom ones",
                "conditional",
            )
        _require(
            self.arch != "custom" or self.stochastic_layers == 1,
            "custom networks are built for one stochastic layer",
            "stochastic_layers",
        )

    @property
    def condition_dim(self) -> int:
        """Values of the one-hot class the encoder and decoder take (0 unless conditional)."""
        return self.classes if self.conditional else 0

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of an image: `image_shape`, else one channel of a square image."""
        if self.image_shape:
            channels, height, width = self.image_shape
            return channels, height, width
        side = math.isqrt(self.input_dim)
        return 1, side, side

    def _check_conv(self) -> None:
        side = math.isqrt(self.input_dim)
        _require(
            bool(self.image_shape) or side * side == self.input_dim,
            "the conv arch needs the image_shape (channels, height, width) of its "
            f"{self.input_dim} values",
            "image_shape",
        )
        _require(
            len(self.hidden) == 3,
            "the conv arch reads hidden as (conv 1 channels, conv 2 channels, dense width), "
            f"got {list(self.hidden)}",
            "hidden",
        )


BINARIZE = ("none", "dynamic", "static")
LOADERS = ("auto", "memory", "stream")
MAX_WORKERS = 64
# How a run reads its data, not what it computes (the batches are the same): left out of the
# identity a resume is checked against, so a checkpoint does not depend on them.
READING_FIELDS = {"data": ("loader", "workers")}
PATH_FIELDS = ("data_dir", "train_csv", "test_csv", "source", "test_source")


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are prepared.

    `source` is a path (an image folder, a .npy or .npz file, IDX files, a CSV file, Parquet or
    Arrow files, a Hugging Face dataset saved with `save_to_disk`) or the name of a built-in
    dataset; `test_source` a separate test set. Without a source: the built-in `dataset`, from
    `data_dir` when given, or the tutorial's `train_csv`/`test_csv`. `image_size` (H, W) resizes the
    images of folders and of Parquet and Arrow files; `labels` False ignores any labels;
    `class_names` names the classes; `array_keys` names the .npz arrays (train images, train labels,
    test images, test labels; or images, labels); `columns` names the Parquet or Arrow columns (the
    images, and the labels when given). A source without a test split is split with `test_split` (a
    fraction below 1, or a whole count of images; 1.0, which reads as either, is refused) and
    `split_seed`; `val_split` holds out that much of the training set for validation, with the
    same seed. `binarize`: 'none', 'dynamic' (x ~
    Bernoulli(pixels) drawn afresh every batch) or 'static' (drawn once from `split_seed`). `loader`
    says how training batches are read: 'memory' in the training process, 'stream' by `workers`
    DataLoader workers ahead of the step (0: one fewer than the CPUs, 1 to 4), 'auto' streams images
    mapped from a file of more than 1 GiB (see `vaelab.data.loader`). Neither changes a number: the
    batches and their order are the same.
    """

    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    train_csv: str | None = None
    test_csv: str | None = None
    source: str | None = None
    test_source: str | None = None
    image_size: tuple[int, ...] = ()
    labels: bool = True
    class_names: tuple[str, ...] = ()
    array_keys: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    test_split: float = 0.1
    val_split: float = 0.0
    split_seed: int = 0
    binarize: str = "none"
    loader: str = "auto"
    workers: int = 0

    def __post_init__(self) -> None:
        _require(
            (self.train_csv is None) == (self.test_csv is None),
            "train_csv and test_csv must be given together",
            "train_csv",
            "test_csv",
        )
        _require(
            self.source is None or self.train_csv is None,
            "give source or train_csv/test_csv, not both",
            "source",
            "train_csv",
        )
        _require(
            self.test_source is None or self.source is not None,
            "test_source needs source (the training data)",
            "test_source",
            "source",
        )
        for name in PATH_FIELDS:
            path = getattr(self, name)
            _require(path is None or _is_path_text(path), f"{name} is not a usable path", name)
        for name in ("image_size", "class_names", "array_keys", "columns"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        _require(
            not self.image_size
            or (len(self.image_size) == 2 and all(_positive_int(n) for n in self.image_size)),
            f"image_size must be (height, width) in pixels, got {list(self.image_size)}",
            "image_size",
        )
        _require(
            all(isinstance(n, str) and n for n in self.class_names)
            and len(set(self.class_names)) == len(self.class_names),
            "class_names must be distinct non-empty names",
            "class_names",
        )
        _require(
            self.labels or not self.class_names,
            "class_names names the classes of labels that labels=False ignores; drop one of them",
            "class_names",
            "labels",
        )
        _require(
            all(isinstance(k, str) and k for k in self.array_keys)
            and len(self.array_keys) in (0, 2, 4),
            "array_keys names 2 arrays (images, labels) or 4 (x_train, y_train, x_test, y_test)",
            "array_keys",
        )
        _require(
            all(isinstance(c, str) and c for c in self.columns) and len(self.columns) in (0, 1, 2),
            "columns names the image column, or the image column and the label column",
            "columns",
        )
        _check_split(self.test_split, "test_split", allow_zero=False)
        _check_split(self.val_split, "val_split", allow_zero=True)
        check_seed(self.split_seed, "split_seed")
        _require(
            self.binarize in BINARIZE,
            f"binarize must be one of {', '.join(BINARIZE)}, got {self.binarize!r}",
            "binarize",
        )
        _require(
            self.loader in LOADERS,
            f"loader must be one of {', '.join(LOADERS)}, got {self.loader!r}",
            "loader",
        )
        _require(
            isinstance(self.workers, int) and 0 <= self.workers <= MAX_WORKERS,
            f"workers must be from 0 to {MAX_WORKERS}, got {self.workers}",
            "workers",
        )

    def resolved(self) -> DataConfig:
        """The same config with its paths made absolute, so that they mean the same files from
        any working directory (a source that names a built-in dataset stays a name)."""
        from vaelab.data.registry import is_builtin_name  # data imports config

        paths: dict[str, Any] = {
            name: str(Path(value).resolve())
            for name in PATH_FIELDS
            if (value := getattr(self, name)) is not None
            and not (name == "source" and is_builtin_name(value))
        }
        return replace(self, **paths)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _finite(value: Any) -> bool:
    """A real number (not a bool) that is neither infinite nor NaN, nor an integer too large for a
    float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _check_split(value: float, name: str, allow_zero: bool) -> None:
    """A split is a fraction in (0, 1) or a whole count of images (0 only where allowed). 1.0
    reads as both (all of them, or one image), so it is refused with the way to write each."""
    _require(
        not (isinstance(value, float) and value == 1.0),
        f"{name} 1.0 could mean all the images (100%) or 1 image: write 1 for one image, or a "
        "fraction below 1 for a share of them (0.2 for 20%)",
        name,
    )
    whole = isinstance(value, int) or (
        isinstance(value, float) and value.is_integer() and value >= 1
    )
    fraction = isinstance(value, float) and 0 < value < 1
    _require(
        not isinstance(value, bool)
        and (fraction or (whole and value >= 1) or (allow_zero and value == 0)),
        f"{name} must be a fraction between 0 and 1 or a number of images, got {value}",
        name,
    )


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
    """Optimisation settings; defaults are the tutorial's (Adam 1e-3, batch 200, 60 epochs).

    `early_stopping` N > 0 stops after N epochs without a better validation loss (needs
    `DataConfig.val_split`); `test_each_epoch` says whether the test set is evaluated after every
    epoch ('auto': yes without a validation split, as the tutorial does). `objective` 'iwae'
    trains on the importance-weighted bound of Burda et al. (2015) with `train_samples` samples
    of z per image ('elbo' with more than one sample averages the ELBO over them).
    `backward` 'auto' trains the MLP models it covers with a hand-written backward pass (the
    same gradients to rounding, about twice as fast on a CPU); 'autograd' always uses autograd.
    `cuda_graphs` replays that hand-written step from a CUDA graph (on a CUDA device, for the
    models it covers, in one process): the same arithmetic with one launch per step.
    """

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
    early_stopping: int = 0
    test_each_epoch: str = "auto"
    objective: str = "elbo"
    train_samples: int = 1
    backward: str = "auto"
    cuda_graphs: bool = False

    def __post_init__(self) -> None:
        _require(
            isinstance(self.cuda_graphs, bool),
            f"cuda_graphs must be true or false, got {str(self.cuda_graphs)[:40]}",
            "cuda_graphs",
        )
        _require(
            self.backward in BACKWARDS,
            f"backward must be one of {', '.join(BACKWARDS)}, got {self.backward!r}",
            "backward",
        )
        _require(
            self.objective in OBJECTIVES,
            f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}",
            "objective",
        )
        _require(
            _positive_int(self.train_samples) and self.train_samples <= 100_000,
            f"train_samples must be from 1 to 100000, got {self.train_samples}",
            "train_samples",
        )
        _require(
            _positive_int(self.epochs),
            f"epochs must be at least 1, got {short(self.epochs)}",
            "epochs",
        )
        _require(
            self.epochs <= MAX_EPOCHS,
            f"epochs must be at most {MAX_EPOCHS:,}, got {self.epochs}",
            "epochs",
        )
        _require(
            _positive_int(self.batch_size),
            f"batch_size must be at least 1, got {short(self.batch_size)}",
            "batch_size",
        )  # fmt: skip
        _require(
            _positive_int(self.test_batch_size),
            f"test_batch_size must be at least 1, got {short(self.test_batch_size)}",
            "test_batch_size",
        )
        _require(
            _finite(self.lr) and self.lr > 0,
            f"lr (the learning rate) must be a finite number above 0, got {short(self.lr)}",
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
            _finite(self.beta) and self.beta >= 0,
            f"beta must be a finite number of at least 0, got {short(self.beta)}",
            "beta",
        )
        _require(
            isinstance(self.early_stopping, int) and 0 <= self.early_stopping <= MAX_EPOCHS,
            f"early_stopping must be a whole number of epochs (0: off) up to {MAX_EPOCHS:,}, got "
            f"{self.early_stopping}",
            "early_stopping",
        )
        _require(
            self.test_each_epoch in TEST_EACH_EPOCH,
            f"test_each_epoch must be one of {', '.join(TEST_EACH_EPOCH)}, got "
            f"{self.test_each_epoch!r}",
            "test_each_epoch",
        )
        _require(
            isinstance(self.kl_warmup, int) and 0 <= self.kl_warmup <= MAX_EPOCHS,
            f"kl_warmup must be a whole number of epochs, at least 0 and at most {MAX_EPOCHS:,}, "
            f"got {self.kl_warmup}",
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
    def from_dict(cls, raw: dict[str, Any], *, complete: bool = False) -> RunConfig:
        """The config of a parsed config.json or config file, every section and field checked
        (files are untrusted). A section left out keeps its defaults unless `complete` (a run's
        config.json records all three: one that lacks a section is refused)."""
        if complete:
            require_sections(raw)
        return cls(
            model=build_section(ModelConfig, "model", raw),
            data=build_section(DataConfig, "data", raw),
            train=build_section(TrainConfig, "train", raw),
        )
