"""Bad-input cases of the image folder and NumPy sources (see tests/bad_input_cases.py)."""

from __future__ import annotations

from tests.bad_input_cases import Case

CASES: list[Case] = []
