"""Fixtures for the mixture tests: small synthetic token datasets written with the real shard writer; and the
helpers in this folder made importable (pytest runs with --import-mode=importlib)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from gristmill.tokenize.shards import ShardWriter, build_manifest, shard_name, write_manifest

sys.path.insert(0, str(Path(__file__).parent))

SEQ_LEN = 8
VOCAB = 1000
FAKE_TOKENIZER_SHA = "ab" * 32


def make_token_dataset(
    folder: Path,
    name: str,
    domain: str,
    train_rows: list[int],
    val_rows: int = 0,
    *,
    seq_len: int = SEQ_LEN,
    tokenizer_sha: str = FAKE_TOKENIZER_SHA,
    seed: int = 0,
    pad_from: int | None = None,
) -> Path:
    """A token dataset with one train shard per entry of `train_rows` (rows each) and one validation shard.

    Row j of a split holds (seed + 1, j + 1) in its first two ids, so a test can tell exactly which row
    a loader returned; the rest are random non-pad ids, so every row counts seq_len tokens. With pad_from,
    every train row is PAD (0) from that position on, so it counts pad_from tokens.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    splits: dict[str, list] = {"train": [], "validation": []}
    row = 0
    for k, rows in enumerate(train_rows):
        w = ShardWriter(folder / shard_name("train", k), seq_len, VOCAB, pad_id=0)
        for _ in range(rows):
            ids = rng.integers(1, VOCAB, size=seq_len)
            ids[0], ids[1] = seed + 1, row + 1  # row < VOCAB - 1 in every test
            if pad_from is not None:
                ids[pad_from:] = 0
            w.write_row(ids, [0], 4 * seq_len)
            row += 1
        splits["train"].append(w.close())
    if val_rows:
        w = ShardWriter(folder / shard_name("validation", 0), seq_len, VOCAB, pad_id=0)
        for j in range(val_rows):
            ids = rng.integers(1, VOCAB, size=seq_len)
            ids[0], ids[1] = seed + 1, j + 1
            w.write_row(ids, [0], 4 * seq_len)
        splits["validation"].append(w.close())
    tok = {"path": "tokenizer.json", "sha256": tokenizer_sha, "vocab_size": VOCAB, "bos_id": 1, "eos_id": 2, "pad_id": 0}
    (folder / "tokenizer.json").write_text("{}", encoding="utf-8")
    manifest = build_manifest(
        source=name, domain=domain, seq_len=seq_len, tokenizer=tok, recipe_sha256="00" * 32, seed=seed, splits=splits
    )
    return write_manifest(folder, manifest)


@pytest.fixture(scope="session")
def datasets(tmp_path_factory) -> Path:
    """Three sources in two domains: web (2 shards, 300 rows), news (120 rows), wiki (40 rows)."""
    root = tmp_path_factory.mktemp("tokens")
    make_token_dataset(root / "web", "web", "web", [200, 100], 30, seed=0)
    make_token_dataset(root / "news", "news", "web", [120], 20, seed=1)
    make_token_dataset(root / "wiki", "wiki", "reference", [40], 10, seed=2)
    return root


@pytest.fixture
def spec_dict(datasets) -> dict:
    return {
        "sources": [
            {"name": "web", "manifest": str(datasets / "web"), "domain": "web"},
            {"name": "news", "manifest": str(datasets / "news")},
            {"name": "wiki", "manifest": str(datasets / "wiki" / "manifest.json"), "domain": "reference"},
        ],
        "budget_tokens": 4000,
        "seed": 7,
        "weighting": {"method": "explicit", "proportions": {"web": 0.5, "news": 0.3, "wiki": 0.2}},
    }


@pytest.fixture
def make_dataset():
    return make_token_dataset


@pytest.fixture
def spec_file(tmp_path, spec_dict):
    """Writes a spec (the default one, or the dict given) to a YAML file and returns its path."""

    def write(spec: dict | None = None, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(spec if spec is not None else spec_dict, sort_keys=False), encoding="utf-8")
        return path

    return write
