"""Byte-level BPE tokenizer: deterministic training sample, training with HF tokenizers, save/load/hash.

The tokenizer has no normalizer and no prefix space, so `decode(encode(text)) == text` for any Unicode
text; special tokens are ids 0..2 (PAD, BOS, EOS) and are never produced from text, even when a document
contains their literal spelling.

A published tokenizer.json (GPT-2, Llama 2 and 3, Mistral, Qwen, Gemma, ...) works too: its end-of-text,
begin-of-text and padding tokens are found by their usual names (EOS_NAMES, BOS_NAMES, PAD_NAMES). One with
no padding token gets `<|pad|>` added as a special token after its vocabulary (`adopt_tokenizer`), since the
packer needs a PAD distinct from EOS; that copy is what the token dataset ships and hashes. The bytes each
token stands for (for bits per byte) are known for byte-level tokenizers and for SentencePiece-style ones
(`▁` for a space, `<0xNN>` byte fallback).
"""
from __future__ import annotations

import hashlib
import heapq
import json
import numbers
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from gristmill.errors import UserError, require_file
from gristmill.pipeline import fs

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
SPECIAL_TOKENS = (PAD, BOS, EOS)
# How published tokenizers name them, ours first: GPT-2 / NeoX / Qwen, Llama 3, Llama 2 / Mistral, Gemma.
EOS_NAMES = (EOS, "<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>")
BOS_NAMES = (BOS, "<|begin_of_text|>", "<s>", "<bos>")  # none: BOS is EOS, as in GPT-2
PAD_NAMES = (PAD, "<pad>", "[PAD]", "<|finetune_right_pad_id|>")  # none: PAD is added
MONOLINGUAL_VOCAB = 32_000
MULTILINGUAL_VOCAB = 100_000
# Longest text per sampled document: one huge page must not dominate the merge statistics.
SAMPLE_MAX_CHARS = 100_000
# Largest vocabulary to train: ids fit the shards' int32 many times over; the trainer's tables for 2**24 ids
# take about 70 MB, and it aborts the process on allocation failure (1e9) rather than raising.
MAX_VOCAB = 1 << 24
MAX_MIN_FREQUENCY = (1 << 63) - 1  # the trainer's counts are 64-bit


def default_vocab_size(multilingual: bool) -> int:
    return MULTILINGUAL_VOCAB if multilingual else MONOLINGUAL_VOCAB


def sample_key(seed: int, doc_id: str) -> int:
    """A seeded 64-bit hash of a document id. The training sample is the `n` documents with the smallest
    keys, which is the same set whatever order or partitioning the documents arrive in."""
    h = hashlib.blake2b(f"sample:{seed}:{doc_id}".encode("utf-8", "surrogatepass"), digest_size=8)
    return struct.unpack(">Q", h.digest())[0]


def select_sample(docs: Iterable, n: int, seed: int) -> list[str]:
    """Texts of the `n` non-empty documents with the smallest sample_key, in key order (what the
    TrainTokenizer stage picks with Beam's Top.Smallest). Documents that share an id are ordered by their text
    (lone surrogates repaired, as the stage sees it), so the sample does not depend on the input's order."""
    from gristmill.tokenize.encode import clean_text  # encode imports this module

    candidates = ((sample_key(seed, d.id), d.id, clean_text(d.text)[0]) for d in docs if d.text)
    chosen = heapq.nsmallest(n, candidates)  # keeps n candidates in memory
    return [text[:SAMPLE_MAX_CHARS] for _, _, text in chosen]


def check_training(vocab_size, min_frequency, names: tuple[str, str] = ("vocab_size", "min_frequency")) -> None:
    """One line for a vocabulary size or minimum pair count the trainer cannot take (HF tokenizers aborts
    the process with a Rust allocation failure on a vocabulary of 1e9, and raises OverflowError on one
    beyond 64 bits or on a negative count). `names` are how the caller's user spells the two settings."""
    vocab_name, freq_name = names
    low = 256 + len(SPECIAL_TOKENS)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, numbers.Integral):
        raise UserError(f"{vocab_name} must be a whole number, not {vocab_size!r}")
    if vocab_size < low:
        raise UserError(f"{vocab_name} must be at least {low} (256 bytes + specials), not {vocab_size}")
    if vocab_size > MAX_VOCAB:
        raise UserError(f"{vocab_name} must be at most {MAX_VOCAB:,} (2**24), not {vocab_size:,}")
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, numbers.Integral):
        raise UserError(f"{freq_name} must be a whole number, not {min_frequency!r}")
    if min_frequency < 0:
        raise UserError(f"{freq_name} must be >= 0, not {min_frequency}")
    if min_frequency > MAX_MIN_FREQUENCY:
        raise UserError(f"{freq_name} must be below 2**63, not {min_frequency:,}")


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """Train a byte-level BPE tokenizer. The result depends only on the multiset of texts (measured:
    training on the reversed list gives the same tokenizer.json)."""
    check_training(vocab_size, min_frequency)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    from gristmill.tokenize.encode import clean_text  # encode imports this module

    # Lone surrogates (valid in JSON, not in UTF-8) become U+FFFD, as Tokenize encodes them.
    tok.train_from_iterator((clean_text(t[:SAMPLE_MAX_CHARS])[0] for t in texts), trainer=trainer)
    tok.encode_special_tokens = True
    return tok


def tokenizer_bytes(tok: Tokenizer) -> bytes:
    return tok.to_str(pretty=True).encode("utf-8")


def save_tokenizer(tok: Tokenizer, path: str | os.PathLike) -> str:
    """Write tokenizer.json and return its sha256 (the hash recorded in the token manifest)."""
    data = tokenizer_bytes(tok)
    if fs.is_remote(str(path)):
        fs.write_bytes(str(path), data, mime_type="application/json")
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class TokenizerInfo:
    """What the manifest records about a tokenizer."""

    sha256: str
    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int

    def manifest_entry(self, path: str = "tokenizer.json") -> dict:
        return {"path": path, "sha256": self.sha256, "vocab_size": self.vocab_size,
                "bos_id": self.bos_id, "eos_id": self.eos_id, "pad_id": self.pad_id}


def read_tokenizer_json(source: str | bytes | os.PathLike) -> bytes:
    """The bytes of tokenizer.json, from a path, a Beam filesystem path (gs://, s3://), an http(s) or file URL
    (downloaded once into the cache), or the JSON itself (str or bytes): exactly the file's when it has a
    padding token, else `adopt_tokenizer`'s copy with one added."""
    if isinstance(source, bytes):
        return adopt_tokenizer(source, "(JSON given inline)")
    s = str(source)
    if s.lstrip().startswith("{"):
        return adopt_tokenizer(s.encode("utf-8"), "(JSON given inline)")
    from gristmill.filters import models

    if models.is_url(s):  # http(s) or file: fetched once into the cache, as models are
        return adopt_tokenizer(models.download(s, "tokenizer").read_bytes(), s)
    if fs.is_remote(s):  # gs://, s3://: through Beam's FileSystems
        if not fs.is_file(s):
            raise UserError(f"tokenizer file {s} does not exist")
        return adopt_tokenizer(fs.read_bytes(s), s)
    p = Path(s)
    if p.is_dir():
        inside = p / "tokenizer.json"
        raise UserError(f"tokenizer {p} is a folder; give the tokenizer.json inside it"
                        + (f" ({inside})" if inside.is_file() else ", e.g. out/cc_en/tokens/tokenizer.json"))
    require_file(p, "tokenizer file")
    return adopt_tokenizer(p.read_bytes(), s)


def _parse(data: bytes, where: str) -> Tokenizer:
    try:
        return Tokenizer.from_str(data.decode("utf-8"))
    except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
        raise UserError(f"cannot load tokenizer {where}: {e}") from None


def _first_present(tok: Tokenizer, names: tuple[str, ...]) -> int | None:
    return next((i for i in (tok.token_to_id(n) for n in names) if i is not None), None)


def adopt_tokenizer(data: bytes, where: str = "(JSON given inline)") -> bytes:
    """`data` unchanged when the tokenizer has a padding token (one of PAD_NAMES); else a copy with `<|pad|>`
    added as a special token, at the first id after the vocabulary. The same input always gives the same bytes."""
    if b'"<|pad|>"' in data:  # our own tokenizers: no parse
        return data
    tok = _parse(data, where)
    if _first_present(tok, PAD_NAMES) is not None:
        return data
    tok.add_special_tokens([PAD])
    return tokenizer_bytes(tok)


def load_tokenizer(source: str | bytes | os.PathLike) -> tuple[Tokenizer, TokenizerInfo]:
    """Load tokenizer.json (a path, or its bytes/text) and check it has our special tokens."""
    data = read_tokenizer_json(source)
    from_path = not isinstance(source, bytes) and not str(source).lstrip().startswith("{")
    where = str(source) if from_path else "(JSON given inline)"
    tok = _parse(data, where)
    # Not stored in tokenizer.json: without it a document containing "<|eos|>" would yield the EOS id.
    tok.encode_special_tokens = True
    eos = _first_present(tok, EOS_NAMES)
    if eos is None:
        raise UserError(f"tokenizer {where} has no end-of-text token (looked for {', '.join(EOS_NAMES)})")
    bos = _first_present(tok, BOS_NAMES)
    info = TokenizerInfo(
        sha256=hashlib.sha256(data).hexdigest(),
        vocab_size=tok.get_vocab_size(with_added_tokens=True),
        bos_id=eos if bos is None else bos, eos_id=eos, pad_id=_first_present(tok, PAD_NAMES),
    )
    return tok, info


def _types(node) -> set[str]:
    """Every component `type` in a tokenizer.json section (decoders and pre-tokenizers nest in Sequences)."""
    if isinstance(node, dict):
        out = {node["type"]} if isinstance(node.get("type"), str) else set()
        for value in node.values():
            out |= _types(value)
        return out
    if isinstance(node, list):
        return set().union(*map(_types, node)) if node else set()
    return set()


_BYTE_TOKEN = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


def token_byte_lengths(tok: Tokenizer) -> np.ndarray:
    """UTF-8 bytes each id decodes to; special tokens decode to nothing.

    Byte-level BPE (GPT-2, Llama 3, Qwen, ours): every character of a token's string stands for exactly one
    byte, so the length is the string's length. SentencePiece-style (Llama 2, Mistral, Gemma): `▁` is a space,
    `<0xNN>` one byte, anything else its UTF-8 length. A tokenizer that prefixes each text with a space (or `▁`)
    counts that one byte per document too. Any other decoder is refused: its bytes per token are unknown."""
    spec = json.loads(tok.to_str())
    kinds = _types(spec.get("decoder"))
    if "ByteLevel" in kinds:
        length = len
    elif kinds & {"Metaspace", "ByteFallback", "Replace"}:
        def length(token: str) -> int:
            return 1 if _BYTE_TOKEN.match(token) else len(token.replace("\u2581", " ").encode("utf-8"))
    else:
        raise UserError(f"the tokenizer's decoder ({', '.join(sorted(kinds)) or 'none'}) is neither byte-level nor "
                        f"SentencePiece-style, so the bytes each token stands for (bits per byte) are unknown")
    table = np.zeros(tok.get_vocab_size(with_added_tokens=True), dtype=np.int32)
    added = tok.get_added_tokens_decoder()
    special = {i for i, t in added.items() if t.special}
    # A plain added token (GPT-NeoX's runs of spaces) is matched in the raw text and decodes to its content as
    # written, not through the byte-level map: `héllo` is 6 bytes, not 5 characters.
    raw = {i for i, t in added.items() if not t.special} if length is len else set()
    for token, i in tok.get_vocab(with_added_tokens=True).items():
        table[i] = 0 if i in special else len(token.encode("utf-8")) if i in raw else length(token)
    return table
