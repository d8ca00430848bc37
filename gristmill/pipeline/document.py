"""The Document record that flows through every pipeline stage, and its JSON form."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from gristmill.counts import is_json_number


def stable_id(*parts: str) -> str:
    """A 20-hex-digit id that depends only on its parts, so re-runs give the same ids."""
    h = hashlib.blake2b(digest_size=10)
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


# A score's name or a decision's stage label, as a counter or drop reason names it (`bad_field:scores.<name>`).
# The keys are the documents' own, any string at all (megabytes long, control characters), so one that is no
# reasonable name adds one name, `<group>.malformed`, not one name per key. A stage label is a Beam label, which
# may hold spaces and any printable character ('Gopher quality', 'Qualität'), so those are names.
KEY_NAME_MAX = 64


def key_name(group: str, key) -> str:
    """`scores.kenlm.perplexity`; `scores.malformed` for a key that is no name: empty, over KEY_NAME_MAX
    characters, with a character that is not printable (str.isprintable: control characters, line breaks), or
    with white space at either end."""
    named = isinstance(key, str) and 0 < len(key) <= KEY_NAME_MAX and key.isprintable() and key == key.strip()
    return f"{group}.{key}" if named else f"{group}.malformed"


@dataclass
class Document:
    """One extracted web page plus everything later stages learn about it.

    id        stable hash of the WARC record id and URL
    url       target URI of the WARC response record
    text      extracted plain text (UTF-8)
    warc      WARC/HTTP metadata: record_id, date, file, offset, content_type, charset, status
    language, language_score   set by language ID
    scores    numeric scores written by filters (annotate or drop mode), keyed "<filter>.<score>"
    decisions filter label -> "keep" or the drop reason it would have given (annotate mode)
    dup_count exact copies of this text seen (1 = unique), set by exact dedup
    cluster_id, cluster_size   near-duplicate cluster, set by MinHash dedup (cluster_size counts copies; a
              representative, cluster_id == id, of an earlier run keeps standing for them when dedup runs again)
    same_id_member  true on a member of a cluster, not its representative, whose id is the cluster's id (another
              version or copy of the representative's page under its id, left in by MinHash dedup keep="all"), so
              cluster_id == id alone does not make it a representative; written to JSON only when true
    weight    log-count resampling weight (1.0 = no resampling)
    repeats   whole number of times the tokenizer emits this document (stochastic rounding of weight)
    source    name of the recipe/source that produced it
    meta      anything else a stage wants to keep
    """

    id: str
    url: str
    text: str
    warc: dict[str, Any] = field(default_factory=dict)
    language: str | None = None
    language_score: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    decisions: dict[str, str] = field(default_factory=dict)
    dup_count: int = 1
    cluster_id: str | None = None
    cluster_size: int = 1
    same_id_member: bool = False
    weight: float = 1.0
    repeats: int = 1
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not self.same_id_member:
            # Needed only where ids repeat: left out otherwise, so such documents keep the bytes they had before.
            del d["same_id_member"]
        return d

    def to_json(self) -> str:
        # sort_keys and fixed separators: the same document always serialises to the same bytes.
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Document":
        """A Document from its JSON form; unknown keys are ignored. A missing id, url or text, or a field of the
        wrong type (`"text": null`, `"repeats": "2"` or `2.5`, a negative count) raises TypeError or ValueError,
        so readers count the line as bad instead of a later stage failing on it."""
        if not isinstance(d, dict):
            raise TypeError(f"a document is a JSON object, not {type(d).__name__}")
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for name, value in known.items():
            _check_field(name, value)
        return cls(**known)

    @classmethod
    def from_json(cls, line: str | bytes) -> "Document":
        return cls.from_dict(json.loads(line))


_STR = frozenset({"id", "url", "text", "source"})
_OPTIONAL_STR = frozenset({"language", "cluster_id"})
_COUNT = frozenset({"dup_count", "cluster_size", "repeats"})  # whole numbers >= 0
_NUMBER = frozenset({"weight"})
_OPTIONAL_NUMBER = frozenset({"language_score"})
_DICT = frozenset({"warc", "scores", "decisions", "meta"})
_BOOL = frozenset({"same_id_member"})


def _check_field(name: str, value: Any) -> None:
    """The declared type of a Document field, checked on values read from JSON (bool is not a number here)."""
    if value is None and (name in _OPTIONAL_STR or name in _OPTIONAL_NUMBER):
        return
    if name in _STR or name in _OPTIONAL_STR:
        ok = isinstance(value, str)
    elif name in _COUNT:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and value < 0:
            raise ValueError(f"document field {name} must be >= 0, not {value}")
    elif name in _NUMBER or name in _OPTIONAL_NUMBER:
        ok = is_json_number(value)
    elif name in _BOOL:
        ok = isinstance(value, bool)
    else:
        ok = isinstance(value, dict)
    if not ok:
        raise TypeError(f"document field {name} must be {_EXPECTED[name]}, not {type(value).__name__}")


_EXPECTED = {
    **{n: "a string" for n in _STR},
    **{n: "a string or null" for n in _OPTIONAL_STR},
    **{n: "a whole number" for n in _COUNT},
    **{n: "a number" for n in _NUMBER},
    **{n: "a number or null" for n in _OPTIONAL_NUMBER},
    **{n: "an object" for n in _DICT},
    **{n: "true or false" for n in _BOOL},
}
assert set(_EXPECTED) == set(Document.__dataclass_fields__)
