"""KenLM: CCNet normalization, perplexity identical to the kenlm module's own, buckets from saved thresholds."""
from __future__ import annotations

import json
import math

import kenlm
import pytest

from gristmill.errors import UserError
from gristmill.filters.kenlm_filter import KenLMFilter, bucket_of, normalize, perplexity
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
