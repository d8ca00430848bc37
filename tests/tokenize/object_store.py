"""`gmtest://`, a stand-in object store for the tokenize tests: a Beam FileSystem that keeps its objects under a
local root (set ROOT per test), reached only through Beam's FileSystems API, with no folders to make (as on
GCS). Defined once, since Beam finds a filesystem by its scheme among all loaded subclasses."""
from __future__ import annotations

import os
import posixpath
import re
import shutil

from apache_beam.io.filesystem import FileMetadata, MatchResult
from apache_beam.io.localfilesystem import LocalFileSystem

PREFIX = "gmtest://"


class MappedFileSystem(LocalFileSystem):
    """gmtest://a/b is the local file ROOT/a/b; listing is by prefix, as on an object store."""

    ROOT = ""

    @classmethod
    def scheme(cls):
        return "gmtest"

    def _local(self, path: str) -> str:
        assert path.startswith(PREFIX), path
        return os.path.join(self.ROOT, path[len(PREFIX):])

    def _remote(self, path: str) -> str:
        return PREFIX + os.path.relpath(path, self.ROOT)

    def has_dirs(self):
        return False

    def join(self, basepath, *paths):
        return posixpath.join(basepath, *paths)

    def split(self, path):
        head, tail = posixpath.split(path[len(PREFIX):])
        return PREFIX + head, tail

    def mkdirs(self, path):
        pass  # object stores have no folders

    def _list(self, dir_or_prefix):
        local = self._local(dir_or_prefix)
        top = local if os.path.isdir(local) else os.path.dirname(local)
        for root, _, files in os.walk(top):
            for name in files:
                full = os.path.join(root, name)
                if full.startswith(local):
                    yield FileMetadata(self._remote(full), os.path.getsize(full), os.path.getmtime(full))

    def match(self, patterns, limits=None):
        results = []
        for pattern in patterns:
            if not any(c in pattern for c in "*?["):
                found = [self.metadata(pattern)] if self.exists(pattern) else []
                results.append(MatchResult(pattern, found))
                continue
            prefix = pattern[:min(pattern.index(c) for c in "*?[" if c in pattern)]
            regex = self.translate_pattern(pattern)
            results.append(MatchResult(pattern, [m for m in self._list(prefix) if re.match(regex, m.path)]))
        return results

    def create(self, path, *args, **kwargs):
        return super().create(self._local(path), *args, **kwargs)

    def open(self, path, *args, **kwargs):
        return super().open(self._local(path), *args, **kwargs)

    def copy(self, sources, destinations):
        for a, b in zip(sources, destinations):
            os.makedirs(os.path.dirname(self._local(b)), exist_ok=True)
            shutil.copyfile(self._local(a), self._local(b))

    def rename(self, sources, destinations):  # object stores rename by copy and delete
        self.copy(sources, destinations)
        self.delete(sources)

    def exists(self, path):
        return os.path.isfile(self._local(path))  # a prefix is not an object

    def size(self, path):
        return os.path.getsize(self._local(path))

    def last_updated(self, path):
        return os.path.getmtime(self._local(path))

    def checksum(self, path):
        return str(self.size(path))

    def metadata(self, path):
        return FileMetadata(path, self.size(path), self.last_updated(path))

    def delete(self, paths):
        for p in paths:
            assert os.path.isfile(self._local(p)), f"{p} is not an object"
            os.remove(self._local(p))
