"""Builds a Beam pipeline from a list of stages, runs it, and turns Beam metrics into stats.json."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import sys
import threading
import time
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from gristmill.errors import UserError
from gristmill.pipeline import fs
from gristmill.pipeline.stages import NAMESPACE, FilterStage, RunContext, Stage

LOCAL_RUNNERS = ("FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")


def pipeline_options(beam_args: list[str] | None, num_workers: int | None = None) -> PipelineOptions:
    """Beam options from user flags, defaulting to the in-process FnApiRunner with one worker per core.

    FnApiRunner is the local default because the DirectRunner first tries to download a Prism binary.
    Unknown flags, and known ones with a bad value (Beam's argparse would print its whole usage), are one line.
    """
    if num_workers is not None and num_workers < 0:
        raise UserError(f"--workers must be >= 0 (0: one per core), not {num_workers}")
    usage = io.StringIO()
    try:
        with contextlib.redirect_stderr(usage):
            opts = _pipeline_options(list(beam_args or []), num_workers)
    except SystemExit:
        last = (usage.getvalue().strip().splitlines() or [""])[-1]
        raise UserError(f"pipeline option {last.split('error: ', 1)[-1].removeprefix('argument ')}") from None
    sys.stderr.write(usage.getvalue())  # anything else Beam said (a deprecation warning) is not lost
    return opts


def _pipeline_options(args: list[str], num_workers: int | None) -> PipelineOptions:
    opts = PipelineOptions(args)
    # Beam logs "Discarding unparseable args" for flags it does not know; we report them ourselves, in one line.
    beam_log = logging.getLogger("apache_beam.options.pipeline_options")
    quiet = _DropMessages("Discarding unparseable args")
    beam_log.addFilter(quiet)
    try:
        known = opts.get_all_options(retain_unknown_options=False)
        unknown = set(opts.get_all_options(retain_unknown_options=True)) - set(known)
    finally:
        beam_log.removeFilter(quiet)
    if unknown:
        raise UserError(f"unknown pipeline option(s): {', '.join('--' + u for u in sorted(unknown))} "
                        f"(see 'beam run --help' and Beam's PipelineOptions)")
    given = {a.split("=", 1)[0].lstrip("-") for a in args if a.startswith("--")}
    extra = []
    if "runner" not in given:
        extra.append("--runner=FnApiRunner")
    runner = (opts.view_as(StandardOptions).runner or "FnApiRunner") if "runner" in given else "FnApiRunner"
    workers = opts.view_as(DirectOptions).direct_num_workers
    if workers is not None and workers < 0:
        raise UserError(f"--direct_num_workers must be >= 0 (0: one per core), not {workers}")
    if runner in LOCAL_RUNNERS:
        if "direct_num_workers" not in given:
            extra.append(f"--direct_num_workers={num_workers or os.cpu_count() or 1}")
        if "direct_running_mode" not in given:
            extra.append("--direct_running_mode=multi_processing")
    return PipelineOptions(args + extra)


def check_inputs_survive(stages: list[Stage], ctx: RunContext) -> None:
    """One line when a stage would read a file from a folder that another stage of the run replaces (e.g.
    `beam select` with --output the run folder it reads from): the run would destroy its own input."""
    folders = [f for s in stages if (f := getattr(s, "output_folder", lambda c: None)(ctx))]
    if not folders:
        return
    for s in stages:
        listing = getattr(s, "input_files", None)
        for path in listing(ctx) if listing else []:
            for folder in folders:
                if _inside(path, folder):
                    raise UserError(f"stage {s.label} reads {path}, which lies in {folder}, the folder this run "
                                    f"writes its documents to: give another --output")


def _inside(path: str, folder: str) -> bool:
    if fs.is_remote(path) or fs.is_remote(folder):
        return path.startswith(folder.rstrip("/") + "/")
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


class _DropMessages(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def run_stages(stages: list[Stage], ctx: RunContext, beam_args: list[str] | None = None,
               wait: bool = True, extra_stats: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run `stages` in order; write OUTPUT/stats.json (counts, then `extra_stats`) and OUTPUT/run.json (timing,
    options)."""
    if not stages:
        raise UserError("the recipe has no stages")
    labels = [s.label for s in stages]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise UserError(f"stage labels must be unique; repeated: {', '.join(dupes)}")
    flow = None
    for s in stages:
        if flow == "pages" and isinstance(s, FilterStage) and getattr(s.filter, "needs_text", True):
            raise UserError(f"stage {s.label}: {type(s.filter).__name__} reads the text, so it must come after "
                            f"text extraction")
        flow = s.produces or flow
    opts = pipeline_options(beam_args, ctx.num_workers)  # a bad flag fails before any model loads
    fs.check_output_folder(ctx.output)
    check_inputs_survive(stages, ctx)
    for s in stages:
        validate = getattr(s, "validate", None)
        if validate is not None:
            validate(ctx)
    # Workers write to a pipe, so they learn from the environment how to show progress: every 2 s on a
    # terminal, every 30 s otherwise (a log file, CI); GRISTMILL_PROGRESS=0 turns it off.
    os.environ.setdefault("GRISTMILL_PROGRESS", "1" if sys.stderr.isatty() else "log")
    FileSystems.mkdirs(ctx.output) if not FileSystems.exists(ctx.output) else None
    t0 = time.time()
    p = beam.Pipeline(options=opts)
    pcoll = p
    for s in stages:
        pcoll = s.expand(pcoll, ctx)
    with quiet_local_workers():
        result = p.run()
        if not wait:
            return {}
        result.wait_until_finish()
    elapsed = time.time() - t0
    stats = collect_stats(result, labels)
    stats["recipe"] = {"name": ctx.recipe_name, "sha256": ctx.recipe_hash, "seed": ctx.seed}
    stats.update(extra_stats or {})
    _write_json(ctx.path("stats.json"), stats)
    all_opts = opts.get_all_options(drop_default=True)
    _write_json(ctx.path("run.json"), {"seconds": round(elapsed, 3), "options": {k: str(v) for k, v in all_opts.items()},
                                       "input": ctx.input, "params": ctx.params})
    stats["seconds"] = elapsed
    return stats


def _write_json(path: str, obj: Any) -> None:
    # Not sort_keys: stages stay in recipe order; every dict here is built in a deterministic order.
    with FileSystems.create(path, mime_type="application/json") as f:
        f.write((json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def collect_stats(result, labels: list[str]) -> dict[str, Any]:
    """Nest the `<label>/<key>` counters per stage; check in = kept + dropped for every stage."""
    try:
        counters = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    except Exception as e:  # some runners do not report metrics
        logging.warning("runner returned no metrics: %s", e)
        counters = []
    flat: dict[str, int] = {}
    for c in counters:
        value = c.committed if c.committed is not None else c.attempted
        flat[c.key.metric.name] = flat.get(c.key.metric.name, 0) + int(value or 0)
    return nest_counters(flat, labels)


def nest_counters(flat: dict[str, int], labels: list[str]) -> dict[str, Any]:
    stages: dict[str, Any] = {}
    for name, value in sorted(flat.items()):
        label, _, key = name.partition("/")
        node = stages.setdefault(label, {})
        parts = key.split("/", 1)
        if len(parts) == 2:
            node.setdefault(parts[0], {})[parts[1]] = value
        else:
            node[key] = value
    ordered = {l: stages[l] for l in labels if l in stages}
    ordered.update({l: v for l, v in stages.items() if l not in ordered})
    unbalanced = []
    for label, node in ordered.items():
        if "in" in node:
            dropped = sum(node.get("dropped", {}).values())
            node["dropped_total"] = dropped
            if node["in"] != node.get("kept", 0) + dropped:
                unbalanced.append(label)
    last = next((ordered[l] for l in reversed(labels) if l in ordered and "kept" in ordered[l]), {})
    return {"stages": ordered, "documents_out": last.get("kept", 0), "balanced": not unbalanced,
            "unbalanced_stages": unbalanced}


# Local SDK worker subprocesses log their start-up chatter at INFO on our stderr, and the pipeline
# options (log level included) do not reach them; this filter keeps progress and real warnings only.
_WORKER_NOISE = re.compile(rb"^(INFO:|DEBUG:)|semi_persistent_directory|apitools not found|Logging handler created")


@contextlib.contextmanager
def quiet_local_workers():
    if os.environ.get("GRISTMILL_VERBOSE_WORKERS") == "1":
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (e.g. captured by a test harness)
        yield
        return
    r, w = os.pipe()
    os.dup2(w, 2)
    os.close(w)

    def pump():
        with os.fdopen(r, "rb") as src:
            for line in src:
                if not _WORKER_NOISE.search(line):
                    os.write(saved, line)

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end held by this process
        t.join(timeout=5)
        os.close(saved)
