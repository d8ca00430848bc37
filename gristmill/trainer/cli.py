"""The `trainer` command: train a proxy model, plan memory per GPU, list the model presets, run ablations of
mixtures, evaluate a checkpoint, export a model to Hugging Face transformers."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from gristmill.counts import human_count
from gristmill.errors import UserError

TRAIN_EXAMPLES = """examples:
  trainer train run.yaml                                   # one process (CPU or one GPU)
  torchrun --nproc_per_node 8 -m gristmill.trainer train run.yaml --parallel zero2
  trainer train run.yaml --out-dir runs/a --stop-after 500  # checkpoint and stop; rerun to resume
  trainer train run.yaml --resume never                     # start over (a previous run moves to OUT_DIR/replaced-*)

Metrics: OUT_DIR/metrics.jsonl, one JSON object per step. Checkpoints: OUT_DIR/checkpoints/step-NNNNNNNN
(torch.distributed.checkpoint); a rerun with the same out_dir resumes from the newest one."""

EXPORT_EXAMPLES = """examples:
  trainer export runs/web80 -o hf/web80                     # the newest checkpoint of an out_dir
  trainer export runs/web80/checkpoints/step-00002000 -o hf/web80-2k --dtype bfloat16
  trainer ablate ... --keep-checkpoints && trainer export ABLATION/runs/NAME -o hf/NAME

Then: AutoModelForCausalLM.from_pretrained("hf/web80"), AutoTokenizer.from_pretrained("hf/web80"), or
lm_eval --model hf --model_args pretrained=hf/web80."""

EVALUATE_EXAMPLES = """examples:
  trainer evaluate runs/web80                                # newest checkpoint, the mixture's validation sets
  trainer evaluate runs/web80/checkpoints/step-00001000 --eval clean=out/clean/tokens --json eval.json
  trainer evaluate runs/web80 --quiet > table.txt            # no progress on stderr

Loss is nats per token; bits per byte divide the summed nats by ln 2 and by the rows' UTF-8 bytes (see
docs/trainer.md, Evaluation). Sets are picked as `trainer ablate` picks them.

Progress goes to stderr, as `trainer train`'s bar does: per set, the sequences scored of its total, seq/s,
tok/s and an ETA, redrawn in place on a terminal and a plain line per ~5% of the set otherwise (a log file,
CI); --quiet turns it off. The table (stdout) and --json are the same with and without it."""

PLAN_EXAMPLES = """examples:
  trainer plan run.yaml --gpus 8
  trainer plan --params 7.5B --gpus 64          # the ZeRO paper's example: 120 / 31.4 / 16.6 / 1.9 GB
  trainer plan --params 7.5B --gpus 64 --precision fp32   # fp32 Adam: 4+4+8 bytes/param, no master copy
  trainer plan --preset 1b --gpus 8 --micro-batch 4 --seq-len 2048 --bytes trainer"""


def _count(text: str) -> float:
    """A parameter count: a decimal number (7.5, 1e9, 1E+9) with an optional K/M/B/G/T suffix (7.5B, 350M)."""
    try:
        value = float(human_count(text))
    except ValueError:
        value = 0.0
    if not (0 < value < float("inf")):
        raise UserError(f"--params: not a parameter count: {text!r} (try 7.5B, 125M or 1e9)")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trainer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:\n  trainer train run.yaml\n  trainer plan run.yaml --gpus 8\n"
                                       "  trainer presets\n  trainer ablate out/mixtures/a.json out/mixtures/b.json -o ablations/ab\n"
                                       "  trainer evaluate runs/a --eval clean=out/clean/tokens\n"
                                       "  trainer export runs/a -o hf/a\nRun `trainer COMMAND --help` for more.")
    sub = p.add_subparsers(dest="command", required=True)
    fmt = argparse.RawDescriptionHelpFormatter

    t = sub.add_parser("train", help="train a model from a YAML/JSON config", epilog=TRAIN_EXAMPLES, formatter_class=fmt,
                       description="Train a LLaMA-style proxy model. Launch with torchrun for several processes.")
    t.add_argument("config", help="YAML or JSON training config (see docs/trainer.md)")
    t.add_argument("--parallel", choices=("single", "ddp", "zero1", "zero2", "zero3"), help="override `parallel`")
    t.add_argument("--out-dir", help="override `out_dir`")
    t.add_argument("--steps", type=int, help="override `steps`")
    t.add_argument("--resume", default="auto", help="auto (newest checkpoint in out_dir), never (start over; a previous run in "
                   "out_dir is moved to OUT_DIR/replaced-<time>/), or a checkpoint folder")
    t.add_argument("--stop-after", type=int, metavar="N", help="checkpoint and stop after step N (schedule unchanged)")
    t.add_argument("--allow-draw-change", action="store_true",
                   help="resume a checkpoint whose data position an older gristmill drew (rows by proportion, not by "
                   "token share): keep the position and continue by this version's draw, with a warning (refused "
                   "without it: the rows after it differ from the interrupted run's)")
    t.add_argument("--quiet", action="store_true", help="no config echo or progress bar")

    pl = sub.add_parser("plan", help="estimate memory per GPU under DDP and ZeRO-1/2/3", epilog=PLAN_EXAMPLES,
                        formatter_class=fmt, description="Memory per GPU for parameters, gradients, optimizer "
                        "states and activations, by the ZeRO paper's accounting for the run's precision, or by "
                        "this trainer's own layout (--bytes trainer).")
    pl.add_argument("config", nargs="?", help="training config (model, micro_batch_size, seq_len from data)")
    pl.add_argument("--gpus", type=int, required=True, help="data-parallel GPUs")
    pl.add_argument("--params", help="parameter count instead of a model (e.g. 7.5B)")
    pl.add_argument("--preset", help="a model preset instead of a config")
    pl.add_argument("--micro-batch", type=int, help="sequences per GPU per forward (default: config's)")
    pl.add_argument("--seq-len", type=int, help="sequence length (default: config's data)")
    pl.add_argument("--checkpointing", action="store_true", help="activation checkpointing (default: config's)")
    pl.add_argument("--precision", choices=("bf16", "fp32"),
                    help="the run's precision (default: config's, else bf16): zero-paper counts 2+2+12 bytes/param "
                    "for bf16 (mixed precision), 4+4+8 for fp32; activations are 16- or 32-bit")
    pl.add_argument("--accumulation", type=int, metavar="N",
                    help="micro-batches per step (default: config's batch_size / (micro_batch_size x GPUs), else 1); "
                    "trainer only: above 1, zero2/zero3 keep unsharded fp32 gradients")
    pl.add_argument("--bytes", choices=("zero-paper", "trainer"), default="zero-paper",
                    help="zero-paper: the ZeRO paper's accounting; trainer: what this trainer's modes keep, term by "
                    "term (fp32 shards, gathered copies, DDP buckets; see docs/trainer.md; needs a model)")

    ex = sub.add_parser("export", help="write a checkpoint as a Hugging Face transformers model folder",
                        epilog=EXPORT_EXAMPLES, formatter_class=fmt,
                        description="Write config.json (LlamaForCausalLM; Qwen3ForCausalLM with QK-norm), "
                                    "model.safetensors and the run's tokenizer, for transformers, "
                                    "lm-evaluation-harness or lighteval.")
    ex.add_argument("run", help="a training out_dir (its newest checkpoint) or a checkpoint folder")
    ex.add_argument("-o", "--output", required=True, help="the folder to write")
    ex.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                    help="weight dtype in the file (default: float32, the master weights as trained)")
    ex.add_argument("--tokenizer", help="tokenizer.json to ship (default: the one of the run's mixture)")

    ev = sub.add_parser("evaluate", help="loss and bits per byte of a checkpoint on validation sets",
                        epilog=EVALUATE_EXAMPLES, formatter_class=fmt,
                        description="Evaluate a training run's checkpoint on its mixture's validation domains and "
                                    "on extra token datasets.")
    ev.add_argument("run", help="a training out_dir (its newest checkpoint) or a checkpoint folder")
    ev.add_argument("--eval", action="append", metavar="NAME=DIR",
                    help="an extra evaluation set: a token dataset's validation split (repeatable)")
    ev.add_argument("--no-mixture-sets", action="store_true", help="only the --eval sets")
    ev.add_argument("--max-sequences", type=int, default=512, metavar="N", help="rows per set at most (default 512)")
    ev.add_argument("--batch-size", type=int, default=16, metavar="N",
                    help="sequences per evaluation forward pass (default 16)")
    ev.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ev.add_argument("--quiet", action="store_true", help="no progress on stderr")

    pr = sub.add_parser("presets", help="list model presets with parameter counts and FLOPs per token",
                        epilog="example:\n  trainer presets --vocab-size 50304 --seq-len 2048", formatter_class=fmt,
                        description="The model presets (the `model:` of a training config, `--preset` of plan and "
                                    "ablate): width, depth, heads, SwiGLU size, d_model / n_layers, parameters "
                                    "without and with the embeddings, and training FLOPs per token.")
    pr.add_argument("--vocab-size", type=int, default=32768,
                    help="vocabulary for the embedding counts (default 32768; a run takes its tokenizer's)")
    pr.add_argument("--seq-len", type=int, default=2048, help="sequence length for the FLOPs per token (default 2048)")

    from gristmill.trainer import ablate

    ablate.add_arguments(sub.add_parser("ablate", help="proxy-model ablations of mixtures, with a ranked report",
                                        formatter_class=fmt))
    return p


def _train(args) -> int:
    from gristmill.trainer.config import load_config

    if args.stop_after is not None and args.stop_after < 1:
        raise UserError(f"--stop-after must be >= 1, not {args.stop_after}")
    cfg = load_config(args.config, parallel=args.parallel, out_dir=args.out_dir, steps=args.steps)
    from gristmill.trainer.train import shutdown, train  # torch loads only once the config is known good

    try:
        train(cfg, resume=args.resume, stop_after=args.stop_after, verbose=not args.quiet,
              allow_draw_change=args.allow_draw_change)
    finally:
        shutdown()
    return 0


def _data_shape(data: dict) -> tuple[int, int]:
    """(vocab_size, seq_len) of a config's data, as `train` gives them to the model."""
    if "synthetic" in data:
        syn = data["synthetic"] or {}
        return int(syn.get("vocab_size", 256)), int(syn.get("seq_len", 32))
    from gristmill.trainer.data import MixtureSource

    source = MixtureSource(data["mixture"], 1, batches=1)
    return source.vocab_size, source.seq_len


def _plan(args) -> int:
    from gristmill.trainer import plan as planner
    from gristmill.trainer.model import model_config, model_config_for_data

    for flag, value in (("--gpus", args.gpus), ("--micro-batch", args.micro_batch), ("--seq-len", args.seq_len),
                        ("--accumulation", args.accumulation)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be >= 1, not {value}")
    if sum(x is not None for x in (args.config, args.params, args.preset)) != 1:
        raise UserError("give exactly one of CONFIG, --params or --preset")
    if args.bytes == "trainer" and args.params is not None:
        raise UserError("--bytes trainer needs the model's blocks (FSDP2 gathers one at a time): give a config or "
                        "--preset, not --params")
    micro, seq, ckpt, precision, accum = args.micro_batch, args.seq_len, args.checkpointing, args.precision, 1
    kernels = "triton"  # what `kernels: auto` runs on a GPU
    if args.params is not None:
        psi, mcfg = _count(args.params), None
        name = f"{psi / 1e9:g}B parameters"
    else:
        if args.config:
            from dataclasses import replace

            from gristmill.trainer.config import load_config

            cfg = load_config(args.config)
            vocab, data_seq = _data_shape(cfg.data)
            seq = seq or data_seq
            micro = micro or cfg.micro_batch_size
            ckpt = ckpt or cfg.activation_checkpointing
            precision = precision or cfg.precision
            kernels = "torch" if cfg.kernels == "torch" else "triton"
            if args.bytes == "trainer" and args.accumulation is None:  # as train splits the batch over the GPUs
                accum = replace(cfg, micro_batch_size=micro).accumulation_steps(args.gpus)
            mcfg = model_config_for_data(cfg.model, vocab_size=vocab)  # the vocabulary comes from the data, as in train
        else:
            mcfg = model_config(args.preset)
        psi = mcfg.num_params()
        name = f"{psi / 1e6:.1f}M parameters (d_model {mcfg.d_model}, {mcfg.n_layers} layers)"
    precision = precision or "bf16"
    accum = args.accumulation or accum
    act = 0.0
    if mcfg is not None and micro and seq:
        act = planner.activation_bytes(mcfg, seq_len=seq, micro_batch=micro, checkpointing=ckpt, precision=precision,
                                       kernels=kernels)
    gpus = f"{args.gpus} GPU{'' if args.gpus == 1 else 's'}"
    shape = (f"{precision}, micro-batch {micro} x seq {seq}{', checkpointed' if ckpt else ''}" if act else
             "not estimated (give a config, or --micro-batch and --seq-len with --preset)")
    header = f"{name} on {gpus}, {planner.accounting_note(args.bytes, precision, args.gpus, accum)}; activations: {shape}"
    layout = planner.Layout.of(mcfg) if mcfg is not None else None
    print(planner.format_plan(planner.plan(psi, args.gpus, activations=act, accounting=args.bytes, precision=precision,
                                           layout=layout, accumulation=accum), header))
    return 0


def _presets(args) -> int:
    from gristmill.trainer.model import PRESETS, model_config

    print(f"{'preset':<8}{'d_model':>8}{'layers':>7}{'heads':>6}{'ffn':>6}{'d/L':>6}{'non-emb':>10}{'total':>10}"
          f"{'GFLOPs/tok':>12}   (vocab {args.vocab_size}, seq {args.seq_len})")
    for name in PRESETS:
        c = model_config(name, vocab_size=args.vocab_size)
        print(f"{name:<8}{c.d_model:>8}{c.n_layers:>7}{c.n_heads:>6}{c.ffn_hidden:>6}{c.d_model / c.n_layers:>6.0f}"
              f"{c.num_params(embedding=False) / 1e6:>9.1f}M{c.num_params() / 1e6:>9.1f}M"
              f"{c.flops_per_token(args.seq_len) / 1e9:>12.3f}")
    return 0


def _evaluate(args) -> int:
    from gristmill.trainer.ablate import parse_eval_sets
    from gristmill.trainer.evaluate import evaluate_run

    if args.max_sequences < 1 or args.batch_size < 1:
        raise UserError("--max-sequences and --batch-size must be >= 1")
    if args.json:
        from gristmill.pipeline import fs

        fs.check_output_file(args.json)  # before the evaluation, not after it
    result = evaluate_run(args.run, parse_eval_sets(args.eval), max_sequences=args.max_sequences,
                          batch_size=args.batch_size, mixture_sets=not args.no_mixture_sets,
                          progress=not args.quiet)
    print(f"{result['checkpoint']} (step {result['step']})")
    print(f"{'set':<16}{'kind':<8}{'sequences':>10}{'tokens':>12}{'loss':>10}{'bits/byte':>11}")
    for name, m in result["sets"].items():
        bpb = f"{m['bits_per_byte']:.4f}" if m["bits_per_byte"] is not None else "-"
        print(f"{name:<16}{m['kind']:<8}{m['sequences']:>10,}{m['tokens']:>12,}{m['loss']:>10.4f}{bpb:>11}")
    if args.json:
        from gristmill.trainer.train import json_line

        Path(args.json).write_text(json_line(result, indent=2, sort_keys=True))  # strict: no NaN, as eval.jsonl
    return 0


def _export(args) -> int:
    from gristmill.trainer.export import export

    out = export(args.run, args.output, dtype=args.dtype, tokenizer=args.tokenizer)
    print(f"wrote {out} (config.json, model.safetensors{', tokenizer' if (out / 'tokenizer.json').is_file() else ''})")
    return 0


# How long a machine's other processes wait, after a user error, for its first to print the line: torchrun ends
# a run's processes as soon as one exits with an error, so the first (slower to import under load, say) was ended
# before it printed, and the line was only in torchrun's report.
REPORT_GRACE_S = 10.0


def _let_the_first_process_report() -> None:
    """Under torchrun, a process other than its machine's first waits REPORT_GRACE_S before it exits: every rank
    raises the same error, and the first's exit ends this one sooner. One only this rank saw costs the wait."""
    if os.environ.get("LOCAL_RANK", "0") != "0" and os.environ.get("TORCHELASTIC_RUN_ID"):
        time.sleep(REPORT_GRACE_S)


def _report_error(line: str) -> None:
    """Print a user error's one line on stderr; under torchrun only from each machine's first process
    (LOCAL_RANK 0), since every rank raises the same one: the config is checked before the process group, the data
    checks read the same files, and an anomaly is judged on the all-reduced loss and gradient norm. Every rank
    also writes its line to torchrun's error file for it (TORCHELASTIC_ERROR_FILE, what `@record` writes a
    traceback to), so torchrun's failure report shows each failed rank's reason, one only another rank saw
    (a copy from an object store that failed there, say) included."""
    if os.environ.get("LOCAL_RANK", "0") == "0":
        print(line, file=sys.stderr)
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if error_file:
        # record_exception's layout; the report prints py_callstack, here the line in place of a traceback
        Path(error_file).write_text(json.dumps({"message": {"message": line, "extraInfo": {
            "py_callstack": line, "timestamp": str(int(time.time()))}}}))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "ablate":
            from gristmill.trainer import ablate

            return ablate.run(args)
        return {"train": _train, "plan": _plan, "presets": _presets, "export": _export,
                "evaluate": _evaluate}[args.command](args)
    except UserError as e:
        _report_error(f"error: {e}")
        _let_the_first_process_report()
        return 2  # as beam and mix: a user mistake, apart from a crash (1, with its traceback)
    except KeyboardInterrupt:
        _report_error("error: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
