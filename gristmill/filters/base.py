"""The filter contract: a rule is plain Python over a Document, with no Beam in it.

A filter returns a Verdict. The generic Beam wrapper (gristmill.pipeline.stages.FilterStage) calls
`setup()` once per worker, batches documents through `check_batch`, counts kept/dropped per reason,
and either drops (mode="drop") or only annotates (mode="annotate").
"""
from __future__ import annotations

from dataclasses import dataclass, field

from gristmill.pipeline.document import Document


@dataclass
class Verdict:
    keep: bool
    reason: str | None = None  # "<filter>:<rule>" when keep is False, e.g. "gopher_quality:min_doc_words"
    scores: dict[str, float] = field(default_factory=dict)  # written into Document.scores
    language: str | None = None  # only language ID sets these two
    language_score: float | None = None
    text: str | None = None  # rewritten text (C4 line removal); applied in drop mode only
    counts: dict[str, int] = field(default_factory=dict)  # added to the stage's counters, e.g. {"masked_emails": 2}


class Filter:
    """Base class. Subclasses set `name` and implement `check` (and `check_batch` when batching helps)."""

    name: str = "filter"
    # False for a filter that reads only the URL: it may then run on raw pages, before text extraction.
    needs_text: bool = True

    def setup(self) -> None:
        """Load models. Called once per worker (Beam DoFn.setup), never per element."""

    def validate(self) -> None:
        """Fail fast on the launching machine (FilterStage.validate calls it): load what setup() loads, so a
        missing or corrupt model is one clear UserError before the pipeline starts. Loaded models are not
        pickled to workers (the model-holding filters drop them in __getstate__)."""
        self.setup()

    def check(self, doc: Document) -> Verdict:
        raise NotImplementedError

    def check_batch(self, docs: list[Document]) -> list[Verdict]:
        return [self.check(d) for d in docs]
