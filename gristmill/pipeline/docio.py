"""Document sources and the deterministic sharded JSONL.gz document writer.

Why JSONL.gz rather than Parquet: every stage adds fields (scores, decisions, dedup counts), and
JSONL carries a growing, nested record without a schema migration; it is also what datatrove and
Dolma read and write, so gristmill outputs drop straight into those tools.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import sys
import zlib

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from gristmill.errors import UserError
from gristmill.pipeline import fs
from gristmill.pipeline.document import Document
from gristmill.pipeline.stages import RunContext, Stage, StageCounters


def shard_of(doc_id: str, shards: int) -> int:
    """The shard a document goes to: a hash of its id, so any id string works and shards stay balanced."""
    digest = hashlib.blake2b(doc_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def shard_name(i: int, shards: int) -> str:
    return f"part-{i:05d}-of-{shards:05d}.jsonl.gz"


class _WriteShardFn(beam.DoFn):
    def __init__(self, label: str, directory: str, shards: int):
        self.label, self.directory, self.shards = label, directory, shards

    def setup(self):
        self.counters = StageCounters(self.label)

    def process(self, item):
        i, docs = item
        # Bundles arrive in any order; sorting by id makes the shard bytes independent of the runner. The id goes
        # first: the JSON's keys are sorted, so its own order puts cluster_id and decisions before the id. The
        # whole line breaks ties between copies under one id (a WARC read twice, or one that reuses a record id).
        lines = [line for _, line in sorted((d.id, d.to_json()) for d in docs if d is not None)]
        name = shard_name(i, self.shards)
        with FileSystems.create(FileSystems.join(self.directory, name), mime_type="application/gzip",
                                compression_type=CompressionTypes.GZIP) as f:
            for line in lines:
                # A lone surrogate (legal in JSON, read from an input shard) has no UTF-8 form: it is written as
                # the JSON escape it was read from (`\\ud800`), which reads back as the same string.
                f.write(line.encode("utf-8", "backslashreplace"))
                f.write(b"\n")
        self.counters.inc("in", len(lines))
        self.counters.inc("kept", len(lines))
        yield name


STAGING = ".tmp"  # shards of a run in progress, under the documents folder (a `*.jsonl.gz` glob skips it)


def publish_shards(names: list[str], directory: str) -> None:
    """Move a finished run's shards from directory/.tmp into `directory`, each replacing the earlier run's file
    of the same name, then delete the earlier run's other shards (it had more). Runs once every shard is
    written, so a run that fails before leaves the earlier output as it was."""
    staging = fs.join(directory, STAGING)
    for name in sorted(names):
        fs.rename(fs.join(staging, name), fs.join(directory, name))
    keep = set(names)
    fs.delete([p for p in fs.matching(fs.join(directory, "part-*.jsonl.gz")) if fs.basename(p) not in keep])
    fs.remove_folder(staging)


class WriteDocuments(Stage):
    """Writes Documents to OUTPUT/<subdir>/part-NNNNN-of-MMMMM.jsonl.gz, sorted by id within each shard.

    The shard of a document is a function of its id only, so the same documents always give the same
    files, whatever the runner or the number of workers. Raise `shards` for big runs: a shard is
    assembled on one worker. Shards are written under OUTPUT/<subdir>/.tmp and replace an earlier run's only
    once all of them are written: a run that fails keeps the earlier documents.
    """

    def __init__(self, label: str = "Write", shards: int = 4, subdir: str = "documents"):
        if shards < 1:
            raise ValueError(f"stage {label}: shards must be >= 1")
        self.label, self.shards, self.subdir = label, shards, subdir

    def output_folder(self, ctx: RunContext) -> str:
        """The folder whose shards this stage replaces (the runner refuses a run that also reads from it)."""
        return ctx.path(self.subdir)

    def expand(self, docs, ctx: RunContext):
        directory = self.output_folder(ctx)
        n = self.shards
        every_shard = docs.pipeline | f"{self.label}/AllShards" >> beam.Create([(i, None) for i in range(n)])
        keyed = docs | f"{self.label}/Key" >> beam.Map(lambda d: (shard_of(d.id, n), d))
        _ = (
            (keyed, every_shard)
            | f"{self.label}/Merge" >> beam.Flatten()
            | f"{self.label}/Group" >> beam.GroupByKey()
            | f"{self.label}/Shards" >> beam.ParDo(_WriteShardFn(self.label, fs.join(directory, STAGING), n))
            | f"{self.label}/Written" >> beam.combiners.ToList()
            | f"{self.label}/Publish" >> beam.Map(publish_shards, directory)
        )
        return docs  # writing is a branch: later stages (tokenize) go on from the same documents


BAD_GZIP = "bad_gzip"  # what document_lines yields for a damaged region of a gzip file, in place of its lines


def document_lines(path: str):
    """Binary lines (without their newline) of a JSONL(.gz) file, and BAD_GZIP for a damaged region of a gzip file.

    A file opened as it is now (see fs.open_input): OSError when it is gone, a folder or a FIFO. A .gz file is
    read member by member: a member that does not decompress (bad deflate data, CRC or length) costs only itself
    and the line it cuts, and reading goes on at the next member (in a shard of concatenated members, `cat a.gz
    b.gz`). Damage that no whole member follows (in a single-member shard, as WriteDocuments writes, any damage)
    raises gzip.BadGzipFile after the lines before it, as a file that is no gzip file does; one cut short (or to
    nothing: 0 bytes) raises EOFError, as gzip -t reports it."""
    with fs.open_input(path) as f:
        if path.endswith(".gz"):
            yield from _gzip_lines(f)
        else:
            for line in f:
                yield line.rstrip(b"\n")


def _gzip_lines(raw, chunk: int = 1 << 20):
    offset = 0  # where the next member starts in the file
    tail = b""  # a line begun and not yet ended
    damage = None  # a damaged region not yet counted: it is once a member after it reads, else it is the file's rest
    while True:
        raw.seek(offset)
        head = raw.read(len(fs.GZIP_MAGIC))
        if not head and offset == 0:
            # No gzip header at all, as a transfer cut to nothing leaves it (an empty shard is a 20-byte member),
            # and as gzip -t says: cut short, not an empty file of documents.
            raise EOFError("an empty file: a gzip file holds at least its 10-byte header")
        if not head or not head.strip(b"\x00") and fs.only_padding(raw, offset, b"\x00"):  # gzip's padding
            break
        if head == fs.GZIP_MAGIC:
            raw.seek(offset)
            member = zlib.decompressobj(16 + zlib.MAX_WBITS)
            start = offset
            try:
                while not member.eof:
                    data = raw.read(chunk)
                    if not data:
                        raise EOFError("Compressed file ended before the end-of-stream marker was reached")
                    todo = data
                    while not member.eof:
                        # In small steps, as gzip reads: zlib returns nothing of the step in which it finds damage,
                        # and the lines before it are read; and output stays bounded (gzip may hold GiBs of text).
                        out = member.decompress(todo, 1 << 16)
                        todo = member.unconsumed_tail
                        if not out:
                            if not todo:
                                break  # wants more input
                            continue
                        if damage:
                            yield BAD_GZIP
                            damage = None
                        lines = (tail + out).split(b"\n")
                        tail = lines.pop()
                        yield from lines
                    offset += len(data) - len(member.unused_data)
                if damage:  # the member after it was an empty one
                    yield BAD_GZIP
                    damage = None
                continue
            except (zlib.error, EOFError) as e:  # EOFError: cut short, or damage that reads on to the end
                cut, damage, offset = isinstance(e, EOFError), damage or str(e), start
        elif offset == 0:
            raise gzip.BadGzipFile(f"not a gzipped file (starts with {head!r})")
        else:
            cut, damage = False, damage or f"no gzip member at byte {offset}"
        tail = b""  # the line the damage cut
        nxt = fs.find_first(raw, offset + 1, (fs.GZIP_MAGIC,))
        if nxt is None:
            if cut:
                raise EOFError("Compressed file ended before the end-of-stream marker was reached")
            raise gzip.BadGzipFile(f"damaged compressed data ({damage})")
        offset = nxt
    if tail:
        yield tail


def parse_document_file(path: str):
    """Each non-blank line of a JSONL(.gz) file as a Document, or as "bad_json:<error>" when it is not one, or
    "bad_gzip" for a damaged region of a gzip file (see document_lines). A file that cannot be read from the
    start, or stops being readable (cut short), raises OSError or EOFError: callers decide whether that is a
    counted record (a pipeline) or an error (a command)."""
    for line in document_lines(path):
        if line is BAD_GZIP:
            yield BAD_GZIP
            continue
        if not line.strip():
            continue
        try:
            yield Document.from_json(line)
        except (ValueError, TypeError, KeyError, RecursionError) as e:  # RecursionError: JSON nested too deep
            yield f"bad_json:{type(e).__name__}"


class _ReadFileFn(beam.DoFn):
    """Parses one document file. A line that is not a Document is counted and skipped; a file that stops
    being readable counts its unreadable rest as one dropped record."""

    def __init__(self, label: str):
        self.label = label

    def setup(self):
        self.counters = StageCounters(self.label)

    def process(self, path: str):
        counters = self.counters
        try:
            for item in parse_document_file(path):
                counters.inc("in")
                if isinstance(item, str):
                    counters.inc(f"dropped/{item}")
                else:
                    counters.inc("kept")
                    yield item
        except (OSError, EOFError) as e:
            counters.inc("in")
            counters.inc(f"dropped/unreadable_file:{type(e).__name__}")


class ReadDocuments(Stage):
    """Reads Document JSONL(.gz) shards written by an earlier run (the run's --input glob, or `glob`).
    Files are the unit of parallelism (gzip files cannot be split anyway): write more shards than workers."""

    def __init__(self, label: str = "ReadDocuments", glob: str | None = None):
        self.label, self.glob = label, glob

    def input_files(self, ctx: RunContext) -> list[str]:
        return fs.matching(self.glob or ctx.input)

    def expand(self, root, ctx: RunContext):
        glob = self.glob or ctx.input
        files = self.input_files(ctx)
        if not files:
            raise UserError(f"stage {self.label}: no document files match {glob}")
        return (
            root
            | f"{self.label}/Files" >> beam.Create(files)  # Create reshuffles: files spread over workers
            | f"{self.label}/Parse" >> beam.ParDo(_ReadFileFn(self.label))
        )


def run_on_documents(command: str, args, stages: list[Stage], label: str, beam_args: list[str],
                     extra_stats: dict | None = None):
    """The run of a command that reads an earlier run's documents (`args.input`) and runs `stages` on them into
    `args.output` (`beam select`, `beam summarize`): one line when no file matches, then the read skips and
    `label`'s counts on stderr. `extra_stats` goes into stats.json. Returns (stats, ctx)."""
    from gristmill.pipeline.runner import run_stages

    if not fs.input_files(args.input, "*.jsonl.gz"):
        raise UserError(f"no document files match {args.input}")
    ctx = RunContext(input=args.input, output=args.output, seed=0, recipe_name=command, num_workers=args.workers,
                     params={k: v for k, v in vars(args).items() if k != "func"})
    stats = run_stages([ReadDocuments("ReadDocuments", args.input), *stages], ctx, beam_args, extra_stats=extra_stats)
    report_counts(stats, label, ctx.path("stats.json"))
    return stats, ctx


def report_counts(stats: dict, label: str, stats_path: str) -> None:
    """The two stderr lines of a command that reads documents and runs one stage on them: what ReadDocuments
    skipped (counted, never silently lost), then the stage's in / kept / dropped by reason."""
    unread = stats["stages"].get("ReadDocuments", {}).get("dropped", {})
    if unread:
        listed = ", ".join(f"{r} {n}" for r, n in sorted(unread.items()))
        print(f"warning: skipped while reading: {listed} (see {stats_path})", file=sys.stderr)
    node = stats["stages"].get(label, {})
    dropped = ", ".join(f"{r} {n}" for r, n in sorted(node.get("dropped", {}).items(), key=lambda kv: (-kv[1], kv[0])))
    print(f"documents in {node.get('in', 0)}, kept {node.get('kept', 0)}, dropped: {dropped or 'none'}",
          file=sys.stderr)


class CreateDocuments(Stage):
    """A source of in-memory Documents, for tests and notebooks."""

    def __init__(self, label: str, docs: list[Document]):
        self.label, self._docs = label, list(docs)

    def expand(self, root, ctx: RunContext):
        counters_label = self.label

        def count(doc):
            c = StageCounters(counters_label)
            c.inc("in")
            c.inc("kept")
            return doc

        return root | f"{self.label}/Create" >> beam.Create(self._docs, reshuffle=False) | f"{self.label}/Count" >> beam.Map(count)


def read_documents(directory: str) -> list[Document]:
    """All documents under a run's documents folder, in shard order (for tests and small tools)."""
    out = []
    for path in fs.matching(fs.join(directory, "part-*.jsonl.gz")):
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw, \
                gzip.open(raw, "rt", encoding="utf-8") as f:
            out.extend(Document.from_dict(json.loads(line)) for line in f)
    return out
