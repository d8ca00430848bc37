"""Small file operations for outputs that may be a local folder or a Beam filesystem path (gs://, s3://, ...).

Local paths use the local file API, with a folder's semantics (folders are made, renames are atomic). Other
paths go through Beam's FileSystems, where a "folder" is a prefix, a rename is a copy and a delete, and there is
nothing to make. Globs go through Beam's FileSystems for both, so a pattern means the same everywhere.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
from pathlib import Path
from typing import BinaryIO

from gristmill.errors import UserError

log = logging.getLogger(__name__)


def _beam():
    # Imported on use: the token reader, `mix build` and the trainer import this module, and need no Beam
    # (nor its import time) for local files.
    import logging

    def quiet(record: logging.LogRecord) -> bool:  # Beam's import-time note on optional GCP client libraries
        return "apitools not found" not in record.getMessage()

    logging.getLogger().addFilter(quiet)
    try:
        from apache_beam.io.filesystem import CompressionTypes
        from apache_beam.io.filesystems import FileSystems
    finally:
        logging.getLogger().removeFilter(quiet)
    return FileSystems, CompressionTypes


def is_remote(path: str) -> bool:
    """Whether `path` names a Beam filesystem other than the local one (gs://, s3://, ...)."""
    return "://" in str(path)


_EXTRAS = {"gs": "apache-beam[gcp]", "s3": "apache-beam[aws]", "azfs": "apache-beam[azure]", "hdfs": "hdfs"}


def check_filesystem(path: str) -> None:
    """One line, before a pipeline starts, when no Beam filesystem serves the path's scheme."""
    if not is_remote(path):
        return
    try:
        _beam()[0].get_filesystem(str(path))
    except ValueError:
        scheme = str(path).split("://", 1)[0]
        extra = _EXTRAS.get(scheme)
        hint = f"pip install '{extra}'" if extra else "install the Beam extra that provides it"
        raise UserError(f"no Beam filesystem for {scheme}:// paths ({path}): {hint}") from None


def check_output_folder(path: str) -> None:
    """One line, before a run starts, when an output folder cannot be one: it, or a folder above it, is a file;
    or the nearest existing one of them is not writable (a read-only mount)."""
    if is_remote(path):
        return
    blocking = _file_in_the_way(path, Path(path))
    if blocking is not None:
        raise UserError(f"output {path} is a file, not a folder" if blocking == Path(path) else
                        f"output {path} cannot be a folder: {blocking} is a file")


def check_output_file(path: str) -> None:
    """One line, before the work that ends in writing it, when no file can be written at `path`: it is a folder,
    a folder above it is a file, or the nearest existing folder above it is not writable."""
    if is_remote(path):
        return
    if Path(path).is_dir():
        raise UserError(f"output {path} is a folder: give the path of the file to write")
    blocking = _file_in_the_way(path, Path(path).parent)
    if blocking is not None:
        raise UserError(f"cannot write {path}: {blocking} is a file, not a folder")


def _file_in_the_way(path: str, start: Path) -> Path | None:
    """The nearest of `start` and the folders above it that exists, when it is a file (None when it is a
    folder, or none exists); one line when it is a folder `path` cannot be written in."""
    for q in (start, *start.parents):
        if q.exists():
            if not q.is_dir():
                return q
            if not os.access(q, os.W_OK | os.X_OK):
                raise UserError(f"cannot write {path}: {q} is not writable")
            return None
    return None


def join(base: str, *parts: str) -> str:
    if is_remote(base):
        return _beam()[0].join(str(base), *parts)
    return os.path.join(str(base), *parts)


def basename(path: str) -> str:
    if is_remote(path):
        return _beam()[0].split(str(path))[1]
    return os.path.basename(str(path))


def dirname(path: str) -> str:
    if is_remote(path):
        return _beam()[0].split(str(path))[0]
    return os.path.dirname(str(path))


def makedirs(path: str) -> None:
    """Make a folder and its parents if missing (nothing to do on object stores, where a folder is a prefix)."""
    if not is_remote(path):
        Path(path).mkdir(parents=True, exist_ok=True)


def is_file(path: str) -> bool:
    """Whether a file (an object, on object stores) is there."""
    return _beam()[0].exists(str(path)) if is_remote(path) else os.path.isfile(path)


def read_bytes(path: str) -> bytes:
    if not is_remote(path):
        return Path(path).read_bytes()
    FileSystems, CompressionTypes = _beam()
    with FileSystems.open(str(path), compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read()


class NotARegularFile(OSError):
    """An input path that names something other than a file (a FIFO, a socket, a device)."""


def open_input(path: str):
    """An input file opened for binary reading, as it is now (a listed file may since have gone, or become a
    folder or a FIFO): OSError when it cannot be read. A local path is opened without blocking, so a FIFO with no
    writer raises NotARegularFile instead of hanging the reader; other paths go through Beam's FileSystems."""
    if is_remote(path):
        FileSystems, CompressionTypes = _beam()
        return FileSystems.open(str(path), compression_type=CompressionTypes.UNCOMPRESSED)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if not stat.S_ISREG(mode):
            what = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
            raise NotARegularFile(errno.EINVAL, f"{what}, not a file", path)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


GZIP_MAGIC = b"\x1f\x8b\x08"  # a gzip member's first bytes (deflate)


def find_first(stream: BinaryIO, start: int, needles: tuple[bytes, ...]) -> int | None:
    """Offset of the earliest of `needles` (a record's or a gzip member's start) at or after `start`, or None."""
    start = max(start, 0)
    stream.seek(start)
    keep = max(len(m) for m in needles) - 1  # a longer needle may begin in the last `keep` bytes of a read
    carry = b""
    pos = start
    while True:
        chunk = stream.read(1 << 20)
        buf = carry + chunk
        hits = [i for i in (buf.find(m) for m in needles) if i >= 0]
        # A hit in the carried tail is found again in the next read, after any longer needle that starts before it.
        if hits and (not chunk or min(hits) < len(buf) - keep):
            return pos - len(carry) + min(hits)
        if not chunk:
            return None
        carry = buf[-keep:]
        pos += len(chunk)


def only_padding(stream: BinaryIO, start: int, padding: bytes, end: int | None = None) -> bool:
    """True when nothing but bytes of `padding` lies between `start` and `end` (by default, the end of the stream)."""
    start = max(start, 0)
    stream.seek(start)
    left = end - start if end is not None else -1
    while left and (chunk := stream.read(1 << 16 if left < 0 else min(left, 1 << 16))):
        if chunk.strip(padding):
            return False
        left = left - len(chunk) if left > 0 else left
    return True


def write_bytes(path: str, data: bytes, mime_type: str = "application/octet-stream") -> None:
    if not is_remote(path):
        Path(path).write_bytes(data)
        return
    FileSystems, CompressionTypes = _beam()
    with FileSystems.create(str(path), mime_type=mime_type, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(data)


def matching(pattern: str) -> list[str]:
    """Paths matching a glob (local or any Beam filesystem), sorted; none is not an error. A scheme no Beam
    filesystem serves, or a listing that fails (credentials, a missing bucket), is one UserError line."""
    check_filesystem(pattern)
    try:
        found = _beam()[0].match([str(pattern)])[0].metadata_list
    except Exception as e:  # BeamIOError wraps the filesystem's own complaint
        raise UserError(f"cannot list {pattern}: {str(e).strip().splitlines()[0][:300]}") from None
    return sorted(m.path for m in found)


def input_files(pattern: str, example: str) -> list[str]:
    """The files an input glob matches, as `matching` lists them; one UserError line when it names a local folder
    (`crawl` for 'crawl/*.warc.gz'), which no reader can open: `example` is the glob to suggest inside it."""
    paths = matching(pattern)
    folders = [p for p in paths if not is_remote(p) and os.path.isdir(p)]
    if folders:
        raise UserError(f"input {pattern} names the folder {folders[0]}, not files in it: give a glob, e.g. "
                        f"'{join(folders[0], example)}'")
    return paths


def delete(paths: list[str]) -> None:
    if paths:
        _beam()[0].delete(list(paths))


def rename(src: str, dst: str) -> None:
    """Move one file, replacing `dst`: atomic on a local disk, a copy and a delete on object stores."""
    if not is_remote(src):
        os.replace(src, dst)
        return
    FileSystems = _beam()[0]
    if FileSystems.exists(dst):
        FileSystems.delete([dst])
    FileSystems.rename([src], [dst])


def remove_folder(path: str) -> None:
    """Delete a folder and what is in it (on object stores: every object under the prefix)."""
    if not is_remote(path):
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        return
    delete(matching(join(path, "*")))


def copy_to_local(src: str, dst: str | os.PathLike, chunk: int = 16 << 20) -> int:
    """Stream one file (any Beam filesystem) to a local path, in `chunk`-byte reads; returns the bytes copied."""
    if not is_remote(src):
        import shutil

        shutil.copyfile(src, dst)
        return os.path.getsize(dst)
    FileSystems, CompressionTypes = _beam()
    n = 0
    with FileSystems.open(str(src), compression_type=CompressionTypes.UNCOMPRESSED) as f, open(dst, "wb") as out:
        while block := f.read(chunk):
            out.write(block)
            n += len(block)
    return n


def resolve(base: str | os.PathLike, ref: str) -> Path | str:
    """`ref` named relative to the folder `base`, made absolute; a URL (gs://, s3://) stays as it is."""
    return ref if is_remote(ref) else (Path(base) / ref).resolve()


# What flock raises where the filesystem keeps no locks: some NFS mounts (ENOLCK), FUSE and object-store mounts
# (EOPNOTSUPP, ENOTSUP, EINVAL).
_NO_LOCKS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL})


@contextlib.contextmanager
def exclusive_lock(f):
    """Hold an exclusive flock on the open file `f` for the block, waiting for other holders.

    On a filesystem without locks this logs one warning naming the file and runs the block unlocked: callers
    write to temporary files of their own and rename them into place, so the worst case is work done twice.
    Any other OSError is raised.
    """
    try:
        fcntl.flock(f, fcntl.LOCK_EX)
    except OSError as e:
        if e.errno not in _NO_LOCKS:
            raise
        log.warning("cannot lock %s (%s): this filesystem keeps no file locks; continuing without the lock, "
                    "so another process may fetch the same file too", f.name, e.strerror or e)
        yield
        return
    try:
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
