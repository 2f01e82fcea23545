"""The exceptions vaelab raises for problems a user can fix."""

from __future__ import annotations

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
