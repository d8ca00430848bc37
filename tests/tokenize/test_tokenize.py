"""Documents in, shards out (in-process driver; the Beam stage is checked against it in test_beam.py)."""
from __future__ import annotations

import dataclasses
import hashlib
import random
from collections import Counter

import numpy as np
import pytest
from tok_corpus import HARD_TEXTS, LONG_WORD, WORDS

from gristmill.pipeline.document import Document
from gristmill.tokenize.encode import DocumentEncoder, TokenizeConfig, split_of, tokenize_documents
from gristmill.tokenize.shards import TokenDataset

CONFIG = TokenizeConfig(seq_len=64, shard_bytes=64 * 4 * 120, validation_fraction=0.1)


def decoded_documents(folder, split, enc):
    """Every emitted document copy, decoded: the split's rows in shard order, pads removed, cut at EOS.
    Also checks that doc_starts marks exactly the positions after each EOS."""
    ds = TokenDataset(folder, split)
    if not len(ds):
        return []
    stream = np.concatenate([ds[i] for i in range(len(ds))])
    marked = np.concatenate([ds.doc_starts(i) + i * ds.seq_len for i in range(len(ds))])
    eos, pad = ds.tokenizer_info["eos_id"], ds.tokenizer_info["pad_id"]
    real = stream != pad  # PAD only fills the last row of a bucket
    ids = stream[real]
    cuts = np.flatnonzero(ids == eos)
    # doc_starts, moved to positions in the pad-free stream, are exactly 0 and the places after each EOS
    real_before = np.concatenate([[0], np.cumsum(real)])
    assert np.array_equal(np.sort(real_before[marked]), np.concatenate([[0], cuts[:-1] + 1]))
    docs, lo = [], 0
    for c in cuts:
        docs.append(enc.decode(ids[lo:c]))
        lo = c + 1
    assert lo == ids.size  # the stream ends with an EOS
    return docs


@pytest.fixture(scope="module")
def run(tmp_path_factory, docs, tokenizer_path):
    folder = tmp_path_factory.mktemp("tokens")
    manifest, counts = tokenize_documents(docs, tokenizer_path, folder, CONFIG, seed=3, source="corpus",
                                          recipe_sha256="abc")
    return folder, manifest, counts


def test_every_document_comes_back_repeated_by_its_weight(run, docs, tokenizer_path):
    folder, manifest, counts = run
    enc = DocumentEncoder(tokenizer_path)
    train = Counter(decoded_documents(folder, "train", enc))
    val = Counter(decoded_documents(folder, "validation", enc))
    assert not set(train) & set(val)  # held out by document
    expected = Counter()
    for d in docs:
        if d.text:
            expected[d.text] += 1 if d.text in val else d.repeats
    assert train + val == expected
    n_val = sum(1 for d in docs if d.text in val)
    assert 0.04 < n_val / sum(1 for d in docs if d.text) < 0.2


def test_counters_and_manifest_agree(run, docs):
    folder, manifest, counts = run
    empty = sum(1 for d in docs if not d.text)
    assert counts["Tokenize/in"] == len(docs)
    assert counts["Tokenize/dropped/empty"] == empty > 0
    assert counts["Tokenize/kept"] == len(docs) - empty
    emitted = sum(manifest["splits"][s]["tokens"] for s in ("train", "validation"))
    assert counts["Tokenize/tokens_emitted"] == emitted
    assert counts["Tokenize/tokens_unique"] < emitted
    # Exactly, from the tokenizers library on each kept document (its ids plus one EOS): once for
    # tokens_unique, and once per emitted copy (1 in validation, `repeats` in train) for tokens_emitted.
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    kept = [d for d in docs if d.text and d.repeats > 0]
    length = {d.id: len(tok.encode(d.text, add_special_tokens=False).ids) + 1 for d in kept}
    held_out = {d.id for d in kept if split_of(d.id, 3, CONFIG.validation_fraction) == "validation"}
    assert counts["Tokenize/tokens_unique"] == sum(length.values())
    assert emitted == sum(length[d.id] * (1 if d.id in held_out else d.repeats) for d in kept)
    assert counts["Tokenize/documents_validation"] == len(held_out) > 0
    assert counts["Tokenize/documents_train"] == len(kept) - len(held_out)
    assert counts["Tokenize/documents_train"] + counts["Tokenize/documents_validation"] == counts["Tokenize/kept"]
    for split in ("train", "validation"):
        s = manifest["splits"][split]
        assert s["tokens"] == sum(x["tokens"] for x in s["shards"])
        assert s["documents"] == sum(x["documents"] for x in s["shards"])
        ds = TokenDataset(folder, split)
        ds.verify()
        assert s["bytes"] == sum(ds.n_bytes(i) for i in range(len(ds)))
    assert manifest["source"] == "corpus" and manifest["recipe_sha256"] == "abc" and manifest["seed"] == 3
    text_bytes = sum(len(d.text.encode()) * (d.repeats) for d in docs)
    assert manifest["splits"]["train"]["bytes"] + manifest["splits"]["validation"]["bytes"] <= text_bytes


def test_shards_keep_to_the_target_size(run):
    folder, manifest, _ = run
    train = manifest["splits"]["train"]
    assert len(train["shards"]) >= 4 * train["sequences"] * CONFIG.seq_len // CONFIG.shard_bytes
    for s in train["shards"]:
        assert s["sequences"] * CONFIG.seq_len * 4 <= CONFIG.shard_bytes


def test_a_buckets_shards_are_full_but_its_last(docs, tokenizer_path, tmp_path):
    """One bucket: its rows fill shards of shard_bytes // (4 x seq_len) = 120 rows each, all but the last."""
    config = dataclasses.replace(CONFIG, validation_fraction=0, buckets=1)
    manifest, _ = tokenize_documents(docs, tokenizer_path, tmp_path, config)
    rows = [s["sequences"] for s in manifest["splits"]["train"]["shards"]]
    assert len(rows) > 2 and rows[:-1] == [120] * (len(rows) - 1) and 1 <= rows[-1] <= 120
    assert sum(rows) == manifest["splits"]["train"]["sequences"]


def test_output_is_byte_identical_for_the_same_input_in_any_order(run, docs, tokenizer_path, tmp_path):
    folder, manifest, _ = run
    shuffled = docs[:]
    random.Random(9).shuffle(shuffled)
    again, _ = tokenize_documents(shuffled, tokenizer_path, tmp_path, CONFIG, seed=3, source="corpus",
                                  recipe_sha256="abc")
    assert again == manifest
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(p.name for p in tmp_path.iterdir())
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()
    assert all(digest(folder / n) == digest(tmp_path / n) for n in names)
    other, _ = tokenize_documents(docs, tokenizer_path, tmp_path / "seed4", CONFIG, seed=4)
    assert digest(tmp_path / "seed4" / "train-00000.arrow") != digest(folder / "train-00000.arrow")
    # With no validation split the seed still reorders the packing (not only through which documents it holds out)
    no_val = dataclasses.replace(CONFIG, validation_fraction=0)
    for seed in (3, 4):
        tokenize_documents(docs, tokenizer_path, tmp_path / f"noval{seed}", no_val, seed=seed)
    assert digest(tmp_path / "noval3" / "train-00000.arrow") != digest(tmp_path / "noval4" / "train-00000.arrow")


def test_hostile_documents(tokenizer_path, tmp_path):
    docs = [Document(id=f"h{i}", url="", text=t) for i, t in enumerate(HARD_TEXTS)]
    docs += [Document(id="zero", url="", text="dropped by dedup", repeats=0),
             Document(id="surrogate", url="", text="lone \ud83d surrogate")]
    manifest, counts = tokenize_documents(docs, tokenizer_path, tmp_path, TokenizeConfig(seq_len=8, validation_fraction=0))
    assert counts["Tokenize/dropped/empty"] == 1
    assert counts["Tokenize/dropped/zero_repeats"] == 1
    assert counts["Tokenize/repaired/lone_surrogates"] == 1
    out = Counter(decoded_documents(tmp_path, "train", DocumentEncoder(tokenizer_path)))
    assert out == Counter([t for t in HARD_TEXTS if t] + ["lone \ufffd surrogate"])


def test_a_50_mb_document(tokenizer_path, tmp_path):
    rng = random.Random(0)
    tail = " ".join(rng.choice(ws) for ws in WORDS.values() for _ in range(50)) + " \x00\x1b end"
    size = 50 * 2**20
    text = LONG_WORD * ((size - len(tail.encode())) // len(LONG_WORD)) + tail
    text += "x" * (size - len(text.encode()))
    assert len(text.encode()) == size
    docs = [Document(id="big", url="", text=text, repeats=1), Document(id="small", url="", text="after")]
    manifest, counts = tokenize_documents(docs, tokenizer_path, tmp_path,
                                          TokenizeConfig(seq_len=4096, shard_bytes=4 << 20, validation_fraction=0))
    train = manifest["splits"]["train"]
    assert train["bytes"] == size + len("after")
    assert train["documents"] == 2 and len(train["shards"]) > 1
    ds = TokenDataset(tmp_path)
    stream = np.concatenate([ds[i] for i in range(len(ds))])
    enc = DocumentEncoder(tokenizer_path)
    eos = np.flatnonzero(stream == enc.info.eos_id)
    assert eos.size == 2
    decoded = {enc.decode(stream[: eos[0]]), enc.decode(stream[eos[0] + 1: eos[1]])}
    assert decoded == {text, "after"}
