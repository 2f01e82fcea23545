"""docs/errors.md lists every case of tests/bad_input_cases.py with the message vaelab prints.

The table is produced by running each case (`make error-table` rewrites the file); this test fails
when the file is not what the cases print today, so the page cannot go stale.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.bad_input_cases import CASES, RUN, SMALL, Case

pytestmark = pytest.mark.slow

TABLE = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
REWRITE = "VAELAB_WRITE_ERROR_TABLE"

HEADER = """# What vaelab says when the input is bad

Every row was produced by running the command in a fresh directory (`make error-table`
regenerates this file from `tests/bad_input_cases.py`; `tests/test_error_table.py` fails when it
is out of date, and `tests/test_bad_input.py` checks the same cases, in-process and once more each
as a `python -m vaelab` process of its own). Each refusal is one line on stderr, exit status 2, no
traceback, and nothing is written or changed (every file of the case's directory is byte for byte
what it was; "untouched" below: the files under `runs/`). To keep the table short, `...`
in a `train` command stands for the options every case passes:
`--epochs 1 --batch-size 50 --test-batch-size 50 --hidden 8,4 --runs-dir runs --name r`.

| Input | Command | Exit | Untouched | Message on stderr |
|---|---|---|---|---|
"""


def snapshot(root: Path) -> dict[str, bytes]:
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def shown(args: list[str]) -> str:
    """The command with the options every case passes folded into '...'."""
    text = " ".join(args)
    for common in (SMALL, RUN):
        text = text.replace(" " + " ".join(common), " ...", 1)
    return "vaelab " + text.replace("... ...", "...")


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def row(case: Case, work: Path, cli) -> str:
    args = case.build(work)
    before = snapshot(work / "runs")
    result = cli(*args)
    untouched = snapshot(work / "runs") == before
    message = result.err.strip().replace(f"{work}/", "")  # paths as the user typed them
    message = re.sub(r"\bPID \d+", "PID 4242", message)  # differs from run to run
    message = re.sub(r"\bthe \d+ cores\b", "the 16 cores", message)  # differs by machine
    message = re.sub(  # the machine's free memory differs from run to run
        r"[\d.]+ \w+ \([\d,]+ bytes\) are available",
        "7.6 GiB (8,192,000,000 bytes) are available",
        message,
    )
    return (
        f"| {cell(case.what)} | `{cell(shown(args))}` | {result.code} | "
        f"{'yes' if untouched else 'NO'} | `{cell(message)}` |"
    )


def test_docs_errors_md_is_what_every_case_prints(tmp_path, monkeypatch, cli):
    rows, group = [], None
    for index, case in enumerate(CASES):
        work = tmp_path / f"case{index}"
        work.mkdir()
        monkeypatch.chdir(work)
        if case.group != group:
            group = case.group
            rows.append(f"| **{group}** | | | | |")
        rows.append(row(case, work, cli))
    table = HEADER + "\n".join(rows) + "\n"
    if os.environ.get(REWRITE) == "1":
        TABLE.write_text(table, encoding="utf-8")
    assert TABLE.read_text(encoding="utf-8") == table, (
        f"{TABLE} is out of date: run `make error-table` and review the change"
    )
