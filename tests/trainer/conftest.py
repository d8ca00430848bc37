"""Fixtures for the trainer tests: a tiny config, and token datasets + a mixture written by the real writers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gristmill.mixtures import build as mixbuild
from gristmill.mixtures.spec import spec_from_dict
from gristmill.tokenize.shards import ShardWriter, build_manifest, shard_name, write_manifest

VOCAB = 256
SEQ_LEN = 32
# the configuration every test trains: 5 steps of the tiny preset on a global batch of 8 sequences
TINY = {"model": "tiny", "steps": 5, "batch_size": 8, "micro_batch_size": 4, "precision": "fp32", "lr": 3e-3,
        "warmup_steps": 2, "data": {"synthetic": {"vocab_size": VOCAB, "seq_len": SEQ_LEN}}}


def write_token_dataset(folder: Path, name: str, domain: str, rows: int, val_rows: int, seed: int,
                        pad_fraction: float = 0.0) -> Path:
    """Arithmetic progressions mod VOCAB (learnable), `n_bytes` = 3 bytes per token. With pad_fraction, that
    share of the rows ends early, as a bucket's last row does: EOS at a random position, then PAD (id 0)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n in (("train", rows), ("validation", val_rows)):
        w = ShardWriter(folder / shard_name(split, 0), SEQ_LEN, VOCAB, pad_id=0)
        for _ in range(n):
            start, stride = rng.integers(VOCAB), rng.integers(1, 5)
            # ids 0-2 stay free, as a tokenizer keeps them for PAD, BOS and EOS
            ids = 3 + (start + stride * np.arange(SEQ_LEN)) % (VOCAB - 3)
            if pad_fraction and rng.random() < pad_fraction:
                cut = int(rng.integers(2, SEQ_LEN - 2))
                ids[cut], ids[cut + 1:] = 2, 0
            w.write_row(ids, [0], 3 * int(np.count_nonzero(ids)))
        splits[split] = [w.close()]
    (folder / "tokenizer.json").write_text("{}", encoding="utf-8")
    tok = {"path": "tokenizer.json", "sha256": "ab" * 32, "vocab_size": VOCAB, "bos_id": 1, "eos_id": 2, "pad_id": 0}
    return write_manifest(folder, build_manifest(source=name, domain=domain, seq_len=SEQ_LEN, tokenizer=tok,
                                                 recipe_sha256="00" * 32, seed=seed, splits=splits))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine the thread pool's
    spin-waits make them 10-50x slower; restore the setting for other areas' tests."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_settings() -> dict:
    return dict(TINY)


@pytest.fixture
def tiny(tmp_path):
    """make(name, **overrides) -> a TrainConfig of TINY writing to tmp_path/name."""
    from gristmill.trainer.config import TrainConfig

    return lambda name="run", **kw: TrainConfig(**{**TINY, "out_dir": str(tmp_path / name), **kw})


def _web_wiki_mixture(root: Path, pad_fraction: float = 0.0) -> Path:
    write_token_dataset(root / "web", "web", "web", 200, 16, seed=0, pad_fraction=pad_fraction)
    write_token_dataset(root / "wiki", "wiki", "reference", 80, 16, seed=1, pad_fraction=pad_fraction)
    spec = {"sources": [{"name": "web", "manifest": str(root / "web")}, {"name": "wiki", "manifest": str(root / "wiki")}],
            "budget_tokens": 200 * SEQ_LEN, "seed": 3,
            "weighting": {"method": "explicit", "proportions": {"web": 0.7, "wiki": 0.3}}}
    path = root / "mixture.json"
    mixbuild.write_mixture(mixbuild.build(spec_from_dict(spec, root), path), path)
    return path


@pytest.fixture(scope="session")
def mixture(tmp_path_factory) -> Path:
    return _web_wiki_mixture(tmp_path_factory.mktemp("mix"))


@pytest.fixture(scope="session")
def pad_mixture(tmp_path_factory) -> Path:
    """As `mixture`, but 60% of the rows end in a PAD tail of varying length, so micro-batches hold different
    numbers of scored targets."""
    return _web_wiki_mixture(tmp_path_factory.mktemp("padmix"), pad_fraction=0.6)
