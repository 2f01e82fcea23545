"""Bad-input cases of IDX files of any name, CSV variants and the built-in datasets (see
tests/bad_input_cases.py)."""

from __future__ import annotations

from tests.bad_input_cases import Case

CASES: list[Case] = []
