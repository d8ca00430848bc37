"""Tokenizer training, hashing, sampling and the byte-level round trip."""
from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest
from tok_corpus import HARD_TEXTS, WORDS, make_docs, make_text

from gristmill.errors import UserError
from gristmill.tokenize.stages import TrainTokenizer
from gristmill.tokenize.train import (
    EOS,
    load_tokenizer,
    sample_key,
    save_tokenizer,
    select_sample,
    token_byte_lengths,
    train_tokenizer,
)


def test_round_trip_is_byte_exact_on_multilingual_and_hostile_text(tokenizer_path):
    tok, info = load_tokenizer(tokenizer_path)
    rng = random.Random(3)
    texts = HARD_TEXTS + [make_text(rng, 200) for _ in range(20)] + [" ".join(ws) for ws in WORDS.values()]
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids) == text
        # special tokens never come out of text, even when the text spells them
        assert not {info.pad_id, info.bos_id, info.eos_id} & set(ids)


def test_special_token_ids_and_hash(tokenizer_path):
    tok, info = load_tokenizer(tokenizer_path)
    assert (info.pad_id, info.bos_id, info.eos_id) == (0, 1, 2)
    with open(tokenizer_path, "rb") as f:
        assert info.sha256 == hashlib.sha256(f.read()).hexdigest()
    assert info.vocab_size == tok.get_vocab_size(with_added_tokens=True)
    assert 259 < info.vocab_size <= 1200  # the small corpus runs out of pairs before 1200


def test_training_is_deterministic_and_order_free(tmp_path):
    texts = [d.text for d in make_docs(300, seed=5)]
    a = save_tokenizer(train_tokenizer(texts, 600), tmp_path / "a.json")
    b = save_tokenizer(train_tokenizer(list(reversed(texts)), 600), tmp_path / "b.json")
    assert a == b
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_sample_is_the_smallest_keys_whatever_the_order():
    docs = make_docs(400, seed=1)
    expected = sorted((sample_key(7, d.id), d.text) for d in docs if d.text)[:50]
    shuffled = docs[:]
    random.Random(0).shuffle(shuffled)
    assert select_sample(shuffled, 50, seed=7) == [t for _, t in expected]
    assert select_sample(docs, 50, seed=8) != select_sample(docs, 50, seed=7)


def test_token_byte_lengths_match_utf8_lengths(tokenizer_path):
    tok, info = load_tokenizer(tokenizer_path)
    table = token_byte_lengths(tok)
    assert table[info.eos_id] == table[info.pad_id] == table[info.bos_id] == 0
    for text in HARD_TEXTS:
        ids = tok.encode(text).ids
        assert int(table[np.array(ids, dtype=np.int64)].sum()) == len(text.encode("utf-8"))


def test_default_vocabulary_sizes():
    assert TrainTokenizer("T").vocab_size == 32_000
    assert TrainTokenizer("T", multilingual=True).vocab_size == 100_000
    assert TrainTokenizer("T", vocab_size=5000, multilingual=True).vocab_size == 5000


def test_bad_tokenizers_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_tokenizer(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot load"):
        load_tokenizer(tmp_path / "bad.json")
    from tokenizers import Tokenizer, models

    Tokenizer(models.BPE()).save(str(tmp_path / "plain.json"))
    with pytest.raises(UserError, match=EOS.replace("|", r"\|")):
        load_tokenizer(tmp_path / "plain.json")
    with pytest.raises(UserError, match="vocab_size"):
        train_tokenizer(["abc"], 100)
