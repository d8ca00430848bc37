"""Token datasets on a Beam filesystem (gs://, s3://, ...): the manifest is read in place, and the shards are
copied into the local cache for training.

The reader memory-maps its shards, so they must be local files. `stage(url, splits)` copies a remote dataset's
manifest, tokenizer and the shards of the given splits into $GRISTMILL_CACHE/datasets/<key>/. The key is made
of the manifest's URL and its sha256, so a dataset written again gets a new folder. It returns the local
manifest path. Each file is copied under a temporary name and renamed once its size and sha256 match the
manifest (a shard with no sha256 recorded: its size), so a cut-short or damaged copy is never taken for a whole
one and the next call resumes. Processes on one machine (torchrun's ranks) take a file lock: one copies, the
others wait and then reuse the copy (on a filesystem without locks, each copies for itself after one warning).
`fetched(url, name, folder)` is a fresh copy of one file that is deleted after use: what `beam tokenize verify`
checks, so it reads the remote bytes and not the cache's.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from gristmill.errors import UserError
from gristmill.paths import cache_dir
from gristmill.pipeline import fs
from gristmill.tokenize.shards import check_format, file_sha256, manifest_problem

MANIFEST = "manifest.json"


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def manifest_url(path: str) -> str:
    """The manifest.json URL of a remote dataset, given its folder or the manifest itself."""
    p = str(path).rstrip("/")
    return p if p.endswith(".json") else fs.join(p, MANIFEST)


def read_manifest(path: str) -> tuple[bytes, str]:
    """(the manifest's bytes, its URL) for a remote dataset folder or manifest URL."""
    fs.check_filesystem(path)
    url = manifest_url(path)
    try:
        found = fs.is_file(url)
        raw = fs.read_bytes(url) if found else b""
    except Exception as e:  # credentials, a missing bucket: the filesystem's own words, in one line
        raise UserError(f"cannot read {url}: {_first_line(e)}") from None
    if not found:
        raise UserError(f"no token dataset at {path}: {url} does not exist")
    return raw, url


def local_folder(url: str, raw: bytes) -> Path:
    """The cache folder for the dataset whose manifest at `url` holds `raw`."""
    key = hashlib.sha256(url.encode()).hexdigest()[:12] + "-" + hashlib.sha256(raw).hexdigest()[:12]
    return cache_dir() / "datasets" / key


@contextlib.contextmanager
def _locked(folder: Path):
    with open(folder / ".lock", "a") as f, fs.exclusive_lock(f):
        yield


def _whole(path: Path, size: int | None, sha256: str | None) -> bool:
    if not path.is_file() or (size is not None and path.stat().st_size != size):
        return False
    return sha256 is None or file_sha256(path) == sha256


def _plain_name(name: Any, url: str) -> str:
    # Files are named relative to the manifest; one that climbs out of the folder would land outside the cache.
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise UserError(f"{url}: file name {name!r} is not a plain file name beside the manifest")
    return name


def _wanted(manifest: dict[str, Any], url: str, splits: Iterable[str]) -> list[tuple[str, int | None, str | None]]:
    """(name, bytes or None, sha256 or None) of the files these splits need: the tokenizer and their shards."""
    splits = list(splits)
    if not splits:
        return []
    tok = manifest.get("tokenizer") or {}
    out = [(_plain_name(tok["path"], url), None, tok.get("sha256"))] if tok.get("path") else []
    for split in splits:
        for shard in ((manifest.get("splits") or {}).get(split) or {}).get("shards", []):
            size = shard.get("bytes_on_disk")
            out.append((_plain_name(shard.get("path"), url), int(size) if size is not None else None,
                        shard.get("sha256")))
    return out


@contextlib.contextmanager
def fetched(url: str, name: str, folder: Path):
    """(a fresh local copy of the file `name` of the remote dataset whose manifest is at `url`, its URL), the
    copy deleted afterwards. `beam tokenize verify` reads these, one file at a time, so it checks the bytes on
    the remote filesystem rather than a copy staged earlier, and leaves the cache as it was."""
    src = fs.join(fs.dirname(url), _plain_name(name, url))
    part = folder / f".verify{os.getpid()}-{name}"
    try:
        _copy(src, part)  # its UserError is a problem of this file (verify_files), not of the whole check
        yield part, src
    finally:
        part.unlink(missing_ok=True)


def _copy(src: str, part: Path) -> int:
    """Copy `src` to the local file `part`; returns its bytes. A copy that fails is removed, and one line says
    why in the filesystem's own words (gone, no access, a connection lost)."""
    try:
        return fs.copy_to_local(src, part)
    except Exception as e:
        part.unlink(missing_ok=True)
        raise UserError(f"cannot copy {src}: {_first_line(e)}") from None


def stage(path: str, splits: Iterable[str] = ()) -> Path:
    """Copy a remote token dataset's manifest, and the tokenizer and shards of `splits`, into the local cache
    (what is there already is reused); returns the local manifest.json path."""
    raw, url = read_manifest(path)
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as e:
        raise UserError(f"{url} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{url} is not a token dataset manifest")
    check_format(manifest, url)
    try:
        wanted = _wanted(manifest, url, splits)
    except (AttributeError, TypeError, ValueError):
        # A field of the wrong type (a shard that is not an object, "bytes_on_disk": "12x"): the line a local copy
        # gets from load_manifest, not the exception (`beam tokenize verify` exited 1, as for a file that differs).
        problem = manifest_problem(manifest) or "a field has the wrong type"
        raise UserError(f"{url} is damaged: {problem}; write the token dataset again") from None
    folder = local_folder(url, raw)
    folder.mkdir(parents=True, exist_ok=True)
    root = fs.dirname(url)
    with _locked(folder):
        # A copy is hashed as it lands (it is in the page cache: cheap beside the copy); a shard already here is
        # reused on its size alone, since its sha256 would read it whole at every open (`beam tokenize verify`
        # does). The tokenizer, small and with no size in the manifest, is hashed each time.
        todo = [w for w in wanted if not _whole(folder / w[0], w[1], w[2] if w[1] is None else None)]
        if todo:
            total = sum(size or 0 for _, size, _ in todo)
            print(f"staging {len(todo)} file(s), {total / 1e6:,.1f} MB, from {root} into {folder}",
                  file=sys.stderr, flush=True)
            t0, done = time.time(), 0
            for k, (name, size, sha256) in enumerate(todo, 1):
                src, dst = fs.join(root, name), folder / name
                part = dst.with_name(dst.name + f".part{os.getpid()}")
                n = _copy(src, part)
                if size is not None and n != size:
                    part.unlink()
                    raise UserError(f"{src} is {n:,} bytes, the manifest says {size:,}: it was cut short or "
                                    f"replaced; write the token dataset again")
                if sha256 is not None and file_sha256(part) != sha256:
                    part.unlink()
                    raise UserError(f"{src} does not match the sha256 in {url}; write the token dataset again")
                os.replace(part, dst)
                done += n
                if sys.stderr.isatty() or k == len(todo) or k % 16 == 0:
                    rate = done / 1e6 / max(time.time() - t0, 1e-9)
                    print(f"  {k}/{len(todo)} files, {done / 1e6:,.1f} MB, {rate:,.1f} MB/s", file=sys.stderr,
                          flush=True)
        local = folder / MANIFEST
        if not local.is_file() or local.read_bytes() != raw:
            part = local.with_name(MANIFEST + f".part{os.getpid()}")
            part.write_bytes(raw)
            os.replace(part, local)
    return local
