"""Streaming WARC reading with warcio: every record is counted by type, bad records are counted and skipped.

A damaged region (truncated gzip, garbage bytes, a broken record) costs only itself: the reader
re-synchronises at the next gzip member or `WARC/1.` header and carries on with the rest of the file.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from warcio.archiveiterator import ArchiveIterator

from gristmill.pipeline import fs
from gristmill.pipeline.stages import RunContext, Stage, StageCounters

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b\x08"
WARC_MAGIC = b"WARC/1."


@dataclass
class RawPage:
    """An HTTP 200 HTML response (or a WET file's text conversion of one), before text extraction.

    scores and decisions are a Document's (see document.py), for filters that need only the URL and so run
    before extraction (the URL filter); extraction copies them onto the Document.
    """

    url: str
    record_id: str
    date: str
    file: str
    offset: int
    content_type: str  # text/html or application/xhtml+xml; text/plain for a WET conversion record
    charset: str | None
    status: int | None  # None for a WET record, which carries no HTTP status
    payload: bytes
    headers: dict[str, str] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    decisions: dict[str, str] = field(default_factory=dict)


@dataclass
class ReadOutcome:
    """One record's fate: a page to extract, or a reason it is not one."""

    warc_type: str
    page: RawPage | None = None
    reason: str | None = None  # set when page is None


def parse_content_type(value: str | None) -> tuple[str, str | None]:
    """'text/html; charset=UTF-8' -> ('text/html', 'utf-8')."""
    if not value:
        return "", None
    parts = [p.strip() for p in value.split(";")]
    mime = parts[0].lower()
    charset = None
    for p in parts[1:]:
        k, _, v = p.partition("=")
        if k.strip().lower() == "charset" and v.strip():
            charset = v.strip().strip("\"'").lower()
    return mime, charset


HTML_TYPES = ("text/html", "application/xhtml+xml")


TEXT_TYPE = "text/plain"  # a WET conversion record: text Common Crawl already extracted, in UTF-8


def _conversion(record, file: str, max_bytes: int) -> ReadOutcome:
    """A WET file's record: the page's text, extracted by Common Crawl (CCNet's and Dolma's input)."""
    mime, _ = parse_content_type(record.rec_headers.get_header("Content-Type"))
    if mime != TEXT_TYPE:
        record.content_stream().read()
        return ReadOutcome("conversion", reason=f"not_text:{mime or 'none'}")
    payload = record.content_stream().read(max_bytes + 1)
    if len(payload) > max_bytes:
        return ReadOutcome("conversion", reason="oversized")
    return ReadOutcome("conversion", page=RawPage(
        url=record.rec_headers.get_header("WARC-Target-URI") or "",
        record_id=record.rec_headers.get_header("WARC-Record-ID") or "",
        date=record.rec_headers.get_header("WARC-Date") or "",
        file=file, offset=-1, content_type=TEXT_TYPE, charset="utf-8", status=None, payload=payload))


def _classify(record, file: str, max_bytes: int) -> ReadOutcome:
    wtype = record.rec_type or "unknown"
    if wtype == "conversion":
        return _conversion(record, file, max_bytes)
    if wtype != "response":
        record.content_stream().read()  # drain so the iterator can move on
        return ReadOutcome(wtype, reason=f"type:{wtype}")
    url = record.rec_headers.get_header("WARC-Target-URI") or ""
    http = record.http_headers
    if http is None:
        return ReadOutcome(wtype, reason="bad:no_http_headers")
    try:
        status = int((http.get_statuscode() or "0").strip() or 0)
    except ValueError:
        return ReadOutcome(wtype, reason="bad:http_status")
    if status != 200:
        return ReadOutcome(wtype, reason=f"status:{status}")
    mime, charset = parse_content_type(http.get_header("Content-Type"))
    if mime not in HTML_TYPES:
        return ReadOutcome(wtype, reason=f"not_html:{mime or 'none'}")
    payload = record.content_stream().read(max_bytes + 1)
    if len(payload) > max_bytes:
        return ReadOutcome(wtype, reason="oversized")
    page = RawPage(
        url=url,
        record_id=record.rec_headers.get_header("WARC-Record-ID") or "",
        date=record.rec_headers.get_header("WARC-Date") or "",
        file=file,
        offset=-1,
        content_type=mime,
        charset=charset,
        status=status,
        payload=payload,
    )
    return ReadOutcome(wtype, page=page)


def _find_resync(stream: BinaryIO, start: int, gz: bool) -> int | None:
    """Offset of the next plausible record start at or after `start`, or None."""
    magic = GZIP_MAGIC if gz else WARC_MAGIC
    stream.seek(start)
    carry = b""
    pos = start
    while True:
        chunk = stream.read(1 << 20)
        if not chunk:
            return None
        buf = carry + chunk
        i = buf.find(magic)
        if i >= 0:
            return pos - len(carry) + i
        carry = buf[-(len(magic) - 1):]
        pos += len(chunk)


def iter_warc(stream: BinaryIO, file: str, max_bytes: int = 2 << 20) -> Iterator[ReadOutcome]:
    """Yield one ReadOutcome per record in a seekable WARC stream (gzip or plain)."""
    head = stream.read(4)
    stream.seek(0)
    if not head:
        yield ReadOutcome("none", reason="bad:empty_file")
        return
    gz = head[:2] == b"\x1f\x8b"
    base = 0
    while True:
        stream.seek(base)
        last_end = base
        it = ArchiveIterator(stream, check_digests=False)
        resync_from = None
        try:
            for record in it:
                if _merged_headers(record):
                    # A record cut inside its header block: warcio's lenient parser has read on into the next
                    # record's headers, and would return the two as one. Count it, then resynchronise from
                    # just after its start, which finds the next record's own `WARC/1.` line.
                    resync_from = it.get_record_offset()
                    yield ReadOutcome(record.rec_type or "unknown", reason="bad:warc_headers")
                    break
                try:
                    outcome = _classify(record, file, max_bytes)
                except Exception as e:  # a broken HTTP block or payload: this record only
                    outcome = ReadOutcome(record.rec_type or "unknown", reason=f"bad:{_short(e)}")
                # warcio knows a record's offset only once it has been read to the end.
                offset = it.get_record_offset()  # absolute: the iterator starts at stream.tell()
                last_end = offset + it.get_record_length()
                if not gz and not _plain_record_ends_cleanly(stream, last_end, record):
                    # A plain record cut inside its block (payload shorter than its Content-Length): warcio
                    # has read on into the next record(s) and returned them as this record's payload.
                    # Count it once, then resynchronise from just after its start, as for cut headers.
                    resync_from = offset
                    yield ReadOutcome(record.rec_type or "unknown", reason="bad:payload_length")
                    break
                if outcome.page is not None:
                    outcome.page.offset = offset
                yield outcome
            if resync_from is not None:
                last_end = resync_from
            else:
                # warcio stops quietly at a truncated last member; bytes left over are a damaged record.
                stream.seek(last_end)
                if not stream.read(64).strip(b"\r\n\x00 "):
                    return
                yield ReadOutcome("unknown", reason="bad:truncated")
        except Exception as e:  # the stream itself is damaged here: count it, then re-synchronise
            yield ReadOutcome("unknown", reason=f"bad:{_short(e)}")
        nxt = _find_resync(stream, last_end + 1, gz)
        if nxt is None:
            return
        base = nxt


def _plain_record_ends_cleanly(stream: BinaryIO, end: int, record) -> bool:
    """True when a plain record's declared block ends where the next record (or the file) starts.

    That is, the bytes at `end` are the CRLF CRLF terminator, then (after any further blank lines or
    padding) `WARC/1.` or EOF. A record that ends exactly at EOF without its terminator is accepted only if
    warcio read its whole Content-Length (a file cut after the block, not inside it). The stream position
    is saved and restored, so warcio's buffered reader carries on undisturbed. Plain files only: gzip
    members frame their own records, and the gzip path does no extra seeks.
    """
    pos = stream.tell()
    try:
        stream.seek(end)
        term = stream.read(4)
        if not term:
            return getattr(record.raw_stream, "limit", 1) == 0
        if term != b"\r\n\r\n":
            return False
        rest = b""
        while True:
            chunk = stream.read(256)
            rest = (rest + chunk).lstrip(b"\r\n\x00 ")  # blank lines, or padding before EOF
            if len(rest) >= len(WARC_MAGIC) or not chunk:
                return rest == b"" or rest.startswith(WARC_MAGIC)
    finally:
        stream.seek(pos)


def _merged_headers(record) -> bool:
    """True when a record's WARC header block repeats WARC-Record-ID or WARC-Type (each appears once per record)."""
    seen = set()
    for name, _ in record.rec_headers.headers:
        key = name.lower()
        if key in ("warc-record-id", "warc-type"):
            if key in seen:
                return True
            seen.add(key)
    return False


def _short(e: Exception) -> str:
    name = type(e).__name__
    return {"ArchiveLoadFailed": "not_warc", "EOFError": "truncated", "BadGzipFile": "bad_gzip",
            "error": "bad_gzip", "StatusAndHeadersParserException": "http_headers"}.get(name, name.lower())


class _Progress:
    """Prints records/s to stderr every few seconds from each worker during local runs.

    The runner turns it on (GRISTMILL_PROGRESS=1) when its stderr is a terminal; GRISTMILL_PROGRESS_SECONDS
    sets the interval (default 2).
    """

    def __init__(self, label: str):
        self.label = label
        try:
            self.every = float(os.environ.get("GRISTMILL_PROGRESS_SECONDS") or 2.0)
        except ValueError:
            self.every = 2.0
        self.n = 0
        self.t0 = self.last = time.monotonic()
        self.enabled = os.environ.get("GRISTMILL_PROGRESS") == "1"

    def tick(self):
        self.n += 1
        if self.enabled and self.n % 64 == 0:
            now = time.monotonic()
            if now - self.last >= self.every:
                self.last = now
                line = f"[{self.label} pid {os.getpid()}] {self.n} records, {self.n / (now - self.t0):.0f} records/s\n"
                # One write(2) per line: workers share the terminal, and a short write to a pipe is atomic.
                sys.stderr.flush()
                os.write(2, line.encode())


class _ReadWarcFn(beam.DoFn):
    def __init__(self, label: str, max_bytes: int):
        self.label = label
        self.max_bytes = max_bytes

    def setup(self):
        self.counters = StageCounters(self.label)
        self.progress = _Progress(self.label)

    def process(self, path: str):
        name = os.path.basename(path)
        with FileSystems.open(path, compression_type="uncompressed") as f:
            for outcome in iter_warc(f, name, self.max_bytes):
                self.counters.inc("in")
                self.counters.inc(f"type/{outcome.warc_type}")
                self.progress.tick()
                if outcome.page is not None:
                    self.counters.inc("kept")
                    yield outcome.page
                else:
                    self.counters.inc(f"dropped/{outcome.reason}")


class ReadWarc(Stage):
    """Reads WARC files (the run's --input glob) and emits HTTP 200 HTML responses as RawPage, and WET files'
    text/plain conversion records (Common Crawl's extracted text), which ExtractText takes as they are.

    A file is the unit of parallelism, as Common Crawl's many WARC files are: one worker reads a file and
    the following stages fuse with the read, so page bytes never cross workers. With few, large files
    set `rebalance=True` to reshuffle pages across workers (costs a serialisation of every page).
    Everything else is counted: `type/<warc type>` for each record, and `dropped/<reason>` for records
    that are not documents (other record types, non-200 status, non-HTML, oversized, bad).
    """

    produces = "pages"

    def __init__(self, label: str = "Read", max_bytes: int = 2 << 20, rebalance: bool = False):
        self.label = label
        self.max_bytes = max_bytes
        self.rebalance = rebalance

    def expand(self, root, ctx: RunContext):
        files = fs.matching(ctx.input)
        pages = (
            root
            | f"{self.label}/Files" >> beam.Create(files)  # Create reshuffles: files spread over workers
            | f"{self.label}/Records" >> beam.ParDo(_ReadWarcFn(self.label, self.max_bytes))
        )
        if self.rebalance:
            pages = pages | f"{self.label}/SpreadPages" >> beam.Reshuffle()
        return pages
