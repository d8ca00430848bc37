"""A small deterministic multilingual corpus for the tokenize tests (imported by conftest and tests)."""
from __future__ import annotations

import random

from gristmill.pipeline.document import Document

# A long word that the test tokenizer learns as one token, so a 50 MB document encodes quickly.
LONG_WORD = " supercalifragilisticexpialidocious"

WORDS = {
    "en": "the quick brown fox jumps over lazy dog data pipeline token shard".split(),
    "de": "Straße größer Übung Mädchen über schön".split(),
    "fr": "données naïve élève garçon être déjà".split(),
    "ru": "привет мир данные токен быстрый".split(),
    "ja": ["日本語", "テキスト", "東京", "データ", "ありがとう"],
    "zh": ["中文", "数据", "分词器", "你好"],
    "ar": ["مرحبا", "بالعالم", "بيانات"],
    "hi": ["नमस्ते", "दुनिया", "डेटा"],
    "emoji": ["🙂", "👩‍💻", "🇫🇷", "e\u0301", "a\u200db"],
}
# Text a tokenizer must survive byte for byte.
HARD_TEXTS = [
    "",
    "plain ascii",
    "tabs\tand\r\nwindows newlines\n\n\n  indented",
    "control \x00\x01\x07\x1b[31m\x7f chars",
    "literal specials <|eos|><|bos|><|pad|> in text",
    "".join(w for ws in WORDS.values() for w in ws),
    " leading space and trailing space ",
    "\ufeffbom and \u2028 line separator \u00a0 nbsp",
    "👩‍👩‍👧‍👦 family, 🏳️‍🌈 flag, \U0010fffd private use",
]


def make_text(rng: random.Random, n_words: int) -> str:
    out = []
    for _ in range(n_words):
        lang = rng.choice(list(WORDS))
        out.append(rng.choice(WORDS[lang]))
        r = rng.random()
        out.append("\n" if r < 0.05 else ". " if r < 0.15 else " ")
    return "".join(out)


def make_docs(n: int = 800, seed: int = 0) -> list[Document]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        text = make_text(rng, rng.randint(0, 120)) if i % 50 else ""  # every 50th document is empty
        if i % 7 == 0:
            text += LONG_WORD * 3
        docs.append(Document(id=f"doc{i:05d}", url=f"https://example.org/{i}", text=text,
                             repeats=rng.choice([1, 1, 1, 2, 3])))
    return docs
