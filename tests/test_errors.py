"""Errors speak the API's words in the library and the command's flags on the command line; a
missing optional dependency names the extra that installs it."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

import vaelab
from tests.helpers import make_tiny_dataset, run_python
from vaelab.cli import cli as commands
from vaelab.cli import translate
from vaelab.config import RunConfig, TrainConfig
from vaelab.errors import MissingExtra, VaelabError
from vaelab.training import train

SRC = Path(vaelab.__file__).parent


def all_flags() -> set[str]:
    """Every option of every vaelab command, as typed on the command line."""
    flags = set()
    for command in commands.commands.values():
        for param in command.params:
            flags.update(opt for opt in getattr(param, "opts", ()) if opt.startswith("--"))
    return flags - {"--help"}


def test_library_messages_never_name_a_command_line_flag():
    flags = all_flags()
    found = []
    for path in SRC.rglob("*.py"):
        if path.parent.name == "cli":  # the command line speaks in flags
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
                continue
            if node.value in flags or id(node) in _docstrings(tree):
                continue  # an argument of a vaelab command line it runs; documentation
            for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", node.value):
                if flag in flags:
                    found.append(f"{path.relative_to(SRC)}:{node.lineno}: {flag}")
    assert not found, found


def _docstrings(tree: ast.Module) -> set[int]:
    """The ids of the docstring nodes of a module and its functions and classes."""
    owners = [tree, *(n for n in ast.walk(tree) if isinstance(
        n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))]  # fmt: skip
    return {
        id(owner.body[0].value)
        for owner in owners
        if owner.body
        and isinstance(owner.body[0], ast.Expr)
        and isinstance(owner.body[0].value, ast.Constant)
    }


def test_the_api_is_told_in_its_own_words():
    config = RunConfig(train=TrainConfig(epochs=1, batch_size=32, precision="32"))
    with pytest.raises(VaelabError, match="checkpoint_every must be at least 1") as info:
        train(config, make_tiny_dataset(), log=None, checkpoint_every=0)
    assert info.value.parameters == ("checkpoint_every",)
    with pytest.raises(VaelabError, match="resume=True needs the run_dir"):
        train(config, make_tiny_dataset(), log=None, resume=True)
    with pytest.raises(VaelabError, match="^batch_size must be at least 1, got 0$"):
        TrainConfig(batch_size=0)


@pytest.mark.parametrize(
    ("message", "parameters", "shown"),
    [
        ("checkpoint_every must be at least 1 step, got 0", ("checkpoint_every",),
         "--checkpoint-every must be at least 1 step, got 0"),
        ("train_csv and test_csv must be given together", ("train_csv", "test_csv"),
         "--train-csv and --test-csv must be given together"),
        ("runs/lr: x; a smaller lr may help", ("lr",), "runs/lr: x; a smaller --lr may help"),
        ("pass overwrite=True to replace it", ("overwrite",), "pass --overwrite to replace it"),
        ("batch_size_extra is not batch_size", ("batch_size",),
         "batch_size_extra is not --batch-size"),
        ("no such flag here", ("not_an_option",), "no such flag here"),
        ("or ignore them (labels=False)", ("labels",), "or ignore them (--no-labels)"),
    ],
)  # fmt: skip
def test_the_command_line_shows_parameters_as_its_flags(message, parameters, shown):
    error = VaelabError(message, parameters=parameters)
    assert translate(error, commands.commands["train"]) == shown


def test_a_flag_is_the_one_of_the_command_that_failed():
    error = VaelabError("k (importance samples) must be at least 1, got 0", parameters=("k",))
    assert translate(error, commands.commands["evaluate"]).startswith("--iw-samples (importance")
    error = VaelabError("n (samples) must be between 1 and 100000, got 0", parameters=("n",))
    assert translate(error, commands.commands["sample"]).startswith("--n (samples)")


def test_a_missing_extra_is_one_line_naming_it(cli, monkeypatch, tmp_path):
    config = RunConfig(train=TrainConfig(epochs=1, batch_size=64, precision="32"))
    run_dir = train(config, make_tiny_dataset(), run_dir=tmp_path / "r", log=None).run_dir
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    monkeypatch.delitem(sys.modules, "vaelab.viz.plots", raising=False)
    result = cli("plot", run_dir)
    assert result.code == 2
    assert result.err == (
        "vaelab: error: this needs matplotlib, which is not installed: "
        "pip install 'vaelab[plots]'\n"
    )
    monkeypatch.setitem(sys.modules, "fastapi", None)
    monkeypatch.delitem(sys.modules, "vaelab.explorer.app", raising=False)
    result = cli("serve", run_dir, "--port", 0)
    assert result.code == 2 and "pip install 'vaelab[serve]'" in result.err
    with pytest.raises(MissingExtra):
        vaelab.write_figures(run_dir)


@pytest.mark.slow
def test_importing_vaelab_loads_no_optional_dependency():
    code = (
        "import sys, vaelab, vaelab.cli, vaelab.training, vaelab.rundir, vaelab.latent\n"
        "heavy = [m for m in ('matplotlib', 'PIL', 'fastapi', 'uvicorn') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    probe = run_python(code)
    assert probe.returncode == 0, probe.stderr
