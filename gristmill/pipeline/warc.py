"""Streaming WARC (and ARC) reading with warcio: every record is counted by type, bad records are counted and skipped.

A damaged region (truncated gzip, garbage bytes, a broken record, a damaged first byte) costs only itself:
the reader re-synchronises at the next gzip member or `WARC/1.` header and carries on with the rest of the
file. Garbage between records (after a whole record, plain or gzipped) is one record of its own, `bad:not_warc`.
Padding (NULs, blank lines) after the last record or in a gzip member of its own, and blank lines between gzip
members, are not a record; blank lines at the start of a gzip member are passed over, and what follows them read
as the member's record (or counted, `bad:not_warc`). A whole plain WARC file gzipped as one stream
(`gzip crawl.warc`, not one member per record) is read through.

ARC files (ARC v1, the Internet Archive's and Common Crawl's format before WARC: `.arc.gz`, or plain `.arc`) are
read the same way. Their records are named as warcio's ARC-to-WARC conversion names them (the `filedesc://`
record is a `warcinfo`, the others `response`s; the URL is WARC-Target-URI, Archive-date the WARC-Date). An ARC
record has no record id, so it is given a uuid5 of the file name and the record's offset: the same file gives
the same ids on every run, and no two records share one. A plain ARC re-synchronises at the next ARC header line;
a plain ARC record cut inside its block or its header line (which then runs on into the next record's) costs only
itself, unless the cut leaves its URL ending in punctuation (`http://example.com/` then `http://...`): that reads as
one URL holding another, as a Wayback URL does, and the two records as one.
Junk after a whole plain ARC record costs only itself when the record's HTTP Content-Length shows its block whole
(see _whole_arc_block); after one without, the record is counted with the junk, `bad:payload_length`: the same
bytes are a record whose Archive-length stops short at a newline of its body, and the body's rest, one record.
"""
from __future__ import annotations

import gzip
import logging
import os
import re
import sys
import time
import uuid
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

import apache_beam as beam
from warcio.archiveiterator import ArchiveIterator
from warcio.bufferedreaders import DecompressingBufferedReader
from warcio.recordloader import ArcWarcRecordLoader
from warcio.timeutils import timestamp_to_iso_date

from gristmill.counts import content_length
from gristmill.pipeline import fs
from gristmill.pipeline.stages import RunContext, Stage, StageCounters

log = logging.getLogger(__name__)

GZIP_MAGIC = fs.GZIP_MAGIC
WARC_MAGIC = b"WARC/1."
ARC_MAGIC = b"filedesc://"  # an ARC file's first record
# An ARC record's header line: URL IP-address Archive-date Content-type Archive-length (ARC v1; the URL may hold
# spaces), or ARC v2's, with Result-code Checksum Location Offset Filename before the length. The URL holds its
# scheme's colon (`http:`, `dns:`, `filedesc:`), so the rest of a header line that a newline broke inside its URL
# is no header line; bytes before the URL (a cut record's rest run on into the line) are, until a seam is found.
ARC_FIELDS = rb" \S+ \d{14} \S+( \S+ \S+ \S+ \d+ \S+)? \d+\r?\n"  # a header line's fields after its URL
ARC_LINE = re.compile(rb"\S[^\r\n]*:[^\r\n]*" + ARC_FIELDS)
ARC_DATE = re.compile(r"\d{14}")  # YYYYMMDDhhmmss
ARC_URL_START = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*:\S")  # a URL's scheme (RFC 3986): how a header line begins
# Where a plain ARC record's header line is cut short, the next record's header line carries on from the cut, and
# the two read as one line. The seam (group "next") is a URL's scheme right after a letter, digit, dot, dash,
# underscore or space, right after a bare scheme (`http:/`, or an HTTP header's name: no host), or in the field
# after the Archive-date (a line cut inside its Content-type, `text/`). A URL inside a URL, as in `?u=http://` or a
# Wayback `/2008/http://`, follows punctuation, and is no cut; so a cut just after a `/` inside the URL goes unseen.
# In a cut record's block, run on into the next record's header line, a URL's scheme after any byte may begin that
# line: see _seam.
ARC_SCHEME = re.compile(rb"(?:https?|ftp|filedesc)://")  # where an ARC header line may begin inside a line
ARC_CUT = re.compile(rb"(?:^[A-Za-z][A-Za-z0-9+.-]*:/{0,2}|(?<=[A-Za-z0-9._\- \r])| \d{14} \S*?)"
                     rb"(?P<next>(?:https?|ftp|filedesc)://)")
# A header line that begins inside a line, whose URL holds no white space, quote or angle bracket: RFC 3986's URLs
# hold none, and the HTML of a link before it on the line (a cut page's rest) does.
ARC_INNER_LINE = re.compile(rb'[^\s"<>]+' + ARC_FIELDS)


class _MemberReader(DecompressingBufferedReader):
    """warcio's reader of a WARC's gzip members, that remembers a member it cannot decompress (bad deflate data,
    CRC or length) where warcio writes the zlib error to stderr and reads on as if the member ended there."""

    damaged = False

    def _decompress(self, data):
        if not (self.decompressor and data and self.num_block_read):
            return super()._decompress(data)  # a member's first block: warcio may take it for plain data
        try:
            return self.decompressor.decompress(data)
        except zlib.error:
            self.damaged = True
            return b""


class _RecordLoader(ArcWarcRecordLoader):
    """warcio's record loader, that reads a response, request or revisit record with no WARC-Target-URI as one
    with no HTTP headers (warcio would call the missing URI's startswith, and raise AttributeError in the
    iterator); _classify counts such a response as bad:no_target_uri."""

    def load_http_headers(self, rec_type, uri, stream, length):
        if uri is None:
            return None
        return super().load_http_headers(rec_type, uri, stream, length)


class _ArchiveIterator(ArchiveIterator):
    """warcio's ArchiveIterator with nothing written to stderr: a record not followed by its blank lines (a wrong
    Content-Length), on which warcio writes a warning and adds to err_count, is counted by iter_warc instead."""

    INC_RECORD = ""  # the warning's text: empty, so warcio's sys.stderr.write writes nothing

    def __init__(self, fileobj, **kwargs):
        super().__init__(fileobj, **kwargs)
        self.loader = _RecordLoader(verify_http=kwargs.get("verify_http", False),
                                    arc2warc=kwargs.get("arc2warc", False))
        self.reader = _MemberReader(self.fh, block_size=self.reader.block_size)

    def _next_record(self, next_line):
        # A gzip member whose data begins with a blank line: warcio's WARC parser reads the line as a padding
        # "record" with no length, and drains the rest of the member as its block, unseen, whatever it holds (a
        # record, an ARC record, junk). Blank lines (padding) at a member's start are passed over here, so that
        # what follows them is parsed as a record (or fails as one, and is counted); a member of padding alone
        # is still that padding record. Not in plain data (no decompressor once the first block is read): there
        # iter_warc reads on after a padding record itself.
        if next_line is not None:
            return super()._next_record(next_line)
        first = line = self.reader.readline()
        if first and not first.strip() and self.reader.decompressor is not None:
            while line and not line.strip(PADDING):
                line = self.reader.readline()
            if not line:
                return self._padding_record(first)
        return super()._next_record(line or first or None)

    def _padding_record(self, blank_line):
        # The padding record is the WARC parser's. In an ARC file warcio parses with the ARC parser alone once it has
        # read an ARC record, and that parser rejects a blank line; and the padding record must not make the file a
        # WARC for warcio, whose WARC parser alone would then reject the ARC records after it.
        known = self.known_format
        self.known_format = None
        try:
            return super()._next_record(blank_line)
        finally:
            self.known_format = known


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

# Reasons and counters are named after a record's WARC-Type and MIME type, which damage can turn into any bytes;
# the names are clamped so that damage adds one name (`malformed`), not one per damaged record.
WARC_TYPES = frozenset(  # WARC 1.0's and 1.1's record types
    ("warcinfo", "response", "resource", "request", "metadata", "revisit", "conversion", "continuation"))
# WARC allows extension record types (any token), so a short lower-case one is kept as its own name. Damage that
# leaves a lower-case token (one letter for another) is not told from one; most damage leaves other bytes.
WARC_TYPE_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")
# RFC 6838 section 4.2: type-name "/" subtype-name, each a restricted-name (lower-cased, no parameters: see
# parse_content_type). A MIME type cut short (`text/pla`) is still well-formed and keeps its name.
MIME_NAME = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")


def _mime_reason(prefix: str, mime: str) -> str:
    """`not_html:image/png`; `<prefix>:none` for no MIME type, `<prefix>:malformed` for one that is not RFC 6838's."""
    if not mime:
        return f"{prefix}:none"
    return f"{prefix}:{mime}" if MIME_NAME.fullmatch(mime) else f"{prefix}:malformed"


TEXT_TYPE = "text/plain"  # a WET conversion record: text Common Crawl already extracted, in UTF-8


def _conversion(record, file: str, max_bytes: int) -> ReadOutcome:
    """A WET file's record: the page's text, extracted by Common Crawl (CCNet's and Dolma's input)."""
    mime, _ = parse_content_type(record.rec_headers.get_header("Content-Type"))
    if mime != TEXT_TYPE:
        record.content_stream().read()
        return ReadOutcome("conversion", reason=_mime_reason("not_text", mime))
    payload = record.content_stream().read(max_bytes + 1)
    if len(payload) > max_bytes:
        return ReadOutcome("conversion", reason="oversized")
    return ReadOutcome("conversion", page=RawPage(
        url=record.rec_headers.get_header("WARC-Target-URI") or "",
        record_id=record.rec_headers.get_header("WARC-Record-ID") or "",
        date=record.rec_headers.get_header("WARC-Date") or "",
        file=file, offset=-1, content_type=TEXT_TYPE, charset="utf-8", status=None, payload=payload))


def _record_type(record) -> str:
    """The record's WARC type: `unknown` where it has none, `malformed` where it is not a type's name."""
    if record.format == "arc":
        return "warcinfo" if record.rec_type == "arc_header" else "response"  # as warcio's arc2warc names them
    wtype = record.rec_type
    if not wtype:
        return "unknown"
    return wtype if wtype in WARC_TYPES or WARC_TYPE_NAME.fullmatch(wtype) else "malformed"


def _url_and_date(record) -> tuple[str, str]:
    """A record's WARC-Target-URI and WARC-Date; an ARC record's URL and Archive-date (as ISO 8601, as in WARC)."""
    headers = record.rec_headers
    if record.format != "arc":
        return headers.get_header("WARC-Target-URI") or "", headers.get_header("WARC-Date") or ""
    return headers.get_header("uri") or "", timestamp_to_iso_date(headers.get_header("archive-date"))


def _classify(record, file: str, max_bytes: int) -> ReadOutcome:
    wtype = _record_type(record)
    if wtype == "conversion":
        return _conversion(record, file, max_bytes)
    if wtype != "response":
        record.content_stream().read()  # drain so the iterator can move on
        return ReadOutcome(wtype, reason=f"type:{wtype}")
    if record.format == "arc" and not ARC_DATE.fullmatch(record.rec_headers.get_header("archive-date") or ""):
        # Not ARC v1's five fields (an ARC v2 file's ten, say): warcio's reading of the line is not its URL and date.
        record.content_stream().read()
        return ReadOutcome(wtype, reason="bad:arc_header")
    url, date = _url_and_date(record)
    if not url and record.format != "arc":  # no URL, so no page (an ARC record's is its header line's first field)
        return ReadOutcome(wtype, reason="bad:no_target_uri")
    http = record.http_headers
    if http is None:
        return ReadOutcome(wtype, reason="bad:no_http_headers")
    try:
        status = int((http.get_statuscode() or "0").strip() or 0)
    except ValueError:
        return ReadOutcome(wtype, reason="bad:http_status")
    if not 0 <= status <= 999:  # HTTP's is three digits (0: none): a longer number is damage, not a status's name
        return ReadOutcome(wtype, reason="bad:http_status")
    if status != 200:
        return ReadOutcome(wtype, reason=f"status:{status}")
    mime, charset = parse_content_type(http.get_header("Content-Type"))
    if mime not in HTML_TYPES:
        return ReadOutcome(wtype, reason=_mime_reason("not_html", mime))
    payload = record.content_stream().read(max_bytes + 1)
    if len(payload) > max_bytes:
        return ReadOutcome(wtype, reason="oversized")
    page = RawPage(
        url=url,
        record_id=record.rec_headers.get_header("WARC-Record-ID") or "",  # an ARC record's: see _place
        date=date,
        file=file,
        offset=-1,
        content_type=mime,
        charset=charset,
        status=status,
        payload=payload,
    )
    return ReadOutcome(wtype, page=page)


def _place(outcome: ReadOutcome, record, offset: int) -> None:
    """Set a page's offset, known once warcio has read its record to the end, and an ARC record's id, made of the
    file name and that offset (warcio's ARC-to-WARC conversion makes a random one)."""
    if outcome.page is None:
        return
    outcome.page.offset = offset
    if record.format == "arc":
        outcome.page.record_id = f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'arc:{outcome.page.file}:{offset}')}>"


PADDING = b"\r\n\x00 "  # what may follow the last record, or fill a gzip member, without being a record


def _is_padding_record(record) -> bool:
    """A "record" warcio makes of a gzip member that holds only blank lines: no WARC line, no headers."""
    return not record.rec_headers.protocol and not record.rec_headers.headers


def _outcome(record, file: str, max_bytes: int) -> ReadOutcome:
    try:
        return _classify(record, file, max_bytes)
    except Exception as e:  # a broken HTTP block or payload: this record only
        return ReadOutcome(_record_type(record), reason=f"bad:{_short(e)}")


def iter_warc(stream: BinaryIO, file: str, max_bytes: int = 2 << 20) -> Iterator[ReadOutcome]:
    """Yield one ReadOutcome per record in a seekable WARC stream: gzip members (one record each, as WARC files
    are written), plain, or one gzip stream around a whole plain file (`gzip crawl.warc`); ARC files likewise."""
    head = stream.read(len(ARC_MAGIC))
    stream.seek(0)
    if not head:
        yield ReadOutcome("none", reason="bad:empty_file")
        return
    if head.startswith(GZIP_MAGIC[:2]):
        magics: tuple[bytes, ...] = (GZIP_MAGIC,)
    elif head.startswith(WARC_MAGIC):
        magics = (WARC_MAGIC,)
    elif head.startswith(ARC_MAGIC):  # a plain ARC file: its records start with a header line, no magic
        magics = ()
    else:  # a damaged first byte or leading junk: the first record found after it says which the file is
        magics = (GZIP_MAGIC, WARC_MAGIC)
    base = 0
    confirmed = False  # whether a good record has been read: the file's kind is then known
    while True:
        stream.seek(base)
        gz = stream.read(2) == GZIP_MAGIC[:2]
        stream.seek(base)
        last_end = base
        last_offset = None  # of the last record read (in a gzip file: its member's)
        last_read = False  # whether that record was read whole
        it = _ArchiveIterator(stream, check_digests=False)
        resync_from = None
        resume_at = None  # where the next record starts, when it is known without a search
        cut_end = None  # where the block of a record counted as cut (bad:payload_length) was declared to end
        records = iter(it)
        try:
            while True:
                # Where warcio begins the next record (it sets it.offset as it finishes the last), known before the
                # record is parsed: should parsing it raise, the search for the next record starts after it.
                start = it.offset
                if (record := next(records, None)) is None:
                    break
                if _merged_headers(record):
                    # A record cut inside its header block: warcio's lenient parser has read on into the next
                    # record's headers, and would return the two as one. Count it, then resynchronise from
                    # just after its start, which finds the next record's own `WARC/1.` line.
                    resync_from = it.get_record_offset()
                    yield ReadOutcome(_record_type(record), reason="bad:warc_headers")
                    break
                if not gz and (seam := _cut_arc_header(stream, start, record)) is not None:
                    # A plain ARC record cut inside its header line: warcio has read the next record's header
                    # line, which goes on from the cut, as the rest of this one. Count it, then read on from
                    # where the next record's line starts (inside the line: no line-start search finds it).
                    resync_from = resume_at = seam
                    yield ReadOutcome(_record_type(record), reason="bad:arc_header")
                    break
                warned = it.err_count
                outcome = None if _is_padding_record(record) else _outcome(record, file, max_bytes)
                # warcio knows a record's offset only once it has been read to the end.
                offset = it.get_record_offset()  # absolute: the iterator starts at stream.tell()
                length = it.get_record_length()
                last_end, last_offset, last_read = offset + length, offset, False
                if gz and it.reader.damaged:
                    # Its gzip member does not decompress (bad deflate data, CRC or length): warcio has stopped
                    # inside it. Count the record, then resynchronise at the next member.
                    resync_from = offset
                    yield ReadOutcome(_record_type(record), reason="bad:bad_gzip")
                    break
                if gz and it.reader.decompressor is None:
                    # warcio took what it read here for plain data (a member that fails in its first block, or
                    # bytes between members), and reads every member after it as plain data too, as this
                    # "record" (blank lines read on to the end of the file, a damaged member that happens to
                    # parse). Count it (blank lines alone are no record), then resynchronise at the next member.
                    resync_from = offset
                    if (reason := _plain_in_gzip(stream, offset)) is not None:
                        yield ReadOutcome(_record_type(record), reason=reason)
                    break
                if gz and not it.reader.decompressor.eof and not _record_line(it.next_line) \
                        and _member_follows(stream, offset):
                    # Its member goes on past the record, but not with another record, as one gzip stream around
                    # plain records does: it is cut short, and zlib, by chance rejecting none of it, took the
                    # members after it for the rest of its data. Count it, then resynchronise at the next member.
                    resync_from = offset
                    yield ReadOutcome(_record_type(record), reason="bad:bad_gzip")
                    break
                if outcome is None:
                    if not gz and not _only_padding_in(stream, offset, last_end):
                        # Blank lines before a record (at the start of a file, say): warcio has read them and
                        # everything after them as one padding "record". Read on from after them.
                        resync_from = offset
                        break
                    continue
                ending = "clean" if gz else _plain_record_end(stream, offset, last_end, record)
                if ending == "cut":
                    # A plain record cut inside its block (payload shorter than its Content-Length): warcio
                    # has read on into the next record(s) and returned them as this record's payload.
                    # Count it once, then resynchronise from just after its start, as for cut headers.
                    resync_from, cut_end = offset, last_end
                    yield ReadOutcome(_record_type(record), reason="bad:payload_length")
                    break
                if gz and _cut_short(record):  # its gzip member ends inside its block: a truncated file
                    yield ReadOutcome(_record_type(record), reason="bad:truncated")
                    continue
                if gz and it.err_count > warned:
                    # Its gzip member goes on after the block with more than the blank lines that end a record:
                    # Content-Length is short of the record, whose payload warcio has cut at that length. The
                    # rest of the member is no record, and warcio's length for this one is no length (a file
                    # offset less a decompressed line's length): resynchronise at the next member.
                    resync_from = offset
                    yield ReadOutcome(_record_type(record), reason="bad:payload_length")
                    break
                _place(outcome, record, offset)
                last_read = True
                if not confirmed:  # a record of the kind the file is read as, and no junk of another kind's look
                    confirmed = outcome.page is not None or not outcome.reason.startswith("bad:")
                yield outcome
                if ending == "junk":
                    # A whole plain record, then bytes that are no record: they are counted once, as garbage
                    # between gzip members is, and reading resynchronises at the next `WARC/1.` after them (in
                    # an ARC, at the next header line, which follows junk that does not end in a newline at once).
                    resync_from = last_end
                    yield ReadOutcome("unknown", reason="bad:not_warc")
                    if record.format == "arc":
                        resume_at = _find_arc_line(stream, last_end + 1, first_line=True, seams=True)
                        if resume_at is None:
                            return
                    break
                if gz and length < 0:
                    # warcio measures a record's length by its gzip member, and this member goes on past
                    # the record: one gzip stream around plain records. gzip reads it through, as one stream.
                    yield from _iter_gzip_stream(stream, offset, file, max_bytes)
                    return
            if resync_from is not None:
                last_end = resync_from
            else:
                # warcio stops quietly at a truncated last member; bytes left over are a damaged record.
                if _only_padding_to_the_end(stream, last_end):
                    return
                yield ReadOutcome("unknown", reason="bad:truncated")
        except Exception as e:  # the stream itself is damaged here: count it, then re-synchronise
            if gz and last_read and last_offset >= 0 and "non-chunked gzip" in str(e):  # as for length < 0 above
                yield from _iter_gzip_stream(stream, last_offset, file, max_bytes)
                return
            if _only_padding_to_the_end(stream, last_end):  # e.g. NULs after the last gzip member
                return
            # Blank lines between gzip members are no record: warcio's WARC parser reads them as a padding record
            # (see above), its ARC parser rejects them. Either way, reading resynchronises at the next member.
            # (A line warcio read on from a member's end, next_line, lies inside the member: last_end is then
            # no offset in the file, and what failed no blank line.)
            if not gz or it.next_line or _plain_in_gzip(stream, last_end) is not None:
                # warcio takes a gzip member that fails in its first block for plain data, not a WARC record.
                damaged = gz and type(e).__name__ == "ArchiveLoadFailed" and _damaged_member(stream, last_end)
                yield ReadOutcome("unknown", reason="bad:bad_gzip" if damaged else f"bad:{_short(e)}")
            # The record that failed starts at `start` (after the last one read: in a plain file, after its
            # terminator), so a search from the last one's end would find it again and count it twice.
            last_end = max(last_end, start)
        last_end = max(last_end, base)  # the search goes on after this pass's start, never back before it
        if resume_at is not None:
            nxt = resume_at
        elif len(magics) > 1:  # the file's kind is not known yet: the first record found says
            nxt = fs.find_first(stream, last_end + 1, magics + (ARC_MAGIC,))
        elif magics:
            nxt = fs.find_first(stream, last_end + 1, magics)
        elif cut_end is None:
            nxt = _find_arc_line(stream, last_end + 1)
        else:
            # The cut record's block is no record: the next record's header line may begin inside a line of it,
            # where the block's rest (cut after a `/`, a `<`, a CR) runs on into that line.
            stream.seek(last_end)
            stream.readline()  # the cut record's header line, whole: warcio has read it
            nxt = _find_arc_line(stream, stream.tell(), first_line=True, seams=True)
            if nxt is not None and nxt <= cut_end:
                # The header line found begins inside the cut record (at its declared end, say, where a damaged
                # terminator runs on into the next record's line): what comes before a seam in it is the rest of
                # the record counted already, not a record cut inside its header line. Read on from the seam.
                nxt = _arc_seam(stream, nxt, counted=True) or nxt
        if nxt is None and not confirmed:
            # The file's first bytes showed a kind of which no good record has been read: they were junk that
            # looked like it (a `WARC/1.` line before gzip members, a gzip member before plain records, a damaged
            # filedesc record). Look for a record of any kind (with the kind unknown, the search above did).
            if len(magics) < 2:
                nxt = fs.find_first(stream, last_end + 1, (GZIP_MAGIC, WARC_MAGIC, ARC_MAGIC))
            if nxt is None:
                nxt = _find_arc_line(stream, last_end + 1)
            magics = (GZIP_MAGIC, WARC_MAGIC)
        if nxt is None:
            return
        if len(magics) > 1:
            stream.seek(nxt)
            found = stream.read(len(WARC_MAGIC))
            magics = (GZIP_MAGIC,) if found.startswith(GZIP_MAGIC) else (WARC_MAGIC,) if found == WARC_MAGIC else ()
        base = nxt


def _find_arc_line(stream: BinaryIO, start: int, first_line: bool = False, seams: bool = False) -> int | None:
    """Offset of the first line after `start` (not the line `start` is in, unless first_line: `start` is a line
    start) that is an ARC record's header line. With seams, also of a header line that begins inside a line, after
    junk (or a cut record's rest) with no newline at its end (_inner_arc_line)."""
    stream.seek(max(start, 0))
    at_line_start = first_line
    while line := stream.readline(1 << 16):  # bounded: a long line is read in pieces, none at a line start
        if at_line_start and ARC_LINE.fullmatch(line):
            return stream.tell() - len(line)
        if seams and (inner := _inner_arc_line(line)) is not None:
            return stream.tell() - len(line) + inner
        at_line_start = line.endswith(b"\n")
    return None


def _cut_arc_header(stream: BinaryIO, start: int, record) -> int | None:
    """Where the next record's header line starts, when a plain ARC record's header line (at `start`) was cut short
    and warcio read the next record's line as the rest of it; None for a whole header line. Only a record whose
    URL shows a seam (ARC_CUT) is looked at, in the file's own bytes; the stream position is restored."""
    if record.format != "arc" or not ARC_CUT.search((record.rec_headers.get_header("uri") or "").encode()):
        return None
    return _arc_seam(stream, start)


def _arc_seam(stream: BinaryIO, start: int, counted: bool = False) -> int | None:
    """Where a header line begins inside the line at `start` (_seam), or None; the stream position is restored."""
    pos = stream.tell()
    try:
        stream.seek(start)
        line = stream.readline(1 << 16)
    finally:
        stream.seek(pos)
    seam = _seam(line, counted)
    return None if seam is None else start + seam


def _seam(line: bytes, counted: bool = False) -> int | None:
    """Where the header line in `line` begins after bytes that are no part of it, or None: at a seam (ARC_CUT), or,
    in a line that begins with no URL after bytes counted already (`counted`: a cut record's rest run on into the
    next record's header line), at any URL scheme (_inner_arc_line). Without `counted`, such bytes may be the line's
    own URL, damaged at its start (`ple.com/?u=http://`), and a URL inside it no record's."""
    if counted and not ARC_URL_START.match(line) and (inner := _inner_arc_line(line)) is not None:
        return inner
    seam = ARC_CUT.search(line)
    return seam.start("next") if seam and ARC_LINE.fullmatch(line, seam.start("next")) else None


def _inner_arc_line(line: bytes) -> int | None:
    """Where a header line begins inside `line`, or None: at the first URL scheme that begins one (ARC_INNER_LINE),
    and there at its seam, should that URL be cut too (a page cut inside a link's URL, `href="http://ex`, runs on
    into the next record's URL)."""
    at = next((s.start() for s in ARC_SCHEME.finditer(line) if ARC_INNER_LINE.fullmatch(line, s.start())), None)
    return None if at is None else at + (_seam(line[at:]) or 0)


def _damaged_member(stream: BinaryIO, start: int) -> bool:
    """Whether a gzip member starts at `start` whose data zlib rejects (bad deflate data, CRC or length)."""
    stream.seek(start)
    if stream.read(len(GZIP_MAGIC)) != GZIP_MAGIC:
        return False
    stream.seek(start)
    member = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        while not member.eof and (chunk := stream.read(1 << 16)):
            member.decompress(chunk, 1 << 16)  # the output is not kept: bound it
            while member.unconsumed_tail and not member.eof:
                member.decompress(member.unconsumed_tail, 1 << 16)
    except zlib.error:
        return True
    return False


def _plain_in_gzip(stream: BinaryIO, start: int) -> str | None:
    """The reason for what lies at `start` in a gzip file that warcio read as plain data: a damaged member
    (`bad:bad_gzip`), padding up to the next member or the end (None: no record), or junk (`bad:not_warc`)."""
    stream.seek(start)
    if stream.read(len(GZIP_MAGIC)) == GZIP_MAGIC:
        return "bad:bad_gzip"
    return None if fs.only_padding(stream, start, PADDING, fs.find_first(stream, start, (GZIP_MAGIC,))) else "bad:not_warc"


def _record_line(line: bytes | None) -> bool:
    """Whether a line is a WARC record's first line or an ARC record's header line."""
    return bool(line) and (line.startswith(WARC_MAGIC) or ARC_LINE.fullmatch(line) is not None)


def _member_follows(stream: BinaryIO, start: int) -> bool:
    """Whether a gzip member starts after `start`; the stream position is restored."""
    pos = stream.tell()
    try:
        return fs.find_first(stream, start + 1, (GZIP_MAGIC,)) is not None
    finally:
        stream.seek(pos)


def _only_padding_to_the_end(stream: BinaryIO, start: int) -> bool:
    """Whether the stream from `start` on holds no record: padding bytes, or whole gzip members of padding (an empty
    member, `gzip.compress(b"")`, which warcio stops at), with padding between and after them."""
    stream.seek(max(start, 0))
    inflate, rest = None, b""
    while chunk := rest or stream.read(1 << 16):
        rest = b""
        if inflate is None:
            chunk = chunk.lstrip(PADDING)
            if not chunk:
                continue
            if not GZIP_MAGIC.startswith(chunk[:len(GZIP_MAGIC)]):
                return False
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            if inflate.decompress(chunk, 1 << 16).strip(PADDING) or inflate.unconsumed_tail:
                return False  # a record's bytes, or more than padding fills
        except zlib.error:
            return False
        if inflate.eof:
            inflate, rest = None, inflate.unused_data
    return inflate is None  # a member cut short is a damaged record


def _only_padding_in(stream: BinaryIO, start: int, end: int) -> bool:
    """fs.only_padding between `start` and `end`, with the stream position (warcio's, mid-file) restored."""
    pos = stream.tell()
    try:
        return fs.only_padding(stream, start, PADDING, end)
    finally:
        stream.seek(pos)


def _cut_short(record) -> bool:
    """Whether a record read to its end (warcio does so before it reports the offset) had fewer bytes than its
    Content-Length."""
    return bool(getattr(record.raw_stream, "limit", 0))


class _CutTolerantGzip:
    """A gzip stream read as one, that ends quietly where the file is cut short and remembers it (warcio would
    take the EOFError for the end of the file)."""

    def __init__(self, raw: BinaryIO):
        self._gz = gzip.GzipFile(fileobj=raw, mode="rb")
        self.cut = False

    def read(self, size: int = -1) -> bytes:
        if self.cut:
            return b""
        try:
            return self._gz.read1(size)  # one read at a time: nothing read before the cut is lost
        except EOFError:
            self.cut = True
            return b""

    def tell(self) -> int:
        return self._gz.tell()


def _iter_gzip_stream(stream: BinaryIO, start: int, file: str, max_bytes: int) -> Iterator[ReadOutcome]:
    """The records of the gzip stream starting at `start` after its first (already read), decompressed as one
    plain WARC. No resynchronisation: damage ends the file, counted once. Offsets are in the decompressed data,
    from `start` (a record inside one gzip stream has no offset to seek to in the file)."""
    stream.seek(start)
    gz = _CutTolerantGzip(stream)
    it = _ArchiveIterator(gz, check_digests=False)
    first = True
    try:
        for record in it:
            if first:  # read already, before warcio found that its gzip member goes on
                first = False
                continue
            if _is_padding_record(record):
                continue
            if _merged_headers(record):
                yield ReadOutcome(_record_type(record), reason="bad:warc_headers")
                continue
            warned = it.err_count
            outcome = _outcome(record, file, max_bytes)
            offset = it.get_record_offset()
            if _cut_short(record):  # the cut (or the damage) lies inside this record
                yield ReadOutcome(_record_type(record), reason="bad:truncated")
                return
            if it.err_count > warned:  # not followed by its blank lines: a wrong Content-Length
                yield ReadOutcome(_record_type(record), reason="bad:payload_length")
                continue
            _place(outcome, record, offset)
            yield outcome
    except Exception as e:  # a corrupt gzip stream, or a record warcio cannot parse
        yield ReadOutcome("unknown", reason=f"bad:{_short(e)}")
        return
    if gz.cut:  # cut after the last whole record
        yield ReadOutcome("unknown", reason="bad:truncated")


def _plain_record_end(stream: BinaryIO, start: int, end: int, record) -> str:
    """How a plain record that starts at `start` and whose declared block ends at `end` is followed: "clean",
    "junk" or "cut".

    "clean": the bytes at `end` are the CRLF CRLF terminator, then (after any further blank lines or padding)
    `WARC/1.` or EOF; for an ARC record, a newline, then (after any padding lines) the next record's header line
    or EOF. A record that ends exactly at EOF without its terminator is accepted only if warcio read its whole
    Content-Length (a file cut after the block, not inside it).
    "junk": a WARC record's terminator is there, but what follows it is not a record (garbage between records):
    the record itself is whole, unless its block holds another record's `WARC/1.` (a Content-Length that ran on
    into the next record and happened to end at a blank line), or its payload is shorter than its HTTP
    Content-Length (a Content-Length that stopped at the HTTP headers' blank line, or at one in the page), which
    make it "cut".
    An ARC record's terminator is a lone newline, which a block cut short (or declared short) ends at as often as
    not, so an ARC record whose newline no header line follows is "junk" only if its block is whole by evidence of
    its own (_whole_arc_block), and "cut" otherwise.
    "cut": anything else: the block is not where Content-Length says (a record cut short, a wrong length).
    The stream position is saved and restored, so warcio's buffered reader carries on undisturbed. Plain files
    only: gzip members frame their own records, and the gzip path does no extra seeks.
    """
    arc = record.format == "arc"
    terminator = b"\n" if arc else b"\r\n\r\n"
    pos = stream.tell()
    try:
        stream.seek(end)
        term = stream.read(len(terminator))
        if not term:
            return "clean" if getattr(record.raw_stream, "limit", 1) == 0 else "cut"
        if term != terminator:
            return "cut"
        if arc:
            while (line := stream.readline(1 << 16)) and not line.strip(PADDING):
                pass
            if not line or ARC_LINE.fullmatch(line):
                return "clean"
            return "junk" if _whole_arc_block(stream, start, end, record) else "cut"
        rest = b""
        while True:
            chunk = stream.read(256)
            rest = (rest + chunk).lstrip(PADDING)  # blank lines, or padding before EOF
            if len(rest) >= len(WARC_MAGIC) or not chunk:
                break
        if rest == b"" or rest.startswith(WARC_MAGIC):
            return "clean"
        # The terminator is also what ends the HTTP headers (or a blank line in the page), so a Content-Length
        # short by the body, or by its end, looks whole too: an HTTP Content-Length the payload falls short of
        # tells them apart.
        if _http_length(record) not in (None, record.payload_length):
            return "cut"
        inner = fs.find_first(stream, start + 1, (WARC_MAGIC,))
        return "cut" if inner is not None and inner < end else "junk"
    finally:
        stream.seek(pos)


def _whole_arc_block(stream: BinaryIO, start: int, end: int, record) -> bool:
    """Whether a plain ARC record (at `start`, its declared block ending at `end`) is whole, although no header line
    follows its newline. Its newline proves nothing (an HTTP page is full of them), so both wrong lengths must be
    ruled out: an Archive-length too long runs on past the record's end into the next record, whose header line
    then lies inside the block; one too short ends inside the HTTP body, which is then shorter than the HTTP
    Content-Length. A record without an HTTP Content-Length (chunked, the filedesc record) has no such evidence."""
    if _http_length(record) != record.payload_length or record.payload_length < 0:
        return False
    inner = _find_arc_line(stream, start)  # the block may hold anything, an ARC header line too: then, "cut"
    return inner is None or inner > end


def _http_length(record) -> int | None:
    """The record's HTTP Content-Length, or None where it has none (or none that is a number)."""
    http = record.http_headers
    return content_length(http.get_header("Content-Length")) if http is not None else None


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


def _stderr_line(line: str) -> None:
    # One write(2) per line: workers share the terminal, and a short write to a pipe is atomic.
    sys.stderr.flush()
    os.write(2, (line + "\n").encode())


class _Progress:
    """Prints records/s to stderr every few seconds from each worker during local runs.

    The runner sets GRISTMILL_PROGRESS=1 (a line every 2 s) when its stderr is a terminal, and "log" (a line
    every 30 s) when it is not; GRISTMILL_PROGRESS=0 turns it off and GRISTMILL_PROGRESS_SECONDS sets the interval.
    """

    def __init__(self, label: str):
        self.label = label
        mode = os.environ.get("GRISTMILL_PROGRESS")
        default = 30.0 if mode == "log" else 2.0
        try:
            self.every = float(os.environ.get("GRISTMILL_PROGRESS_SECONDS") or default)
        except ValueError:
            self.every = default
        self.n = 0
        self.t0 = self.last = time.monotonic()
        self.enabled = mode in ("1", "log")

    def tick(self):
        self.n += 1
        if self.enabled and self.n % 64 == 0:
            now = time.monotonic()
            if now - self.last >= self.every:
                self.last = now
                rate = self.n / (now - self.t0)
                _stderr_line(f"[{self.label} pid {os.getpid()}] {self.n} records, {rate:.0f} records/s")


class _ReadWarcFn(beam.DoFn):
    def __init__(self, label: str, max_bytes: int):
        self.label = label
        self.max_bytes = max_bytes

    def setup(self):
        self.counters = StageCounters(self.label)
        self.progress = _Progress(self.label)

    def process(self, path: str):
        name = os.path.basename(path)
        try:
            with fs.open_input(path) as f:
                for outcome in iter_warc(f, name, self.max_bytes):
                    self.count(outcome.warc_type)
                    if outcome.page is not None:
                        self.counters.inc("kept")
                        yield outcome.page
                    else:
                        self.counters.inc(f"dropped/{outcome.reason}")
        except OSError as e:
            # Listed when the run started, but gone, a folder or a FIFO now, or failing as it is read: what it
            # still holds is one record, counted.
            self.count("none")
            self.counters.inc(f"dropped/{UNREADABLE}")
            _stderr_line(f"warning: cannot read {path} ({type(e).__name__}: {e.strerror or e}); "
                         f"counted as {UNREADABLE}")

    def count(self, warc_type: str) -> None:
        self.counters.inc("in")
        self.counters.inc(f"type/{warc_type}")
        self.progress.tick()


UNREADABLE = "bad:unreadable_file"


class ReadWarc(Stage):
    """Reads WARC files (the run's --input glob) and emits HTTP 200 HTML responses as RawPage, and WET files'
    text/plain conversion records (Common Crawl's extracted text), which ExtractText takes as they are. ARC v1
    files (`*.arc.gz`) are read as WARC files are (see the module docstring).

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
