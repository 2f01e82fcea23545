"""The one exception type vaelab raises for problems a user can fix."""


class VaelabError(Exception):
    """A problem with the user's input or environment, described in one line for the user."""

    exit_code: int = 2  # the command line's exit status for this error
