"""Language identification with a fastText LID model (lid.176 by default; GlotLID or any fastText LID by path/URL)."""
from __future__ import annotations

from dataclasses import dataclass

from gristmill.filters.base import Filter, Verdict
from gristmill.filters.models import label_name, load_fasttext, require_labels
from gristmill.pipeline.document import Document


@dataclass
class LanguageIDFilter(Filter):
    """Keeps documents whose top language is in `languages` with score >= `threshold` (FineWeb: en, 0.65).

    `languages=None` keeps any language above the threshold. Language and score are always recorded.
    """

    languages: tuple[str, ...] | None = ("en",)
    threshold: float = 0.65
    model: str | None = None  # path or URL; None = the provisioned lid.176.ftz
    name: str = "language_id"

    def __post_init__(self):
        if isinstance(self.languages, str):
            self.languages = (self.languages,)
        if self.languages is not None:
            self.languages = tuple(label_name(lang) for lang in self.languages)
        self._model = None

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_model"} | {"_model": None}

    def setup(self) -> None:
        if self._model is not None:
            return
        model = load_fasttext("lid", self.model)
        # Otherwise every document would be dropped as another language (lid.176 says "en", GlotLID "eng_Latn").
        require_labels(model, self.languages or (), self.name, self.model or "lid.176.ftz (provisioned)",
                       "give languages as it names them")
        self._model = model

    def predict(self, texts: list[str]) -> list[tuple[str, float]]:
        """(language, probability) of the top label for each text."""
        self.setup()
        # fastText predicts one line: newlines would end the input early. Batch predict is numpy-2 safe.
        labels, probs = self._model.predict([t.replace("\n", " ") for t in texts], k=1)
        return [(label_name(lab[0]) if len(lab) else "und", float(min(1.0, p[0])) if len(p) else 0.0)
                for lab, p in zip(labels, probs)]

    def check_batch(self, docs: list[Document]) -> list[Verdict]:
        out = []
        for lang, score in self.predict([d.text for d in docs]):
            reason = None
            if self.languages is not None and lang not in self.languages:
                reason = f"{self.name}:language"
            elif score < self.threshold:
                reason = f"{self.name}:threshold"
            out.append(Verdict(reason is None, reason, language=lang, language_score=score))
        return out

    def check(self, doc: Document) -> Verdict:
        return self.check_batch([doc])[0]
