"""`beam select`: keep the documents of an earlier run whose recorded fields pass conditions (Dolma's mixer step).

A run in annotate mode (`-p filter_mode=annotate`) scores every document and records each filter's decision
without any filter dropping it (dedup, unless `-p dedup=false`, still drops duplicates), so thresholds can be
chosen afterwards. This applies them without rerunning
extraction or models:

    beam select 'out/annot/documents/*.jsonl.gz' --output out/picked \\
        --where 'scores.kenlm.perplexity < 400' --where 'decisions.FineWeb == keep' --where 'language == en'
    beam select 'out/annot/documents/*.jsonl.gz' --output out/strict --all-decisions keep

A condition is FIELD OP VALUE with OP one of < <= > >= == !=. FIELD is `scores.<name>` (e.g.
scores.kenlm.perplexity), `decisions.<stage label>`, a document field (language, language_score, dup_count,
cluster_size, weight, repeats, url, source) or `chars` (the text's length). A document passes when every
condition holds; the first that fails is its drop reason (`select:<field>`), one whose field is missing is
dropped as `select:missing:<field>`, and one whose field is not a number where the condition compares numbers
(`"scores": {"k": "abc"}`) as `select:bad_value:<field>`. A field missing from every document of the input (a
misspelt score or stage label) is one error line naming the scores and decisions the input does have, given
before the run writes anything.
With --all-decisions, a document that fails several decisions is dropped under the first failing stage in
pipeline order (`select:decisions.<label>`, as drop mode would have), read from the stats.json of the run
folder the documents are in.
"""
from __future__ import annotations

import argparse
import json
import operator
import re
import sys
from dataclasses import dataclass

from gristmill.counts import is_json_number
from gristmill.errors import UserError
from gristmill.filters.base import Filter, Verdict
from gristmill.pipeline import fs
from gristmill.pipeline.document import Document, key_name

OPS = {"<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne, "<": operator.lt, ">": operator.gt}
FIELDS = ("language", "language_score", "dup_count", "cluster_size", "weight", "repeats", "url", "source", "chars")
_CONDITION = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(<=|>=|==|!=|<|>)\s*(.*?)\s*$")
_MISSING = object()
_BAD = object()  # a field whose container is not of its kind (`"scores": [1, 2]`, a text that is not a string)


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: float | str

    @classmethod
    def parse(cls, text: str) -> "Condition":
        m = _CONDITION.match(text)
        if not m or not m.group(3):
            raise UserError(f"--where {text!r}: expected FIELD OP VALUE, e.g. 'scores.kenlm.perplexity < 400' "
                            f"(OP one of {' '.join(OPS)})")
        field, op, raw = m.groups()
        head = field.split(".", 1)[0]
        if head in ("scores", "decisions"):
            if "." not in field:
                raise UserError(f"--where {text!r}: name the {head[:-1]}, e.g. {head}.{'kenlm.perplexity' if head == 'scores' else 'FineWeb'}")
        elif field not in FIELDS:
            raise UserError(f"--where {text!r}: unknown field {field!r}; use scores.<name>, decisions.<label> or "
                            f"one of {', '.join(FIELDS)}")
        raw = raw.strip("'\"")
        try:
            value: float | str = float(raw)
        except ValueError:
            value = raw
        if op in ("<", "<=", ">", ">=") and isinstance(value, str):
            raise UserError(f"--where {text!r}: {op} needs a number, not {raw!r}")
        return cls(field, op, value)

    def lookup(self, doc: Document):
        """The field's value in `doc`, _MISSING when it has none, or _BAD when it is not of its kind (a number
        compared against something that is not one)."""
        head, _, rest = self.field.partition(".")
        if head in ("scores", "decisions"):
            fields = doc.scores if head == "scores" else doc.decisions
            value = fields.get(rest, _MISSING) if isinstance(fields, dict) else _BAD
        elif self.field == "chars":
            value = len(doc.text) if isinstance(doc.text, str) else _BAD
        else:
            value = getattr(doc, self.field)
            value = _MISSING if value is None else value
        if isinstance(self.value, float) and value is not _MISSING and not is_json_number(value):
            return _BAD
        return value

    def holds(self, value) -> bool:
        return OPS[self.op](value if isinstance(self.value, float) else str(value), self.value)


@dataclass
class SelectFilter(Filter):
    """Keeps a document when every condition holds (and, with all_decisions, every recorded decision equals it).

    A document that fails several decisions is dropped under the first stage, in `decision_order` (the labels
    in pipeline order), that failed it, as the run in drop mode would have. With the order unknown it is
    dropped as `select:decisions`, and each failing decision is counted under failed/decisions.<label>. The
    labels are the documents' own keys: one that is no name is `decisions.malformed` (see key_name)."""

    conditions: tuple[Condition, ...] = ()
    all_decisions: str | None = None
    name: str = "select"
    decision_order: tuple[str, ...] | None = None

    def __post_init__(self):
        self._rank = {label: i for i, label in enumerate(self.decision_order or ())}

    def check(self, doc: Document) -> Verdict:
        values = [c.lookup(doc) for c in self.conditions]
        # Every condition's field missing from this document is counted (missing/<field>), not only the first
        # failing one's (the drop reason), so stats.json tells how many documents lack each field.
        counts = {f"missing/{c.field}": 1 for c, v in zip(self.conditions, values) if v is _MISSING}
        for c, value in zip(self.conditions, values):
            if value is _MISSING:
                return Verdict(False, f"{self.name}:missing:{c.field}", counts=counts)
            if value is _BAD:
                return Verdict(False, f"{self.name}:bad_value:{c.field}", counts=counts)
            if not c.holds(value):
                return Verdict(False, f"{self.name}:{c.field}", counts=counts)
        if self.all_decisions is not None:
            if not isinstance(doc.decisions, dict):
                return Verdict(False, f"{self.name}:bad_value:decisions")
            failing = [label for label, decision in doc.decisions.items() if decision != self.all_decisions]
            if len(failing) == 1 or (failing and all(label in self._rank for label in failing)):
                first = min(failing, key=lambda l: self._rank.get(l, 0))
                return Verdict(False, f"{self.name}:{key_name('decisions', first)}")
            if failing:
                return Verdict(False, f"{self.name}:decisions",
                               counts={f"failed/{key_name('decisions', label)}": 1 for label in sorted(failing)})
        return Verdict(True)


def decision_order(files: list[str]) -> tuple[str, ...] | None:
    """The stage labels of the run that wrote `files`, in pipeline order: its stats.json (next to its documents/
    folder) lists its stages in that order, or, for a `beam select` run, carries the order on as decision_order.
    None when a folder has no readable stats.json, or the files come from runs that disagree."""
    orders = set()
    for folder in sorted({fs.dirname(fs.dirname(f)) for f in files}):
        try:
            stats = json.loads(fs.read_bytes(fs.join(folder, "stats.json")))
            order = stats.get("decision_order") or list(stats["stages"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        if not all(isinstance(label, str) for label in order):
            return None
        orders.add(tuple(order))
    return orders.pop() if len(orders) == 1 else None


def _items(files: list[str]):
    """What parse_document_file gives for each of `files` in turn (Documents, and bad-line reasons); a file's
    unreadable rest is passed over, as the run counts it as one dropped record."""
    from gristmill.pipeline.docio import parse_document_file

    for path in files:
        try:
            yield from parse_document_file(path)
        except (OSError, EOFError):
            continue


def _add_names(doc: Document, scores: set[str], decisions: set[str]) -> None:
    scores.update(doc.scores if isinstance(doc.scores, dict) else ())
    decisions.update(doc.decisions if isinstance(doc.decisions, dict) else ())


def fields_no_document_has(files: list[str], conditions: tuple[Condition, ...]) -> tuple[list[str], list[str], list[str]]:
    """The --where fields that no document of `files` has (a misspelt score or stage label, most often), with the
    score and decision names the documents do have, for the error message. Read before the run, so that such a
    field leaves no output behind: reading stops once every field has been seen (in the first documents, when
    the names are right), and reads the whole input only when one has not. No field is reported when `files`
    hold no document at all (an empty input selects nothing, but is no mistake)."""
    pending = {c.field: c for c in conditions}  # whether lookup finds a field depends on the field alone
    scores, decisions, seen = set(), set(), 0
    for doc in _items(files):
        if not pending:
            break
        if not isinstance(doc, Document):
            continue
        seen += 1
        _add_names(doc, scores, decisions)
        for field in [f for f, c in pending.items() if c.lookup(doc) is not _MISSING]:
            del pending[field]
        if not pending:
            break  # before _items parses another line, or opens the next file
    return (list(pending) if seen else []), sorted(scores), sorted(decisions)


def recorded_names(files: list[str], limit: int = 10_000) -> tuple[list[str], list[str]]:
    """The score and decision names found in (up to `limit` documents of) `files`, for an error message."""
    scores, decisions = set(), set()
    for seen, doc in enumerate(_items(files), 1):
        if isinstance(doc, Document):
            _add_names(doc, scores, decisions)
        if seen >= limit:
            break
    return sorted(scores), sorted(decisions)


EPILOG = """examples:
  beam select 'out/annot/documents/*.jsonl.gz' --output out/picked \\
      --where 'scores.kenlm.perplexity < 400' --where 'decisions.FineWeb == keep'
  beam select 'out/annot/documents/*.jsonl.gz' --output out/strict --all-decisions keep
  beam tokenize encode 'out/picked/documents/*.jsonl.gz' --tokenizer out/annot/tokens/tokenizer.json --output out/picked/tokens
"""


def _cmd_select(args: argparse.Namespace, beam_args: list[str]) -> int:
    from gristmill.pipeline.docio import WriteDocuments, run_on_documents
    from gristmill.pipeline.stages import FilterStage

    conditions = tuple(Condition.parse(w) for w in args.where)
    if not conditions and args.all_decisions is None:
        raise UserError("give at least one --where condition, or --all-decisions")
    if args.shards < 1:
        raise UserError(f"--shards must be >= 1, not {args.shards}")
    files = fs.input_files(args.input, "*.jsonl.gz")  # listed once here for the field check and the stage order
    if files and conditions:
        absent, scores, decisions = fields_no_document_has(files, conditions)
        if absent:
            raise UserError(
                f"--where names {', '.join(absent)}, which no document of the input has; scores found: "
                f"{', '.join('scores.' + n for n in scores) or 'none'}; "
                f"decisions found: {', '.join('decisions.' + n for n in decisions) or 'none'}")
    order = decision_order(files) if args.all_decisions is not None else None
    if order is not None:
        _, labels = recorded_names(files, limit=1000)
        if labels and not set(labels) & set(order):
            # e.g. a stats.json that `beam summarize` wrote over the run's own: its stages are not the run's.
            print(f"warning: the stage order in the input run's stats.json ({', '.join(order)}) names none of the "
                  f"documents' decisions ({', '.join(labels)}); ignoring it", file=sys.stderr)
            order = None
    if args.all_decisions is not None and order is None:
        print("warning: no stats.json beside the input's documents folder gives the order its stages ran in: a "
              "document failing several decisions is dropped as select:decisions (each failing one counted under "
              "failed/ in stats.json)", file=sys.stderr)
    select = SelectFilter(conditions, args.all_decisions, decision_order=order)
    stats, ctx = run_on_documents("select", args, [FilterStage("Select", select),
                                                   WriteDocuments("WriteDocuments", shards=args.shards)],
                                  "Select", beam_args, extra_stats={"decision_order": list(order)} if order else None)
    print(ctx.path("documents"))
    return 0 if stats.get("balanced", True) else 1


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "select", help="keep the documents of an earlier run whose scores and decisions pass conditions",
        description="Apply thresholds to the documents of an earlier run (usually one in annotate mode, whose "
                    "filters score everything and drop nothing) without rerunning extraction or models. A document is "
                    "kept when every --where condition holds; FIELD is scores.<name>, decisions.<stage label>, or "
                    f"one of {', '.join(FIELDS)}. Drops are counted as select:<field> and "
                    "select:missing:<field> in OUTPUT/stats.json; a field that no document of the input has (a "
                    "misspelt name) is an error before anything is written.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="document files of an earlier run, e.g. 'out/annot/documents/*.jsonl.gz'")
    p.add_argument("--output", required=True, help="run folder to write documents/ and stats.json into (not the "
                                                   "one it reads from); its earlier documents are replaced once "
                                                   "the run has written all of its own")
    p.add_argument("--where", action="append", default=[], metavar="'FIELD OP VALUE'",
                   help="a condition (repeatable, all must hold), e.g. 'scores.kenlm.perplexity < 400', "
                        "'decisions.C4 == keep', 'language == en', 'chars >= 500'")
    p.add_argument("--all-decisions", metavar="DECISION",
                   help="also require every recorded filter decision to be DECISION (usually keep)")
    p.add_argument("--shards", type=int, default=4, help="document shards to write (default 4)")
    p.add_argument("--workers", type=int, default=0, help="local workers (default: one per core)")
    p.set_defaults(func=_cmd_select, takes_beam_args=True)
