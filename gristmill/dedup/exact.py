"""Exact dedup core: text normalization and the content hash that exact copies share."""
from __future__ import annotations

import hashlib
import re
import unicodedata

_WS = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """NFKC, lower case, whitespace runs collapsed to one space, ends stripped.

    Two pages that differ only in case, Unicode compatibility forms or layout whitespace count as copies.
    """
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def text_key(text: str) -> str:
    """128-bit hex hash of the normalized text: the grouping key for exact dedup."""
    return hashlib.blake2b(normalize_text(text).encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def word_count(text: str) -> int:
    """Whitespace tokens: the `tokens` figure the dedup stages report before and after."""
    return len(text.split())
