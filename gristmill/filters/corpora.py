"""Offline training and calibration text: reference prose (stdlib docstrings) and generated crawl-like pages.

Both come from gristmill.pipeline.textgen, so every default model is reproducible from the installed packages
alone. Text files given by users are read as documents: .jsonl/.jsonl.gz by their "text" field, other files
split on blank lines.
"""
from __future__ import annotations

import gzip
import json
import random
import zlib
from pathlib import Path
from typing import Iterator

from gristmill.errors import UserError, require_file
from gristmill.pipeline import textgen

CRAWL_LANGUAGES = ("fr", "de", "es", "ru", "zh")


def reference_documents() -> list[str]:
    """English prose: every docstring paragraph of textgen's module list, one per document."""
    return list(textgen.prose_paragraphs())


def crawl_page(rng: random.Random) -> str:
    """One page of random crawl text: an article wrapped in site chrome, spam, pure boilerplate, or another language."""
    kind = rng.choices(("article", "spam", "boilerplate", "foreign"), weights=(5, 2, 2, 1))[0]
    if kind == "spam":
        return textgen.spam_text(rng)
    if kind == "boilerplate":
        return "\n".join(textgen.boilerplate_lines(rng))
    if kind == "foreign":
        return textgen.language_text(rng.choice(CRAWL_LANGUAGES), rng, rng.randint(60, 300))
    chrome = textgen.boilerplate_lines(rng)
    cut = rng.randint(0, len(chrome))
    body = textgen.english_text(rng, rng.randint(40, 400))
    return "\n".join(chrome[:cut] + [body] + chrome[cut:])


def crawl_pages(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [crawl_page(rng) for _ in range(n)]


def english_pages(n: int, seed: int) -> list[str]:
    """English pages of the kind that reach perplexity scoring (after language ID): articles, some with chrome."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        body = textgen.english_text(rng, rng.randint(40, 400))
        if rng.random() < 0.5:
            body = "\n".join(textgen.boilerplate_lines(rng)[: rng.randint(2, 12)] + [body])
        elif rng.random() < 0.3:
            body = textgen.spam_text(rng)
        out.append(body)
    return out


def read_texts(paths: list[str]) -> Iterator[str]:
    """Documents from text files (blank-line separated) or JSONL(.gz) files with a "text" field. A line that is
    not such an object, or a file that cannot be read to its end (a truncated or corrupt gzip), is one UserError
    naming the file (and line)."""
    if not paths:
        raise UserError("no input files given")
    for p in paths:
        path = Path(p)
        require_file(path, "input file")
        try:
            yield from _file_texts(path)
        except (OSError, EOFError, zlib.error) as e:
            detail = (str(e).strip().splitlines() or [""])[0][:200]
            raise UserError(f"{path}: unreadable ({type(e).__name__}{': ' + detail if detail else ''})") from None


def _file_texts(path: Path) -> Iterator[str]:
    name = path.name
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        if name.endswith((".jsonl", ".jsonl.gz", ".json.gz")):
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    raise UserError(f"{path}:{i}: not JSON") from None
                if not isinstance(record, dict) or "text" not in record:
                    raise UserError(f"{path}:{i}: not a JSON object with a \"text\" field")
                if not isinstance(record["text"], str):
                    raise UserError(f"{path}:{i}: \"text\" is {type(record['text']).__name__}, not a string")
                yield record["text"]
        else:
            for block in f.read().split("\n\n"):
                if block.strip():
                    yield block.strip()
