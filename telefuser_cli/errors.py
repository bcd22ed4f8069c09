"""The one exception type for mistakes a user can make: the CLI prints its message and exits non-zero."""


class UserError(Exception):
    """A bad override, a missing or wrong checkpoint, an unsupported size: one clear message, no traceback."""
