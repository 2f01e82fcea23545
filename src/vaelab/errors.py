"""The one exception type vaelab raises for problems a user can fix."""


class VaelabError(Exception):
    """A problem with the user's input or environment, described in one line for the user."""
