"""The exceptions vaelab raises for problems a user can fix."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence


class VaelabError(Exception):
    """A problem with the user's input or environment, described in one line for the user.

    `parameters` names the arguments or config fields the message speaks of, in the Python API's
    own words (``checkpoint_every``); the command line shows each as the flag that sets it.
    """

    exit_code: int = 2  # the command line's exit status for this error

    def __init__(self, message: str, *, parameters: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.parameters = tuple(parameters)


class MissingExtra(VaelabError):
    """An optional dependency of the feature asked for is not installed."""


def one_line(message: str) -> str:
    """`message` with every control character and line separator escaped (a newline in a path
    shows as \\n), so that an error or a note is one line whatever the paths it names hold."""
    return "".join(_escaped(char) for char in message)


def _escaped(char: str) -> str:
    if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
        return char.encode("unicode_escape").decode("ascii")
    return char
