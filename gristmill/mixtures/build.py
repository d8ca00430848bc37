"""Turns a mixture spec into a mixture manifest (tokens to draw, proportions, epochs, shards per source,
a validation set per domain) and its LLaMA-style table; `sweep` draws RegMix-style variations of it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from gristmill.errors import UserError
from gristmill.mixtures import weighting
from gristmill.mixtures.spec import MixtureSpec, SourceSpec
from gristmill.pipeline import fs
from gristmill.tokenize.remote import manifest_url as remote_manifest_url
from gristmill.tokenize.shards import FORMAT as TOKENS_FORMAT
from gristmill.tokenize.shards import load_manifest

FORMAT = "gristmill.mixture/1"
SWEEP_FORMAT = "gristmill.sweep/1"
TABLE_HEADER = ("Dataset", "Sampling prop.", "Epochs", "Disk size")
# A draw may exceed a cap by this relative amount before it counts as exceeding it (float rounding).
CAP_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Source:
    """A spec source joined with what its token-dataset manifest says."""

    spec: SourceSpec
    manifest: dict[str, Any]
    manifest_path: Path | str  # a URL for a remote (gs://, s3://) dataset
    manifest_sha256: str
    domain: str
    tokens: int  # train tokens available
    sequences: int
    bytes_on_disk: int

    @property
    def name(self) -> str:
        return self.spec.name

    def beside(self, name: str) -> Path | str:
        """A file of this dataset, named relative to its manifest."""
        return _beside(self.manifest_path, name)

    def epoch_cap(self, default: float | None) -> float | None:
        return self.spec.max_epochs if self.spec.max_epochs is not None else default

    def token_cap(self, default_epochs: float | None) -> float:
        """The most tokens this source may contribute under its epoch and token caps."""
        cap = math.inf
        epochs = self.epoch_cap(default_epochs)
        if epochs is not None:
            cap = epochs * self.tokens
        if self.spec.max_tokens is not None:
            cap = min(cap, float(self.spec.max_tokens))
        return cap


def _beside(manifest_path: Path | str, name: str) -> Path | str:
    """A file named relative to a dataset's manifest (a local path, or a URL for a remote dataset)."""
    if fs.is_remote(str(manifest_path)):
        return fs.join(fs.dirname(str(manifest_path)), name)
    return Path(manifest_path).parent / name


def load_sources(spec: MixtureSpec) -> list[Source]:
    """Read every source's manifest and check they can be mixed: non-empty, same tokenizer and seq_len."""
    out: list[Source] = []
    for s in spec.sources:
        remote = fs.is_remote(str(s.manifest))
        try:
            # A remote dataset: only its manifest is copied to the cache here; the trainer copies the shards.
            manifest, folder = load_manifest(s.manifest)
            mpath = remote_manifest_url(str(s.manifest)) if remote else folder / "manifest.json"
            present = set(fs.matching(fs.join(fs.dirname(mpath), "*"))) if remote else set()
        except UserError as e:
            raise UserError(f"source {s.name!r}: {e}") from None
        train = manifest.get("splits", {}).get("train")
        if not train or int(train.get("tokens", 0)) <= 0 or int(train.get("sequences", 0)) <= 0:
            raise UserError(f"source {s.name!r} is empty: {mpath} has no train tokens")
        for shard in train["shards"]:
            path = _beside(mpath, shard["path"])
            if not (path in present if remote else path.is_file()):
                raise UserError(f"source {s.name!r}: shard {path} is missing")
        domain = s.domain or manifest.get("domain")
        if not domain:
            raise UserError(f"source {s.name!r}: no domain in the spec or in {mpath}")
        out.append(
            Source(
                spec=s,
                manifest=manifest,
                manifest_path=mpath,
                manifest_sha256=hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest(),
                domain=domain,
                tokens=int(train["tokens"]),
                sequences=int(train["sequences"]),
                bytes_on_disk=sum(int(sh["bytes_on_disk"]) for sh in train["shards"]),
            )
        )
    first = out[0]
    for src in out[1:]:
        a, b = first.manifest["tokenizer"]["sha256"], src.manifest["tokenizer"]["sha256"]
        if a != b:
            raise UserError(
                f"source {src.name!r} was tokenized with tokenizer {b[:12]}, but source {first.name!r} with "
                f"{a[:12]}: all sources must share one tokenizer"
            )
        if src.manifest["seq_len"] != first.manifest["seq_len"]:
            raise UserError(
                f"source {src.name!r} has seq_len {src.manifest['seq_len']}, but source {first.name!r} has "
                f"{first.manifest['seq_len']}: all sources must share one seq_len"
            )
    return out


def spec_proportions(spec: MixtureSpec, sources: Sequence[Source]) -> list[float]:
    """Sampling proportions by the spec's weighting method."""
    w = spec.weighting
    names = [s.name for s in sources]
    if w.method == "explicit":
        return weighting.explicit(names, w.proportions, normalize=w.normalize)
    if w.method == "temperature":
        return weighting.temperature([s.tokens for s in sources], w.temperature)
    return weighting.unimax(names, spec.budget_tokens, [s.token_cap(w.max_epochs) for s in sources])


def check_caps(spec: MixtureSpec, sources: Sequence[Source], proportions: Sequence[float]) -> None:
    """Raise if the budget needs more epochs (or tokens) from a source than its caps allow."""
    if problem := cap_violation(spec, sources, proportions):
        raise UserError(problem)


def cap_violation(spec: MixtureSpec, sources: Sequence[Source], proportions: Sequence[float]) -> str | None:
    for src, p in zip(sources, proportions):
        need = p * spec.budget_tokens
        epochs = need / src.tokens
        cap = src.epoch_cap(spec.weighting.max_epochs)
        if cap is not None and epochs > cap * (1 + CAP_TOLERANCE):
            return (
                f"source {src.name!r} needs {epochs:.3g} epochs ({need:,.0f} of its {src.tokens:,} tokens) "
                f"for a budget of {spec.budget_tokens:,} tokens, but max_epochs is {cap:g}"
            )
        if src.spec.max_tokens is not None and need > src.spec.max_tokens * (1 + CAP_TOLERANCE):
            return (
                f"source {src.name!r} needs {need:,.0f} tokens for a budget of {spec.budget_tokens:,} tokens, "
                f"but max_tokens is {src.spec.max_tokens:,}"
            )
    return None


def largest_remainder(weights: Sequence[float], total: int) -> list[int]:
    """Integers proportional to `weights` that sum exactly to `total` (Hamilton's method)."""
    wsum = math.fsum(weights)
    exact = [w / wsum * total for w in weights]
    ints = [math.floor(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - ints[i]), i))
    for i in order[: total - sum(ints)]:
        ints[i] += 1
    return ints


def row_weights(entries: Sequence[dict[str, Any]], seq_len: int) -> list[float]:
    """Per source of a mixture manifest, the weight with which the loader draws one of its rows, such that each
    source's expected share of the drawn tokens is its `proportion`. Proportions, tokens and epochs count the
    non-PAD tokens; a row of source i holds tokens_i / sequences_i of them on average (fewer than seq_len when
    rows end in PAD), so q_i = p_i x sequences_i x seq_len / tokens_i. The factor is exactly 1.0 for a source
    whose rows are all full, so such mixtures draw as if by the proportions themselves."""
    return [float(e["proportion"]) * (int(e["sequences_available"]) * seq_len / int(e["tokens_available"]))
            for e in entries]


def budget_sequences(draws: Sequence[int], sources: Sequence[Source]) -> int:
    """The rows that hold the budget's tokens: each source's tokens to draw over its tokens per row, summed
    (exactly, then rounded down). It is budget_tokens // seq_len when every row is full, more with PAD."""
    return math.floor(sum((Fraction(d * s.sequences, s.tokens) for d, s in zip(draws, sources)), Fraction(0)))


def _rel(path: Path | str, start: Path) -> str:
    if fs.is_remote(str(path)):
        return str(path)  # a URL stays a URL
    return Path(os.path.relpath(path, start)).as_posix()


def _validation(spec: MixtureSpec, sources: Sequence[Source], out_dir: Path) -> dict[str, Any]:
    """Per domain, the validation splits of its sources; a cap picks evenly spaced rows from each."""
    domains: dict[str, list[Source]] = {}
    for src in sources:
        domains.setdefault(src.domain, []).append(src)
    out: dict[str, Any] = {}
    for domain, members in domains.items():
        splits = [m.manifest["splits"].get("validation") or {"sequences": 0, "tokens": 0, "shards": []} for m in members]
        available = [int(s["sequences"]) for s in splits]
        use = available
        cap = spec.validation_max_sequences
        if cap is not None and sum(available) > cap:
            use = largest_remainder(available, cap)
        entries = []
        for m, split, n_avail, n_use in zip(members, splits, available, use):
            if n_avail == 0:
                continue
            entries.append(
                {
                    "name": m.name,
                    "manifest": _rel(m.manifest_path, out_dir),
                    "sequences_available": n_avail,
                    "sequences": n_use,
                    "tokens_available": int(split["tokens"]),
                    "shards": [_rel(m.beside(sh["path"]), out_dir) for sh in split["shards"]],
                }
            )
        out[domain] = {"sequences": sum(e["sequences"] for e in entries), "sources": entries}
    return out


def assemble(
    spec: MixtureSpec,
    sources: Sequence[Source],
    proportions: Sequence[float],
    method: dict[str, Any],
    out_path: Path,
) -> dict[str, Any]:
    """The mixture manifest for these proportions; paths are relative to `out_path`'s folder."""
    check_caps(spec, sources, proportions)
    out_dir = out_path.resolve().parent
    draws = largest_remainder(proportions, spec.budget_tokens)
    first = sources[0].manifest
    seq_len = int(first["seq_len"])
    n_sequences = budget_sequences(draws, sources)
    if n_sequences < 1:  # a mixture of no rows: the loader could give no batch of it
        raise UserError(f"budget_tokens {spec.budget_tokens:,} is less than one sequence ({seq_len} tokens)")
    entries = []
    for src, p, n_draw in zip(sources, proportions, draws):
        train = src.manifest["splits"]["train"]
        entries.append(
            {
                "name": src.name,
                "domain": src.domain,
                "manifest": _rel(src.manifest_path, out_dir),
                "manifest_sha256": src.manifest_sha256,
                "proportion": p,
                "tokens_available": src.tokens,
                "sequences_available": src.sequences,
                "tokens_to_draw": n_draw,
                "epochs": p * spec.budget_tokens / src.tokens,
                "max_epochs": src.epoch_cap(spec.weighting.max_epochs),
                "max_tokens": src.spec.max_tokens,
                "bytes_on_disk": src.bytes_on_disk,
                # Rows are drawn from a fresh permutation of the whole split each epoch, so every train
                # shard is in use even when epochs < 1.
                "shards": [
                    {
                        "path": _rel(src.beside(sh["path"]), out_dir),
                        "sequences": int(sh["sequences"]),
                        "tokens": int(sh["tokens"]),
                        "bytes_on_disk": int(sh["bytes_on_disk"]),
                    }
                    for sh in train["shards"]
                ],
            }
        )
    return {
        "format": FORMAT,
        "tokens_format": TOKENS_FORMAT,
        "spec": _rel(spec.path.resolve(), out_dir) if spec.path else None,
        "spec_sha256": spec.sha256,
        "seed": spec.seed,
        "budget_tokens": spec.budget_tokens,
        "seq_len": seq_len,
        "budget_sequences": n_sequences,
        "tokenizer": {
            "path": _rel(sources[0].beside(first["tokenizer"]["path"]), out_dir),
            **{k: first["tokenizer"][k] for k in ("sha256", "vocab_size", "bos_id", "eos_id", "pad_id")},
        },
        "weighting": method,
        "sources": entries,
        "validation": _validation(spec, sources, out_dir),
    }


def weighting_record(spec: MixtureSpec) -> dict[str, Any]:
    w = spec.weighting
    rec: dict[str, Any] = {"method": w.method}
    if w.method == "explicit":
        rec["proportions"] = dict(w.proportions)
        rec["normalize"] = w.normalize
    if w.method == "temperature":
        rec["temperature"] = w.temperature
    rec["max_epochs"] = w.max_epochs
    return rec


def build(spec: MixtureSpec, out_path: Path) -> dict[str, Any]:
    sources = load_sources(spec)
    return assemble(spec, sources, spec_proportions(spec, sources), weighting_record(spec), out_path)


def human_bytes(n: float) -> str:
    """Decimal units as in the LLaMA paper's table: 3.3 TB, 783 GB, 83 GB."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 999.5 or unit == "PB":
            break
        n /= 1000
    return f"{n:.1f} {unit}" if n < 9.95 and unit != "B" else f"{n:.0f} {unit}"


def table_rows(mixture: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [
        (s["name"], f"{100 * s['proportion']:.1f}%", f"{s['epochs']:.2f}", human_bytes(s["bytes_on_disk"]))
        for s in mixture["sources"]
    ]


def format_table(mixture: dict[str, Any]) -> str:
    """Plain aligned text for the terminal."""
    rows = [TABLE_HEADER, *table_rows(mixture)]
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    lines = []
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [r[c].rjust(widths[c]) for c in range(1, 4)]
        lines.append("  ".join(cells))
    return "\n".join(lines) + "\n"


def format_markdown(mixture: dict[str, Any]) -> str:
    lines = [
        "| " + " | ".join(TABLE_HEADER) + " |",
        "|:---|---:|---:|---:|",
        *("| " + " | ".join(r) + " |" for r in table_rows(mixture)),
    ]
    foot = (
        f"\nBudget: {mixture['budget_tokens']:,} tokens ({mixture['budget_sequences']:,} sequences of "
        f"{mixture['seq_len']}), weighting: {mixture['weighting']['method']}, seed {mixture['seed']}.\n"
    )
    return "\n".join(lines) + "\n" + foot


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` to `path` whole or not at all (a temporary file renamed over it): a run killed mid-write
    leaves the old file or none, never a cut-short one that a later run would read as damaged, or as done."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(part, path)


def write_mixture(mixture: dict[str, Any], out_path: Path) -> Path:
    """Write the manifest and, beside it, the same table as Markdown; returns the Markdown path."""
    write_json(out_path, mixture)
    md = out_path.with_suffix(".md")
    md.write_text(format_markdown(mixture), encoding="utf-8")
    return md


def sweep(
    spec: MixtureSpec,
    n: int,
    out_dir: Path,
    *,
    concentration: float = 10.0,
    seed: int | None = None,
    prior: str = "spec",
    max_tries: int = 1000,
) -> dict[str, Any]:
    """RegMix-style sweep: n proportion vectors from Dirichlet(concentration x prior), where the prior is
    the spec's own proportions or the natural token distribution. Draws that break a cap are redrawn."""
    if n < 1:
        raise UserError(f"-n must be >= 1, not {n}")
    if not concentration > 0 or not math.isfinite(concentration):
        raise UserError(f"--concentration must be > 0, not {concentration}")
    if prior not in ("spec", "natural"):
        raise UserError(f"--prior must be spec or natural, not {prior!r}")
    sources = load_sources(spec)
    if prior == "spec":
        base = spec_proportions(spec, sources)
    else:
        base = weighting.temperature([s.tokens for s in sources], 1.0)
    seed = spec.seed if seed is None else seed
    rng = np.random.default_rng(seed)
    live = [i for i, p in enumerate(base) if p > 0]  # a zero prior stays zero in every draw
    alpha = np.array([concentration * base[i] for i in live])
    names = [s.name for s in sources]
    entries, rejected = [], 0
    for k in range(n):
        for _ in range(max_tries):
            draw = rng.dirichlet(alpha)
            props = [0.0] * len(sources)
            for i, v in zip(live, draw):
                props[i] = float(v)
            if math.fsum(props) > 0 and cap_violation(spec, sources, props) is None:
                break
            rejected += 1
        else:
            raise UserError(
                f"mixture {k}: {max_tries} Dirichlet draws in a row broke a cap ({cap_violation(spec, sources, props)}); "
                "raise the caps or the concentration"
            )
        name = f"mixture-{k:03d}"
        path = out_dir / f"{name}.json"
        method = {
            "method": "dirichlet",
            "prior": prior,
            "prior_proportions": dict(zip(names, base)),
            "concentration": concentration,
            "seed": seed,
            "index": k,
            "max_epochs": spec.weighting.max_epochs,
        }
        write_mixture(assemble(spec, sources, props, method, path), path)
        entries.append({"name": name, "path": path.name, "proportions": dict(zip(names, props))})
    index = {
        "format": SWEEP_FORMAT,
        "spec": _rel(spec.path.resolve(), out_dir.resolve()) if spec.path else None,
        "spec_sha256": spec.sha256,
        "n": n,
        "seed": seed,
        "concentration": concentration,
        "prior": prior,
        "prior_proportions": dict(zip(names, base)),
        "rejected_draws": rejected,
        "mixtures": entries,
    }
    write_json(out_dir / "sweep.json", index)
    return index
