"""`trainer ablate`: train one proxy model per mixture and seed on the same token budget, evaluate every model
on the same held-out sets (loss and bits per byte), and write a ranked report of which data is better.

RUNDIR/ablation.json is the plan (settings, mixtures, evaluation sets, runs); RUNDIR/runs/<mixture>-s<seed>/
holds each run's checkpoints, metrics and eval curve, and its result.json once finished. The report files
(results.json/.csv, summary.csv, report.md, PNG plots) are written by gristmill.trainer.report.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gristmill.counts import is_count
from gristmill.errors import UserError
from gristmill.mixtures.build import largest_remainder, write_json
from gristmill.mixtures.loader import FORMAT as MIXTURE_FORMAT, mixture_problem, read_mixture_manifest
from gristmill.mixtures.spec import parse_count
from gristmill.pipeline import fs
from gristmill.tokenize.shards import TokenDataset, load_manifest
from gristmill.trainer.config import SEED

PLAN_FORMAT = "gristmill.ablation/1"
RUN_FORMAT = "gristmill.ablation-run/1"
# Proxy sizes for ablations beyond the trainer's presets: `small` trains in minutes on a laptop CPU.
ABLATE_PRESETS = {"small": {"d_model": 128, "n_layers": 2, "n_heads": 2}}
DEFAULT_BATCH_SIZE = 16  # sequences a step, unless --batch-size or the config says

EXAMPLES = """examples:
  trainer ablate out/mix-filtered.json out/mix-raw.json --tokens 2M --seeds 2 -o out/ablation
  trainer ablate --sweep out/sweep --preset 25m --tokens 200M --parallel-gpus 8 -o out/sweep-ablation
  trainer ablate a.json b.json --eval clean=out/heldout/tokens --eval-every 50 -o out/ab

Every model trains on --tokens tokens with the same config; seed k (k = 0..K-1) sets the model's initialisation.
Every model is evaluated on each mixture domain's validation set (the union over all mixtures) and on each
--eval set. Rerunning the same command skips finished runs and resumes a killed one from its checkpoint.
Output: RUNDIR/report.md (ranked table, plots), results.json, results.csv, summary.csv, val_loss.png,
bpb_by_domain.png. See docs/ablate.md."""


@dataclass
class Settings:
    """What every run shares. `train` holds TrainConfig fields (model, lr, batch sizes, precision, ...)."""

    tokens: int
    steps: int
    eval_every: int
    eval_batch_size: int
    eval_max_sequences: int
    seq_len: int
    tokenizer_sha256: str
    train: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------
# Planning: mixtures, evaluation sets, runs


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_mixture(path: str | Path, name: str | None = None) -> dict[str, Any]:
    path = Path(path)
    _, manifest = read_mixture_manifest(path)
    if manifest.get("format") != MIXTURE_FORMAT:
        raise UserError(f"{path} is not a mixture manifest (format {MIXTURE_FORMAT!r}); build one with `mix build`")
    # One line for a manifest edited by hand, as MixtureLoader gives, before the plan reads its tokenizer, budget
    # and validation sets (these were KeyError tracebacks); the loader never reads the two fields checked here.
    problem = mixture_problem(manifest)
    if problem is None and not isinstance(manifest["tokenizer"].get("sha256"), str):
        problem = "it has no tokenizer.sha256"
    if problem is None and not is_count(manifest.get("budget_tokens")):
        problem = f"budget_tokens is {manifest.get('budget_tokens')!r}, not an integer >= 0"
    if problem:
        raise UserError(f"{path} was edited or damaged: {problem}; write it again with `mix build`")
    return {"name": name or path.stem, "path": str(path.resolve()), "sha256": _sha256(path),
            "proportions": {s["name"]: s["proportion"] for s in manifest["sources"]}, "manifest": manifest}


def load_sweep(folder: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The members of a `mix sweep` folder, and its sweep.json."""
    index_path = Path(folder) / "sweep.json"
    if not index_path.is_file():
        raise UserError(f"{index_path} does not exist; make the sweep with `mix sweep SPEC -n N -o {folder}`")
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{index_path} is not valid JSON: {e}") from None
    if not isinstance(index, dict) or index.get("format") != "gristmill.sweep/1":
        found = index.get("format") if isinstance(index, dict) else None
        raise UserError(f"{index_path}: format is {found!r}, expected 'gristmill.sweep/1'")
    entries = index.get("mixtures")
    if not isinstance(entries, list) or not entries or not all(
            isinstance(m, dict) and isinstance(m.get("path"), str) and isinstance(m.get("name"), str)
            and isinstance(m.get("proportions"), dict) for m in entries):
        raise UserError(f"{index_path}: mixtures must be a non-empty list of entries with a path, a name and "
                        f"proportions, as `mix sweep` writes them; make the sweep again")
    members = [load_mixture(Path(folder) / m["path"], m["name"]) for m in entries]
    for mix, entry in zip(members, entries):
        mix["proportions"] = dict(entry["proportions"])
    return members, index


def check_compatible(mixtures: list[dict[str, Any]]) -> None:
    """One tokenizer and one seq_len across all mixtures, unique names: else one clear line."""
    names = [m["name"] for m in mixtures]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise UserError(f"two mixtures are both named {dup[0]!r} (names come from the file names); rename one")
    first = mixtures[0]
    for m in mixtures[1:]:
        a, b = first["manifest"]["tokenizer"]["sha256"], m["manifest"]["tokenizer"]["sha256"]
        if a != b:
            raise UserError(f"mixtures {first['name']!r} and {m['name']!r} were built with different tokenizers "
                            f"({a[:12]} vs {b[:12]}); an ablation compares data under one tokenizer")
        if m["manifest"]["seq_len"] != first["manifest"]["seq_len"]:
            raise UserError(f"mixtures {first['name']!r} and {m['name']!r} have different seq_len "
                            f"({first['manifest']['seq_len']} vs {m['manifest']['seq_len']})")


def parse_eval_sets(items: list[str] | None) -> dict[str, str]:
    """--eval NAME=DIR flags -> {name: token dataset folder}."""
    extra = {}
    for item in items or []:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise UserError(f"--eval takes NAME=TOKEN_DATASET_DIR, not {item!r}")
        if name in extra:  # the later one would silently replace the earlier
            raise UserError(f"--eval {name}=... is given twice ({extra[name]} and {folder}); give each set its own name")
        extra[name] = folder
    return extra


def _spaced(n: int, k: int) -> list[int]:
    """k evenly spaced rows of n, as the mixture loader picks a capped validation set."""
    return [(j * n) // k for j in range(k)]


def evaluation_sets(mixtures: list[dict[str, Any]], extra: dict[str, str], max_sequences: int) -> list[dict[str, Any]]:
    """Per domain, the union of every mixture's validation sources for it (each dataset once), then each
    extra token dataset's validation split. A set keeps at most max_sequences rows, shared over its sources
    in proportion to their sizes and evenly spaced within each."""
    tok = mixtures[0]["manifest"]["tokenizer"]["sha256"]
    seq_len = mixtures[0]["manifest"]["seq_len"]
    domains: dict[str, dict[str, int]] = {}
    for mix in mixtures:
        root = Path(mix["path"]).parent
        for domain, val in mix["manifest"]["validation"].items():
            for src in val["sources"]:
                manifest = str(fs.resolve(root, src["manifest"]))
                members = domains.setdefault(domain, {})
                members[manifest] = max(members.get(manifest, 0), int(src["sequences"]))
    sets = [{"name": d, "kind": "domain", "members": m} for d, m in sorted(domains.items())]
    for name, folder in extra.items():
        if name in domains:
            raise UserError(f"--eval {name}=...: {name!r} is already a mixture domain; pick another name")
        manifest, root = load_manifest(folder)
        if manifest["tokenizer"]["sha256"] != tok:
            raise UserError(f"--eval {name}: {root} was tokenized with tokenizer "
                            f"{manifest['tokenizer']['sha256'][:12]}, "
                            f"the mixtures with {tok[:12]}")
        if manifest["seq_len"] != seq_len:
            raise UserError(f"--eval {name}: {root} has seq_len {manifest['seq_len']}, the mixtures {seq_len}")
        n = int(manifest["splits"].get("validation", {}).get("sequences", 0))
        if n == 0:
            raise UserError(f"--eval {name}: {root} has no validation sequences")
        where = folder if fs.is_remote(folder) else str((root / "manifest.json").resolve())
        sets.append({"name": name, "kind": "extra", "members": {where: n}})
    out = []
    for s in sets:
        paths = sorted(s["members"])
        sizes = [s["members"][p] for p in paths]
        if sum(sizes) == 0:
            continue
        use = largest_remainder(sizes, max_sequences) if sum(sizes) > max_sequences else sizes
        out.append({"name": s["name"], "kind": s["kind"],
                    "sources": [{"manifest": p, "sequences": k} for p, k in zip(paths, use) if k > 0]})
    if not out:
        raise UserError("no validation data: the mixtures have no validation sequences and no --eval set was given")
    return out


def _train_settings(args: argparse.Namespace, base: dict[str, Any], cuda: bool) -> dict[str, Any]:
    """TrainConfig fields shared by all runs: the --config file, then flags, then ablation defaults."""
    train = dict(base)
    preset = args.preset or ("small" if "model" not in train else None)
    if preset:
        train["model"] = dict(ABLATE_PRESETS[preset]) if preset in ABLATE_PRESETS else preset
    for key, value in (("batch_size", args.batch_size), ("micro_batch_size", args.micro_batch_size),
                       ("lr", args.lr), ("precision", args.precision)):
        if value is not None:
            train[key] = value
    train.setdefault("batch_size", DEFAULT_BATCH_SIZE)
    from gristmill.trainer.config import FIELD_CHECKS

    # checked here, not with the rest of the config: the micro-batch default and the steps divide by the batch,
    # and a given warmup is capped at the steps
    for key in ("batch_size", "warmup_steps"):
        if key in train:
            FIELD_CHECKS[key].check("config: ", key, train[key])
    # the largest divisor of the batch up to 16, so the batch splits into whole micro-batches
    train.setdefault("micro_batch_size", max(d for d in range(1, 17) if train["batch_size"] % d == 0))
    train.setdefault("lr", 1e-3)
    train.setdefault("precision", "bf16" if cuda else "fp32")
    for key in ("data", "out_dir", "seed", "steps", "parallel"):
        train.pop(key, None)  # set per run by the ablation
    return train


def make_plan(args: argparse.Namespace) -> dict[str, Any]:
    sweep = None
    if args.sweep:
        if args.mixtures:
            raise UserError("give mixtures or --sweep DIR, not both")
        mixtures, index = load_sweep(args.sweep)
        sweep = {"path": str(Path(args.sweep).resolve()), "prior": index["prior"],
                 "prior_proportions": index["prior_proportions"], "concentration": index["concentration"],
                 "seed": index["seed"]}
    elif args.mixtures:
        mixtures = [load_mixture(p) for p in args.mixtures]
    else:
        raise UserError("give at least one mixture manifest, or --sweep DIR")
    check_compatible(mixtures)
    # Before anything trains: a zero batch divided the token budget by zero, a negative --eval-every never reached
    # the last step (the run looped forever), and no evaluation rows scored every model nan.
    for flag, value, least in (("--seeds", args.seeds, 1), ("--seed", args.seed, 0), ("--batch-size", args.batch_size, 1),
                               ("--micro-batch-size", args.micro_batch_size, 1), ("--eval-every", args.eval_every, 1),
                               ("--eval-max-sequences", args.eval_max_sequences, 1),
                               ("--eval-batch-size", args.eval_batch_size, 1), ("--parallel-gpus", args.parallel_gpus, 0)):
        if value is not None and value < least:
            raise UserError(f"{flag} must be >= {least}, not {value}")
    last_seed = args.seed + args.seeds - 1
    if last_seed > SEED.hi:  # each run's seed goes to torch.manual_seed, which takes a 64-bit word
        raise UserError(f"--seed + --seeds - 1 must be <= {SEED.hi} (a 64-bit seed), not {last_seed}")
    extra = parse_eval_sets(args.eval)
    base: dict[str, Any] = {}
    if args.config:
        import yaml

        from gristmill.trainer.config import load_config

        # A missing or malformed file is one error line here; the settings are checked once the ablation has set
        # the data and the steps (below), since some checks depend on them (document_masking, a WSD decay).
        config = load_config(args.config, validate=False)
        # Only the keys the file sets: the ablation's own defaults apply to the rest.
        given = set(yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {})
        base = {k: v for k, v in config.to_dict().items() if k in given}
        if isinstance(base.get("betas"), tuple):
            base["betas"] = list(base["betas"])
    if args.preset and args.preset not in ABLATE_PRESETS:
        from gristmill.trainer.model import PRESETS

        if args.preset not in PRESETS:
            raise UserError(f"unknown --preset {args.preset!r}; choose one of "
                            f"{', '.join([*ABLATE_PRESETS, *PRESETS])}")
    import torch

    train = _train_settings(args, base, torch.cuda.is_available())
    seq_len = int(mixtures[0]["manifest"]["seq_len"])
    tokens = (parse_count(args.tokens, "--tokens") if args.tokens is not None
              else min(int(m["manifest"]["budget_tokens"]) for m in mixtures))
    steps = tokens // (train["batch_size"] * seq_len)
    if steps < 1:
        raise UserError(f"--tokens {tokens:,} is less than one step ({train['batch_size']} sequences of {seq_len})")
    train.setdefault("warmup_steps", max(1, steps // 10))
    train["warmup_steps"] = min(train["warmup_steps"], steps)
    eval_every = args.eval_every or max(1, math.ceil(steps / 10))
    settings = Settings(tokens=steps * train["batch_size"] * seq_len, steps=steps, eval_every=eval_every,
                        eval_batch_size=args.eval_batch_size, eval_max_sequences=args.eval_max_sequences,
                        seq_len=seq_len, tokenizer_sha256=mixtures[0]["manifest"]["tokenizer"]["sha256"],
                        train=train)
    _run_config(settings, mixtures[0], 0, Path("/nonexistent")).validate().accumulation_steps(1)
    from gristmill.trainer.model import model_config_for_data

    model_config_for_data(train["model"], vocab_size=int(mixtures[0]["manifest"]["tokenizer"]["vocab_size"]),
                          max_seq_len=seq_len)  # as each run's train() will build it, refused here rather than there
    seeds = list(range(args.seed, args.seed + args.seeds))
    runs = [{"name": f"{m['name']}-s{s}", "mixture": m["name"], "seed": s} for m in mixtures for s in seeds]
    eval_sets = evaluation_sets(mixtures, extra, args.eval_max_sequences)
    # "avg" is the mean over all sets (--rank-by avg, the avg_bpb/avg_loss columns): a set of that name could not be
    # ranked by, and its columns in results.csv and summary.csv would repeat those names
    for e in eval_sets:
        if e["name"] == "avg":
            where = "--eval avg=..." if e["kind"] == "extra" else "mixture domain 'avg'"
            raise UserError(f"{where}: 'avg' names the average over all evaluation sets in the report; "
                            + ("pick another name" if e["kind"] == "extra" else "tokenize it under another --domain"))
    if args.rank_by != "avg" and args.rank_by not in [e["name"] for e in eval_sets]:
        raise UserError(f"--rank-by {args.rank_by!r} is not an evaluation set; choose avg or one of "
                        f"{', '.join(e['name'] for e in eval_sets)}")
    return {"format": PLAN_FORMAT, "settings": asdict(settings), "rank_by": args.rank_by,
            "mixtures": [{k: v for k, v in m.items() if k != "manifest"} for m in mixtures],
            "eval_sets": eval_sets,
            "seeds": seeds, "sweep": sweep, "runs": runs}


def _run_config(settings: Settings, mixture: dict[str, Any], seed: int, out_dir: Path):
    from gristmill.trainer.config import TrainConfig

    fields = dict(settings.train)
    if isinstance(fields.get("betas"), list):
        fields["betas"] = tuple(fields["betas"])
    return TrainConfig(**{**fields, "data": {"mixture": mixture["path"]}, "steps": settings.steps, "seed": seed,
                          "parallel": "single", "out_dir": str(out_dir), "checkpoint_every": 0,
                          "eval_every": 0,  # the ablation evaluates its runs itself
                          # from the checkpoint each segment ends with, so a --config cannot turn them off
                          "save_checkpoints": True, "keep_checkpoints": 1})


def save_plan(rundir: Path, plan: dict[str, Any]) -> None:
    """Write the plan; a RUNDIR made with other settings or evaluation sets, or whose runs of a mixture were
    trained on another version of its manifest (a finished run would be skipped with stale results), is refused,
    not mixed. New mixtures may join a RUNDIR."""
    path = rundir / "ablation.json"
    versions = {}  # every mixture this RUNDIR has trained on -> the sha256 of its manifest
    if path.is_file():
        old = _read_json(path, f"delete {rundir} or use another -o")
        for key, what in (("settings", "training settings"), ("eval_sets", "evaluation sets")):
            if old.get(key) != plan[key]:
                raise UserError(f"{rundir} holds an ablation with different {what}; use another -o "
                                f"(or delete {rundir})")
        versions = old.get("mixture_sha256") or {m["name"]: m.get("sha256") for m in old.get("mixtures", [])}
        changed = [m["name"] for m in plan["mixtures"] if m["name"] in versions and versions[m["name"]] != m["sha256"]]
        if changed:
            raise UserError(f"{rundir} holds runs of mixture(s) {', '.join(changed)} made from another version of "
                            f"the mixture manifest; use another -o (or delete {rundir})")
    plan = {**plan, "mixture_sha256": {**versions, **{m["name"]: m["sha256"] for m in plan["mixtures"]}}}
    write_json(path, plan)


# ----------------------------------------------------------------------------------------------------------
# Running


def eval_rows(sources: list[dict[str, Any]], *, rank: int = 0, world_size: int = 1) -> list[tuple[Any, list[int]]]:
    """(dataset, row indices) per source: a set's evenly spaced validation rows, in a fixed order. With several
    ranks, each takes an equal block of every source's rows (the last len % world_size are left out), so all
    ranks run the same number of batches, as sharded models need."""
    picked = []
    for src in sources:
        ds = TokenDataset(src["manifest"], split="validation")
        rows = _spaced(len(ds), min(src["sequences"], len(ds)))
        per = len(rows) // world_size
        picked.append((ds, rows[rank * per:(rank + 1) * per]))
    return picked


def row_batches(picked: list[tuple[Any, list[int]]], batch_size: int):
    """(ids, n_bytes) batches of batch_size rows over eval_rows' picks, source by source."""
    import torch

    for ds, rows in picked:
        for a in range(0, len(rows), batch_size):
            idx = rows[a:a + batch_size]
            ids = torch.from_numpy(np.stack([np.asarray(ds[i], dtype=np.int64) for i in idx]))
            yield ids, torch.tensor([ds.n_bytes(i) for i in idx], dtype=torch.int64)


def evaluate_checkpoint(cfg, checkpoint_dir: Path, eval_sets: list[dict[str, Any]], batch_size: int) -> dict:
    """{set name: {loss, bits_per_byte, tokens, bytes}} for the model saved in checkpoint_dir."""
    import torch

    from gristmill.trainer import checkpoint
    from gristmill.trainer.evaluate import evaluate_sets

    manifest = json.loads(Path(cfg.data["mixture"]).read_text(encoding="utf-8"))
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    model, _ = checkpoint.load_model(*checkpoint.find_run(checkpoint_dir))
    return evaluate_sets(model.to(device), eval_sets, manifest["tokenizer"], document_masking=cfg.document_masking,
                         batch_size=batch_size, device=device, autocast_bf16=cfg.precision == "bf16")


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _average(sets: dict[str, dict], key: str) -> float | None:
    vals = [v[key] for v in sets.values()]
    return None if any(v is None for v in vals) else float(np.mean(vals))


def train_run(plan: dict[str, Any], run: dict[str, Any], rundir: Path, *, log=None) -> dict[str, Any]:
    """Train one run in segments of eval_every steps (each ends with a checkpoint), evaluating after each;
    resumes from the newest checkpoint and keeps the eval rows up to it. With `log`, one line per evaluation
    (its time and the mean figures). Returns the result record."""
    from gristmill.trainer import checkpoint
    from gristmill.trainer.train import train

    settings = Settings(**plan["settings"])
    mixture = next(m for m in plan["mixtures"] if m["name"] == run["mixture"])
    out = rundir / "runs" / run["name"]
    cfg = _run_config(settings, mixture, run["seed"], out)
    ckpt_root = out / "checkpoints"
    latest = checkpoint.latest(ckpt_root)
    start = 0 if latest is None else int(latest.name.split("-")[1])
    evals_path = out / "eval.jsonl"
    evals = [e for e in _read_jsonl(evals_path) if e["step"] <= start]
    out.mkdir(parents=True, exist_ok=True)
    evals_path.write_text("".join(json.dumps(e) + "\n" for e in evals), encoding="utf-8")
    # the curve counts targets trained on, as the run's metrics.jsonl does (a row of L tokens trains on L - 1)
    tokens_per_step = settings.train["batch_size"] * (settings.seq_len - 1)
    eval_sequences = sum(src["sequences"] for s in plan["eval_sets"] for src in s["sources"])
    step = start
    while True:
        if step > 0 and not any(e["step"] == step for e in evals):
            t0 = time.perf_counter()
            sets = evaluate_checkpoint(cfg, checkpoint.step_dir(ckpt_root, step), plan["eval_sets"],
                                       settings.eval_batch_size)
            row = {"step": step, "tokens": step * tokens_per_step, "avg_loss": _average(sets, "loss"),
                   "avg_bpb": _average(sets, "bits_per_byte"),
                   "sets": {k: {"loss": v["loss"], "bits_per_byte": v["bits_per_byte"]} for k, v in sets.items()}}
            if log is not None:  # one line per evaluation: an ablation evaluates every run ~10 times
                secs = time.perf_counter() - t0
                bpb = f", {row['avg_bpb']:.4f} bits/byte" if row["avg_bpb"] is not None else ""
                log(f"{run['name']}: eval step {step}/{settings.steps}: {len(sets)} sets, {eval_sequences:,} "
                    f"sequences in {secs:.1f} s ({eval_sequences / max(secs, 1e-9):,.1f} seq/s); mean loss "
                    f"{row['avg_loss']:.4f}{bpb}")
            evals.append(row)
            with open(evals_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        if step >= settings.steps:
            break
        step = min(settings.steps, (step // settings.eval_every + 1) * settings.eval_every)
        train(cfg, resume="auto", stop_after=step, verbose=False, progress=run["name"])
    metrics = _read_jsonl(out / "metrics.jsonl")
    final = evals[-1]
    return {"format": RUN_FORMAT, "name": run["name"], "mixture": run["mixture"], "seed": run["seed"],
            "status": "ok", "steps": settings.steps, "tokens": settings.tokens,
            "train_loss": metrics[-1]["loss"] if metrics else None, "avg_loss": final["avg_loss"],
            "avg_bpb": final["avg_bpb"], "sets": final["sets"], "curve": evals}


def _read_json(path: Path, remedy: str) -> dict[str, Any]:
    """A JSON object this command wrote in a RUNDIR; one line where it has been damaged or edited since."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is damaged ({e}); {remedy}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is damaged (not a JSON object); {remedy}")
    return data


def _last_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1]}" if text else type(exc).__name__


def execute(plan: dict[str, Any], rundir: Path, names: list[str], *, keep_checkpoints: bool = False,
            log=print) -> None:
    """Run the named runs one after another; a finished run (result.json) is skipped, and a crash is
    recorded in failed.json with the error's last line while the others go on."""
    todo = [r for r in plan["runs"] if r["name"] in names]
    for i, run in enumerate(todo, 1):
        out = rundir / "runs" / run["name"]
        if (out / "result.json").is_file():
            log(f"[{i}/{len(todo)}] {run['name']}: finished earlier, skipped")
            continue
        t0 = time.perf_counter()
        try:
            result = train_run(plan, run, rundir, log=log)
        except Exception as e:  # a crashed run must not stop the others
            out.mkdir(parents=True, exist_ok=True)
            write_json(out / "failed.json", {"name": run["name"], "error": _last_line(e)})
            log(f"[{i}/{len(todo)}] {run['name']}: FAILED: {_last_line(e)}")
            continue
        (out / "failed.json").unlink(missing_ok=True)
        write_json(out / "result.json", result)
        if not keep_checkpoints:  # only once result.json marks the run done
            shutil.rmtree(out / "checkpoints", ignore_errors=True)
        bpb = f", {result['avg_bpb']:.4f} bits/byte" if result["avg_bpb"] is not None else ""
        log(f"[{i}/{len(todo)}] {run['name']}: mean over evaluation sets: loss {result['avg_loss']:.4f}{bpb} "
            f"({time.perf_counter() - t0:.1f} s)")


def execute_parallel(plan: dict[str, Any], rundir: Path, workers: int, *, keep_checkpoints: bool, log=print) -> None:
    """One worker process per GPU (CUDA_VISIBLE_DEVICES=i), runs dealt round-robin; without GPUs, `workers`
    CPU processes sharing the cores."""
    import torch

    # CUDA_VISIBLE_DEVICES names GPUs only where CUDA finds them: a box without one may still have it set
    # (a copied job script), and CUDA uses no more of its entries than it finds.
    count = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = visible.split(",")[:count] if visible else [str(i) for i in range(count)]
    if gpus and workers > len(gpus):
        raise UserError(f"--parallel-gpus {workers}, but only {len(gpus)} GPU(s) are visible")
    pending = [r["name"] for r in plan["runs"] if not (rundir / "runs" / r["name"] / "result.json").is_file()]
    groups = [pending[i::workers] for i in range(workers)]
    procs = []
    for i, group in enumerate(g for g in groups if g):
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i]
        else:
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
        cmd = [sys.executable, "-m", "gristmill.trainer.ablate", "--worker", str(rundir), *group]
        if keep_checkpoints:
            cmd.append("--keep-checkpoints")
        log(f"worker {i}: {len(group)} run(s)" + (f" on GPU {gpus[i]}" if gpus else ""))
        procs.append(subprocess.Popen(cmd, env=env))
    for p in procs:
        p.wait()


def collect(plan: dict[str, Any], rundir: Path) -> list[dict[str, Any]]:
    """Every planned run's record: its result.json, or failed with the error line, or not run."""
    records = []
    for run in plan["runs"]:
        out = rundir / "runs" / run["name"]
        if (out / "result.json").is_file():
            records.append(_read_json(out / "result.json", f"delete it to train {run['name']} again"))
            continue
        error = "did not finish (interrupted, or its worker process died)"
        if (out / "failed.json").is_file():
            error = str(_read_json(out / "failed.json", "delete it").get("error", error))
        records.append({"format": RUN_FORMAT, **run, "status": "failed", "error": error})
    return records


# ----------------------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXAMPLES
    parser.description = ("Train one proxy model per mixture (x K seeds) on equal tokens, evaluate all on the "
                          "same validation sets, and write a ranked report of which data is better.")
    parser.add_argument("mixtures", nargs="*", metavar="MIXTURE", help="mixture manifests from `mix build`")
    parser.add_argument("--sweep", metavar="DIR", help="a `mix sweep` folder: ablate its members and fit a "
                        "RegMix-style regression from proportions to validation loss")
    parser.add_argument("-o", "--output", required=True, metavar="RUNDIR", help="folder for runs and the report")
    parser.add_argument("--preset", help=f"proxy model: {', '.join(ABLATE_PRESETS)} (default) or a trainer "
                        "preset (`trainer presets`)")
    parser.add_argument("--tokens", help="training tokens per run, e.g. 2M (default: the smallest mixture budget)")
    parser.add_argument("--seeds", type=int, default=1, metavar="K", help="seeds per mixture (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--eval", action="append", metavar="NAME=DIR",
                        help="an extra evaluation set: a token dataset's validation split (repeatable)")
    parser.add_argument("--rank-by", default="avg", metavar="SET",
                        help="rank on one evaluation set's bits per byte instead of the average over all (avg)")
    parser.add_argument("--eval-every", type=int, metavar="STEPS", help="steps between evaluations (default: 10 "
                        "points per run)")
    parser.add_argument("--eval-max-sequences", type=int, default=512, metavar="N",
                        help="rows per evaluation set at most (default 512)")
    parser.add_argument("--eval-batch-size", type=int, default=16, metavar="N",
                        help="sequences per evaluation forward pass (default 16)")
    parser.add_argument("--config", help="a training config (YAML/JSON) whose settings every run shares; "
                        "data, steps, seed, out_dir, parallel, eval_every and the checkpoint settings are set by "
                        "the ablation")
    parser.add_argument("--batch-size", type=int, help="sequences per step (default 16)")
    parser.add_argument("--micro-batch-size", type=int,
                        help="sequences per forward pass (default: the largest divisor of the batch size up to 16)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    parser.add_argument("--precision", choices=("bf16", "fp32"), help="default: bf16 on a GPU, fp32 on the CPU")
    parser.add_argument("--parallel-gpus", type=int, default=0, metavar="N",
                        help="N worker processes, one per visible GPU (default 0: one run after another here)")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep each finished run's last checkpoint")


def run(args: argparse.Namespace) -> int:
    from gristmill.trainer import report

    rundir = Path(args.output)
    fs.check_output_folder(args.output)  # before the plan loads the mixtures and datasets
    plan = make_plan(args)
    save_plan(rundir, plan)
    s = plan["settings"]
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    log(f"ablation: {len(plan['mixtures'])} mixture(s) x {len(plan['seeds'])} seed(s), {s['steps']} steps of "
        f"{s['train']['batch_size']} x {s['seq_len']} tokens ({s['tokens']:,} tokens per run), "
        f"evaluation sets: {', '.join(e['name'] for e in plan['eval_sets'])}")
    if args.parallel_gpus > 0:
        execute_parallel(plan, rundir, args.parallel_gpus, keep_checkpoints=args.keep_checkpoints, log=log)
    else:
        execute(plan, rundir, [r["name"] for r in plan["runs"]], keep_checkpoints=args.keep_checkpoints, log=log)
    records = collect(plan, rundir)
    paths = report.write_report(plan, records, rundir)
    failed = sum(1 for r in records if r["status"] != "ok")
    if failed:
        log(f"{failed} of {len(plan['runs'])} run(s) failed; see the table")
    print(f"report: {paths['report']}")
    return 0


def _worker(argv: list[str]) -> int:
    """`python -m gristmill.trainer.ablate --worker RUNDIR RUN...`: what execute_parallel launches."""
    p = argparse.ArgumentParser(prog="gristmill.trainer.ablate")
    p.add_argument("--worker", required=True, metavar="RUNDIR")
    p.add_argument("runs", nargs="+")
    p.add_argument("--keep-checkpoints", action="store_true")
    args = p.parse_args(argv)
    rundir = Path(args.worker)
    plan = json.loads((rundir / "ablation.json").read_text(encoding="utf-8"))
    execute(plan, rundir, args.runs, keep_checkpoints=args.keep_checkpoints,
            log=lambda msg: print(msg, file=sys.stderr, flush=True))
    return 0


# ----------------------------------------------------------------------------------------------------------
# A planted corpus: the proof that filtering and deduplication help


def planted_corpus(folder: str | Path, *, clean_docs: int = 300, junk_fraction: float = 0.5, seq_len: int = 64,
                   vocab_size: int = 512, seed: int = 0) -> dict[str, Path]:
    """Token datasets for the filters-on vs filters-off comparison, written with the real tokenizer trainer and
    token writer. English prose paragraphs (gristmill.pipeline.textgen) are split into a training pool and a
    held-out pool. `filtered` holds clean documents from the training pool; `raw` holds the same clean documents
    plus planted junk making up `junk_fraction` of its characters: half spam pages with site boilerplate, half
    exact copies of a few clean paragraphs. `heldout` holds documents from the held-out pool (in its validation
    split). Returns {"filtered", "raw", "heldout"} -> dataset folder; all share one tokenizer."""
    from gristmill.pipeline.document import Document
    from gristmill.pipeline.textgen import boilerplate_lines, prose_paragraphs, spam_text
    from gristmill.tokenize.encode import TokenizeConfig, tokenize_documents
    from gristmill.tokenize.train import save_tokenizer, train_tokenizer

    folder = Path(folder)
    rng = random.Random(seed)
    pool = prose_paragraphs()
    train_pool = [p for i, p in enumerate(pool) if i % 5]
    held_pool = [p for i, p in enumerate(pool) if i % 5 == 0]

    def prose_doc(paragraphs: list[str]) -> str:
        return "\n\n".join(rng.choice(paragraphs) for _ in range(rng.randint(2, 5)))

    clean = [prose_doc(train_pool) for _ in range(clean_docs)]
    heldout = [prose_doc(held_pool) for _ in range(max(20, clean_docs // 4))]
    clean_chars = sum(map(len, clean))
    junk_chars = junk_fraction / (1 - junk_fraction) * clean_chars
    spam: list[str] = []
    while sum(map(len, spam)) < junk_chars / 2:
        lines = boilerplate_lines(rng)
        spam.append("\n".join(lines[:8] + spam_text(rng).split("\n") + lines[8:]))
    copied = rng.sample(train_pool, 3)
    dups: list[str] = []
    while sum(map(len, dups)) < junk_chars / 2:
        dups.append(copied[len(dups) % len(copied)])
    tokenizer = folder / "tokenizer.json"
    folder.mkdir(parents=True, exist_ok=True)
    save_tokenizer(train_tokenizer(clean + spam + dups + heldout, vocab_size), tokenizer)

    def write(name: str, texts: list[tuple[str, str]], validation_fraction: float) -> Path:
        docs = [Document(id=doc_id, url=f"https://planted.example/{doc_id}", text=t) for doc_id, t in texts]
        config = TokenizeConfig(seq_len=seq_len, validation_fraction=validation_fraction, domain="web")
        tokenize_documents(docs, str(tokenizer), folder / name, config, seed=seed, source=name)
        return folder / name

    # Clean documents keep their ids in both datasets, so each lands in the same split in both.
    clean_ids = [(f"clean-{i:06d}", t) for i, t in enumerate(clean)]
    junk_ids = [(f"junk-{i:06d}", t) for i, t in enumerate(spam + dups)]
    return {"filtered": write("filtered", clean_ids, 0.05), "raw": write("raw", clean_ids + junk_ids, 0.05),
            "heldout": write("heldout", [(f"heldout-{i:06d}", t) for i, t in enumerate(heldout)], 0.95)}


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
