"""errors.require_file: the one line for a path given to read, by what the path is (os.stat's answer)."""
from __future__ import annotations

import os
import socket

import pytest

from gristmill.errors import UserError, require_file


def test_require_file_names_what_the_path_is(tmp_path):
    (tmp_path / "f.yaml").write_text("a: 1\n")
    require_file(tmp_path / "f.yaml", "spec file")  # a file: nothing said
    os.symlink(tmp_path / "f.yaml", tmp_path / "link.yaml")
    require_file(tmp_path / "link.yaml", "spec file")  # a link to one is read through
    os.mkfifo(tmp_path / "pipe")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "sock"))
        for path, state in ((tmp_path / "none.yaml", "does not exist"), (tmp_path, "is a folder"),
                            ("/dev/null", "is not a file"), (tmp_path / "pipe", "is not a file"),
                            (tmp_path / "sock", "is not a file")):
            with pytest.raises(UserError) as e:
                require_file(path, "spec file")
            assert str(e.value) == f"spec file {path} {state}"
    os.remove(tmp_path / "f.yaml")  # a dangling link is a path to nothing
    with pytest.raises(UserError, match="link.yaml does not exist$"):
        require_file(tmp_path / "link.yaml", "spec file")
