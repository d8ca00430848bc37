"""FineWeb's own quality rules (Penedo et al. 2024): line punctuation, short lines, duplicated lines, list-likeness."""
from __future__ import annotations

from dataclasses import dataclass

from gristmill.filters.base import Filter, Verdict
from gristmill.filters.gopher import duplicates
from gristmill.filters.text import TERMINAL_PUNCTUATION, split_words
from gristmill.pipeline.document import Document

_TERMINALS = tuple(sorted(TERMINAL_PUNCTUATION))


@dataclass
class FineWebQualityFilter(Filter):
    """Published FineWeb thresholds as defaults; rules run in this order and the first failure names the reason.
    A threshold of None switches its rule off, as for the Gopher and C4 rules."""

    line_punct_thr: float | None = 0.12  # min fraction of lines ending in a sentence terminal
    line_punct_exclude_zero: bool = False
    short_line_thr: float | None = 0.67  # max fraction of lines with <= short_line_length characters
    short_line_length: int = 30
    char_duplicates_ratio: float | None = 0.01  # max fraction of characters in duplicated lines
    new_line_ratio: float | None = 0.3  # max newlines per word
    stop_chars: tuple[str, ...] | None = None  # None: datatrove's TERMINAL_PUNCTUATION
    name: str = "fineweb"

    def check(self, doc: Document) -> Verdict:
        text = doc.text
        stop_chars = tuple(self.stop_chars) if self.stop_chars is not None else _TERMINALS
        lines = [ln for ln in text.split("\n") if ln.strip()]
        if not lines:
            return Verdict(False, f"{self.name}:empty")
        n_words = len(split_words(text))
        s = {
            "line_punct_ratio": sum(ln.endswith(stop_chars) for ln in lines) / len(lines),
            "short_line_ratio": sum(len(ln) <= self.short_line_length for ln in lines) / len(lines),
            "char_dup_ratio": duplicates(lines)[1] / max(1, len(text) - text.count("\n")),
            "list_ratio": text.count("\n") / max(1, n_words),
        }
        punct = s["line_punct_ratio"]
        checks = (
            ("line_punct_ratio", self.line_punct_thr is not None and punct < self.line_punct_thr
             and not (punct == 0 and self.line_punct_exclude_zero)),
            ("short_line_ratio", self.short_line_thr is not None and s["short_line_ratio"] > self.short_line_thr),
            ("char_dup_ratio", self.char_duplicates_ratio is not None
             and s["char_dup_ratio"] > self.char_duplicates_ratio),
            ("list_ratio", self.new_line_ratio is not None and s["list_ratio"] > self.new_line_ratio),
        )
        scores = {f"{self.name}.{k}": v for k, v in s.items()}
        for rule, failed in checks:
            if failed:
                return Verdict(False, f"{self.name}:{rule}", scores)
        return Verdict(True, None, scores)
