"""Bad-input cases of one group (see tests/bad_input_cases.py, which gathers every group)."""

from __future__ import annotations

from tests.bad_input_cases import Case

CASES: list[Case] = []
