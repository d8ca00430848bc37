"""KenLM perplexity (CCNet, Wenzek et al. 2020): normalize, tokenize, score, length-weight, bucket.

Two tokenizations:
- without a SentencePiece model (the default, for models gristmill trains): each line of a document is a
  paragraph, normalized and split at punctuation, scored on its own; the paragraphs are length-weighted;
- with `sp_model` (CCNet's published `<lang>.sp.model` beside its `<lang>.arpa.bin`): CCNet's own pipeline
  (mine.py: MultiSentencePiece(normalize=True) then DocLM). The whole document is normalized at once, which
  deletes its newlines with the other control characters, encoded into SentencePiece pieces joined by spaces,
  and scored as one sentence, so perplexities equal those CCNet published for its corpus.

Training calls KenLM's own `lmplz` and `build_binary`. Head/middle/tail thresholds are the 30th and 60th
percentiles of perplexity on a crawl sample, saved beside the model as MODEL.buckets.json.
"""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from gristmill.errors import UserError
from gristmill.filters.base import Filter, Verdict
from gristmill.filters.models import load_kenlm, load_sentencepiece, resolve, sidecar
from gristmill.pipeline.document import Document

# CCNet's text_normalizer: unicode punctuation mapped to ASCII (punct=1).
UNICODE_PUNCT = {
    "，": ",", "。": ".", "、": ",", "„": '"', "”": '"', "“": '"', "«": '"', "»": '"', "１": '"', "」": '"',
    "「": '"', "《": '"', "》": '"', "´": "'", "∶": ":", "：": ":", "？": "?", "！": "!", "（": "(", "）": ")",
    "；": ";", "–": "-", "—": " - ", "．": ". ", "～": "~", "’": "'", "…": "...", "━": "-", "〈": "<", "〉": ">",
    "【": "[", "】": "]", "％": "%", "►": "-",
}
_UNICODE_PUNCT_RE = re.compile(f"[{''.join(UNICODE_PUNCT)}]")
_DIGITS = re.compile(r"\d")
_NON_PRINTING = re.compile(f"[{''.join(map(chr, list(range(0, 32)) + list(range(127, 160))))}]")
# KenLM has no tokenizer of its own (CCNet used SentencePiece); split punctuation off words so "word." is "word ."
_PUNCT_SPLIT = re.compile(r"([^\w\s])")
BUCKETS = ("head", "middle", "tail")


def strip_accents(line: str) -> str:
    nfd = unicodedata.normalize("NFD", line)
    return "".join(c for c in nfd if unicodedata.category(c) != "Mn")


def ccnet_normalize(text: str) -> str:
    """CCNet's text_normalizer.normalize: strip, lowercase, accents stripped, digits -> 0, unicode punctuation ->
    ASCII, control characters (newlines too) removed."""
    text = text.strip().lower()
    if not text:
        return ""
    text = strip_accents(text)
    text = _DIGITS.sub("0", text)
    text = _UNICODE_PUNCT_RE.sub(lambda m: UNICODE_PUNCT[m.group()], text)
    return _NON_PRINTING.sub("", text)


def normalize(line: str) -> str:
    """CCNet normalization of one line, then punctuation split into tokens separated by single spaces."""
    return " ".join(_PUNCT_SPLIT.sub(r" \1 ", ccnet_normalize(line)).split())


def paragraphs(text: str) -> list[str]:
    """Normalized, non-empty paragraphs (lines) of a document."""
    return [p for p in (normalize(x) for x in text.split("\n")) if p]


def sentencepiece_lines(sp, text: str) -> list[str]:
    """CCNet's tokenization for its published models: the normalized document's pieces, space-joined."""
    normalized = ccnet_normalize(text)
    return [" ".join(sp.encode(normalized, out_type=str))] if normalized else []


def scored_lines(text: str, sp=None) -> list[str]:
    """The token lines the model scores: paragraphs, or with a SentencePiece model CCNet's single line."""
    return paragraphs(text) if sp is None else sentencepiece_lines(sp, text)


def doc_log_score(model, text: str, sp=None) -> tuple[float, int]:
    """(sum of log10 probabilities, number of scored tokens incl. </s>) over the document's scored lines."""
    total, length = 0.0, 0
    for line in scored_lines(text, sp):
        total += model.score(line, bos=True, eos=True)
        length += len(line.split()) + 1
    return total, length


def perplexity(model, text: str, sp=None) -> float:
    """Length-weighted perplexity: 10 ** (-sum(log10 p) / sum(tokens + 1)) over the scored lines; empty -> inf."""
    total, length = doc_log_score(model, text, sp)
    return 10.0 ** (-total / length) if length else math.inf


def bucket_of(pp: float, thresholds: dict) -> str:
    if pp < thresholds["head_max"]:
        return "head"
    if pp < thresholds["middle_max"]:
        return "middle"
    return "tail"


@dataclass
class KenLMFilter(Filter):
    """Scores perplexity and the CCNet bucket; keeps `keep_buckets` and perplexity <= `max_perplexity` (if set)."""

    model: str | None = None  # path or URL of an ARPA/binary model; None = the provisioned default
    sp_model: str | None = None  # path or URL of the model's SentencePiece tokenizer (CCNet's <lang>.sp.model)
    keep_buckets: tuple[str, ...] | None = ("head", "middle")
    max_perplexity: float | None = None
    name: str = "kenlm"

    def __post_init__(self):
        if self.keep_buckets is not None:
            self.keep_buckets = tuple(self.keep_buckets)
            bad = set(self.keep_buckets) - set(BUCKETS)
            if bad:
                raise UserError(f"kenlm: keep_buckets must be among {BUCKETS}, not {sorted(bad)}")
        self._model = None
        self._sp = None
        self._thresholds = None

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_model", "_sp", "_thresholds")} | {
            "_model": None, "_sp": None, "_thresholds": None}

    def setup(self) -> None:
        if self._model is not None:
            return
        path = resolve("kenlm", self.model)
        self._sp = load_sentencepiece(self.sp_model) if self.sp_model else None
        self._model = load_kenlm(path)
        if self.keep_buckets is not None:
            side = sidecar(path, ".buckets.json")
            if not side.is_file():
                raise UserError(f"kenlm: {side} (bucket thresholds) is missing: run `beam model calibrate-kenlm "
                                f"--model {path}` or set keep_buckets=None")
            try:
                th = json.loads(side.read_text())
                th = {"head_max": float(th["head_max"]), "middle_max": float(th["middle_max"])}
            except (OSError, ValueError, KeyError, TypeError):
                raise UserError(f"kenlm: {side} (bucket thresholds) is unreadable or corrupt: re-create it with "
                                f"`beam model calibrate-kenlm --model {path} --sample ...`") from None
            self._thresholds = th

    def check(self, doc: Document) -> Verdict:
        self.setup()
        pp = perplexity(self._model, doc.text, self._sp)
        scores = {f"{self.name}.perplexity": pp}
        reason = None
        if self._thresholds is not None:
            bucket = bucket_of(pp, self._thresholds)
            scores[f"{self.name}.bucket"] = float(BUCKETS.index(bucket))
            if bucket not in self.keep_buckets:
                reason = f"{self.name}:bucket_{bucket}"
        if reason is None and self.max_perplexity is not None and pp > self.max_perplexity:
            reason = f"{self.name}:max_perplexity"
        return Verdict(reason is None, reason, scores)


def kenlm_binary(name: str) -> str:
    """Path of lmplz/build_binary: the venv's bin folder (install.sh puts them there), else PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise UserError(f"KenLM's `{name}` is not installed: run ./install.sh (it builds lmplz and build_binary "
                        f"from the kenlm source distribution into the virtualenv)")
    return found


def train_kenlm(texts: Iterable[str], out: Path, order: int = 5, memory: str = "1G", sp_model: str | None = None) -> int:
    """Train an `order`-gram model on the scored lines of `texts` (normalized paragraphs, or with `sp_model` CCNet's
    SentencePiece lines) and write a KenLM binary to `out`. Returns the number of training lines."""
    sp = load_sentencepiece(sp_model) if sp_model else None
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gristmill-kenlm-") as tmp:
        corpus = Path(tmp) / "corpus.txt"
        n = 0
        with open(corpus, "w", encoding="utf-8") as f:
            for t in texts:
                for p in scored_lines(t, sp):
                    f.write(p + "\n")
                    n += 1
        if n == 0:
            raise UserError("train-kenlm: the reference corpus has no text")
        arpa = Path(tmp) / "model.arpa"
        # --discount_fallback: small corpora lack the counts-of-counts Kneser-Ney discounting needs.
        _run([kenlm_binary("lmplz"), "-o", str(order), "-S", memory, "-T", tmp, "--discount_fallback",
              "--text", str(corpus), "--arpa", str(arpa)])
        part = out.with_name(out.name + ".part")
        _run([kenlm_binary("build_binary"), str(arpa), str(part)])
        part.replace(out)
    return n


def _run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        raise UserError(f"{Path(cmd[0]).name} failed (exit {r.returncode}): {' | '.join(tail)}")


def calibrate_buckets(model_path: Path, sample: Iterable[str], percentiles: tuple[float, float] = (30.0, 60.0),
                      sp_model: str | None = None) -> dict:
    """Compute head/middle thresholds on `sample` documents and save them as MODEL.buckets.json."""
    import numpy as np

    model = load_kenlm(model_path)
    sp = load_sentencepiece(sp_model) if sp_model else None
    pps = [pp for pp in (perplexity(model, t, sp) for t in sample) if math.isfinite(pp)]
    if not pps:
        raise UserError("calibrate-kenlm: the sample has no scorable text")
    lo, hi = np.percentile(pps, percentiles)
    thresholds = {"head_max": float(lo), "middle_max": float(hi), "percentiles": list(percentiles),
                  "sample_docs": len(pps)}
    sidecar(model_path, ".buckets.json").write_text(json.dumps(thresholds, indent=1, sort_keys=True) + "\n")
    return thresholds
