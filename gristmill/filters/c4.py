"""C4 cleaning rules (Raffel et al. 2020, section 2.2; TF Datasets c4_utils), published settings as defaults.

Line rules remove lines (drop mode rewrites the text); document rules drop the whole page and name the rule.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from gristmill.filters.base import Filter, Verdict
from gristmill.filters.text import count_sentences
from gristmill.pipeline.document import Document

CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
END_PUNCTUATION = (".", "?", "!", '"', "'")
POLICY_PHRASES = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


@dataclass
class C4QualityFilter(Filter):
    """Keeps lines ending in terminal punctuation with >= 3 words; drops pages with < 5 sentences left,
    'lorem ipsum' or a curly bracket. Lines mentioning javascript or cookie/terms policies are removed."""

    remove_citations: bool = True
    filter_no_terminal_punct: bool = True
    min_num_sentences: int | None = 5
    min_words_per_line: int | None = 3
    max_word_length: int | None = 1000
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True
    name: str = "c4"

    def check(self, doc: Document) -> Verdict:
        kept: list[str] = []
        removed = {"too_long_word": 0, "no_terminal_punct": 0, "too_few_words": 0, "javascript": 0, "policy": 0}
        n_sentences = 0
        lines = doc.text.splitlines()
        for line in lines:
            line = line.strip()
            words = line.split()
            if self.max_word_length is not None and any(len(w) > self.max_word_length for w in words):
                removed["too_long_word"] += 1
                continue
            if self.remove_citations:
                line = CITATION.sub("", line)
            if self.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith("...")):
                removed["no_terminal_punct"] += 1
                continue
            # C4 counts the words of the line as kept, without its citation marks (c4_utils re-splits the line)
            if self.min_words_per_line is not None and len(line.split()) < self.min_words_per_line:
                removed["too_few_words"] += 1
                continue
            lower = line.lower()
            if self.filter_lorem_ipsum and "lorem ipsum" in lower:
                return self._drop("lorem_ipsum", lines, kept, n_sentences)
            if self.filter_javascript and "javascript" in lower:
                removed["javascript"] += 1
                continue
            if self.filter_curly_bracket and "{" in line:
                return self._drop("curly_bracket", lines, kept, n_sentences)
            if self.filter_policy and any(p in lower for p in POLICY_PHRASES):
                removed["policy"] += 1
                continue
            n_sentences += count_sentences(line)
            kept.append(line)
        scores = self._scores(lines, kept, n_sentences)
        if self.min_num_sentences is not None and n_sentences < self.min_num_sentences:
            return Verdict(False, f"{self.name}:min_num_sentences", scores)
        # Lines removed from a kept page, per rule, as datatrove's C4 filter counts them (in annotate mode: the
        # lines drop mode removes).
        counts = {f"lines_removed/{rule}": n for rule, n in removed.items() if n}
        return Verdict(True, None, scores, text="\n".join(kept).strip(), counts=counts)

    def _scores(self, lines: list[str], kept: list[str], n_sentences: int) -> dict[str, float]:
        return {f"{self.name}.sentences": float(n_sentences),
                f"{self.name}.kept_lines_frac": len(kept) / len(lines) if lines else 0.0}

    def _drop(self, rule: str, lines: list[str], kept: list[str], n_sentences: int) -> Verdict:
        return Verdict(False, f"{self.name}:{rule}", self._scores(lines, kept, n_sentences))
