"""A sweep: a grid of settings times seeds, each one `vaelab train` run in RUNS_DIR/NAME/RUN.

`plan_sweep` checks the whole grid before anything runs (its size first, then every value parsed
as `vaelab train` parses it, every run's config built, its config file included, and the files its
data names looked up) and `vaelab.studies.sweep_run.run_sweep` runs it. The grid is recorded in
RUNS_DIR/NAME/sweep.json; running the same sweep again continues it.
"""

from __future__ import annotations

import difflib
import itertools
import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from vaelab.config import PATH_FIELDS, DataConfig, RunConfig, check_seed
from vaelab.errors import VaelabError

FORMAT = "vaelab-sweep-1"
# `vaelab train` options a sweep sets itself (the run's folder, its seed, resuming) or that do
# not change what a run computes: never a --set key.
_NOT_SWEPT = {"name", "runs_dir", "overwrite", "resume_run", "seed", "checkpoint_every",
              "no_plots", "dist_timeout_s", "class_names", "array_keys", "columns"}  # fmt: skip
_NOT_VARIED = "an option of vaelab train that a sweep does not vary; give it once, for every run"
_WHY_NOT_SWEPT = {
    "seed": "each run's seed is one of seeds (e.g. seeds 1,2), not a sets value",
    **{own: "the sweep names, places and resumes its runs itself" for own in (
        "name", "runs_dir", "overwrite", "resume_run")},
}  # fmt: skip
# Options the sweep chooses for every run: refused among the options passed to `vaelab train`.
_OWN_OPTIONS = {"name": "--name", "runs_dir": "--runs-dir", "overwrite": "--overwrite",
                "resume_run": "--resume", "seed": "--seed"}  # fmt: skip
# A `vaelab train` option that trains nothing: refused among the options passed to it.
_PRINT_CONFIG = "--print-config"
# Options a resumed run takes (`vaelab train --resume` refuses the others).
RESUME_OPTIONS = ("checkpoint_every", "no_plots", "dist_timeout_s")
LIST_KEYS = {"hidden"}  # their values hold commas: values are separated by ';'
# The most runs one sweep plans: the grid (values of each --set times seeds) is counted against
# it before anything is built, so a huge --seeds or --set is one line, not the memory of a grid.
MAX_RUNS = 1000
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]")


@dataclass(frozen=True)
class Setting:
    """One --set: a train option (config form) and the values the sweep gives it."""

    key: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class SweepRun:
    """One run of the grid: its folder name, its settings, its seed."""

    name: str
    settings: tuple[tuple[str, str], ...]
    seed: int

    @property
    def label(self) -> str:
        """The setting without the seed: what the runs of one group share."""
        return ",".join(f"{key}={value}" for key, value in self.settings) or "all"


@dataclass(frozen=True)
class SweepPlan:
    """A checked sweep: where it goes, its grid, seeds, runs and the options every run gets."""

    study_dir: Path
    grid: tuple[Setting, ...]
    seeds: tuple[int, ...]
    train_args: tuple[str, ...]
    runs: tuple[SweepRun, ...]
    flags: dict[str, str]  # --set key -> the train command's flag

    def record(self) -> dict[str, Any]:
        """What sweep.json holds: enough to tell whether a later sweep is this one."""
        return {
            "format": FORMAT,
            "grid": [[s.key, list(s.values)] for s in self.grid],
            "seeds": list(self.seeds),
            "train_args": list(self.train_args),
            "runs": [
                {"name": r.name, "settings": dict(r.settings), "seed": r.seed} for r in self.runs
            ],  # fmt: skip
        }

    def train_args_of(self, run: SweepRun) -> list[str]:
        """The arguments of `vaelab train` that start `run`."""
        options = [part for key, value in run.settings for part in (self.flags[key], value)]
        return [*self.train_args, *options, "--seed", str(run.seed),
                "--runs-dir", str(self.study_dir), "--name", run.name]  # fmt: skip

    def config_of(self, run: SweepRun) -> RunConfig:
        """The config `run` trains with, built as `vaelab train` builds it."""
        return _build_config(self.train_args_of(run), run.name)

    def resume_args_of(self, run: SweepRun) -> list[str]:
        """The arguments of `vaelab train` that continue `run` from its checkpoint."""
        kept = _resume_options(self.train_args)
        return ["--resume", str(self.study_dir / run.name), *kept]


def parse_set(text: str) -> Setting:
    """'latent_dim=2,10,20' -> Setting('latent_dim', ('2', '10', '20')); list-valued keys
    (hidden) separate their values by ';': 'hidden=400,200;64,32'."""
    key, sep, values = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise VaelabError(
            f"sets {text!r}: expected KEY=VALUE[,VALUE...], e.g. latent_dim=2,10",
            parameters=("sets",),
        )
    parts = tuple(v.strip() for v in values.split(";" if key in LIST_KEYS else ","))
    if len(parts) > MAX_RUNS:
        raise VaelabError(f"sets {_cut(key)}: {len(parts)} values, more than the {MAX_RUNS} runs "
                          "a sweep may have", parameters=("sets",))  # fmt: skip
    if not all(parts):
        raise VaelabError(f"sets {text!r}: an empty value", parameters=("sets",))
    repeated = sorted(value for value, times in Counter(parts).items() if times > 1)
    if repeated:
        raise VaelabError(f"sets {text!r}: {', '.join(repeated)} given twice", parameters=("sets",))
    return Setting(key, parts)


def parse_seeds(text: str) -> tuple[int, ...]:
    """'3' -> seeds 0, 1, 2; '0,5,7' -> those seeds; at most MAX_RUNS of them."""
    parts = text.split(",")
    if len(parts) > MAX_RUNS:
        raise VaelabError(f"seeds: {len(parts)} listed, more than the {MAX_RUNS} runs a sweep "
                          "may have", parameters=("seeds",))  # fmt: skip
    try:
        numbers = [int(part) for part in parts]
    except ValueError:  # a word, or an integer of 4300 digits or more
        raise VaelabError(
            f"seeds {_cut(text)!r}: expected a count (3) or a list (0,5,7)", parameters=("seeds",)
        ) from None
    if len(numbers) == 1:
        return tuple(range(_seed_count(numbers[0], text)))
    for seed in numbers:
        check_seed(seed, "seeds")
    if len(set(numbers)) != len(numbers):
        raise VaelabError(f"seeds {_cut(text)}: a seed given twice", parameters=("seeds",))
    return tuple(numbers)


def _seed_count(count: int, text: str) -> int:
    if count < 1:
        raise VaelabError(f"seeds {_cut(text)}: give at least 1 seed", parameters=("seeds",))
    if count > MAX_RUNS:
        raise VaelabError(f"seeds {_cut(text)}: a count above the {MAX_RUNS} runs a sweep may "
                          "have", parameters=("seeds",))  # fmt: skip
    return count


def _cut(text: str, limit: int = 40) -> str:
    """Text a user gave, cut to fit in a one-line message."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def plan_sweep(
    settings: Sequence[Setting],
    seeds: Sequence[int],
    study_dir: str | Path,
    train_args: Sequence[str] = (),
) -> SweepPlan:
    """The sweep's runs, every one checked as `vaelab train` would check it; nothing is run."""
    study_dir = Path(study_dir)
    keys = [s.key for s in settings]
    if len(set(keys)) != len(keys):
        twice = sorted({k for k in keys if keys.count(k) > 1})[0]
        raise VaelabError(f"sets {twice}: given twice", parameters=("sets",))
    flags = _sweepable_flags()
    for setting in settings:
        if setting.key in _NOT_SWEPT:
            raise VaelabError(f"sets {setting.key}: {_WHY_NOT_SWEPT.get(setting.key, _NOT_VARIED)}",
                              parameters=("sets", "seeds"))  # fmt: skip
        switch = _switches().get(setting.key)
        if switch is not None:
            raise VaelabError(f"sets {setting.key}: {switch} is a switch of vaelab train, not an "
                              f"option with values; give {switch} once, for every run",
                              parameters=("sets",))  # fmt: skip
        if setting.key not in flags:
            close = difflib.get_close_matches(setting.key, list(flags), n=1)
            hint = f"did you mean {close[0]}?" if close else "keys are its options, e.g. latent_dim"
            raise VaelabError(
                f"sets {setting.key}: not a setting of vaelab train; {hint}", parameters=("sets",)
            )
    _check_grid_size(settings, seeds)
    _check_train_args(train_args, keys)
    runs = _grid(settings, seeds)
    plan = SweepPlan(study_dir, tuple(settings), tuple(seeds), tuple(train_args), runs,
                     {s.key: flags[s.key] for s in settings})  # fmt: skip
    for setting in settings:
        for value in setting.values:
            _parse_train([*train_args, flags[setting.key], value], f"sets {setting.key}={value}",
                         ("sets",))  # fmt: skip
    for run in runs:
        _check_files(plan.config_of(run).data, run.name)
    return plan


def _check_grid_size(settings: Sequence[Setting], seeds: Sequence[int]) -> None:
    """Refuse a grid of more than MAX_RUNS runs, counted before any of it is built."""
    counts = [len(s.values) for s in settings] + [len(seeds)]
    total = math.prod(counts)
    if total > MAX_RUNS:
        raise VaelabError(
            f"sets and seeds: the grid is {' x '.join(map(str, counts))} = {total} runs, more "
            f"than the {MAX_RUNS} a sweep may have; split it into sweeps of their own name",
            parameters=("sets", "seeds", "name"),
        )


def _check_files(data: DataConfig, run_name: str) -> None:
    """Refuse a run whose data names a file or folder that is not there, before any run starts
    (each run's own loader checks the rest when it reads them)."""
    from vaelab.data.registry import is_builtin_name  # data imports config

    for name in PATH_FIELDS:
        path = getattr(data, name)
        if path is None or (name == "source" and is_builtin_name(path)):
            continue
        if not os.path.exists(path):
            raise VaelabError(f"{run_name}: data.{name} {path}: not found")


def _grid(settings: Sequence[Setting], seeds: Sequence[int]) -> tuple[SweepRun, ...]:
    runs = []
    for values in itertools.product(*(s.values for s in settings)):
        pairs = tuple((s.key, value) for s, value in zip(settings, values))
        for seed in seeds:
            words = [f"{key}={_name_part(value)}" for key, value in pairs] + [f"seed={seed}"]
            runs.append(SweepRun(",".join(words), pairs, seed))
    names = [run.name for run in runs]
    if len(set(names)) != len(names):
        clash = next(name for name in names if names.count(name) > 1)
        raise VaelabError(f"sets: two settings give one run the same folder {clash}",
                          parameters=("sets",))  # fmt: skip
    return tuple(runs)


def _name_part(value: str) -> str:
    """A value as it appears in a run's folder name: commas as '-', other odd characters '_'."""
    return _UNSAFE.sub("_", value.replace(",", "-"))


# ---------------------------------------------------------------- the train command's options


def _train_command() -> click.Command:
    from vaelab.cli.train import train_command  # the command line's own parser of the options

    return train_command


def _sweepable_flags() -> dict[str, str]:
    """--set key (the option's config-form name) -> its flag, for options that take a value."""
    flags = {}
    for param in _train_command().params:
        swept = isinstance(param, click.Option) and not param.is_flag
        if swept and param.name and param.name not in _NOT_SWEPT:
            flags[param.name] = max(param.opts, key=len)
    return flags


def _switches() -> dict[str, str]:
    """vaelab train's options that take no value (--conditional): config-form name -> flag."""
    return {
        param.name: param.opts[0]
        for param in _train_command().params
        if isinstance(param, click.Option) and param.is_flag and param.name
    }


def _parse_train(args: Sequence[str], what: str, parameters: tuple[str, ...] = ()) -> click.Context:
    """`vaelab train ARGS` parsed (not run); a bad option or value is one VaelabError."""
    try:
        return _train_command().make_context("train", list(args))
    except click.UsageError as exc:
        raise VaelabError(f"{what}: {exc.format_message()}", parameters=parameters) from None


def _check_train_args(train_args: Sequence[str], keys: Sequence[str]) -> None:
    ctx = _parse_train(train_args, "the options for vaelab train")
    given = {
        name for name in ctx.params
        if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
    }  # fmt: skip
    for name, flag in _OWN_OPTIONS.items():
        if name in given:
            raise VaelabError(f"the options for vaelab train: the sweep sets {flag} itself; "
                              "drop it from them")  # fmt: skip
    if "print_config" in given:  # each run would print its config and train nothing
        raise VaelabError(f"the options for vaelab train: {_PRINT_CONFIG} trains nothing, so "
                          "no run would finish; drop it from them")  # fmt: skip
    for key in keys:
        if key in given:
            raise VaelabError(f"sets {key} and its option for vaelab train are both given; "
                              "keep one", parameters=("sets",))  # fmt: skip


def _build_config(args: Sequence[str], run_name: str) -> RunConfig:
    """Build the run's config as `vaelab train` would (its config file or earlier run included),
    so that a bad value is refused now."""
    from vaelab.cli.train_config import config_of

    ctx = _parse_train(args, run_name)
    try:
        return config_of(ctx)
    except VaelabError as exc:
        raise VaelabError(f"{run_name}: {exc}") from None


def _resume_options(train_args: Sequence[str]) -> list[str]:
    """Those of `train_args` that a resumed run takes (--no-plots, --checkpoint-every, ...)."""
    ctx = _parse_train(train_args, "the options for vaelab train")
    kept: list[str] = []
    for param in _train_command().params:
        name = param.name
        if name not in RESUME_OPTIONS or not isinstance(param, click.Option):
            continue
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.COMMANDLINE:
            continue
        flag = max(param.opts, key=len)
        kept += [flag] if param.is_flag else [flag, str(ctx.params[name])]
    return kept
