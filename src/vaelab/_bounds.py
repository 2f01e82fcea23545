"""One check for every whole number the user gives the API (counts, sizes, batch sizes): a
number of the right kind within its declared bounds, refused in one line naming it otherwise."""

from __future__ import annotations

from typing import Any

from vaelab.errors import VaelabError


def require_whole(name: str, value: Any, low: int, high: int | None = None) -> None:
    """Refuse `value` (the API's argument `name`) unless it is a whole number, not a bool, from
    `low` to `high` (no upper bound when None)."""
    whole = isinstance(value, int) and not isinstance(value, bool)
    if whole and low <= value and (high is None or value <= high):
        return
    span = f"at least {low:,}" if high is None else f"from {low:,} to {high:,}"
    raise VaelabError(
        f"{name} must be a whole number {span}, got {str(value)[:40]}", parameters=(name,)
    )
