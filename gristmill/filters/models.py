"""Model files: where each lives in the cache, how a path or URL resolves, and loading with one-line errors.

A model argument is None (the provisioned default in the cache), a local path, or an http(s)/file URL (downloaded
once into the cache). A missing or unreadable file raises UserError naming the command that provides it.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from gristmill.errors import UserError
from gristmill.paths import cache_dir


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
    return spec.startswith(("http://", "https://", "file://"))


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
    """Fetch `url` once into CACHE/downloads/; later calls reuse the file (the name includes the URL's hash)."""
    name = url.rstrip("/").rsplit("/", 1)[-1] or "model"
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    dest = cache_dir() / "downloads" / f"{digest}-{name}"
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f)
    except (urllib.error.URLError, OSError, ValueError) as e:
        tmp.unlink(missing_ok=True)
        reason = getattr(e, "reason", e)
        raise UserError(f"cannot download {kind} model from {url} ({reason}); without network, download it elsewhere "
                        f"and pass its local path") from None
    tmp.replace(dest)
    return dest


def _corrupt(kind: str, path: Path) -> UserError:
    return UserError(f"{kind} model {path} is unreadable or corrupt: re-create it with `{MODELS[kind].command} --force`"
                     f" or pass another file")


def load_fasttext(kind: str, spec: str | os.PathLike | None = None):
    """A fastText model (LID, quality or toxicity classifier)."""
    import fasttext

    path = resolve(kind, spec)
    # fastText prints a deprecation warning on every load; it is noise in worker logs.
    fasttext.FastText.eprint = lambda *a, **k: None
    try:
        return fasttext.load_model(str(path))
    except (ValueError, RuntimeError, MemoryError) as e:
        raise _corrupt(kind, path) from e


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
        raise UserError(f"sentencepiece model {path} is unreadable or corrupt: pass the .sp.model file that was "
                        f"trained with the KenLM model") from e
    return sp


def sidecar(model_path: Path, suffix: str) -> Path:
    """A file saved beside a model (its calibration thresholds), e.g. en.binary -> en.binary.buckets.json."""
    return model_path.with_name(model_path.name + suffix)


def log(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)
