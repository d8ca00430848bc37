"""Gopher quality and repetition rules (Rae et al. 2021, MassiveText, appendix A1), published thresholds as defaults.

Rules run in the order of the paper; the first failing rule names the drop reason. Every measured quantity is
written as a score, so annotate mode shows how far each document is from each threshold.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from gristmill.errors import UserError
from gristmill.filters.base import Filter, Verdict
from gristmill.filters.text import is_symbol_token, split_words
from gristmill.pipeline.document import Document

STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")


@dataclass
class GopherQualityFilter(Filter):
    """Document-level quality heuristics. Set any threshold to None to switch that rule off."""

    min_doc_words: int | None = 50
    max_doc_words: int | None = 100_000
    min_avg_word_length: float | None = 3
    max_avg_word_length: float | None = 10
    max_symbol_word_ratio: float | None = 0.1  # '#' and ellipsis, each counted against words
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    min_alpha_words_ratio: float | None = 0.8
    min_stop_words: int | None = 2
    stop_words: tuple[str, ...] = STOP_WORDS
    name: str = "gopher_quality"

    def check(self, doc: Document) -> Verdict:
        text = doc.text
        words = split_words(text)
        n_tokens = len(words)
        words_no_symbols = [w for w in words if not is_symbol_token(w)]
        n_words = len(words_no_symbols)
        avg_len = sum(map(len, words_no_symbols)) / n_words if n_words else 0.0
        lines = text.splitlines() or [""]
        per_token = 1 / n_tokens if n_tokens else 0.0
        s = {
            "n_words": float(n_words),
            "avg_word_length": avg_len,
            "hash_ratio": text.count("#") * per_token,
            "ellipsis_ratio": (text.count("...") + text.count("…")) * per_token,
            "bullet_lines_ratio": sum(ln.lstrip().startswith(("•", "-")) for ln in lines) / len(lines),
            "ellipsis_lines_ratio": sum(ln.rstrip().endswith(("...", "…")) for ln in lines) / len(lines),
            "alpha_words_ratio": sum(any(c.isalpha() for c in w) for w in words) * per_token,
            "stop_words": float(len(set(self.stop_words).intersection(words))),
        }
        checks = (
            ("min_doc_words", self.min_doc_words is not None and n_words < self.min_doc_words),
            ("max_doc_words", self.max_doc_words is not None and n_words > self.max_doc_words),
            ("min_avg_word_length", self.min_avg_word_length is not None and avg_len < self.min_avg_word_length),
            ("max_avg_word_length", self.max_avg_word_length is not None and avg_len > self.max_avg_word_length),
            ("hash_ratio", self.max_symbol_word_ratio is not None and s["hash_ratio"] > self.max_symbol_word_ratio),
            ("ellipsis_ratio", self.max_symbol_word_ratio is not None
             and s["ellipsis_ratio"] > self.max_symbol_word_ratio),
            ("bullet_lines_ratio", self.max_bullet_lines_ratio is not None
             and s["bullet_lines_ratio"] > self.max_bullet_lines_ratio),
            ("ellipsis_lines_ratio", self.max_ellipsis_lines_ratio is not None
             and s["ellipsis_lines_ratio"] > self.max_ellipsis_lines_ratio),
            ("alpha_words_ratio", self.min_alpha_words_ratio is not None
             and s["alpha_words_ratio"] < self.min_alpha_words_ratio),
            ("min_stop_words", self.min_stop_words is not None and s["stop_words"] < self.min_stop_words),
        )
        return _verdict(self.name, s, checks)


def _verdict(name: str, scores: dict[str, float], checks) -> Verdict:
    scores = {f"{name}.{k}": v for k, v in scores.items()}
    for rule, failed in checks:
        if failed:
            return Verdict(False, f"{name}:{rule}", scores)
    return Verdict(True, None, scores)


_PARAGRAPH_SPLIT = re.compile(r"\n{2,}")
_LINE_SPLIT = re.compile(r"\n+")


def duplicates(items: list[str]) -> tuple[int, int]:
    """(number of items that repeat an earlier one, characters in those repeats)."""
    seen: set[str] = set()
    n = chars = 0
    for x in items:
        if x in seen:
            n += 1
            chars += len(x)
        else:
            seen.add(x)
    return n, chars


def repeated_ngrams(words: list[str], max_n: int) -> dict[int, dict[int, int]]:
    """For n = 1..max_n: every position whose n-gram occurs more than once, ascending, mapped to the position of
    that n-gram's first occurrence (equal values: equal n-grams).

    Level n extends level n - 1: an n-gram can repeat only where its first n - 1 words repeat, so each level looks
    only at the positions the one before kept, and clean text leaves few after two or three words. An n-gram is
    the pair (first occurrence of its first n - 1 words, first occurrence of its last word): equal pairs are equal
    word sequences, so no n-gram is built as a tuple of words."""
    first_of: dict = {}
    word_first = [first_of.setdefault(w, i) for i, w in enumerate(words)]
    positions, firsts = range(len(words)), word_first
    levels: dict[int, dict[int, int]] = {}
    for n in range(1, max_n + 1):
        if n > 1:
            prev, first_of = levels[n - 1], {}
            last = len(words) - n  # the last position an n-gram starts at
            positions = [i for i in prev if i <= last]
            firsts = [first_of.setdefault((prev[i], word_first[i + n - 1]), i) for i in positions]
        repeated = {f for i, f in zip(positions, firsts) if f != i}  # first occurrences of repeating n-grams
        levels[n] = {i: f for i, f in zip(positions, firsts) if f in repeated}
    return levels


def top_ngram_chars(words: list[str], n: int, repeats: dict[int, int] | None = None) -> int:
    """Characters covered by the occurrences of the most frequent n-gram (words and the spaces between them), each
    character once: occurrences that overlap ("ha ha" in "ha ha ha") share characters. 0 if there is no n-gram.
    `repeats` is repeated_ngrams(words, n)[n], when the caller has it."""
    if not 1 <= n <= len(words):
        return 0
    if repeats is None:
        repeats = repeated_ngrams(words, n)[n]
    # The most frequent, the earliest first occurrence on a tie; without repeats, the first n-gram, once.
    top, count = Counter(repeats.values()).most_common(1)[0] if repeats else (0, 1)
    gram = words[top:top + n]
    # Occurrences s < n words apart overlap only if the gram's last n - s words are its first n - s: without such
    # a self-overlap (the common case: "of the"), none overlap and the occurrences need not be found.
    if count == 1 or not any(gram[s:] == gram[:n - s] for s in range(1, n)):
        return (sum(map(len, gram)) + n - 1) * count
    starts = [i for i, f in repeats.items() if f == top]
    if all(b - a >= n for a, b in zip(starts, starts[1:])):  # no two occurrences overlap
        return (sum(map(len, gram)) + n - 1) * count
    covered = 0
    end = -1  # one past the last word covered so far
    for i in starts:
        first = max(i, end)  # words before `end` are counted already, and so is the space before `end`
        covered += sum(len(w) for w in words[first:i + n]) + (i + n - 1 - first) + (end > i)
        end = i + n
    return covered


def duplicate_ngram_chars(words: list[str], n: int, repeats: dict[int, int] | None = None) -> int:
    """Characters in n-grams that repeat an earlier n-gram, never counting a word twice (skip past a repeat).
    `repeats` is repeated_ngrams(words, n)[n], when the caller has it.

    The rule scans left to right, remembering every n-gram it stops at and jumping past one it has seen. Only the
    positions in `repeats` can hold one it has seen, so only they are looked at: at a later occurrence, the n-gram
    has been seen if the scan stopped at its first occurrence (did not jump over it) or at an earlier repeat."""
    if repeats is None:
        repeats = repeated_ngrams(words, n).get(n, {})
    chars = end = 0  # `end`: the scan's next stop; positions before it were stopped at or jumped over
    jumped: set[int] = set()
    seen_late: set[int] = set()  # n-grams (by first occurrence) whose first occurrence was jumped over
    for i, first in repeats.items():
        if i < end or i == first:
            continue
        if first not in jumped or first in seen_late:
            chars += sum(map(len, words[i:i + n]))
            jumped.update(range(i + 1, i + n))
            end = i + n
        else:
            seen_late.add(first)
    return chars


@dataclass
class GopherRepetitionFilter(Filter):
    """Repetition heuristics: duplicate lines/paragraphs, top n-grams, duplicated n-grams (fractions of characters)."""

    dup_line_frac: float | None = 0.3
    dup_para_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    dup_para_char_frac: float | None = 0.2
    # (n, threshold) pairs; a threshold of None scores that n and checks nothing, as None does for the others
    top_n_grams: tuple[tuple[int, float | None], ...] = ((2, 0.2), (3, 0.18), (4, 0.16))
    dup_n_grams: tuple[tuple[int, float | None], ...] = ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11),
                                                         (10, 0.10))
    name: str = "gopher_repetition"

    def __post_init__(self):
        for attr in ("top_n_grams", "dup_n_grams"):
            for n, _ in getattr(self, attr):
                if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                    raise UserError(f"gopher_repetition: {attr} sizes must be whole numbers of at least 1, not {n!r}")

    def check(self, doc: Document) -> Verdict:
        text = doc.text
        if not text:
            return Verdict(False, f"{self.name}:empty")
        n_chars = len(text)
        paragraphs = _PARAGRAPH_SPLIT.split(text.strip())
        para_dups, para_dup_chars = duplicates(paragraphs)
        lines = _LINE_SPLIT.split(text)
        line_dups, line_dup_chars = duplicates(lines)
        s = {
            "dup_para_frac": para_dups / len(paragraphs),
            "dup_para_char_frac": para_dup_chars / n_chars,
            "dup_line_frac": line_dups / len(lines),
            "dup_line_char_frac": line_dup_chars / n_chars,
        }
        checks = [
            ("dup_para_frac", self.dup_para_frac is not None and s["dup_para_frac"] > self.dup_para_frac),
            ("dup_para_char_frac", self.dup_para_char_frac is not None
             and s["dup_para_char_frac"] > self.dup_para_char_frac),
            ("dup_line_frac", self.dup_line_frac is not None and s["dup_line_frac"] > self.dup_line_frac),
            ("dup_line_char_frac", self.dup_line_char_frac is not None
             and s["dup_line_char_frac"] > self.dup_line_char_frac),
        ]
        words = split_words(text)
        repeats = repeated_ngrams(words, max((n for n, _ in self.top_n_grams + self.dup_n_grams), default=0))
        for n, frac in self.top_n_grams:
            s[f"top_{n}_gram_frac"] = top_ngram_chars(words, n, repeats.get(n, {})) / n_chars
            checks.append((f"top_{n}_gram_frac", frac is not None and s[f"top_{n}_gram_frac"] > frac))
        for n, frac in self.dup_n_grams:
            s[f"dup_{n}_gram_frac"] = duplicate_ngram_chars(words, n, repeats.get(n, {})) / n_chars
            checks.append((f"dup_{n}_gram_frac", frac is not None and s[f"dup_{n}_gram_frac"] > frac))
        return _verdict(self.name, s, checks)
