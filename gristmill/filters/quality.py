"""DCLM-style quality classifier (Li et al. 2024): fastText, reference text (hq) against random crawl text (cc).

Apply it as P(hq) plus a threshold, or keep the top fraction of a calibration sample. DCLM's published model
(label __label__hq) loads by path or URL the same way.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from gristmill.filters.classifier import ClassifierFilter, TrainConfig, label_probabilities, save_quantiles, train_classifier
from gristmill.filters.models import load_fasttext


@dataclass
class QualityFilter(ClassifierFilter):
    label: str = "hq"
    threshold: float | None = 0.5
    name: str = "quality"
    kind: str = "quality"


def train_quality(positives: list[str], negatives: list[str], out: Path, calibration: list[str],
                  cfg: TrainConfig = TrainConfig(), seed: int = 0) -> dict:
    """Train hq-vs-cc on balanced, shuffled examples; save score quantiles on `calibration` beside the model."""
    rng = random.Random(seed)
    n = min(len(positives), len(negatives))
    examples = [("hq", t) for t in rng.sample(positives, n)] + [("cc", t) for t in rng.sample(negatives, n)]
    rng.shuffle(examples)
    train_classifier(examples, out, cfg)
    model = load_fasttext("quality", out)
    save_quantiles(out, label_probabilities(model, calibration, "hq"))
    return {"examples": len(examples)}
