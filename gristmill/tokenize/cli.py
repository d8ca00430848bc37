"""`beam tokenize train|encode|verify`: train a tokenizer on, or tokenize, document shards written by an earlier run,
and check a token dataset's files against its manifest."""
from __future__ import annotations

import argparse
import json
import math
import sys

from gristmill.errors import UserError
from gristmill.pipeline import fs

TRAIN_EPILOG = """\
examples:
  beam tokenize train 'out/cc_en/documents/*.jsonl.gz' --output out/tok
  beam tokenize train 'out/multi/documents/*.jsonl.gz' --output out/tok --multilingual --sample-docs 200000
"""

ENCODE_EPILOG = """\
examples:
  beam tokenize encode 'out/cc_en/documents/*.jsonl.gz' --tokenizer out/tok/tokenizer.json --output out/tokens
  beam tokenize encode 'docs/*.jsonl.gz' --tokenizer tok.json --output out/tokens --seq-len 4096 \\
      --shard-mb 256 --validation-fraction 0.005 --domain web --direct_num_workers=2
Any flag not listed here is a Beam pipeline option (--runner, --direct_num_workers, ...).
"""

VERIFY_EPILOG = """\
examples:
  beam tokenize verify out/tokens
  beam tokenize verify out/cc_en/tokens out/wiki/tokens gs://bucket/code/tokens --quiet
Exit status 0 when every file matches its manifest, 1 when any does not, 2 when a folder holds no token dataset.
"""


def iter_documents(glob: str):
    """Documents from JSONL(.gz) files matching `glob`, files in name order; unparsable lines and damaged gzip
    members are skipped and reported on stderr, a file that cannot be read (gone, cut short) is an error."""
    from gristmill.pipeline.docio import BAD_GZIP, parse_document_file

    paths = fs.input_files(glob, "*.jsonl.gz")
    if not paths:
        raise UserError(f"no document files match {glob}")
    bad = damaged = 0
    for path in paths:
        try:
            for item in parse_document_file(path):
                if item is BAD_GZIP:
                    damaged += 1
                elif isinstance(item, str):
                    bad += 1
                else:
                    yield item
        except (OSError, EOFError) as e:  # gone, not a file, truncated gzip
            raise UserError(f"cannot read {path}: {e}") from None
    if bad or damaged:
        regions = f" and {damaged} damaged gzip region(s)" if damaged else ""
        print(f"warning: skipped {bad} unparsable line(s){regions} in {glob}", file=sys.stderr)


def recipe_hash_of(glob: str) -> str:
    """The recipe hash of the run that wrote the documents: OUT/stats.json beside OUT/documents/."""
    first = fs.matching(glob)[0]
    stats = fs.join(fs.dirname(fs.dirname(first)), "stats.json")
    try:
        return json.loads(fs.read_bytes(stats).decode("utf-8"))["recipe"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _cmd_train(args: argparse.Namespace) -> int:
    from gristmill.tokenize.train import (
        check_training,
        default_vocab_size,
        save_tokenizer,
        select_sample,
        train_tokenizer,
    )

    if args.sample_docs < 1:
        raise UserError(f"--sample-docs must be >= 1, not {args.sample_docs}")
    vocab = default_vocab_size(args.multilingual) if args.vocab_size is None else args.vocab_size
    check_training(vocab, args.min_frequency, ("--vocab-size", "--min-frequency"))
    fs.check_output_folder(args.output)  # before the documents are read and the tokenizer trained
    texts = select_sample(iter_documents(args.input), args.sample_docs, args.seed)
    if not texts:
        raise UserError(f"no non-empty documents in {args.input}")
    tok = train_tokenizer(texts, vocab, args.min_frequency)
    path = fs.join(args.output, "tokenizer.json")
    digest = save_tokenizer(tok, path)
    print(f"trained on {len(texts)} documents; vocabulary {tok.get_vocab_size()}", file=sys.stderr)
    print(f"{path} sha256={digest}")
    return 0


def _cmd_encode(args: argparse.Namespace, beam_args: list[str]) -> int:
    from gristmill.pipeline.docio import ReadDocuments, report_counts
    from gristmill.pipeline.runner import run_stages
    from gristmill.pipeline.stages import RunContext
    from gristmill.tokenize.stages import Tokenize

    if not fs.input_files(args.input, "*.jsonl.gz"):
        raise UserError(f"no document files match {args.input}")
    if not (math.isfinite(args.shard_mb) and args.shard_mb > 0):  # int() of nan or inf raises
        raise UserError(f"--shard-mb must be a positive number of MiB, not {args.shard_mb}")
    # The settings are checked here; the tokenizer is loaded by the stage's validate, before the run starts.
    stage = Tokenize("Tokenize", seq_len=args.seq_len, shard_bytes=int(args.shard_mb * (1 << 20)),
                     validation_fraction=args.validation_fraction, domain=args.domain, tokenizer=args.tokenizer,
                     source=args.source or fs.basename(args.output.rstrip("/")), subdir="", buckets=args.buckets)
    ctx = RunContext(input=args.input, output=args.output, seed=args.seed, recipe_name="tokenize",
                     recipe_hash=args.recipe_sha256 or recipe_hash_of(args.input), num_workers=args.workers,
                     params={k: v for k, v in vars(args).items() if k != "func"})
    stats = run_stages([ReadDocuments("ReadDocuments", args.input), stage], ctx, beam_args)
    manifest_path = fs.join(args.output, "manifest.json")
    manifest = json.loads(fs.read_bytes(manifest_path).decode("utf-8"))
    for split, s in manifest["splits"].items():
        print(f"{split}: {s['sequences']} sequences, {s['tokens']} tokens, {s['documents']} documents, "
              f"{len(s['shards'])} shard(s)", file=sys.stderr)
    report_counts(stats, "Tokenize", fs.join(args.output, "stats.json"))
    print(manifest_path)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from functools import partial

    from gristmill.tokenize import remote
    from gristmill.tokenize.shards import load_manifest, verify_files
    from gristmill.trainer.progress import Progress

    # Every dataset is found before any is read whole, so a mistyped last one fails at once. A remote one: its
    # manifest alone is staged, and each file is then copied afresh, checked and deleted (remote.fetched), so
    # what is checked is the remote bytes, not a copy the cache took earlier.
    loaded = [load_manifest(d) for d in args.datasets]
    failed = False
    for name, (manifest, root) in zip(args.datasets, loaded):
        fetch = partial(remote.fetched, remote.manifest_url(name), folder=root) if fs.is_remote(name) else None
        total = sum(len(s["shards"]) for s in manifest["splits"].values())
        bar = Progress(total, not args.quiet, what=f"{name}: shards")
        unhashed = sum("sha256" not in e for s in manifest["splits"].values() for e in s["shards"])
        checked, hashed, problems = verify_files(
            manifest, root, say=lambda line: print(line, flush=True),
            progress=lambda done, nbytes: bar.show(done, f"{nbytes / 1e6:,.1f} MB hashed"), fetch=fetch)
        note = f" ({unhashed} with no sha256 recorded)" if unhashed else ""
        print(f"{name}: {checked} shard(s) checked{note}, {hashed:,} bytes hashed, {problems} problem(s)")
        failed |= problems > 0
    return 1 if failed else 0


def register(subparsers) -> None:
    """Adds `beam tokenize train`, `beam tokenize encode` and `beam tokenize verify` to the beam CLI."""
    group = subparsers.add_parser(
        "tokenize", help="train a BPE tokenizer on, or tokenize, document shards from an earlier run",
        description="Byte-level BPE tokenization of gristmill document shards into Arrow token shards.",
        epilog="examples:\n  beam tokenize train --help\n  beam tokenize encode --help\n  beam tokenize verify --help",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = group.add_subparsers(dest="tokenize_command", metavar="COMMAND", required=True)

    t = sub.add_parser(
        "train", help="train a byte-level BPE tokenizer on a deterministic sample of documents",
        description="Train a byte-level BPE tokenizer (specials <|pad|>, <|bos|>, <|eos|>) on the SAMPLE_DOCS "
                    "documents with the smallest seeded hash of their id; writes OUTPUT/tokenizer.json and prints "
                    "its sha256.",
        epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("input", help="document files (JSONL or JSONL.gz glob), e.g. 'out/cc_en/documents/*.jsonl.gz'")
    t.add_argument("--output", required=True, help="folder to write tokenizer.json into (local, gs://, s3://)")
    t.add_argument("--vocab-size", type=int, default=None,
                   help="vocabulary size including 256 bytes and 3 specials, 259 to 16777216 (default 32000, "
                        "or 100000 with --multilingual)")
    t.add_argument("--multilingual", action="store_true", help="default to the multilingual vocabulary size")
    t.add_argument("--sample-docs", type=int, default=50_000, help="documents to train on (default 50000)")
    t.add_argument("--min-frequency", type=int, default=2, help="minimum pair count for a merge, >= 0 (default 2)")
    t.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser(
        "encode", help="tokenize documents into packed Arrow shards with manifest.json (runs on Beam)",
        description="Encode documents (each repeated by its `repeats` field, EOS after each), pack them into "
                    "sequences of --seq-len ids, and write train/validation Arrow shards plus manifest.json to "
                    "--output. Runs on Beam: in-process with one worker per core unless --runner says otherwise.",
        epilog=ENCODE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("input", help="document files (JSONL or JSONL.gz glob)")
    e.add_argument("--tokenizer", required=True, help="tokenizer.json: from `beam tokenize train`, or a published "
                                                     "one (GPT-2, Llama, Mistral, Qwen, ...), by path or URL")
    e.add_argument("--output", required=True, help="token dataset folder to write (local, gs://, s3://)")
    e.add_argument("--seq-len", type=int, default=2048, help="ids per training sequence (default 2048)")
    e.add_argument("--shard-mb", type=float, default=128.0, help="target shard size in MiB (default 128)")
    e.add_argument("--validation-fraction", type=float, default=0.01,
                   help="fraction of documents held out for validation (default 0.01)")
    e.add_argument("--buckets", type=int, default=8,
                   help="sort-and-pack units of the train split (default 8); one worker holds about 4 x tokens / "
                        "buckets bytes of ids, so raise it for big corpora (about tokens / 32M gives one 128 MB "
                        "shard per bucket)")
    e.add_argument("--domain", default="web", help="domain name recorded in the manifest (default web)")
    e.add_argument("--source", default="", help="source name in the manifest (default: the output folder's name)")
    e.add_argument("--recipe-sha256", default="", help="hash of the recipe that made the documents, for the manifest (default: read from "
                        "the run's stats.json beside its documents/ folder)")
    e.add_argument("--seed", type=int, default=0, help="seed of the validation split and packing order (default 0)")
    e.add_argument("--workers", type=int, default=0, help="local workers (default: one per core)")
    e.set_defaults(func=_cmd_encode, takes_beam_args=True)

    v = sub.add_parser(
        "verify", help="read every byte of token datasets and check each file against its manifest",
        description="Check every shard of every split of each DATASET: the file is there, its size, its sha256 "
                    "(when the manifest records one), its record batches, documents, text_bytes and tokens, and every id "
                    "inside the vocabulary; and the tokenizer.json's sha256. Prints one line per problem and a "
                    "summary per dataset. Opening a dataset for training checks only what it can without reading "
                    "input_ids; this reads everything.",
        epilog=VERIFY_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("datasets", nargs="+", metavar="DATASET",
                   help="token dataset folder or its manifest.json (local, or gs://, s3://: each file is read from there)")
    v.add_argument("--quiet", action="store_true", help="no progress on stderr")
    v.set_defaults(func=_cmd_verify)
