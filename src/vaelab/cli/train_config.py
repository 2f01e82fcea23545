"""The config `vaelab train` runs: its options' values alone, or laid over a config file or an
earlier run's config.json (options left at their defaults do not override them)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from vaelab.cli.group import optional_str
from vaelab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaelab.config_files import config_from_sections, read_config_file
from vaelab.errors import VaelabError
from vaelab.rundir import load_config

_MODEL = ModelConfig()


# Command-line options whose config field has another name than the option.
_FIELD_OF_OPTION = {"no_labels": ("data", "labels")}


# train_command's options that set no field of the config.
_RUN_OPTIONS = {
    "name", "runs_dir", "overwrite", "resume_run", "checkpoint_every", "no_plots",
    "dist_timeout_s", "config_file", "from_run", "print_config", "tensorboard",
    "tensorboard_images_every",
}  # fmt: skip


def config_of(ctx: click.Context) -> RunConfig:
    """The RunConfig `vaelab train` builds from the options `ctx` parsed, a config file or an
    earlier run included (a sweep checks each of its runs with it before starting any)."""
    settings = {name: value for name, value in ctx.params.items() if name not in _RUN_OPTIONS}
    with ctx:
        return run_config(settings, ctx.params["config_file"], ctx.params["from_run"])


def run_config(
    settings: dict[str, Any],
    config_file: Path | None,
    from_run: Path | None,
    say: Callable[[str], None] | None = None,
) -> RunConfig:
    """The config of the options alone, or of a file / an earlier run with the options given on
    the command line laid over it; `say` is told where the file's relative paths were resolved."""
    if config_file is not None and from_run is not None:
        raise VaelabError("give --config or --from, not both")
    from_options = run_config_from_options(**settings)
    if config_file is None and from_run is None:
        return from_options
    if config_file is not None:
        base, origin = read_config_file(config_file, say), config_file
    else:
        assert from_run is not None
        base, origin = load_config(from_run).to_dict(), from_run / "config.json"
        base["model"].pop("input_dim", None)  # they follow the data
        base["model"].pop("image_shape", None)
    options = from_options.to_dict()
    for name in settings:
        if option_given(name):
            section, field = _FIELD_OF_OPTION.get(name) or _field_of(name, options)
            values = base.setdefault(section, {})
            if isinstance(values, dict):  # else the file's section is refused, named, below
                values[field] = options[section][field]
    return config_from_sections(base, origin)


def _field_of(option: str, config: dict[str, Any]) -> tuple[str, str]:
    for section, values in config.items():
        if option in values:
            return section, option
    raise AssertionError(f"the option {option} sets no config field")


def run_config_from_options(
    epochs: int, batch_size: int, test_batch_size: int, lr: float, lr_schedule: str,
    latent_dim: int, hidden: tuple[int, ...], arch: str, likelihood: str, beta: float,
    kl_warmup: int, seed: int, precision: str, device: str, data_dir: Path | None,
    train_csv: Path | None, test_csv: Path | None, source: str | None, test_source: str | None,
    image_size: tuple[int, ...], no_labels: bool, class_names: tuple[str, ...],
    array_keys: tuple[str, ...], columns: tuple[str, ...], test_split: float, val_split: float,
    split_seed: int, binarize: str, early_stopping: int, test_each_epoch: str,
    prior: str = "gaussian", components: int = _MODEL.components, stochastic_layers: int = 1,
    conditional: bool = False,
    objective: str = "elbo", train_samples: int = 1, backward: str = "auto",
    cuda_graphs: bool = False, loader: str = "auto", workers: int = 0,
) -> RunConfig:  # fmt: skip
    """The RunConfig the values of `vaelab train`'s options describe."""
    return RunConfig(
        model=ModelConfig(
            hidden=hidden, latent_dim=latent_dim, arch=arch, likelihood=likelihood, prior=prior,
            components=components, stochastic_layers=stochastic_layers, conditional=conditional,
        ),
        data=DataConfig(
            data_dir=optional_str(data_dir), train_csv=optional_str(train_csv),
            test_csv=optional_str(test_csv), source=source, test_source=test_source,
            image_size=image_size, labels=not no_labels, class_names=class_names,
            array_keys=array_keys, columns=columns, test_split=test_split, val_split=val_split,
            split_seed=split_seed, binarize=binarize, loader=loader, workers=workers,
        ),
        train=TrainConfig(
            epochs=epochs, batch_size=batch_size, test_batch_size=test_batch_size, lr=lr,
            lr_schedule=lr_schedule, seed=seed, device=device, precision=precision, beta=beta,
            kl_warmup=kl_warmup, early_stopping=early_stopping, test_each_epoch=test_each_epoch,
            objective=objective, train_samples=train_samples, backward=backward,
            cuda_graphs=cuda_graphs,
        ),
    )  # fmt: skip


def option_given(name: str) -> bool:
    """Whether the command line gave the option `name` (rather than its default)."""
    ctx = click.get_current_context()
    return ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
