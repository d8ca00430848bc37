"""User-facing errors: raised for user mistakes, printed by the CLIs as one line with no traceback."""


class UserError(Exception):
    """A mistake the user can fix (bad path, bad flag, bad config). The message is the whole explanation."""
