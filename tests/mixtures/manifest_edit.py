"""Hand edits of a manifest (a JSON dict), for the tests of what the readers make of edited or damaged ones."""
from __future__ import annotations

DROP = object()  # as a value: delete the field instead of setting it


def edit(manifest: dict, path: tuple, value) -> None:
    """Set the field at `path` (keys and list indices) to `value`, or delete it when `value` is DROP."""
    *head, last = path
    for k in head:
        manifest = manifest[k]
    if value is DROP:
        del manifest[last]
    else:
        manifest[last] = value
