"""Shared fixtures: a small multilingual corpus and a byte-level BPE tokenizer trained on it."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: make tok_corpus importable

from tok_corpus import HARD_TEXTS, LONG_WORD, make_docs  # noqa: E402

from gristmill.pipeline.document import Document  # noqa: E402
from gristmill.tokenize.train import save_tokenizer, train_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def docs() -> list[Document]:
    return make_docs()


@pytest.fixture(scope="session")
def tokenizer_path(tmp_path_factory, docs) -> str:
    texts = [d.text for d in docs] + HARD_TEXTS + [LONG_WORD * 50] * 20
    tok = train_tokenizer(texts, vocab_size=1200)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    save_tokenizer(tok, path)
    return str(path)
