"""fastText quality and toxicity classifiers (trained tiny, once per session) and the bad-words rule."""
from __future__ import annotations

import csv
import json

import pytest
from profanity_check import predict_prob

from gristmill.errors import UserError
from gristmill.filters import corpora
from gristmill.filters.classifier import TrainConfig, label_probabilities
from gristmill.filters.models import load_fasttext
from gristmill.filters.quality import QualityFilter
from gristmill.filters.toxicity import (BadWordsFilter, ToxicityFilter, generated_comments, read_jigsaw,
                                        teacher_labels, train_toxicity, write_badwords)
from gristmill.pipeline import textgen


def test_quality_scores_reference_prose_above_crawl(tiny_quality, as_docs):
    held_out_prose = corpora.reference_documents()[1::3][:100]
    crawl = corpora.crawl_pages(100, seed=99)
    flt = QualityFilter(model=str(tiny_quality))
    prose_scores = [v.scores["quality.score"] for v in flt.check_batch(as_docs(held_out_prose))]
    crawl_scores = [v.scores["quality.score"] for v in flt.check_batch(as_docs(crawl))]
    assert sum(prose_scores) / 100 > sum(crawl_scores) / 100 + 0.3
    # keep_top_fraction turns the saved calibration quantiles into a threshold.
    top = QualityFilter(model=str(tiny_quality), keep_top_fraction=0.2)
    kept = sum(v.keep for v in top.check_batch(as_docs(crawl)))
    assert 5 <= kept <= 40  # ~20% of a fresh sample from the same distribution
    quantiles = json.loads(tiny_quality.with_name(tiny_quality.name + ".quantiles.json").read_text())["quantiles"]
    assert top._threshold == quantiles[800]


def test_toxicity_distilled_precision_recall(tiny_toxicity, as_docs):
    path, metrics = tiny_toxicity
    assert metrics["held_out"] == 500 and metrics["held_out_toxic"] > 50
    # Toxic comments are ~30% of the set: a constant or random classifier scores far below these.
    assert metrics["precision"] >= 0.85 and metrics["recall"] >= 0.65, metrics
    assert json.loads(path.with_name(path.name + ".metrics.json").read_text())["precision"] == metrics["precision"]
    # Agreement with the teacher on fresh generated comments.
    texts = generated_comments(300, seed=77)
    teacher = [p >= 0.5 for p in predict_prob(texts)]
    verdicts = ToxicityFilter(model=str(path)).check_batch(as_docs(texts))
    agree = sum((not v.keep) == t for v, t in zip(verdicts, teacher))
    assert agree / len(texts) >= 0.85
    assert all(v.reason == "toxicity:threshold" for v in verdicts if not v.keep)


def test_jigsaw_csv_training(tmp_path):
    # Jigsaw-format CSV whose labels come from the teacher (no hand-written toxic text).
    texts = generated_comments(600, seed=12)
    labels = teacher_labels(texts)
    csv_path = tmp_path / "train.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "comment_text", "toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"])
        for i, (t, lab) in enumerate(zip(texts, labels)):
            flag = int(lab == "toxic")
            w.writerow([f"c{i}", t, 0, 0, flag, 0, 0, 0])  # any label column counts
    examples = read_jigsaw(csv_path)
    assert [lab for lab, _ in examples] == labels
    m = train_toxicity(examples, tmp_path / "tox.bin", "jigsaw", TrainConfig(dim=16, epoch=5, bucket=10_000,
                                                                               quantize=False))
    assert m["held_out"] == 120 and m["source"] == "jigsaw"
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="Jigsaw format"):
        read_jigsaw(bad)


def test_badwords_rule(tmp_path, as_docs):
    words = tmp_path / "words.txt"
    assert write_badwords(words, k=30) == 30
    vocab = words.read_text().split()
    assert vocab == textgen.offensive_words(30)
    clean = textgen.prose_paragraphs()[0]
    dirty = clean + " " + vocab[0].upper() + "."
    glued = clean + " x" + vocab[0] + "y"  # not a whole word: kept, as in C4
    v = BadWordsFilter(words=str(words)).check_batch(as_docs([clean, dirty, glued]))
    assert [x.keep for x in v] == [True, False, True] and v[1].reason == "badwords:match"


def test_label_probabilities_batch(tiny_quality):
    model = load_fasttext("quality", tiny_quality)
    p = label_probabilities(model, ["one\nline", ""], "hq")
    assert len(p) == 2 and all(0.0 <= x <= 1.0 for x in p)


def test_precision_recall_agree_with_scikit_learn():
    import random

    from sklearn.metrics import precision_score, recall_score

    from gristmill.filters.toxicity import precision_recall

    rng = random.Random(4)
    examples = [(rng.choice(("toxic", "ok")), f"comment {i}") for i in range(400)]
    probs = {t: rng.random() for _, t in examples}

    class FixedModel:  # the fastText batch-predict interface, with known probabilities
        def predict(self, texts, k=-1):
            return [["__label__toxic", "__label__ok"] for _ in texts], [[probs[t], 1 - probs[t]] for t in texts]

    m = precision_recall(FixedModel(), examples, threshold=0.6)
    truth = [lab == "toxic" for lab, _ in examples]
    pred = [probs[t] >= 0.6 for _, t in examples]
    assert m["precision"] == pytest.approx(precision_score(truth, pred))
    assert m["recall"] == pytest.approx(recall_score(truth, pred))
    assert m["held_out"] == 400 and m["held_out_toxic"] == sum(truth)
