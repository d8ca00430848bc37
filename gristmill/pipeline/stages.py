"""Stage base class and the generic Beam wrapper that turns any Filter into a counted, named stage.

A recipe is a list of Stage objects. Each stage takes the PCollection of Documents produced by the
previous one and returns its own; its `label` names it in the Beam graph and in stats.json.
Counters follow one convention so the stats always add up:
    <label>/in, <label>/kept, <label>/dropped/<reason>      (in = kept + sum of dropped)
    <label>/would_drop/<reason>                             (annotate mode: counted, not dropped)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

NAMESPACE = "gristmill"


@dataclass
class RunContext:
    """What every stage may need to know about the run."""

    input: str = ""  # input glob (Beam FileSystems paths: local, gs://, s3://)
    output: str = "out"  # output directory
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    recipe_name: str = ""
    recipe_hash: str = ""
    num_workers: int = 1

    def path(self, *parts: str) -> str:
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.join(self.output, *parts)


class StageCounters:
    """Beam counters for one stage label, cached so the hot path does not rebuild them."""

    def __init__(self, label: str):
        self.label = label
        self._cache: dict[str, Any] = {}

    def inc(self, key: str, n: int = 1) -> None:
        c = self._cache.get(key)
        if c is None:
            c = self._cache[key] = Metrics.counter(NAMESPACE, f"{self.label}/{key}")
        c.inc(n)


class Stage:
    """A named step of a recipe. Subclasses implement `expand`, and may implement `validate(ctx)`,
    which the runner calls on the launching machine before building the pipeline, to fail fast with a
    UserError (missing model, bad path) instead of failing inside a worker."""

    label: str = "Stage"
    # What the stage's output holds, when it changes the element type: "pages" (RawPage, before extraction)
    # or "documents"; None: the same elements it takes.
    produces: str | None = None

    def expand(self, pcoll: beam.PCollection, ctx: RunContext) -> beam.PCollection:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Parameters shown in recipe.json and hashed into the recipe hash."""
        d = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return {"stage": type(self).__name__, **{k: _describe_value(v) for k, v in d.items()}}


def _describe_value(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_describe_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _describe_value(x) for k, x in v.items()}
    if hasattr(v, "__dict__"):
        return {"type": type(v).__name__, **{k: _describe_value(x) for k, x in vars(v).items() if not k.startswith("_")}}
    return repr(v)


class _FilterFn(beam.DoFn):
    def __init__(self, flt, label: str, mode: str, batch_size: int):
        self.flt = flt
        self.label = label
        self.mode = mode
        self.batch_size = batch_size

    def setup(self):
        self.flt.setup()
        self.counters = StageCounters(self.label)

    def start_bundle(self):
        self.buf = []

    def process(self, doc):
        self.buf.append(doc)
        if len(self.buf) >= self.batch_size:
            yield from self._flush()

    def finish_bundle(self):
        for doc in self._flush():
            yield GlobalWindows.windowed_value(doc)

    def _flush(self):
        docs, self.buf = self.buf, []
        if not docs:
            return
        verdicts = self.flt.check_batch(docs)
        for doc, v in zip(docs, verdicts):
            self.counters.inc("in")
            for key, n in v.counts.items():
                self.counters.inc(key, n)
            doc.scores.update(v.scores)
            if v.language is not None:
                doc.language = v.language
                doc.language_score = v.language_score
            if v.keep:
                if v.text is not None and self.mode == "drop":
                    doc.text = v.text
                if self.mode == "annotate":
                    doc.decisions[self.label] = "keep"
                self.counters.inc("kept")
                yield doc
            elif self.mode == "annotate":
                doc.decisions[self.label] = v.reason or self.label
                self.counters.inc(f"would_drop/{v.reason or self.label}")
                self.counters.inc("kept")
                yield doc
            else:
                self.counters.inc(f"dropped/{v.reason or self.label}")


class FilterStage(Stage):
    """Wraps any gristmill.filters.base.Filter as a Beam stage.

    mode="drop" drops failing documents and counts them under their reason;
    mode="annotate" keeps everything and records the decision and scores on the document,
    so thresholds can be chosen after one scoring run.

    A filter that reads only the URL (`needs_text = False`, the URL filter) may also run on raw pages, before
    ExtractText; its decisions and scores ride on the page and extraction copies them onto the document.
    """

    def __init__(self, label: str, filter, mode: str = "drop", batch_size: int = 256):
        if mode not in ("drop", "annotate"):
            raise ValueError(f"stage {label}: mode must be 'drop' or 'annotate', not {mode!r}")
        _check_probability_threshold(label, filter)
        self.label = label
        self.filter = filter
        self.mode = mode
        self.batch_size = batch_size

    def validate(self, ctx: RunContext) -> None:
        """Fail before the pipeline starts (one clear line) when the filter's model is missing or corrupt."""
        check = getattr(self.filter, "validate", None)
        if check is not None:
            check()

    def expand(self, pcoll, ctx):
        return pcoll | self.label >> beam.ParDo(_FilterFn(self.filter, self.label, self.mode, self.batch_size))


def _check_probability_threshold(label: str, flt) -> None:
    """Language ID's and the fastText classifiers' `threshold` is a probability: one above 1 (or NaN) would
    silently drop, or keep, everything. One line, when the recipe builds its stages."""
    from gristmill.errors import UserError
    from gristmill.filters.classifier import ClassifierFilter
    from gristmill.filters.langid import LanguageIDFilter

    t = getattr(flt, "threshold", None) if isinstance(flt, (LanguageIDFilter, ClassifierFilter)) else None
    if t is None:
        return
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= 1:
        raise UserError(f"stage {label}: threshold is a probability, from 0 to 1, not {t!r}")
