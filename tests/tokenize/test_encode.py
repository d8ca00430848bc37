"""Encoding and packing functions, each against a direct computation."""
from __future__ import annotations

import random

import numpy as np
import pytest
from tok_corpus import make_text

from gristmill.errors import UserError
from gristmill.tokenize.encode import (
    DocumentEncoder,
    Piece,
    TokenizeConfig,
    clean_text,
    pack,
    split_of,
    split_text,
)


def test_cutting_long_text_leaves_the_tokens_unchanged(tokenizer_path):
    enc = DocumentEncoder(tokenizer_path, chunk_chars=64)
    rng = random.Random(1)
    text = "  " + make_text(rng, 3000) + "\n\n  tail  "
    pieces = split_text(text, 64)
    assert len(pieces) > 100 and "".join(pieces) == text
    assert max(map(len, pieces)) <= 64
    whole = enc.tok.encode(text, add_special_tokens=False).ids
    assert enc.encode([text])[0].tolist() == whole


def test_text_without_cut_points_is_cut_hard_and_still_round_trips(tokenizer_path):
    enc = DocumentEncoder(tokenizer_path, chunk_chars=100)
    text = "日本語テキスト" * 500 + "x" * 1000
    ids = enc.encode([text])[0]
    assert enc.decode(ids) == text


def test_encode_batch_keeps_document_order(tokenizer_path):
    enc = DocumentEncoder(tokenizer_path, chunk_chars=50)
    rng = random.Random(2)
    texts = [make_text(rng, rng.randint(1, 80)) for _ in range(40)]
    for text, ids in zip(texts, enc.encode(texts)):
        assert ids.dtype == np.int32
        assert enc.decode(ids) == text


def naive_pack(docs, seq_len, eos, pad):
    """Reference: concatenate with EOS, cut every seq_len, pad the last row; starts by walking the stream."""
    stream, starts = [], []
    for d in docs:
        starts.append(len(stream))
        stream += list(d) + [eos]
    while len(stream) % seq_len:
        stream.append(pad)
    rows = [stream[i:i + seq_len] for i in range(0, len(stream), seq_len)]
    row_starts = [[s % seq_len for s in starts if s // seq_len == r] for r in range(len(rows))]
    return rows, row_starts


@pytest.mark.parametrize("seq_len", [2, 5, 16, 1000])
def test_pack_matches_a_naive_packer(seq_len):
    rng = np.random.default_rng(seq_len)
    docs = [rng.integers(3, 50, size=rng.integers(1, 40)).astype(np.int32) for _ in range(30)]
    lengths = np.zeros(50, dtype=np.int32)
    lengths[3:] = rng.integers(1, 4, size=47)
    pieces = [Piece(i, f"d{i}", 0, 0, d) for i, d in enumerate(docs)]
    ids, starts, n_bytes = pack(pieces, seq_len, eos_id=2, pad_id=0, byte_lengths=lengths)
    rows, row_starts = naive_pack(docs, seq_len, 2, 0)
    assert ids.tolist() == rows
    assert [s.tolist() for s in starts] == row_starts
    assert n_bytes.tolist() == [int(sum(lengths[t] for t in r)) for r in rows]


def test_validation_split_is_a_stable_fraction_of_documents():
    ids = [f"doc{i}" for i in range(20000)]
    val = {i for i in ids if split_of(i, 0, 0.05) == "validation"}
    assert 0.04 < len(val) / len(ids) < 0.06
    assert val == {i for i in ids if split_of(i, 0, 0.05) == "validation"}
    assert val != {i for i in ids if split_of(i, 1, 0.05) == "validation"}
    assert all(split_of(i, 0, 0.0) == "train" for i in ids[:1000])


def test_lone_surrogates_are_replaced():
    assert clean_text("ok \ud800 x") == ("ok \ufffd x", True)
    assert clean_text("fine ü") == ("fine ü", False)


@pytest.mark.parametrize("kwargs", [dict(seq_len=1), dict(shard_bytes=10), dict(validation_fraction=1.0),
                                    dict(buckets=0)])
def test_bad_config_is_a_user_error(kwargs):
    with pytest.raises(UserError):
        TokenizeConfig(**kwargs)


def test_buckets_are_fixed_by_the_config_not_the_data():
    from gristmill.tokenize.encode import bucket_of, n_buckets

    config = TokenizeConfig(buckets=5, validation_fraction=0.1)
    assert n_buckets("train", config) == 5
    assert n_buckets("validation", config) == 1
    assert n_buckets("validation", TokenizeConfig(buckets=40, validation_fraction=0.1)) == 4
    assert {bucket_of("train", k, config) for k in range(100)} == set(range(5))
