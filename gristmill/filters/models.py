"""Model files: where each lives in the cache, how a path or URL resolves, and loading with one-line errors.

A model argument is None (the provisioned default in the cache), a local path, or an http(s)/file URL (downloaded
once into the cache, atomically: a partial download is never used). A missing, truncated or unreadable file raises
UserError naming the command that provides it.
"""
from __future__ import annotations

import errno
import hashlib
import http.client
import mmap
import os
import shutil
import struct
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from gristmill.counts import content_length
from gristmill.errors import UserError
from gristmill.paths import cache_dir
from gristmill.pipeline import fs


@dataclass(frozen=True)
class ModelKind:
    default: str  # path relative to the cache folder
    command: str  # the command that provisions it


MODELS = {
    "lid": ModelKind("lid/lid.176.ftz", "beam model fetch-lid"),
    "kenlm": ModelKind("kenlm/en.binary", "beam model train-kenlm"),
    # no provisioned default: only CCNet-style models come with one (pass it as sp_model / --sp-model)
    "sentencepiece": ModelKind("kenlm/en.sp.model", "beam model train-kenlm --sp-model"),
    "quality": ModelKind("quality/quality.ftz", "beam model train-quality"),
    "toxicity": ModelKind("toxicity/toxicity.ftz", "beam model train-toxicity"),
    "badwords": ModelKind("toxicity/badwords.en.txt", "beam model provision"),
    "url_lists": ModelKind("url/domains.u64.npy", "beam model fetch-url-lists"),
}


def default_path(kind: str) -> Path:
    return cache_dir() / MODELS[kind].default


def is_url(spec: str) -> bool:
    # RFC 3986 section 3.1: schemes are case-insensitive (urllib opens HTTPS:// and FILE:// alike)
    return spec.lower().startswith(("http://", "https://", "file://"))


def resolve(kind: str, spec: str | os.PathLike | None = None) -> Path:
    """The local file for `spec`: the cached default, a path, or a URL downloaded into the cache."""
    if spec is None or spec == "":
        path = default_path(kind)
        if not path.is_file():
            raise UserError(f"{kind} model {path} is missing: run `{MODELS[kind].command}` "
                            f"(or `beam model provision` for all default models)")
        return path
    spec = str(spec)
    if is_url(spec):
        return download(spec, kind)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise UserError(f"{kind} model {path} is missing: give an existing file or URL, or run `{MODELS[kind].command}`")
    return path


def download(url: str, kind: str) -> Path:
    """Fetch `url` once into CACHE/downloads/; later calls reuse the file (the name includes the URL's hash).

    Workers that ask for the same URL at once take turns on a lock file (CACHE/locks/), so one downloads and the
    others reuse its file (where the filesystem keeps no locks, each goes on unlocked after one warning). The
    bytes go to a temporary file of this process's own, renamed into place only when the transfer has all the
    bytes the server announced: a file under the final name is always whole. A cache that cannot be written
    (read-only) is one UserError line.
    """
    name = url.rstrip("/").rsplit("/", 1)[-1] or "model"
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    dest = cache_dir() / "downloads" / f"{digest}-{name}"
    if dest.is_file():
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        locks = cache_dir() / "locks"  # beside downloads/, which then holds only whole files
        locks.mkdir(exist_ok=True)
        lock = open(locks / f"{dest.name}.lock", "a")
    except OSError as e:
        raise _unwritable(kind, url, e) from None
    with lock, fs.exclusive_lock(lock):  # a killed process's lock goes with its files
        if not dest.is_file():
            _fetch(url, kind, dest)
    return dest


def _unwritable(kind: str, url: str, e: OSError) -> UserError:
    return UserError(f"cannot download {kind} model from {url}: the model cache {cache_dir()} cannot be written "
                     f"({e.strerror or e}); set GRISTMILL_CACHE to a writable folder, or download the model "
                     f"elsewhere and pass its local path")


def _fetch(url: str, kind: str, dest: Path) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    except OSError as e:
        raise _unwritable(kind, url, e) from None
    try:
        with open(fd, "wb") as f, urllib.request.urlopen(url, timeout=60) as r:
            announced = content_length(r.headers.get("Content-Length"))
            shutil.copyfileobj(r, f)
            got = f.tell()
        # urllib returns a body cut short by a dropped connection as if it were whole; only the length tells.
        if announced is not None and got != announced:
            raise UserError(f"the download of the {kind} model from {url} stopped after {got:,} of {announced:,} "
                            f"bytes: run again, or download it elsewhere and pass its local path")
        os.replace(tmp, dest)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or str(e) or type(e).__name__
        raise UserError(f"cannot download {kind} model from {url} ({reason}); without network, download it elsewhere "
                        f"and pass its local path") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _corrupt(kind: str, path: Path, problem: str = "is unreadable or corrupt", fix: str | None = None) -> UserError:
    if path.parent == cache_dir() / "downloads":
        # Left in the cache it would be reused by every later run, whatever the server gives now.
        path.unlink(missing_ok=True)
        return UserError(f"{kind} model {path} (a download) {problem}: removed it from the cache, so the next run "
                         f"downloads it again; check that the URL gives the model file itself, or pass another file")
    return UserError(f"{kind} model {path} {problem}: "
                     + (fix or f"re-create it with `{MODELS[kind].command} --force` or pass another file"))


LABEL_PREFIX = "__label__"  # fastText's, before every label of a supervised model


def label_name(label: str) -> str:
    """A fastText label without its prefix ("__label__en" -> "en"); a bare name stays as it is."""
    return label.removeprefix(LABEL_PREFIX)


def require_labels(model, labels, where: str, model_name, fix: str) -> None:
    """Refuse labels (with or without the prefix) a fastText model never predicts: every score of such a label
    would be 0, and a filter on it would drop every document. One line naming them and a few of the model's own."""
    known = model.get_labels()
    missing = [label for label in labels if LABEL_PREFIX + label_name(label) not in known]
    if missing:
        names = ", ".join(label_name(lab) for lab in known[:8]) + (", ..." if len(known) > 8 else "")
        raise UserError(f"{where}: model {model_name} has no label {', '.join(map(repr, missing))} "
                        f"(its labels: {names}); {fix}")


FASTTEXT_MAGIC = 793712314  # fastText's FASTTEXT_FILEFORMAT_MAGIC_INT32
_KSUB = 256  # centroids per sub-quantizer in fastText's product quantizer


def fasttext_size(path: Path) -> int | None:
    """The byte length the headers of a fastText .bin/.ftz file call for, None if it is not one (another magic).

    Walks fastText 0.9's save format (FastText::saveModel): magic and version, Args (12 int32 + a double), the
    Dictionary (5 counts, NUL-terminated entries with an int64 count and an int8 type, pruned-index pairs), then
    the input and output matrices, each dense (int64 rows, int64 cols, float32 values) or product-quantized.
    """
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size < 8:
            return None
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            size, pos = len(m), 0

            def take(fmt: str) -> tuple:
                nonlocal pos
                if pos + struct.calcsize(fmt) > size:
                    raise EOFError
                values = struct.unpack_from(fmt, m, pos)
                pos += struct.calcsize(fmt)
                return values

            def quantizer() -> None:
                nonlocal pos
                dim = take("<iiii")[0]
                pos += 4 * dim * _KSUB

            def matrix(quantized: bool) -> None:
                nonlocal pos
                if quantized:
                    qnorm, rows, _, codesize = take("<?qqi")
                    pos += codesize
                    quantizer()
                    if qnorm:
                        pos += rows
                        quantizer()
                else:
                    rows, cols = take("<qq")
                    pos += 4 * rows * cols

            try:
                if take("<i")[0] != FASTTEXT_MAGIC:
                    return None
                take("<i12id")  # version, Args
                entries, _, _, _, pruned = take("<iiiqq")
                for _ in range(entries):
                    end = m.find(b"\0", pos)
                    if end < 0:
                        raise EOFError
                    pos = end + 1 + 9
                pos += 8 * max(pruned, 0)  # -1 when the dictionary was never pruned
                quant_input = take("<?")[0]
                matrix(quant_input)
                quant_output = take("<?")[0]
                matrix(quant_input and quant_output)
            except EOFError:
                return size + 1
            return pos


def load_fasttext(kind: str, spec: str | os.PathLike | None = None):
    """A fastText model (LID, quality or toxicity classifier)."""
    import fasttext

    path = resolve(kind, spec)
    size = path.stat().st_size
    # fastText does not notice a file that ends early: it loops forever in the dictionary, or loads garbage
    # matrices and crashes the worker at its first prediction. So the sizes are checked first.
    try:
        expected = fasttext_size(path)
    except OSError as e:  # the file is whole as far as anyone knows: it stays in the cache
        raise _no_memory(kind, path, size, e) if e.errno == errno.ENOMEM else UserError(
            f"{kind} model {path} cannot be read ({e.strerror or e})") from None
    if expected is None:
        raise _corrupt(kind, path, "is not a fastText model, or is corrupt")
    if size < expected:
        raise _corrupt(kind, path, f"is truncated ({size:,} bytes, short of what its headers describe)")
    # fastText prints a deprecation warning on every load; it is noise in worker logs.
    fasttext.FastText.eprint = lambda *a, **k: None
    try:
        return fasttext.load_model(str(path))
    except MemoryError as e:  # its sizes were checked: the model is whole, this machine is short of memory
        raise _no_memory(kind, path, size, e) from None
    except (ValueError, RuntimeError) as e:
        raise _corrupt(kind, path) from e


def _no_memory(kind: str, path: Path, size: int, e: BaseException) -> UserError:
    return UserError(f"{kind} model {path} ({size:,} bytes) does not fit in this process's memory "
                     f"({getattr(e, 'strerror', None) or type(e).__name__}; a limit such as `ulimit -v` counts too): "
                     f"give the workers more memory, or use a smaller (quantized .ftz) model")


def load_kenlm(spec: str | os.PathLike | None = None):
    """A KenLM model (ARPA or binary)."""
    import kenlm

    path = resolve("kenlm", spec)
    try:
        return kenlm.Model(str(path))
    except (OSError, RuntimeError, ValueError) as e:
        raise _corrupt("kenlm", path) from e


def load_sentencepiece(spec: str | os.PathLike):
    """A SentencePiece tokenizer (CCNet's <lang>.sp.model), by path or URL."""
    import sentencepiece

    spec = str(spec)
    if not is_url(spec) and not Path(spec).expanduser().is_file():
        raise UserError(f"sentencepiece model {spec} is missing: pass the .sp.model file that goes with the KenLM "
                        f"model (CCNet publishes <lang>.sp.model beside <lang>.arpa.bin)")
    path = resolve("sentencepiece", spec)
    sp = sentencepiece.SentencePieceProcessor()
    try:
        sp.load(str(path))
    except (OSError, RuntimeError) as e:
        raise _corrupt("sentencepiece", path, fix="pass the .sp.model file that was trained with the KenLM "
                                                  "model") from e
    return sp


def sidecar(model_path: Path, suffix: str) -> Path:
    """A file saved beside a model (its calibration thresholds), e.g. en.binary -> en.binary.buckets.json."""
    return model_path.with_name(model_path.name + suffix)


def log(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)
