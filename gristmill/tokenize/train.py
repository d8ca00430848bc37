"""Byte-level BPE tokenizer: deterministic training sample, training with HF tokenizers, save/load/hash.

The tokenizer has no normalizer and no prefix space, so `decode(encode(text)) == text` for any Unicode
text; special tokens are ids 0..2 (PAD, BOS, EOS) and are never produced from text, even when a document
contains their literal spelling.
"""
from __future__ import annotations

import hashlib
import heapq
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from gristmill.errors import UserError
from gristmill.pipeline import fs

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
SPECIAL_TOKENS = (PAD, BOS, EOS)
MONOLINGUAL_VOCAB = 32_000
MULTILINGUAL_VOCAB = 100_000
# Longest text per sampled document: one huge page must not dominate the merge statistics.
SAMPLE_MAX_CHARS = 100_000


def default_vocab_size(multilingual: bool) -> int:
    return MULTILINGUAL_VOCAB if multilingual else MONOLINGUAL_VOCAB


def sample_key(seed: int, doc_id: str) -> int:
    """A seeded 64-bit hash of a document id. The training sample is the `n` documents with the smallest
    keys, which is the same set whatever order or partitioning the documents arrive in."""
    h = hashlib.blake2b(f"sample:{seed}:{doc_id}".encode("utf-8", "surrogatepass"), digest_size=8)
    return struct.unpack(">Q", h.digest())[0]


def select_sample(docs: Iterable, n: int, seed: int) -> list[str]:
    """Texts of the `n` non-empty documents with the smallest sample_key, in key order (what the
    TrainTokenizer stage picks with Beam's Top.Smallest)."""
    candidates = ((sample_key(seed, d.id), d.id, d.text) for d in docs if d.text)
    chosen = heapq.nsmallest(n, candidates, key=lambda c: (c[0], c[1]))  # keeps n candidates in memory
    return [text[:SAMPLE_MAX_CHARS] for _, _, text in chosen]


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """Train a byte-level BPE tokenizer. The result depends only on the multiset of texts (measured:
    training on the reversed list gives the same tokenizer.json)."""
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise UserError(f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)} (256 bytes + specials), not {vocab_size}")
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
    tok.train_from_iterator((t[:SAMPLE_MAX_CHARS] for t in texts), trainer=trainer)
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
    """The exact bytes of tokenizer.json, from a path or from the JSON itself (str or bytes)."""
    if isinstance(source, bytes):
        return source
    s = str(source)
    if s.lstrip().startswith("{"):
        return s.encode("utf-8")
    if fs.is_remote(s):  # gs://, s3://: through Beam's FileSystems
        if not fs.is_file(s):
            raise UserError(f"tokenizer file {s} does not exist")
        return fs.read_bytes(s)
    p = Path(s)
    if not p.is_file():
        raise UserError(f"tokenizer file {p} does not exist")
    return p.read_bytes()


def load_tokenizer(source: str | bytes | os.PathLike) -> tuple[Tokenizer, TokenizerInfo]:
    """Load tokenizer.json (a path, or its bytes/text) and check it has our special tokens."""
    data = read_tokenizer_json(source)
    from_path = not isinstance(source, bytes) and not str(source).lstrip().startswith("{")
    where = str(source) if from_path else "(JSON given inline)"
    try:
        tok = Tokenizer.from_str(data.decode("utf-8"))
    except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
        raise UserError(f"cannot load tokenizer {where}: {e}") from None
    # Not stored in tokenizer.json: without it a document containing "<|eos|>" would yield the EOS id.
    tok.encode_special_tokens = True
    ids = {name: tok.token_to_id(name) for name in SPECIAL_TOKENS}
    missing = [name for name, i in ids.items() if i is None]
    if missing:
        raise UserError(f"tokenizer {where} lacks the special tokens {missing}")
    info = TokenizerInfo(
        sha256=hashlib.sha256(data).hexdigest(),
        vocab_size=tok.get_vocab_size(with_added_tokens=True),
        bos_id=ids[BOS], eos_id=ids[EOS], pad_id=ids[PAD],
    )
    return tok, info


def token_byte_lengths(tok: Tokenizer) -> np.ndarray:
    """UTF-8 bytes each id decodes to. In byte-level BPE every character of a token's string stands for
    exactly one byte, so the length is the string's length; special tokens decode to nothing."""
    table = np.zeros(tok.get_vocab_size(with_added_tokens=True), dtype=np.int32)
    special = set(SPECIAL_TOKENS)
    for token, i in tok.get_vocab(with_added_tokens=True).items():
        table[i] = 0 if token in special else len(token)
    return table
