"""Shared fastText text-classifier plumbing: supervised training, score quantiles, and a scoring filter base."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from gristmill.errors import UserError
from gristmill.filters.base import Filter, Verdict
from gristmill.filters.models import LABEL_PREFIX, label_name, load_fasttext, require_labels, resolve, sidecar
from gristmill.pipeline.document import Document

_WS = re.compile(r"\s+")


def classifier_text(text: str) -> str:
    """One line of lowercased, whitespace-collapsed text: what the classifiers are trained and applied on."""
    return _WS.sub(" ", text).strip().lower()


@dataclass
class TrainConfig:
    dim: int = 32
    epoch: int = 10
    lr: float = 0.2
    word_ngrams: int = 2
    bucket: int = 200_000  # fastText's default (2M) makes a 256 MB .bin even for a toy set
    min_count: int = 1
    seed: int = 0
    quantize: bool = True


def train_classifier(examples: Iterable[tuple[str, str]], out: Path, cfg: TrainConfig = TrainConfig()) -> int:
    """Train a supervised fastText model on (label, text) pairs; write .ftz (quantized) or .bin. Returns #examples."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gristmill-ft-") as tmp:
        data = Path(tmp) / "train.txt"
        n = 0
        labels = set()
        with open(data, "w", encoding="utf-8") as f:
            for label, text in examples:
                t = classifier_text(text)
                if t:
                    f.write(f"{LABEL_PREFIX}{label} {t}\n")
                    n += 1
                    labels.add(label)
        if len(labels) < 2:
            raise UserError(f"training data needs at least two labels, found {sorted(labels) or 'none'}")
        part = out.with_name(out.name + ".part")
        # A fresh interpreter per model: fastText 0.9.3 carries state between trainings in one process (a second
        # run with the same seed differs, and sometimes aborts with "Encountered NaN"); a first run is reproducible.
        r = subprocess.run([sys.executable, "-m", "gristmill.filters.classifier", str(data), str(part),
                            json.dumps(asdict(cfg))], capture_output=True, text=True)
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
            raise UserError(f"fastText training failed: {tail[0]}")
        part.replace(out)
    return n


def _train_and_save(data: str, out: str, cfg: TrainConfig) -> None:
    import fasttext

    model = fasttext.train_supervised(
        input=data, dim=cfg.dim, epoch=cfg.epoch, lr=cfg.lr, wordNgrams=cfg.word_ngrams, bucket=cfg.bucket,
        minCount=cfg.min_count, seed=cfg.seed, thread=1, verbose=0, loss="softmax")  # one thread: no Hogwild races
    if cfg.quantize:
        model.quantize(input=data, qnorm=True, retrain=False, cutoff=50_000, thread=1, verbose=0)
    model.save_model(out)


def label_probabilities(model, texts: list[str], label: str) -> list[float]:
    """P(`label`) for each text (batch predict: numpy-2 safe); `label` with or without fastText's __label__."""
    want = LABEL_PREFIX + label_name(label)
    labels, probs = model.predict([classifier_text(t) for t in texts], k=-1)
    out = []
    for labs, ps in zip(labels, probs):
        p = 0.0
        for lab, q in zip(labs, ps):
            if lab == want:
                p = float(min(1.0, q))
                break
        out.append(p)
    return out


def save_quantiles(model_path: Path, scores: list[float]) -> None:
    """Score quantiles on a crawl sample, saved beside the model: they turn keep_top_fraction into a threshold."""
    import numpy as np

    if not scores:
        raise UserError("calibration sample is empty")
    qs = np.quantile(np.asarray(scores, dtype=np.float64), np.linspace(0, 1, 1001))
    side = sidecar(model_path, ".quantiles.json")
    side.write_text(json.dumps({"quantiles": [round(float(q), 8) for q in qs], "sample_docs": len(scores)}) + "\n")


@dataclass
class ClassifierFilter(Filter):
    """Scores P(label) with a fastText model. Keeps score >= threshold, or the top `keep_top_fraction` of the
    calibration sample (drop_above=False), or drops score >= threshold (drop_above=True, e.g. toxicity)."""

    model: str | None = None
    label: str = "hq"
    threshold: float | None = 0.5
    keep_top_fraction: float | None = None
    name: str = "classifier"
    kind: str = "quality"
    drop_above: bool = False

    def __post_init__(self):
        if self.keep_top_fraction is not None and not 0 < self.keep_top_fraction <= 1:
            raise UserError(f"{self.name}: keep_top_fraction must be in (0, 1], not {self.keep_top_fraction}")
        if self.keep_top_fraction is None and self.threshold is None:
            raise UserError(f"{self.name}: give a threshold or a keep_top_fraction")
        self._model = None
        self._threshold = self.threshold

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_model"} | {"_model": None}

    def setup(self) -> None:
        if self._model is not None:
            return
        path = resolve(self.kind, self.model)
        self._model = load_fasttext(self.kind, path)
        require_labels(self._model, [self.label], self.name, path, "give one of its labels")
        if self.keep_top_fraction is not None:
            side = sidecar(path, ".quantiles.json")
            if not side.is_file():
                raise UserError(f"{self.name}: keep_top_fraction needs {side}: run `beam model calibrate-classifier "
                                f"--kind {self.kind} --model {path}`, or give a threshold instead")
            try:
                qs = [float(q) for q in json.loads(side.read_text())["quantiles"]]
                self._threshold = qs[round((1 - self.keep_top_fraction) * (len(qs) - 1))]
            except (OSError, ValueError, KeyError, TypeError, IndexError):
                raise UserError(f"{self.name}: {side} (score quantiles) is unreadable or corrupt: re-create it with "
                                f"`beam model calibrate-classifier --kind {self.kind} --model {path} --sample ...`") from None

    def check_batch(self, docs: list[Document]) -> list[Verdict]:
        self.setup()
        out = []
        for p in label_probabilities(self._model, [d.text for d in docs], self.label):
            passed = p < self._threshold if self.drop_above else p >= self._threshold
            out.append(Verdict(passed, None if passed else f"{self.name}:threshold", {f"{self.name}.score": p}))
        return out

    def check(self, doc: Document) -> Verdict:
        return self.check_batch([doc])[0]


if __name__ == "__main__":  # the training subprocess started by train_classifier
    _train_and_save(sys.argv[1], sys.argv[2], TrainConfig(**json.loads(sys.argv[3])))
