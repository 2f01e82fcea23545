"""Regenerate docs/errors.md: run every bad-input case of tests/bad_input_cases.py as a real
`python -m vaelab` process and record the exit status and the message it printed.

    python scripts/error_table.py          # writes docs/errors.md
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from bad_input_cases import CASES, RUN, SMALL, Case  # noqa: E402

from vaelab._io import atomic_write_text  # noqa: E402

HEADER = """# What vaelab says when the input is bad

Every row was produced by running the command in a fresh directory (`python
scripts/error_table.py` regenerates this file; `tests/test_bad_input.py` checks the same cases).
Each refusal is one line on stderr, exit status 2, no traceback, and nothing is written into the
run directory ("untouched" below: the files under `runs/` are byte for byte what they were).
To keep the table short, `...` in a `train` command stands for the options every case passes:
`--epochs 1 --batch-size 50 --test-batch-size 50 --hidden 8,4 --runs-dir runs --name r`.

| Input | Command | Exit | Untouched | Message on stderr |
|---|---|---|---|---|
"""


def snapshot(root: Path) -> dict[str, bytes]:
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def run_case(case: Case) -> tuple[list[str], int, str, bool]:
    with tempfile.TemporaryDirectory(prefix="vaelab-errors-") as work:
        work_dir = Path(work)
        args = case.build(work_dir)
        before = snapshot(work_dir / "runs")
        result = subprocess.run(
            [sys.executable, "-m", "vaelab", *args], cwd=work_dir, capture_output=True,
            text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, timeout=300,
        )  # fmt: skip
        untouched = snapshot(work_dir / "runs") == before
        return args, result.returncode, result.stderr.strip(), untouched


def shown(args: list[str]) -> str:
    """The command with the options every case passes folded into '...'."""
    text = " ".join(args)
    for common in (SMALL, RUN):
        text = text.replace(" " + " ".join(common), " ...", 1)
    return "vaelab " + text.replace("... ...", "...")


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def main() -> None:
    rows, failures = [], []
    group = None
    for case in CASES:
        args, code, message, untouched = run_case(case)
        if case.group != group:
            group = case.group
            rows.append(f"| **{group}** | | | | |")
        command = shown(args)
        rows.append(
            f"| {cell(case.what)} | `{cell(command)}` | {code} | {'yes' if untouched else 'NO'} "
            f"| `{cell(message)}` |"
        )
        if code != 2 or not untouched or len(message.splitlines()) != 1:
            failures.append(case.what)
        print(f"{code} {case.what}: {message}")
    target = ROOT / "docs" / "errors.md"
    target.parent.mkdir(exist_ok=True)
    atomic_write_text(target, HEADER + "\n".join(rows) + "\n")
    print(f"wrote {target} ({len(CASES)} cases)")
    if failures:
        sys.exit(f"not refused as required: {', '.join(failures)}")


if __name__ == "__main__":
    main()
