"""The promises of vaelab's error messages: every option they name exists, every error is one line
whatever the paths in it hold, and a pixel range error names the range found and its fix."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import vaelab
from vaelab.cli import cli as vaelab_cli
from vaelab.data.pixels import check_unit_range, range_hint
from vaelab.errors import VaelabError, one_line

SOURCE = Path(vaelab.__file__).parent
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
# Classes whose message a user reads: vaelab's errors, click's, and the exceptions they wrap.
_ERROR_NAMES = ("Error", "Exception", "Refusal", "BadParameter", "Interrupted", "Failed")


def _strings(node: ast.AST) -> list[str]:
    return [
        sub.value
        for sub in ast.walk(node)
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str)
    ]


def error_strings(source: str) -> list[str]:
    """The string literals of every raise statement and every call of an error class in
    `source` (the parts of f-strings included)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Raise) and node.exc is not None:
            found += _strings(node.exc)
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", "")
            if name.endswith(_ERROR_NAMES):
                found += _strings(node)
    return found


def named_flags(source: str) -> set[str]:
    """Every --flag that an error string of `source` names."""
    return {flag for text in error_strings(source) for flag in FLAG.findall(text)}


def cli_flags() -> set[str]:
    """Every option of every vaelab command, and of the program itself."""
    flags = {"--help", "--version"}
    for command in vaelab_cli.commands.values():
        for param in command.params:
            flags.update(opt for opt in param.opts if opt.startswith("--"))
            flags.update(getattr(param, "secondary_opts", ()))
    return flags


def test_the_collector_finds_flags_in_raises_and_error_calls_only():
    source = """
def f(x):
    if x:
        raise VaelabError(f"{x}: drop --config-file", parameters=("x",))
    error = click.BadParameter("use --nope instead")
    help = "a help text naming --not-an-error"
    return read_error(x, "--reads-are-not-errors")
"""
    assert named_flags(source) == {"--config-file", "--nope"}


def test_every_flag_named_in_an_error_message_is_an_option_of_the_cli():
    known = cli_flags()
    unknown = {
        f"{path.relative_to(SOURCE)}: {flag}"
        for path in sorted(SOURCE.rglob("*.py"))
        for flag in named_flags(path.read_text(encoding="utf-8"))
        if flag not in known
    }
    assert not unknown, sorted(unknown)


def test_resume_with_other_options_names_each_as_the_cli_spells_it(cli):
    result = cli(
        "train", "--resume", "runs/r", "--config", "c.toml", "--from", "runs/a", "--data", "x.npy",
        "--npz-keys", "a,b", "--pseudo-inputs", "3",
    )  # fmt: skip
    assert result.code == 2
    named = set(FLAG.findall(result.err))
    assert named == {"--resume", "--config", "--from", "--data", "--npz-keys", "--pseudo-inputs"}
    assert named <= cli_flags()


# ---------------------------------------------------------------- one line, whatever a path holds


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("runs/a\nb", "runs/a\\nb"),
        ("a\r\nb", "a\\r\\nb"),
        ("tab\there", "tab\\there"),
        ("esc\x1b[2J", "esc\\x1b[2J"),
        ("nul\x00", "nul\\x00"),
        ("del\x7f", "del\\x7f"),
        ("c1\x85", "c1\\x85"),
        ("line\u2028sep", "line\\u2028sep"),
        ("para\u2029sep", "para\\u2029sep"),
        ("données/épreuve ✓", "données/épreuve ✓"),
    ],
)
def test_one_line_escapes_control_characters_and_line_separators(text, shown):
    assert one_line(text) == shown
    assert len(one_line(text).splitlines()) == 1


def test_an_error_naming_a_path_with_a_newline_is_one_line(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("evaluate", "runs/bad\nname\u2028here", "--device", "cpu")
    assert result.code == 2
    assert result.err.strip().splitlines() == [
        "vaelab: error: runs/bad\\nname\\u2028here: run directory not found"
    ]


def test_a_note_naming_a_path_with_a_newline_is_one_line(caplog):
    from vaelab.data.layout import note

    with caplog.at_level("WARNING", logger="vaelab.data"):
        note("imgs: not read: 1 file(s) that are not images, e.g. imgs/a/x\ny.txt")
    assert [record.getMessage() for record in caplog.records] == [
        "note: imgs: not read: 1 file(s) that are not images, e.g. imgs/a/x\\ny.txt"
    ]


def test_a_click_usage_error_is_one_line_too(cli):
    result = cli("sample", "runs/r", "--n", "x\ny")
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1 and "x\\ny" in result.err


# ---------------------------------------------------------------- the range a pixel error names


@pytest.mark.parametrize(
    ("low", "high", "fix"),
    [
        (
            0.0,
            16.0,
            "values 0-16 (e.g. 0-16 in scikit-learn's digits)? divide by their own "
            "maximum (16), not by 255, which would leave every pixel below 0.063",
        ),
        (0.0, 255.0, "0-255 values? give them as uint8, or divide by 255"),
        (0.0, 200.0, "0-255 values? give them as uint8, or divide by 255"),
        (
            0.0,
            4095.0,
            "16-bit values? give them as uint16, or divide by 65535 (or by their own "
            "full scale, e.g. 4095 for 12-bit data)",
        ),
        (0.0, 65535.0, "16-bit values? give them as uint16"),
        (0.0, 1e6, "divide them by their full scale to bring them into [0, 1]"),
        (0.0, 1.0000002, "values just above 1 (rounding)? clip them to [0, 1]"),
        (-1.0, 1.0, "values in [-1, 1]? map them to [0, 1] with (x + 1) / 2"),
        (-2.1, 3.4, "standardised values? give the pixels before normalisation"),
    ],
)
def test_a_range_error_names_the_range_found_and_the_fix_that_fits(low, high, fix):
    with pytest.raises(VaelabError) as refused:
        check_unit_range(low, high, "x.npy")
    message = str(refused.value)
    assert message.startswith(f"x.npy: pixel values must lie in [0, 1], found min {low:.4g} and ")
    assert f"max {high:.4g}; " in message and fix in message
    assert len(message.splitlines()) == 1


def test_following_the_hint_for_small_levels_gives_the_full_range():
    hint = range_hint(0.0, 16.0)
    divisor = float(re.search(r"own maximum \((\d+)\)", hint).group(1))
    assert 16.0 / divisor == 1.0


def test_values_in_range_pass():
    check_unit_range(0.0, 1.0, "x.npy")
    with pytest.raises(VaelabError, match="NaN or infinite"):
        check_unit_range(0.0, float("nan"), "x.npy")
