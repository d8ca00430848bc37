"""Toxicity: a fastText classifier (trained on Jigsaw-format CSV, or distilled offline) and a C4-style word list.

The default classifier is distilled without any hand-written toxic text: comments are generated from stdlib
prose with words from alt-profanity-check's own vocabulary inserted (textgen.offensive_words), and
alt-profanity-check's shipped model labels them. Precision and recall on a held-out split are saved beside the
model as MODEL.metrics.json.
"""
from __future__ import annotations

import csv
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from gristmill.errors import UserError, require_file
from gristmill.filters.base import Filter, Verdict
from gristmill.filters.classifier import ClassifierFilter, TrainConfig, label_probabilities, train_classifier
from gristmill.filters.models import load_fasttext, resolve, sidecar
from gristmill.pipeline import textgen
from gristmill.pipeline.document import Document

JIGSAW_LABELS = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")


@dataclass
class ToxicityFilter(ClassifierFilter):
    """Drops documents with P(toxic) >= threshold."""

    label: str = "toxic"
    threshold: float | None = 0.5
    name: str = "toxicity"
    kind: str = "toxicity"
    drop_above: bool = True


@dataclass
class BadWordsFilter(Filter):
    """C4's bad-words rule: drop a page containing any listed word (whole words, case-insensitive).

    `words` is a file (one word or phrase per line) by path or URL, e.g. the LDNOOBW list C4 used; None = the
    provisioned list (the top words of alt-profanity-check's linear model)."""

    words: str | None = None
    name: str = "badwords"

    def __post_init__(self):
        self._regex = None

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_regex"} | {"_regex": None}

    def setup(self) -> None:
        if self._regex is not None:
            return
        path = resolve("badwords", self.words)
        try:
            words = sorted({w.strip().lower() for w in path.read_text(encoding="utf-8").splitlines() if w.strip()})
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"badwords list {path} is unreadable ({e}): re-create it with "
                            f"`beam model provision --force` or pass another file") from None
        if not words:
            raise UserError(f"badwords list {path} is empty")
        # Longest first, so a phrase wins over its own prefix.
        alternatives = "|".join(re.escape(w) for w in sorted(words, key=lambda w: (-len(w), w)))
        self._regex = re.compile(rf"(?:\W|^)({alternatives})(?:\W|$)")

    def check(self, doc: Document) -> Verdict:
        self.setup()
        hit = self._regex.search(doc.text.lower())
        scores = {f"{self.name}.matched": 1.0 if hit else 0.0}
        return Verdict(hit is None, None if hit is None else f"{self.name}:match", scores)


def write_badwords(out: Path, k: int = 100) -> int:
    words = textgen.offensive_words(k)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(words) + "\n", encoding="utf-8")
    return len(words)


def generated_comments(n: int, seed: int) -> list[str]:
    """Comment-length texts (8-80 words) of stdlib prose, a share with offensive-vocabulary words inserted."""
    rng = random.Random(seed)
    vocab = textgen.offensive_words(60)
    out = []
    for _ in range(n):
        words = textgen.english_paragraphs(rng, 1)[0].split()
        start = rng.randrange(max(1, len(words) - 8))
        words = words[start:start + rng.randint(8, 80)]
        rate = rng.choice((0.0, 0.0, 0.0, 0.02, 0.05, 0.1, 0.2))
        text = []
        for w in words:
            text.append(w)
            if rng.random() < rate:
                text.append(rng.choice(vocab))
        out.append(" ".join(text))
    return out


def teacher_labels(texts: list[str]) -> list[str]:
    """alt-profanity-check's shipped model as the teacher: 'toxic' when its probability is >= 0.5."""
    from profanity_check import predict_prob

    return ["toxic" if p >= 0.5 else "ok" for p in predict_prob(texts)]


def read_jigsaw(path: Path) -> list[tuple[str, str]]:
    """(label, text) from a Jigsaw toxic-comment CSV: toxic when any of the six label columns is 1."""
    require_file(path, "Jigsaw CSV")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = [c for c in JIGSAW_LABELS if c in (reader.fieldnames or [])]
        if "comment_text" not in (reader.fieldnames or []) or not cols:
            raise UserError(f"{path} is not in Jigsaw format: it needs a comment_text column and label columns "
                            f"among {', '.join(JIGSAW_LABELS)}")
        out = []
        for i, row in enumerate(reader, 2):
            try:
                toxic = any(float(row[c] or 0) >= 0.5 for c in cols)
            except ValueError:
                raise UserError(f"{path}:{i}: a label column is not a number") from None
            out.append(("toxic" if toxic else "ok", row["comment_text"]))
    return out


def precision_recall(model, examples: list[tuple[str, str]], threshold: float = 0.5) -> dict:
    probs = label_probabilities(model, [t for _, t in examples], "toxic")
    tp = sum(1 for (lab, _), p in zip(examples, probs) if lab == "toxic" and p >= threshold)
    fp = sum(1 for (lab, _), p in zip(examples, probs) if lab != "toxic" and p >= threshold)
    fn = sum(1 for (lab, _), p in zip(examples, probs) if lab == "toxic" and p < threshold)
    return {"precision": tp / (tp + fp) if tp + fp else 0.0, "recall": tp / (tp + fn) if tp + fn else 0.0,
            "held_out": len(examples), "held_out_toxic": tp + fn, "threshold": threshold}


def train_toxicity(examples: list[tuple[str, str]], out: Path, source: str, cfg: TrainConfig = TrainConfig(),
                   held_out: float = 0.2, seed: int = 0) -> dict:
    """Train on (label, text) pairs, keeping `held_out` of them aside; save precision/recall as MODEL.metrics.json."""
    rng = random.Random(seed)
    examples = list(examples)
    rng.shuffle(examples)
    k = max(1, int(len(examples) * held_out))
    test, train = examples[:k], examples[k:]
    train_classifier(train, out, cfg)
    metrics = precision_recall(load_fasttext("toxicity", out), test) | {"source": source, "trained_on": len(train)}
    sidecar(out, ".metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    return metrics
