"""KenLM: CCNet normalization, perplexity identical to the kenlm module's own, buckets from saved thresholds."""
from __future__ import annotations

import json
import math

import kenlm
import pytest

from gristmill.errors import UserError
from gristmill.filters.kenlm_filter import KenLMFilter, bucket_of, ccnet_normalize, normalize, perplexity
from gristmill.filters.models import load_sentencepiece
from gristmill.pipeline import textgen


def test_ccnet_normalization():
    assert normalize("  Héllo, Wörld! It’s 2024…  ") == "hello , world ! it ' s 0000 . . ."
    assert normalize("Prix：１０€ — «bon»") == 'prix : 00 € - " bon "'
    assert normalize("\x00\x1f") == ""


def test_perplexity_equals_kenlm_module(tiny_kenlm):
    model = kenlm.Model(str(tiny_kenlm))
    para = textgen.prose_paragraphs()[1]
    # One paragraph: exactly kenlm's own perplexity of the normalized text.
    assert perplexity(model, para) == pytest.approx(model.perplexity(normalize(para)), rel=1e-12)
    # Several paragraphs: length-weighted, i.e. the perplexity of all tokens scored paragraph by paragraph.
    paras = list(textgen.prose_paragraphs()[3:6]) + ["Buy cheap watches now!!!"]
    logs = [model.score(normalize(p)) for p in paras]
    lengths = [len(normalize(p).split()) + 1 for p in paras]
    expected = 10 ** (-sum(logs) / sum(lengths))
    assert perplexity(model, "\n".join(paras) + "\n\n") == pytest.approx(expected, rel=1e-12)
    weighted = 10 ** (sum(n * math.log10(model.perplexity(normalize(p))) for p, n in zip(paras, lengths)) / sum(lengths))
    assert perplexity(model, "\n".join(paras)) == pytest.approx(weighted, rel=1e-9)
    assert perplexity(model, " \n ") == math.inf


def test_ccnet_whole_document_normalization():
    # CCNet's text_normalizer.normalize on a whole document: every digit -> 0, accents and case gone, unicode
    # punctuation mapped, and the newline deleted with the other control characters, which glues the lines.
    assert ccnet_normalize(" Héllo Wörld 42!\nSecond line…\t\n") == "hello world 00!second line..."
    assert ccnet_normalize("«Ａ»。") == '"ａ".' and ccnet_normalize("\n\x00") == ""


def test_sentencepiece_mode_is_ccnets_pipeline(tiny_ccnet, as_docs):
    import sentencepiece

    sp_path, lm_path = tiny_ccnet
    sp = sentencepiece.SentencePieceProcessor(model_file=str(sp_path))
    model = kenlm.Model(str(lm_path))
    doc = "The Quick brown fox.\nIt jumped over 12 lazy dogs…"
    # CCNet, step by step: normalize the document, encode_as_pieces, join with spaces, score as one sentence.
    line = " ".join(sp.encode_as_pieces("the quick brown fox.it jumped over 00 lazy dogs..."))
    expected = 10 ** (-model.score(line) / (len(line.split()) + 1))
    assert perplexity(model, doc, sp) == pytest.approx(expected, rel=1e-12)
    flt = KenLMFilter(model=str(lm_path), sp_model=str(sp_path), keep_buckets=None)
    assert flt.check(as_docs([doc])[0]).scores["kenlm.perplexity"] == pytest.approx(expected, rel=1e-12)
    assert perplexity(model, " \n\t", sp) == math.inf


def test_sentencepiece_mode_matches_datatrove(tiny_ccnet):
    # datatrove's KenlmModel (edugp/kenlm's port of CCNet) with the same two files. Its number normalization
    # differs (a whole number becomes one 0), so the pages here have no digits.
    import sentencepiece
    from datatrove.utils.perplexity import KenlmModel, SentencePiece

    sp_path, lm_path = tiny_ccnet
    theirs = KenlmModel("local", "en")
    theirs._model = kenlm.Model(str(lm_path))
    theirs._tokenizer = SentencePiece("local", "en")
    theirs._tokenizer._model = sentencepiece.SentencePieceProcessor(model_file=str(sp_path))
    sp = load_sentencepiece(str(sp_path))
    model = kenlm.Model(str(lm_path))
    pages = [p for p in textgen.prose_paragraphs()[:40] if not any(c.isdigit() for c in p)]
    pages += ["Crème brûlée — «très» bon！\nSecond paragraph…", "BUY NOW\n\nCheap Watches"]
    assert len(pages) > 20
    for page in pages:
        assert round(perplexity(model, page, sp), 1) == theirs.get_perplexity(page), page


def test_sentencepiece_model_errors(tmp_path, tiny_kenlm):
    bad = tmp_path / "bad.sp.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(UserError, match="sentencepiece model .* is unreadable or corrupt"):
        KenLMFilter(model=str(tiny_kenlm), sp_model=str(bad), keep_buckets=None).setup()
    with pytest.raises(UserError, match="sentencepiece model .*missing"):
        KenLMFilter(model=str(tiny_kenlm), sp_model=str(tmp_path / "none.model"), keep_buckets=None).setup()


def test_buckets_and_filter(tiny_kenlm, as_docs):
    th = json.loads(tiny_kenlm.with_name(tiny_kenlm.name + ".buckets.json").read_text())
    assert th["percentiles"] == [30.0, 60.0] and th["head_max"] < th["middle_max"]
    assert [bucket_of(x, th) for x in (th["head_max"] / 2, th["head_max"], th["middle_max"] * 2)] == \
        ["head", "middle", "tail"]
    prose = textgen.prose_paragraphs()[0]  # in the training half: low perplexity
    spam = "\n".join(["zxq vvk qqq 99 ## lorem"] * 5)
    flt = KenLMFilter(model=str(tiny_kenlm))
    v_prose, v_spam = flt.check_batch(as_docs([prose, spam]))
    assert v_prose.keep and v_prose.scores["kenlm.bucket"] == 0.0
    assert not v_spam.keep and v_spam.reason == "kenlm:bucket_tail"
    assert v_spam.scores["kenlm.perplexity"] > th["middle_max"]
    v = KenLMFilter(model=str(tiny_kenlm), keep_buckets=None, max_perplexity=1.0).check(as_docs([prose])[0])
    assert v.reason == "kenlm:max_perplexity" and "kenlm.bucket" not in v.scores


def test_bad_bucket_name():
    with pytest.raises(UserError, match="keep_buckets"):
        KenLMFilter(keep_buckets=("top",))


def test_train_kenlm_command(tmp_path, capsys):
    from gristmill.pipeline.cli import main as beam_main

    corpus = tmp_path / "ref.txt"
    corpus.write_text("\n\n".join(textgen.prose_paragraphs()[:300]))
    sample = tmp_path / "sample.txt"
    sample.write_text("\n\n".join(textgen.prose_paragraphs()[300:340]))
    out = tmp_path / "m" / "en.binary"
    args = ["model", "train-kenlm", "--corpus", str(corpus), "--sample", str(sample), "--order", "3", "--out", str(out)]
    assert beam_main(args) == 0
    assert out.is_file() and json.loads(out.with_name("en.binary.buckets.json").read_text())["sample_docs"] == 40
    assert kenlm.Model(str(out)).order == 3
    capsys.readouterr()
    assert beam_main(args) == 0 and "exists, skipped" in capsys.readouterr().err  # idempotent


def test_ccnet_model_commands(tmp_path, tiny_ccnet, tiny_kenlm, capsys):
    # train-kenlm and calibrate-kenlm with --sp-model score CCNet's way: the thresholds are the percentiles of
    # exactly the perplexities the filter computes with the same two files.
    import numpy as np

    from gristmill.pipeline.cli import main as beam_main

    sp_path, _ = tiny_ccnet
    corpus = tmp_path / "ref.txt"
    corpus.write_text("\n\n".join(textgen.prose_paragraphs()[:300]))
    sample_docs = textgen.prose_paragraphs()[300:340]
    sample = tmp_path / "sample.txt"
    sample.write_text("\n\n".join(sample_docs))
    out = tmp_path / "en.arpa.bin"
    assert beam_main(["model", "train-kenlm", "--corpus", str(corpus), "--sample", str(sample), "--order", "3",
                      "--sp-model", str(sp_path), "--out", str(out)]) == 0
    capsys.readouterr()
    assert beam_main(["model", "calibrate-kenlm", "--model", str(out), "--sp-model", str(sp_path),
                      "--sample", str(sample)]) == 0
    printed = json.loads(capsys.readouterr().out)
    model, sp = kenlm.Model(str(out)), load_sentencepiece(str(sp_path))
    assert "\u2581the" in model  # trained on SentencePiece pieces (a word's first piece starts with U+2581)
    assert "\u2581the" not in kenlm.Model(str(tiny_kenlm)) and "the" in kenlm.Model(str(tiny_kenlm))
    pps = [perplexity(model, d, sp) for d in sample_docs]
    assert printed["head_max"] == pytest.approx(float(np.percentile(pps, 30)), rel=1e-12)
    assert printed["middle_max"] == pytest.approx(float(np.percentile(pps, 60)), rel=1e-12)
