"""The `beam` command: run recipes on Apache Beam, generate the sample crawl, provision models, tokenize."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
import traceback

from gristmill.errors import UserError
from gristmill.pipeline import fs

RUN_EPILOG = """\
examples:
  beam run recipes/cc_en.py                                 # bundled sample crawl, local runner, all cores
  beam run recipes/cc_en.py --input 'crawl/*.warc.gz' --output out/cc_en -p language=fr
  beam run recipes/cc_en.py --input 'arc/*.arc.gz'           # pre-2013 ARC files, read as WARC files are
  beam run recipes/cc_en.py --direct_num_workers=1           # any Beam pipeline option passes through
  beam run recipes/cc_en.py --runner=DataflowRunner --project=P --region=us-central1 \\
      --temp_location=gs://B/tmp --sdk_container_image=IMAGE_WITH_GRISTMILL \\
      --input 'gs://B/crawl/*.warc.gz' --output gs://B/out
  beam run recipes/cc_en.py --runner=FlinkRunner --flink_master=HOST:8081 \\
      --flink_job_server_jar=/path/beam-runners-flink-job-server.jar --environment_type=LOOPBACK
  beam run recipes/cc_en.py --runner=SparkRunner --spark_master_url=spark://HOST:7077 \\
      --spark_job_server_jar=/path/beam-runners-spark-job-server.jar --environment_type=LOOPBACK
"""

# Modules that add subcommand groups to `beam` through a `register(subparsers)` function.
SUBCOMMAND_MODULES = [
    "gristmill.pipeline.sample",
    "gristmill.filters.cli",
    "gristmill.tokenize.cli",
    "gristmill.pipeline.select",
    "gristmill.pipeline.summarize",
]


def _cmd_run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from gristmill.pipeline.recipe import load_recipe
    from gristmill.pipeline.runner import run_stages
    from gristmill.pipeline.stages import RunContext

    # Every user mistake (recipe, parameter, flag) is reported before the sample crawl is generated.
    recipe = load_recipe(args.recipe, args.param)
    stages = recipe.stages()
    if args.output:
        fs.check_filesystem(args.output)
    output = args.output or os.path.join("out", recipe.name)
    fs.check_output_folder(output)
    if args.input:
        inp = args.input
        if not fs.input_files(inp, "*.warc.gz"):
            raise UserError(f"no input files match {inp}")
    else:
        from gristmill.pipeline.sample import default_sample_paths

        paths = default_sample_paths()
        inp = os.path.join(os.path.dirname(paths[0]), "*.warc.gz")
        print(f"input: bundled sample crawl ({len(paths)} file(s) in {os.path.dirname(paths[0])})", file=sys.stderr)
    ctx = RunContext(input=inp, output=output, params=recipe.params, seed=args.seed, recipe_name=recipe.name,
                     recipe_hash=recipe.sha256(stages), num_workers=args.workers or 0)
    print(f"running recipe {recipe.name} ({len(stages)} stages) -> {output}", file=sys.stderr)
    stats = run_stages(stages, ctx, beam_args)
    print_summary(stats)
    print(f"stats: {ctx.path('stats.json')}")
    for label, node in stats["stages"].items():
        if node.get("no_tokenizer"):
            raise UserError(f"stage {label}: no document reached the tokenizer's training sample, so no token "
                            f"dataset was written (the table above shows where the documents went)")
    return 0 if stats.get("balanced", True) else 1


def print_summary(stats: dict) -> None:
    rows = []
    for label, node in stats["stages"].items():
        if "in" not in node:
            continue
        reasons = sorted(node.get("dropped", {}).items(), key=lambda kv: -kv[1])
        top = ", ".join(f"{r} {n}" for r, n in reasons[:3]) + (" ..." if len(reasons) > 3 else "")
        rows.append((label, node["in"], node.get("kept", 0), node.get("dropped_total", 0), top))
    w = max([len(r[0]) for r in rows] + [5])
    print(f"{'stage':<{w}} {'in':>9} {'kept':>9} {'dropped':>9}  top drop reasons", file=sys.stderr)
    for label, n_in, kept, dropped, top in rows:
        print(f"{label:<{w}} {n_in:>9} {kept:>9} {dropped:>9}  {top}", file=sys.stderr)
    if not stats.get("balanced", True):
        print(f"error: counts do not add up in {', '.join(stats['unbalanced_stages'])}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="beam", description="gristmill's Beam pipeline: WARC files to filtered, deduplicated, tokenized data.",
        epilog="example:\n  beam run recipes/cc_en.py\n  beam sample sample.warc.gz\n  beam run --help",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser(
        "run", help="run a recipe on a Beam runner (default: in-process, one worker per core)",
        description="Run a recipe. Flags not listed here are Beam pipeline options (--runner, --direct_num_workers, "
                    "--project, --flink_job_server_jar, ...).",
        epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("recipe", help="recipe file, e.g. recipes/cc_en.py")
    run.add_argument("--input", help="input glob (local, gs://, s3://) of WARC, WET or ARC files (*.warc.gz, "
                                      "*.warc.wet.gz, *.arc.gz); default: the bundled sample crawl")
    run.add_argument("--output", help="output directory (default: out/<recipe name>)")
    run.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                     help="override a recipe parameter (repeatable), e.g. -p language=fr")
    run.add_argument("--seed", type=int, default=0, help="seed for every random choice (default 0)")
    run.add_argument("--workers", type=int, default=0, help="local workers (default: one per core)")
    run.set_defaults(func=_cmd_run, takes_beam_args=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


_BEAM_ERROR_LOGGERS = ("apache_beam.runners.common", "apache_beam.runners.worker.sdk_worker",
                       "apache_beam.runners.portability.local_job_service",
                       "apache_beam.runners.portability.fn_api_runner.fn_runner")


def _not_a_user_error(record: logging.LogRecord) -> bool:
    if record.exc_info and isinstance(record.exc_info[1], UserError):
        return False
    return "gristmill.errors.UserError" not in record.getMessage()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # apache_beam warns about optional GCP client libraries at import; it is not actionable here.
    logging.getLogger().addFilter(lambda r: "apitools not found" not in r.getMessage())
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    if extra and not getattr(args, "takes_beam_args", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not args.debug:
        # A UserError raised in an in-process worker reaches us below as itself, but Beam first logs its traceback
        # from these loggers (a logger's own filter sees its records whatever handlers exist). Worker processes
        # log on their own stderr, out of reach; theirs arrives wrapped, and is unwrapped below.
        for name in _BEAM_ERROR_LOGGERS:
            logging.getLogger(name).addFilter(_not_a_user_error)
    try:
        if getattr(args, "takes_beam_args", False):
            from apache_beam.io.filesystems import FileSystems

            from gristmill.pipeline.runner import pipeline_options

            # A bad flag is one line before anything runs, and remote filesystems (S3's credentials, GCS's
            # project) take their settings from the pipeline options, for the listings done before the pipeline.
            FileSystems.set_options(pipeline_options(extra, getattr(args, "workers", None)))
            if getattr(args, "output", None):
                fs.check_output_folder(args.output)
            return args.func(args, extra) or 0
        return args.func(args) or 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        worker_error = re.search(r"gristmill\.errors\.UserError: (.+)", str(e))
        if args.debug:
            traceback.print_exc()
        elif worker_error:  # a user mistake found in a worker process (Beam wraps it in a RuntimeError)
            print(f"error: {worker_error.group(1).strip()}", file=sys.stderr)
            return 2
        else:
            last = str(e).strip().splitlines()[-1:] or [""]
            print(f"error: {type(e).__name__}: {last[0][:500]} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
