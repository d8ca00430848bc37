"""Draws training sequences by a mixture manifest: deterministic for a seed, resumable exactly, and split
across data-parallel ranks without overlap; plus a validation iterator per domain.

Global sample g (counting over all ranks) comes from source searchsorted(cumsum(q), u_g), where u_g is a
counter-based uniform (SplitMix64 of the seed key and g), so the source sequence is a pure function of
(seed, g). q are the row weights (build.row_weights): the proportions, which count non-PAD tokens, over each
source's mean tokens per row, so every source's share of the drawn tokens is its proportion. The k-th draw
from a source reads row perm_e[k mod n], where e = k div n is the epoch and perm_e a seeded permutation of
the source's n rows: no row repeats or is skipped within an epoch.
The position is g plus the per-source draw counts, which is all that `state_dict` needs, with the draw it
counts in (DRAW_VERSION and the row weights): a position means the same rows only under the same draw.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from gristmill.counts import is_count, is_number
from gristmill.errors import UserError, require_file
from gristmill.mixtures.build import FORMAT, row_weights
from gristmill.mixtures.weighting import SUM_TOLERANCE
from gristmill.pipeline import fs
from gristmill.tokenize.remote import stage as stage_remote
from gristmill.tokenize.shards import TokenDataset, first_id_outside

STATE_FORMAT = "gristmill.mixture-position/1"
# The draw rule a position counts in. 1: rows drawn by the proportions (positions saved before DRAW_VERSION was
# recorded); 2: by build.row_weights, so each source's share of the drawn tokens is its proportion. Both draw by
# source_draws and the epoch permutations, so they give the same rows exactly when their weights are equal.
DRAW_VERSION = 2
_SAME_RULE = (1, 2)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64, copy=True)
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def sample_uniforms(seed: int, start: int, count: int) -> np.ndarray:
    """u_g in [0, 1) for g in [start, start + count): SplitMix64 on the counter, keyed by the seed."""
    key = np.random.SeedSequence(seed).generate_state(1, np.uint64)[0]
    g = np.arange(start + 1, start + count + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = _splitmix64(key + g * _GOLDEN)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def source_draws(proportions: np.ndarray, seed: int, start: int, count: int) -> np.ndarray:
    """The source index of each global sample in [start, start + count)."""
    cum = np.cumsum(proportions, dtype=np.float64)
    cum /= cum[-1]
    idx = np.searchsorted(cum, sample_uniforms(seed, start, count), side="right")
    # u < 1 = cum[-1], so idx <= K-1 except through rounding in cum; clip for that case only.
    return np.minimum(idx, len(cum) - 1)


class DrawChanged(UserError):
    """A saved position was counted in another draw than this loader's: resuming it would not continue the
    interrupted run's rows."""


def _name_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")


def _mix_spec_error(path: Path) -> UserError:
    return UserError(f"{path} looks like a mix spec; run `mix build {path} -o MIX.json` first, and give the trainer "
                     "MIX.json")


def read_mixture_manifest(path: str | Path) -> tuple[bytes, dict[str, Any]]:
    """(raw bytes, parsed JSON) of a mixture manifest, with one-line errors for what is often given instead:
    a folder (a token dataset), a mix spec (YAML or JSON, not yet built), a missing file."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder (a token dataset?); give a mixture manifest written by `mix build`")
    require_file(path, "mixture manifest")
    raw = path.read_bytes()
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        if path.suffix.lower() in (".yaml", ".yml") or _parses_as_spec(raw):
            raise _mix_spec_error(path) from None
        raise UserError(f"{path} is not a mixture manifest (not valid JSON: {e}); give the .json that "
                        f"`mix build SPEC -o MIX.json` writes") from None
    if isinstance(manifest, dict) and manifest.get("format") != FORMAT and "sources" in manifest and (
            "weighting" in manifest or "budget_tokens" in manifest):
        raise _mix_spec_error(path)
    if not isinstance(manifest, dict):
        raise UserError(f"{path} is not a mixture manifest (format {FORMAT!r}); build one with `mix build`")
    return raw, manifest


def mixture_problem(manifest: dict[str, Any]) -> str | None:
    """What is wrong with the fields the loader and the trainer read from a mixture manifest (one edited by hand),
    or None. The proportions are what `mix build` wrote: numbers >= 0 summing to 1, not weights to rescale."""
    for key in ("seq_len", "budget_sequences", "seed"):
        if not is_count(manifest.get(key)):
            return f"{key} is {manifest.get(key)!r}, not an integer >= 0"
    if manifest["seq_len"] < 1:
        return "seq_len is 0"
    tok = manifest.get("tokenizer")
    if not isinstance(tok, dict) or not is_count(tok.get("vocab_size")) or tok["vocab_size"] < 1:
        return "it has no tokenizer.vocab_size"
    sources = manifest.get("sources")
    if not isinstance(sources, list) or not sources:
        return "it lists no sources"
    names = set()
    for k, e in enumerate(sources):
        if not isinstance(e, dict) or not isinstance(e.get("name"), str) or not isinstance(e.get("manifest"), str):
            return f"source {k} has no name or manifest"
        if e["name"] in names:
            return f"source {e['name']!r} is listed twice"
        names.add(e["name"])
        p = e.get("proportion")
        if not is_number(p) or p < 0:
            return f"source {e['name']!r} has proportion {p!r}, not a number >= 0"
        for key in ("tokens_available", "sequences_available"):
            if not is_count(e.get(key)) or e[key] < 1:
                return f"source {e['name']!r} has {key} {e.get(key)!r}, not a positive integer"
    total = math.fsum(e["proportion"] for e in sources)
    if abs(total - 1.0) > SUM_TOLERANCE:
        return f"the proportions sum to {total:.6g}, not 1"
    validation = manifest.get("validation")
    if not isinstance(validation, dict):
        return "it has no validation object"
    for domain, entry in validation.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("sources"), list):
            return f"validation domain {domain!r} lists no sources"
        for k, e in enumerate(entry["sources"]):
            if not isinstance(e, dict) or not isinstance(e.get("name"), str) or not isinstance(e.get("manifest"), str):
                return f"validation source {k} of domain {domain!r} has no name or manifest"
            for key in ("sequences", "sequences_available"):
                if not is_count(e.get(key)):
                    return f"validation source {e['name']!r} of domain {domain!r} has {key} {e.get(key)!r}, not a count"
    return None


def _check_available(path: Path, entry: dict[str, Any], ds: TokenDataset) -> None:
    """The counts the mixture took from a source's dataset when it was built, against the dataset: the row
    weights (train) and the validation rows are computed from them."""
    split = ds.manifest["splits"][ds.split]
    have = {"sequences_available": len(ds), "tokens_available": int(split["tokens"])}
    for key, n in have.items():
        if key in entry and entry[key] != n:
            raise UserError(f"{path}: source {entry['name']!r} has {key} {entry[key]}, its {ds.split} split "
                            f"{n}; write the mixture again with `mix build`")


def _parses_as_spec(raw: bytes) -> bool:
    import yaml

    try:
        data = yaml.safe_load(raw)
    except (yaml.YAMLError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and "sources" in data


class MixtureSampler:
    """(source, row) for consecutive global samples; the position is the next sample and per-source counts.

    Row orders are keyed by the source's name, not its position, so a sweep that reweights sources
    reads each source in the same order.
    """

    def __init__(self, names: list[str], weights: list[float], sequences: list[int], seed: int):
        """weights: each source's probability weight per draw (normalised here); the loader passes row weights."""
        self.names = list(names)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.sequences = [int(n) for n in sequences]
        self.seed = int(seed)
        self.sample = 0
        self.counts = np.zeros(len(names), dtype=np.int64)
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def permutation(self, source: int, epoch: int) -> np.ndarray:
        key = (source, epoch)
        if key not in self._perms:
            # Keep the two most recent epochs per source: a batch can straddle one epoch boundary.
            for old in [k for k in self._perms if k[0] == source and k[1] < epoch - 1]:
                del self._perms[old]
            ss = np.random.SeedSequence([self.seed, _name_key(self.names[source]), epoch])
            self._perms[key] = np.random.Generator(np.random.Philox(ss)).permutation(self.sequences[source])
        return self._perms[key]

    def draw(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Sources and rows of the next `count` global samples; advances the position."""
        src = source_draws(self.weights, self.seed, self.sample, count)
        rows = np.empty(count, dtype=np.int64)
        for s in np.unique(src):
            at = np.flatnonzero(src == s)
            k = self.counts[s] + np.arange(at.size, dtype=np.int64)
            n = self.sequences[s]
            epochs, within = np.divmod(k, n)
            for e in np.unique(epochs):
                sel = epochs == e
                rows[at[sel]] = self.permutation(int(s), int(e))[within[sel]]
            self.counts[s] += at.size
        self.sample += count
        return src, rows


class MixtureLoader:
    """Batches of training sequences for one data-parallel rank, drawn by a mixture manifest.

    loader = MixtureLoader("mixture.json", batch_size=8, rank=r, world_size=w)
    for ids in loader:            # torch.int64 [batch_size, seq_len]; ends after `loader.steps` batches
        ...
    state = loader.state_dict()   # save with the checkpoint; loader.load_state_dict(state) resumes
    for ids in loader.validation("web"): ...

    `batch_size` is per rank. Step t's global batch is samples [t*B*w, (t+1)*B*w) and rank r takes
    [r*B, (r+1)*B) of it, so ranks never overlap and the union equals a one-rank run with batch B*w.
    """

    def __init__(
        self,
        mixture: str | Path,
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int | None = None,
        steps: int | None = None,
        with_sources: bool = False,
        as_numpy: bool = False,
    ):
        if world_size < 1 or not 0 <= rank < world_size:
            raise UserError(f"need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, not {batch_size}")
        path = Path(mixture)
        raw, self.manifest = read_mixture_manifest(path)
        if self.manifest.get("format") != FORMAT:
            raise UserError(f"{path}: format is {self.manifest.get('format')!r}, expected {FORMAT!r}")
        if problem := mixture_problem(self.manifest):
            raise UserError(f"{path} was edited or damaged: {problem}; write it again with `mix build`")
        self.path = path
        self.mixture_sha256 = hashlib.sha256(raw).hexdigest()
        self.root = path.resolve().parent
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.global_batch = batch_size * world_size
        self.seq_len = int(self.manifest["seq_len"])
        self.vocab_size = int(self.manifest["tokenizer"]["vocab_size"])
        self.seed = int(self.manifest["seed"] if seed is None else seed)
        self.with_sources, self.as_numpy = with_sources, as_numpy
        self.steps = self.manifest["budget_sequences"] // self.global_batch if steps is None else int(steps)
        if self.steps < 1:
            raise UserError(
                f"{path}: a budget of {self.manifest['budget_sequences']} sequences gives no step at a global "
                f"batch of {self.global_batch}"
            )
        entries = self.manifest["sources"]
        self.names = [s["name"] for s in entries]
        self.datasets = [self._open(s, "train") for s in entries]
        for entry, ds in zip(entries, self.datasets):
            _check_available(path, entry, ds)
        self.sampler = MixtureSampler(
            self.names, row_weights(entries, self.seq_len), [len(d) for d in self.datasets], self.seed
        )

    def _open(self, entry: dict[str, Any], split: str) -> TokenDataset:
        mpath = fs.resolve(self.root, entry["manifest"])
        if fs.is_remote(mpath):  # gs://, s3://: this split's shards are copied into the local cache
            mpath = stage_remote(mpath, (split,))
        if not mpath.is_file():
            raise UserError(f"source {entry['name']!r}: token dataset manifest {mpath} does not exist")
        if "manifest_sha256" in entry and hashlib.sha256(mpath.read_bytes()).hexdigest() != entry["manifest_sha256"]:
            raise UserError(f"source {entry['name']!r}: {mpath} changed since the mixture was built; rebuild it")
        ds = TokenDataset(mpath, split=split)
        if ds.seq_len != self.seq_len:
            raise UserError(f"source {entry['name']!r}: seq_len {ds.seq_len}, the mixture says {self.seq_len}")
        return ds

    @property
    def step(self) -> int:
        return self.sampler.sample // self.global_batch

    @property
    def domains(self) -> list[str]:
        return list(self.manifest["validation"])

    def _gather(self, datasets: list[TokenDataset], sources: np.ndarray, rows: np.ndarray):
        out = np.empty((len(rows), self.seq_len), dtype=np.int64)
        for j, (s, r) in enumerate(zip(sources.tolist(), rows.tolist())):
            out[j] = datasets[s][r]
        if (found := first_id_outside(out, self.vocab_size)) is not None:  # a shard damaged in its input_ids
            j, bad = found
            ds, i = datasets[int(sources[j])], int(rows[j])
            ds.check_ids(out[j : j + 1], [i])  # outside the dataset's own vocabulary: the shard is damaged
            raise UserError(f"{self.path}: tokenizer.vocab_size is {self.vocab_size}, but sequence {i} of "
                            f"{ds.shard_path(i)} holds token id {bad}; write it again with `mix build`")
        if self.as_numpy:
            return out
        import torch

        return torch.from_numpy(out)

    def next_batch(self):
        """This rank's next batch (and its source indices if `with_sources`); advances the position."""
        src, rows = self.sampler.draw(self.global_batch)
        mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        ids = self._gather(self.datasets, src[mine], rows[mine])
        return (ids, src[mine].copy()) if self.with_sources else ids

    def __iter__(self) -> Iterator:
        while self.step < self.steps:
            yield self.next_batch()

    def __len__(self) -> int:
        return max(self.steps - self.step, 0)

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "mixture_sha256": self.mixture_sha256,
            "seed": self.seed,
            "sample": int(self.sampler.sample),
            "counts": {n: int(c) for n, c in zip(self.names, self.sampler.counts)},
            "draw": {"version": DRAW_VERSION, "weights": self._weights()},
        }

    def _weights(self) -> dict[str, float]:
        return {n: float(w) for n, w in zip(self.names, self.sampler.weights)}

    def draw_change(self, state: dict[str, Any]) -> str | None:
        """How the draw `state` was saved in differs from this loader's, or None when it is the same draw (the
        same rule and bit-equal weights, so the same rows follow). A state without a `draw` was saved by
        version 1, which drew rows by the proportions: the same draw as this one for sources whose rows are
        all full (their row weight is exactly the proportion), another one when rows end in PAD."""
        saved = state.get("draw")
        if saved is None:
            version = 1
            weights = {e["name"]: float(e["proportion"]) for e in self.manifest["sources"]}
        else:
            version, weights = int(saved["version"]), {n: float(w) for n, w in saved["weights"].items()}
        mine = self._weights()
        if version in _SAME_RULE and weights == mine:
            return None
        shown = lambda w: ", ".join(f"{n} {w[n]:.4g}" for n in self.names if n in w)  # noqa: E731
        if version == 1:
            return (f"the loader position was saved by an older gristmill that drew rows by the proportions "
                    f"({shown(weights)}); this one draws them by token share ({shown(mine)}), so other rows follow")
        return (f"the loader position was saved with draw version {version} and row weights ({shown(weights)}); "
                f"this loader draws with version {DRAW_VERSION} and ({shown(mine)}), so other rows follow")

    def load_state_dict(self, state: dict[str, Any], *, allow_draw_change: bool = False) -> str | None:
        """Resume from `state_dict()`: the next batch is exactly the one an uninterrupted run would give.
        The world size may differ from the saving run's, as long as the global batch divides the position.
        A state saved in another draw (`draw_change`) raises DrawChanged; with allow_draw_change it is loaded
        (the per-source counts still keep each epoch free of repeats) and the change is returned, for the
        caller to warn with. Returns None otherwise."""
        if state.get("format") != STATE_FORMAT:
            raise UserError(f"loader state has format {state.get('format')!r}, expected {STATE_FORMAT!r}")
        if state["mixture_sha256"] != self.mixture_sha256:
            raise UserError(f"loader state was saved for a different mixture than {self.path}")
        if int(state["seed"]) != self.seed:
            raise UserError(f"loader state was saved with seed {state['seed']}, this loader has seed {self.seed}")
        if sorted(state["counts"]) != sorted(self.names):
            raise UserError("loader state names different sources than the mixture")
        sample = int(state["sample"])
        if sample % self.global_batch:
            # in `trainer train`'s words too: its micro_batch_size is this loader's batch_size
            raise UserError(
                f"loader state is at sample {sample:,}, not a multiple of the global batch {self.global_batch} = "
                f"batch_size {self.batch_size} x world_size {self.world_size} (for `trainer train`: micro_batch_size "
                f"{self.batch_size} x {self.world_size} rank(s)); resume with a batch size and world size whose "
                f"product divides it, as the interrupted run's did"
            )
        change = self.draw_change(state)
        if change and not allow_draw_change:
            raise DrawChanged(change)
        self.sampler.sample = sample
        self.sampler.counts = np.array([int(state["counts"][n]) for n in self.names], dtype=np.int64)
        return change

    def validation(self, domain: str, batch_size: int | None = None) -> Iterator:
        """Batches over the domain's validation set, in a fixed order. Each rank gets an equal block of
        floor(total / world_size) sequences (the last total % world_size are left out), so all ranks run
        the same number of batches; the last batch may be short."""
        val = self.manifest["validation"]
        if domain not in val:
            raise UserError(f"no validation set for domain {domain!r} (have: {', '.join(val)})")
        entries = val[domain]["sources"]
        datasets = [self._open(e, "validation") for e in entries]
        for e, ds in zip(entries, datasets):
            _check_available(self.path, e, ds)
            if e["sequences"] > len(ds):
                raise UserError(f"{self.path}: validation source {e['name']!r} of domain {domain!r} takes {e['sequences']} "
                                f"sequences of its {len(ds)}; write the mixture again with `mix build`")
        src_parts, row_parts = [], []
        for i, (e, ds) in enumerate(zip(entries, datasets)):
            n, k = len(ds), int(e["sequences"])
            # A cap keeps k evenly spaced rows, so the subset spans the whole split.
            row_parts.append((np.arange(k, dtype=np.int64) * n) // k)
            src_parts.append(np.full(k, i, dtype=np.int64))
        src = np.concatenate(src_parts) if src_parts else np.zeros(0, dtype=np.int64)
        rows = np.concatenate(row_parts) if row_parts else np.zeros(0, dtype=np.int64)
        per = len(rows) // self.world_size
        lo = self.rank * per
        src, rows = src[lo : lo + per], rows[lo : lo + per]
        bs = batch_size or self.batch_size
        for a in range(0, per, bs):
            yield self._gather(datasets, src[a : a + bs], rows[a : a + bs])
