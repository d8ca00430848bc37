"""Published tokenizer layouts (GPT-2's byte-level BPE with only <|endoftext|>, Llama 2's SentencePiece-style BPE
with byte fallback and <s> </s>), built here with the tokenizers library: their special tokens are found by
name, a PAD is added when there is none, every document comes back, and n_bytes equals the UTF-8 bytes of the
text (plus the one prefix byte per document a SentencePiece tokenizer adds)."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from gristmill.errors import UserError
from gristmill.pipeline.document import Document
from gristmill.tokenize.encode import DocumentEncoder, TokenizeConfig, split_text, tokenize_documents
from gristmill.tokenize.shards import TokenDataset
from gristmill.tokenize.train import load_tokenizer, read_tokenizer_json

TEXTS = ["The cat sat on the mat.", "Ünïcödé text, 漢字 and emoji 🙂 come back byte for byte.",
         "Numbers 12345 and\nnew lines\n\nand  double  spaces."] * 20 + [f"document number {i} " * (i % 7 + 1)
                                                                        for i in range(60)]
CONFIG = TokenizeConfig(seq_len=32, shard_bytes=32 * 4 * 50, validation_fraction=0.1)


def gpt2_like(tmp_path):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    path = tmp_path / "gpt2.json"
    tok.save(str(path))
    return path


def llama2_like(tmp_path):
    """SentencePiece-style: ▁ for spaces (prepended to the text), <0xNN> byte-fallback tokens, <unk> <s> </s>."""
    base = Tokenizer(models.BPE(unk_token="<unk>"))
    base.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    base.train_from_iterator([TEXTS[0], TEXTS[2]] * 5, trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<s>",
                                                                                                "</s>"]))
    spec = json.loads(base.to_str())
    trained = spec["model"]["vocab"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for token, _ in sorted(trained.items(), key=lambda kv: kv[1]):
        vocab.setdefault(token, len(vocab))
    spec["model"].update(vocab=vocab, byte_fallback=True)
    spec["added_tokens"] = [dict(t, id=vocab[t["content"]]) for t in spec["added_tokens"]]
    spec["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"},
        {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    path = tmp_path / "llama2.json"
    path.write_text(json.dumps(spec))
    return path


def _docs():
    return [Document(id=f"d{i:03d}", url="", text=t) for i, t in enumerate(TEXTS)]


@pytest.mark.parametrize("make,eos,bos,prefix", [(gpt2_like, "<|endoftext|>", "<|endoftext|>", 0),
                                                 (llama2_like, "</s>", "<s>", 1)])
def test_published_layouts_tokenize_and_count_bytes(tmp_path, make, eos, bos, prefix):
    path = make(tmp_path)
    original = Tokenizer.from_file(str(path))
    assert original.token_to_id("<|pad|>") is None
    folder = tmp_path / "tokens"
    manifest, _ = tokenize_documents(_docs(), str(path), folder, CONFIG, seed=1, source="t", recipe_sha256="0")
    shipped = Tokenizer.from_file(str(folder / "tokenizer.json"))
    info = manifest["tokenizer"]
    # the PAD was added after the vocabulary; the named tokens were found
    assert info["pad_id"] == original.get_vocab_size() == shipped.token_to_id("<|pad|>")
    assert (info["eos_id"], info["bos_id"]) == (original.token_to_id(eos), original.token_to_id(bos))
    assert info["sha256"] == hashlib.sha256((folder / "tokenizer.json").read_bytes()).hexdigest()
    assert shipped.encode(TEXTS[1]).ids == original.encode(TEXTS[1]).ids  # the same tokenizer otherwise
    texts, n_bytes = [], 0
    for split in ("train", "validation"):
        ds = TokenDataset(folder, split)
        ds.verify()
        stream = np.concatenate([ds[i] for i in range(len(ds))]) if len(ds) else np.zeros(0, np.int32)
        stream = stream[stream != info["pad_id"]]
        cuts = np.flatnonzero(stream == info["eos_id"])
        texts += [shipped.decode(stream[a + 1 if k else 0:b].tolist()) for k, (a, b) in
                  enumerate(zip(np.concatenate([[0], cuts[:-1]]), cuts))]
        n_bytes += sum(ds.n_bytes(i) for i in range(len(ds)))
    assert sorted(texts) == sorted(TEXTS)
    assert n_bytes == sum(len(t.encode("utf-8")) + prefix for t in TEXTS)
    if prefix:  # byte-fallback tokens really occur (Ü, 漢字 and 🙂 are not in the trained vocabulary)
        assert original.token_to_id("<0xE6>") in original.encode(TEXTS[1]).ids


def test_our_tokenizers_pass_through_unchanged(tmp_path, tokenizer_path):
    data = open(tokenizer_path, "rb").read()
    assert read_tokenizer_json(tokenizer_path) == data


def test_unknown_layouts_are_one_line(tmp_path):
    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.pre_tokenizer = pre_tokenizers.Whitespace()
    wp.decoder = decoders.WordPiece()
    wp.train_from_iterator(TEXTS, trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[UNK]", "</s>"]))
    wp.save(str(tmp_path / "wp.json"))
    with pytest.raises(UserError, match=r"decoder \(WordPiece\) is neither byte-level nor SentencePiece-style"):
        tokenize_documents(_docs(), str(tmp_path / "wp.json"), tmp_path / "o", CONFIG, seed=1, source="t",
                           recipe_sha256="0")
    no_eos = Tokenizer(models.BPE())
    no_eos.pre_tokenizer = pre_tokenizers.ByteLevel()
    no_eos.decoder = decoders.ByteLevel()
    no_eos.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=300, special_tokens=["<mask>"]))
    no_eos.save(str(tmp_path / "noeos.json"))
    with pytest.raises(UserError, match="has no end-of-text token"):
        load_tokenizer(str(tmp_path / "noeos.json"))


def test_beam_stage_ships_the_same_adopted_tokenizer_as_the_driver(tmp_path):
    from gristmill.pipeline.docio import CreateDocuments
    from gristmill.pipeline.runner import run_stages
    from gristmill.pipeline.stages import RunContext
    from gristmill.tokenize.stages import Tokenize

    path = gpt2_like(tmp_path)
    stages = [CreateDocuments("Create", _docs()),
              Tokenize("Tokenize", seq_len=CONFIG.seq_len, shard_bytes=CONFIG.shard_bytes,
                       validation_fraction=CONFIG.validation_fraction, tokenizer=str(path))]
    run_stages(stages, RunContext(output=str(tmp_path / "run"), seed=1, recipe_name="t", recipe_hash="0"),
               ["--direct_running_mode=multi_threading", "--direct_num_workers=2"])
    manifest, _ = tokenize_documents(_docs(), str(path), tmp_path / "local", CONFIG, seed=1, source="t",
                                     recipe_sha256="0")
    beam_dir = tmp_path / "run" / "tokens"
    assert json.loads((beam_dir / "manifest.json").read_text()) == manifest
    for f in sorted((tmp_path / "local").iterdir()):
        assert (beam_dir / f.name).read_bytes() == f.read_bytes(), f.name


def test_a_tokenizer_by_url_is_fetched_once_into_the_cache(tmp_path, monkeypatch):
    """file:// stands in for https:// (the same urllib download): the same shards as from the path."""
    monkeypatch.setenv("GRISTMILL_CACHE", str(tmp_path / "cache"))
    path = gpt2_like(tmp_path)
    by_path, _ = tokenize_documents(_docs(), str(path), tmp_path / "a", CONFIG, seed=1, source="t", recipe_sha256="0")
    by_url, _ = tokenize_documents(_docs(), path.as_uri(), tmp_path / "b", CONFIG, seed=1, source="t",
                                   recipe_sha256="0")
    assert by_url == by_path
    from gristmill.pipeline.docio import CreateDocuments
    from gristmill.pipeline.runner import run_stages
    from gristmill.pipeline.stages import RunContext
    from gristmill.tokenize.stages import Tokenize

    run_stages([CreateDocuments("Create", _docs()),
                Tokenize("Tokenize", seq_len=CONFIG.seq_len, shard_bytes=CONFIG.shard_bytes,
                         validation_fraction=CONFIG.validation_fraction, tokenizer=path.as_uri())],
               RunContext(output=str(tmp_path / "beam"), seed=1, recipe_name="t", recipe_hash="0"),
               ["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    assert json.loads((tmp_path / "beam" / "tokens" / "manifest.json").read_text()) == by_path
    assert [p.name.split("-", 1)[1] for p in (tmp_path / "cache" / "downloads").iterdir()] == ["gpt2.json"]
    with pytest.raises(UserError, match="cannot download tokenizer model from file:///nowhere/tokenizer.json"):
        read_tokenizer_json("file:///nowhere/tokenizer.json")


def test_the_stage_refuses_a_bad_tokenizer_before_the_run(tmp_path):
    from gristmill.pipeline.docio import CreateDocuments
    from gristmill.pipeline.runner import run_stages
    from gristmill.pipeline.stages import RunContext
    from gristmill.tokenize.stages import Tokenize

    no_eos = Tokenizer(models.BPE())
    no_eos.pre_tokenizer = pre_tokenizers.ByteLevel()
    no_eos.decoder = decoders.ByteLevel()
    no_eos.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=300, special_tokens=["<mask>"]))
    no_eos.save(str(tmp_path / "noeos.json"))
    for path, message in ((tmp_path / "noeos.json", "has no end-of-text token"),
                          (tmp_path / "missing.json", "does not exist")):
        with pytest.raises(UserError, match=f"^stage Tokenize: .*{message}"):
            run_stages([CreateDocuments("Create", _docs()), Tokenize("Tokenize", tokenizer=str(path))],
                       RunContext(output=str(tmp_path / "o"), seed=1, recipe_name="t", recipe_hash="0"), [])
        assert not (tmp_path / "o").exists()  # refused before the pipeline made anything


def metaspace_like(tmp_path):
    """llama2_like in the newer layout: no normalizer, a Metaspace pre-tokenizer that prepends "▁" to the text."""
    spec = json.loads(llama2_like(tmp_path).read_text())
    spec["normalizer"] = None
    spec["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": True}
    path = tmp_path / "metaspace.json"
    path.write_text(json.dumps(spec))
    return path


LONG_TEXTS = ["The cat sat on the mat. " * 40,             # cut at spaces
              "Numbers 12345 and\nnew\nlines\n" * 40,       # and at newlines
              "漢字のテキスト" * 100 + " end"]               # no space or newline: cut hard


@pytest.mark.parametrize("make", [llama2_like, metaspace_like])
def test_cut_documents_keep_their_text_with_a_prefixing_tokenizer(tmp_path, make):
    # Each piece of a cut document used to get its own "▁" prefix: an extra space at every cut in the shards,
    # and n_bytes one byte over per piece. Later pieces are now encoded without it.
    enc = DocumentEncoder(str(make(tmp_path)), chunk_chars=100)
    for text in LONG_TEXTS:
        assert len(split_text(text, 100, enc._is_boundary)) > 3
        ids = enc.encode([text])[0]
        assert enc.decode(ids) == text
        assert enc.byte_lengths[ids].sum() == len(text.encode("utf-8")) + 1  # the one prefix per document
    # a document that is not cut is encoded as before, prefix included
    assert enc.encode(["The cat sat."])[0].tolist() == enc.tok.encode("The cat sat.", add_special_tokens=False).ids


def test_a_long_document_through_the_driver_with_a_prefixing_tokenizer(tmp_path):
    text = "The cat sat on the mat. " * 3000  # 72,000 characters: two pieces of at most 65,536
    manifest, _ = tokenize_documents([Document(id="big", url="", text=text)], str(llama2_like(tmp_path)),
                                     tmp_path / "out", TokenizeConfig(seq_len=512, shard_bytes=512 * 4 * 100,
                                                                      validation_fraction=0.0))
    assert manifest["splits"]["train"]["bytes"] == len(text) + 1  # was + 2: one extra "▁" at the cut
    ds = TokenDataset(tmp_path / "out")
    tok, info = load_tokenizer(str(tmp_path / "out" / "tokenizer.json"))
    ids = np.concatenate([ds[i] for i in range(len(ds))])
    assert tok.decode(ids[(ids != info.pad_id) & (ids != info.eos_id)].tolist()) == text
    # and the ids are the whole text's (the vocabulary has "▁The▁": the merges run across the spaces)
    assert ids[(ids != info.pad_id) & (ids != info.eos_id)].tolist() == tok.encode(text, add_special_tokens=False).ids


def _whole_text_layouts(tmp_path):
    """Tokenizers that take the whole text as one pre-token, trained on text where their tokens run across
    spaces ("▁on▁", "the▁", "élève▁مرحبا▁"), as SentencePiece without split_by_whitespace learns them: Llama 2's
    older layout (Prepend and Replace normalizer, no pre-tokenizer), Metaspace with split=False, and a Unigram
    model with no pre-tokenizer."""
    import random

    from tok_corpus import make_text

    rng = random.Random(5)
    corpus = [make_text(rng, 2000) for _ in range(5)]
    prefixing = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                 decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    bpe.normalizer, bpe.decoder = prefixing, decoder
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=2000, special_tokens=specials, show_progress=False))
    unigram = Tokenizer(models.Unigram())
    unigram.normalizer, unigram.decoder = prefixing, decoder
    unigram.train_from_iterator(corpus, trainers.UnigramTrainer(vocab_size=2000, special_tokens=specials,
                                                                unk_token="<unk>", max_piece_length=24,
                                                                show_progress=False))
    unsplit = json.loads(bpe.to_str())
    unsplit["normalizer"] = None
    unsplit["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first",
                                "split": False}
    return {"llama2_like": llama2_like(tmp_path).read_bytes(), "no_pre_tokenizer": bpe.to_str().encode(),
            "metaspace_unsplit": json.dumps(unsplit).encode(), "unigram": unigram.to_str().encode()}


def test_cuts_keep_the_whole_texts_ids_without_a_pre_tokenizer(tmp_path):
    # With no pre-tokenizer (or one that does not split) the merges run across spaces, and cutting at any space
    # changed the ids: 95 instead of 41 for llama2_like on "The cat sat on the mat. " * 40 in pieces of 100.
    # The vocabulary now confirms each cut (no token spans it), so the pieces' ids are the whole text's.
    import random

    from tok_corpus import make_text

    texts = ["The cat sat on the mat. " * 100, " ".join(TEXTS) * 2]
    texts += [make_text(random.Random(100 + k), 800) + ("日本語テキスト" * 40 if k % 3 == 0 else "") + " x\n\ny  z"
              for k in range(6)]
    for name, data in _whole_text_layouts(tmp_path).items():
        # the Unigram model's 24-character pieces leave no exact point in the 50-character windows of 100
        for chunk in (333, 1000) if name == "unigram" else (100, 333, 1000):
            enc = DocumentEncoder(data, chunk_chars=chunk)
            for text in texts:
                whole = enc.tok.encode(text, add_special_tokens=False).ids
                assert len(text) > 2 * chunk
                assert enc.encode([text])[0].tolist() == whole, (name, chunk, text[:40])
