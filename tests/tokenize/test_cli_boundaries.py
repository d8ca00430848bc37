"""Tokenizer training, remote staging and the `beam tokenize` commands at their edges, against references worked
here: the documented bounds (a vocabulary of 259 to 2**24 ids, a minimum pair count of 0 to 2**63 - 1), hashlib's
blake2b for the sample key and sha256 for staged files, the tokenizers library's own training, UTF-8 lengths for
the bytes a token stands for, and the documented exit statuses (0 every file matches, 1 one does not, 2 a user
mistake)."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import struct

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from gristmill.errors import UserError
from gristmill.pipeline.cli import main
from gristmill.pipeline.document import Document
from gristmill.tokenize import train as T
from gristmill.tokenize.encode import TokenizeConfig, tokenize_documents
from gristmill.tokenize.shards import TokenDataset
from object_store import PREFIX, MappedFileSystem

def _text_docs(texts):
    return [Document(id=f"d{i:04d}", url="", text=t) for i, t in enumerate(texts)]


# ---------------------------------------------------------------------------------------------------------
# train.py


def test_the_documented_bounds_are_inclusive_and_one_past_them_is_refused():
    # docs/tokenize.md: "The size must be from 259 to 16,777,216 (2**24) and min_frequency ... at least 0"; the
    # trainer's counts are 64-bit unsigned, so 2**63 - 1 is the largest the check lets through
    T.check_training(259, 0)
    T.check_training(16_777_216, 2**63 - 1)
    for vocab, freq, message in [(258, 2, "at least 259"), (16_777_217, 2, "at most 16,777,216"),
                                 (300, -1, ">= 0"), (300, 2**63, "below 2**63"),
                                 (300, True, "min_frequency must be a whole number, not True"),
                                 (300, 2.0, "min_frequency must be a whole number, not 2.0")]:
        with pytest.raises(UserError, match=message.replace("*", r"\*")):
            T.check_training(vocab, freq)


def test_the_smallest_vocabulary_and_the_largest_count_train_to_bytes_and_specials_alone():
    texts = ["the cat sat on the mat " * 20, "a dog and a cat " * 20]
    for vocab, freq in [(259, 2), (1000, 2**63 - 1)]:  # no room for a merge / no pair that frequent
        tok = T.train_tokenizer(texts, vocab, freq)
        assert tok.get_vocab_size() == 256 + 3
    assert T.train_tokenizer(texts, 1000, 0).get_vocab_size() > 259  # 0 is a count every pair reaches


def _reference_tokenizer(texts, vocab_size, min_frequency):
    """The documented recipe written out with the tokenizers library alone."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=["<|pad|>", "<|bos|>", "<|eos|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return tok.to_str(pretty=True).encode("utf-8")


def test_training_is_the_libraries_bpe_with_min_frequency_2_by_default():
    # pairs seen once are merged only with a minimum count below 2: the default must leave them out
    texts = ["the quick brown fox " * 5, "jumps over a lazy dog", "zq xw vk", "the end " * 3]
    ours = T.tokenizer_bytes(T.train_tokenizer(texts, 2000))
    assert ours == _reference_tokenizer(texts, 2000, 2)
    assert ours != _reference_tokenizer(texts, 2000, 1)


def test_a_training_text_is_cut_at_exactly_100000_characters():
    # past the cut: a word repeated often enough to be merged if it were seen
    head = "ab " * (T.SAMPLE_MAX_CHARS // 3) + "a" * (T.SAMPLE_MAX_CHARS % 3)
    assert len(head) == 100_000
    text = head + " zqzq" * 5000
    assert T.tokenizer_bytes(T.train_tokenizer([text], 400)) == _reference_tokenizer([head], 400, 2)
    long_doc = Document(id="long", url="", text="x" * 99_999 + "yz")
    (sampled,) = T.select_sample([long_doc], 5, seed=0)
    assert sampled == "x" * 99_999 + "y"


def test_the_sample_key_is_blake2b_of_seed_and_id_read_big_endian():
    # pinned: a different key draws another sample for the same seed, so another tokenizer than earlier runs'
    for seed, doc_id in [(0, "doc00001"), (7, "https://example.org/ü")]:
        digest = hashlib.blake2b(f"sample:{seed}:{doc_id}".encode(), digest_size=8).digest()
        assert T.sample_key(seed, doc_id) == int.from_bytes(digest, "big") == struct.unpack(">Q", digest)[0]


def _gpt2_like(special_tokens):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["hello world, the end"] * 10, trainers.BpeTrainer(
        vocab_size=300, special_tokens=special_tokens, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return tok


@pytest.mark.parametrize("pad", ["<pad>", "[PAD]", "<|finetune_right_pad_id|>"])
def test_a_tokenizer_with_a_padding_token_of_its_own_is_taken_unchanged(pad):
    data = _gpt2_like(["<|endoftext|>", pad]).to_str().encode()
    assert T.adopt_tokenizer(data) == data  # no <|pad|> added beside the one it has
    tok, info = T.load_tokenizer(data)
    assert (info.pad_id, info.eos_id) == (tok.token_to_id(pad), tok.token_to_id("<|endoftext|>")) == (1, 0)
    assert info.sha256 == hashlib.sha256(data).hexdigest()


def test_a_begin_of_text_token_at_id_0_is_the_bos():
    # XLM-R's layout: <s> 0, <pad> 1, </s> 2; id 0 is a BOS like any other, not "no BOS"
    tok, info = T.load_tokenizer(_gpt2_like(["<s>", "<pad>", "</s>"]).to_str().encode())
    assert (info.bos_id, info.pad_id, info.eos_id) == (0, 1, 2)


def test_an_added_token_that_is_not_special_counts_the_bytes_it_stands_for():
    # GPT-NeoX adds runs of spaces as plain (not special) tokens: they stand for their text's UTF-8 bytes
    tok = _gpt2_like(["<|pad|>", "<|bos|>", "<|eos|>"])
    tok.add_tokens(["    ", "héllo wörld"])
    text = "say héllo wörld now    x"
    ids = tok.encode(text).ids
    assert tok.token_to_id("    ") in ids and tok.token_to_id("héllo wörld") in ids
    assert tok.decode(ids) == text
    table = T.token_byte_lengths(tok)
    assert int(table[np.array(ids)].sum()) == len(text.encode("utf-8"))
    assert table[:3].tolist() == [0, 0, 0]


# ---------------------------------------------------------------------------------------------------------
# remote.py


@pytest.fixture
def bucket(docs, tokenizer_path, tmp_path, monkeypatch):
    """(the local token folder, its copy at gmtest://ds); the cache is the test's own."""
    monkeypatch.setattr(MappedFileSystem, "ROOT", str(tmp_path / "bucket"))
    monkeypatch.setenv("GRISTMILL_CACHE", str(tmp_path / "cache"))
    local = tmp_path / "local"
    tokenize_documents(docs[:300], tokenizer_path, local, TokenizeConfig(seq_len=64, shard_bytes=64 * 4 * 100,
                                                                         validation_fraction=0.1),
                       seed=1, source="t", recipe_sha256="0")
    shutil.copytree(local, tmp_path / "bucket" / "ds")
    return local, PREFIX + "ds"


def _staged_folder(tmp_path):
    (folder,) = (tmp_path / "cache" / "datasets").iterdir()
    return folder


def test_a_cached_copy_that_is_not_the_remote_file_is_copied_again(bucket, tmp_path):
    local, url = bucket
    TokenDataset(url, "train")
    folder = _staged_folder(tmp_path)
    shard, tokenizer = folder / "train-00000.arrow", folder / "tokenizer.json"
    shard.write_bytes(shard.read_bytes() + b"\0" * 8)  # longer than the manifest's bytes_on_disk
    damaged = bytearray(tokenizer.read_bytes())
    damaged[len(damaged) // 2] ^= 1  # the same size: only its sha256 tells
    tokenizer.write_bytes(bytes(damaged))
    TokenDataset(url, "train")
    manifest = json.loads((local / "manifest.json").read_text())
    assert hashlib.sha256(tokenizer.read_bytes()).hexdigest() == manifest["tokenizer"]["sha256"]
    assert hashlib.sha256(shard.read_bytes()).hexdigest() == manifest["splits"]["train"]["shards"][0]["sha256"]


def test_verify_of_a_remote_dataset_stages_its_manifest_alone(bucket, tmp_path, capsys):
    _, url = bucket
    assert main(["tokenize", "verify", url, "--quiet"]) == 0
    assert sorted(os.listdir(_staged_folder(tmp_path))) == [".lock", "manifest.json"]


@pytest.mark.parametrize("edit, fragment", [
    (lambda m: m["splits"]["train"]["shards"][0].update(bytes_on_disk="12x"), "bytes_on_disk is '12x', not a count"),
    (lambda m: m["splits"]["train"]["shards"].__setitem__(0, "train-00000.arrow"), "is not an object"),
    (lambda m: m.update(tokenizer="tokenizer.json"), "it has no tokenizer object"),
    (lambda m: m["splits"]["train"]["shards"][0].update(path=".."), "'..'"),
    (lambda m: m.update(format="gristmill.tokens/0"), "format is 'gristmill.tokens/0', expected"),
])
def test_a_damaged_remote_manifest_is_one_line_and_verify_exits_2(bucket, tmp_path, capsys, edit, fragment):
    # was a ValueError or AttributeError from staging, and `verify` exited 1 as if a file did not match
    _, url = bucket
    path = tmp_path / "bucket" / "ds" / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=fragment):
        TokenDataset(url, "train")
    assert main(["tokenize", "verify", url, "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err


# ---------------------------------------------------------------------------------------------------------
# cli.py


def _write_docs(path, texts):
    path.write_text("".join(d.to_json() + "\n" for d in _text_docs(texts)))
    return str(path)


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_train_refuses_a_sample_of_no_documents_by_its_flag(tmp_path, capsys):
    docs = _write_docs(tmp_path / "d.jsonl", ["some text", "more text"])
    assert main(["tokenize", "train", docs, "--output", str(tmp_path / "t"), "--sample-docs", "0"]) == 2
    assert _one_error(capsys) == "error: --sample-docs must be >= 1, not 0"


def test_train_on_only_empty_documents_is_one_line_and_writes_nothing(tmp_path, capsys):
    docs = _write_docs(tmp_path / "d.jsonl", ["", ""])
    assert main(["tokenize", "train", docs, "--output", str(tmp_path / "t")]) == 2
    assert _one_error(capsys) == f"error: no non-empty documents in {docs}"
    assert not (tmp_path / "t" / "tokenizer.json").exists()


def test_train_multilingual_defaults_to_100000_and_an_explicit_size_wins(tmp_path, monkeypatch, capsys):
    # the small corpus runs out of pairs long before either size, so the size asked for is read off the call
    asked = []
    real = T.train_tokenizer
    monkeypatch.setattr(T, "train_tokenizer", lambda texts, vocab, freq: asked.append((vocab, freq)) or real(texts, 300))
    docs = _write_docs(tmp_path / "d.jsonl", ["some text here", "more text there"])
    for flags in ([], ["--multilingual"], ["--multilingual", "--vocab-size", "5000", "--min-frequency", "0"]):
        assert main(["tokenize", "train", docs, "--output", str(tmp_path / "t"), *flags]) == 0
    assert asked == [(32_000, 2), (100_000, 2), (5000, 0)]


def test_train_on_a_gzip_file_cut_short_is_one_line(tmp_path, capsys):
    whole = gzip.compress("".join(d.to_json() + "\n" for d in _text_docs(["text %d" % i for i in range(2000)])).encode())
    (tmp_path / "d.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    assert main(["tokenize", "train", str(tmp_path / "d.jsonl.gz"), "--output", str(tmp_path / "t")]) == 2
    assert _one_error(capsys).startswith(f"error: cannot read {tmp_path / 'd.jsonl.gz'}: ")


def test_encode_refuses_a_shard_size_of_zero(tokenizer_path, tmp_path, capsys):
    docs = _write_docs(tmp_path / "d.jsonl", ["some text"])
    assert main(["tokenize", "encode", docs, "--tokenizer", tokenizer_path, "--output", str(tmp_path / "o"),
                 "--shard-mb", "0"]) == 2
    assert _one_error(capsys) == "error: --shard-mb must be a positive number of MiB, not 0.0"


def test_the_recipe_hash_is_empty_when_stats_json_has_none(tmp_path):
    (tmp_path / "run" / "documents").mkdir(parents=True)
    _write_docs(tmp_path / "run" / "documents" / "a.jsonl", ["x"])
    glob = str(tmp_path / "run" / "documents" / "*.jsonl")
    from gristmill.tokenize.cli import recipe_hash_of

    assert recipe_hash_of(glob) == ""  # no stats.json
    for stats, expected in [('{"recipe": {"sha256": "cafe"}}', "cafe"), ('{"counters": {}}', ""),
                            ('{"recipe": null}', ""), ("[1]", ""), ("{", "")]:
        (tmp_path / "run" / "stats.json").write_text(stats)
        assert recipe_hash_of(glob) == expected, stats


def test_verify_exits_1_when_any_dataset_fails_not_only_the_last(bucket, tmp_path, capsys):
    local, _ = bucket
    bad = tmp_path / "bad"
    shutil.copytree(local, bad)
    (bad / "tokenizer.json").write_bytes((bad / "tokenizer.json").read_bytes() + b" ")
    assert main(["tokenize", "verify", str(bad), str(local), "--quiet"]) == 1
    assert main(["tokenize", "verify", str(local), str(bad), "--quiet"]) == 1
    assert main(["tokenize", "verify", str(local), str(local), "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith(f"{local}: ") and out[-1].endswith(", 0 problem(s)")
