"""The one exception type for problems a user can cause and fix."""


class VaekitError(Exception):
    """A user-fixable problem: the message names it and says how to fix it (CLI: one line, exit 2)."""
