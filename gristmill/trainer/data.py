"""Where training batches come from: the mixture loader, or a synthetic source for tests and benchmarks.

A source has `seq_len`, `vocab_size`, `next_batch()` -> int64 tensor [micro_batch, seq_len] for this rank, and
`state_dict()` / `load_state_dict()` (which returns a draw change it was allowed to accept, else None).
Both sources use the same global order: call t's global batch is samples [t*B*w, (t+1)*B*w) and rank r takes
[r*B, (r+1)*B), so the union over ranks (and over the micro-batches of a step) is independent of the world
size.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from gristmill.errors import UserError


class DataSource(Protocol):
    seq_len: int
    vocab_size: int
    pad_id: int | None  # targets equal to it are not learned (None: the data has no PAD)
    eos_id: int | None  # ends each packed document (for document masking; None: no documents)

    def next_batch(self) -> torch.Tensor: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict, *, allow_draw_change: bool = False) -> str | None: ...


class SyntheticSource:
    """Arithmetic progressions mod vocab_size with a random start and stride per sequence: learnable in
    context, and sequence g is a pure function of (seed, g)."""

    def __init__(self, vocab_size: int, seq_len: int, batch_size: int, *, rank: int = 0, world_size: int = 1,
                 seed: int = 0):
        if vocab_size < 2 or seq_len < 2:
            raise UserError("synthetic data needs vocab_size >= 2 and seq_len >= 2")
        self.vocab_size, self.seq_len, self.batch_size = vocab_size, seq_len, batch_size
        self.pad_id = self.eos_id = None
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.sample = 0

    def rows(self, start: int, count: int) -> torch.Tensor:
        starts = np.empty(count, dtype=np.int64)
        strides = np.empty(count, dtype=np.int64)
        for j in range(count):
            r = np.random.Generator(np.random.Philox(key=[self.seed, start + j]))  # keyed by the global index
            starts[j], strides[j] = r.integers(self.vocab_size), r.integers(1, 8)
        pos = np.arange(self.seq_len, dtype=np.int64)
        return torch.from_numpy((starts[:, None] + strides[:, None] * pos) % self.vocab_size)

    def next_batch(self) -> torch.Tensor:
        lo = self.sample + self.rank * self.batch_size
        self.sample += self.batch_size * self.world_size
        return self.rows(lo, self.batch_size)

    def state_dict(self) -> dict:
        return {"format": "gristmill.synthetic-position/1", "seed": self.seed, "sample": self.sample}

    def load_state_dict(self, state: dict, *, allow_draw_change: bool = False) -> str | None:
        if state.get("seed") != self.seed:
            raise UserError(f"data position was saved with seed {state.get('seed')}, this run has seed {self.seed}")
        self.sample = int(state["sample"])
        return None  # one draw rule only


class MixtureSource:
    """The mixture loader (gristmill.mixtures.loader) behind the DataSource interface."""

    def __init__(self, manifest: str, batch_size: int, *, rank: int = 0, world_size: int = 1,
                 batches: int | None = None):
        """batches: the next_batch calls the run makes. The loader's own default length, the budget's batches,
        is no limit here (the run reads past the budget), so a budget smaller than one batch is no error either."""
        from gristmill.mixtures.loader import MixtureLoader

        self.loader = MixtureLoader(manifest, batch_size, rank=rank, world_size=world_size, steps=batches)
        self.seq_len = self.loader.seq_len
        self.vocab_size = self.loader.vocab_size
        self.pad_id = self.loader.manifest["tokenizer"].get("pad_id")
        self.eos_id = self.loader.manifest["tokenizer"].get("eos_id")

    def next_batch(self) -> torch.Tensor:
        return self.loader.next_batch()

    def state_dict(self) -> dict:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict, *, allow_draw_change: bool = False) -> str | None:
        return self.loader.load_state_dict(state, allow_draw_change=allow_draw_change)


def open_source(data: dict, batch_size: int, *, rank: int, world_size: int, seed: int,
                batches: int | None = None) -> DataSource:
    if "mixture" in data:
        return MixtureSource(data["mixture"], batch_size, rank=rank, world_size=world_size, batches=batches)
    syn = data["synthetic"] or {}
    return SyntheticSource(int(syn.get("vocab_size", 256)), int(syn.get("seq_len", 32)), batch_size,
                           rank=rank, world_size=world_size, seed=int(syn.get("seed", seed)))


def token_dataset_batches(dataset, batch_size: int, *, rank: int = 0, world_size: int = 1, limit: int | None = None):
    """(ids [B, L] int64, n_bytes [B] int64) batches over a TokenDataset split, for `evaluate`.
    Each rank reads an equal contiguous block of floor(n / world_size) rows (at most `limit` rows overall)."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    per = n // world_size
    for a in range(rank * per, (rank + 1) * per, batch_size):
        idx = range(a, min(a + batch_size, (rank + 1) * per))
        rows = np.stack([np.asarray(dataset[i], dtype=np.int64) for i in idx])
        dataset.check_ids(rows, idx)
        ids = torch.from_numpy(rows)
        yield ids, torch.tensor([dataset.n_bytes(i) for i in idx], dtype=torch.int64)
