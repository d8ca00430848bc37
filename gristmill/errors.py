"""User-facing errors: raised for user mistakes, printed by the CLIs as one line with no traceback."""
import os


class UserError(Exception):
    """A mistake the user can fix (bad path, bad flag, bad config). The message is the whole explanation."""


def require_file(path, what: str) -> None:
    """One line unless `path` (a local path) is a file to read: `{what} {path} does not exist`, `is a folder`, or
    `is not a file` (/dev/null, a pipe, a socket: it exists, so "does not exist" would mislead)."""
    if not os.path.isfile(path):
        state = "is a folder" if os.path.isdir(path) else "is not a file" if os.path.exists(path) else "does not exist"
        raise UserError(f"{what} {path} {state}")
