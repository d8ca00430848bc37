"""The WARC reader counts every record, skips bad ones, and keeps reading after damage."""
from __future__ import annotations

import errno
import gzip
import io
import itertools
import random
import re
import zlib
from collections import Counter

import pytest

from warcio.archiveiterator import ArchiveIterator
from warcio.warcwriter import WARCWriter

from gristmill.pipeline.warc import iter_warc
from warc_factory import (arc_filedesc, arc_record, http_response, page, raw_record, raw_response, response, write_arc,
                          write_warc)


def outcomes(path):
    with open(path, "rb") as f:
        return list(iter_warc(f, path.name))


def summary(outs):
    kept = [o.page for o in outs if o.page is not None]
    reasons = Counter(o.reason for o in outs if o.page is None)
    return kept, reasons


def test_good_file_matches_warcio_record_count(tmp_path):
    p = tmp_path / "good.warc.gz"
    write_warc(p, n=20)
    with open(p, "rb") as f:
        reference = Counter(r.rec_type for r in ArchiveIterator(f))
    kept, reasons = summary(outcomes(p))
    assert len(kept) == 20 == reference["response"] - 1
    assert reasons == Counter({"type:request": 1, "status:404": 1})
    assert sum(reference.values()) == len(kept) + sum(reasons.values())
    assert [pg.url for pg in kept] == [f"http://example.com/{i}" for i in range(20)]


def test_plain_uncompressed_warc(tmp_path):
    p = tmp_path / "plain.warc"
    write_warc(p, n=5, gz=False)
    kept, reasons = summary(outcomes(p))
    assert len(kept) == 5 and reasons["type:request"] == 1


def test_offsets_point_at_the_records(tmp_path):
    p = tmp_path / "good.warc.gz"
    write_warc(p, n=5)
    data = p.read_bytes()
    for pg in summary(outcomes(p))[0]:
        with io.BytesIO(data[pg.offset:]) as f:
            rec = next(iter(ArchiveIterator(f)))
            assert rec.rec_headers.get_header("WARC-Target-URI") == pg.url


def test_broken_record_mid_file_is_counted_and_the_rest_is_read(tmp_path):
    p = tmp_path / "broken.warc.gz"
    chunks = write_warc(p, n=20)
    bad = bytearray(chunks[7])
    for i in range(30, len(bad) - 30):  # corrupt the deflate data of record 7, keep its gzip header
        bad[i] ^= 0x5A
    chunks[7] = bytes(bad)
    p.write_bytes(b"".join(chunks))
    kept, reasons = summary(outcomes(p))
    assert [pg.url for pg in kept] == [f"http://example.com/{i}" for i in range(20) if i != 7]
    assert sum(n for r, n in reasons.items() if r.startswith("bad:")) >= 1
    assert reasons["type:request"] == 1 and reasons["status:404"] == 1


def test_truncated_gzip(tmp_path):
    p = tmp_path / "trunc.warc.gz"
    chunks = write_warc(p, n=10)
    data = b"".join(chunks[:6]) + chunks[6][: len(chunks[6]) // 2]
    p.write_bytes(data)
    kept, reasons = summary(outcomes(p))
    assert len(kept) == 6
    assert sum(n for r, n in reasons.items() if r.startswith("bad:")) == 1


def test_garbage_and_empty_files(tmp_path):
    g = tmp_path / "garbage.warc.gz"
    g.write_bytes(random.Random(1).randbytes(50_000))
    kept, reasons = summary(outcomes(g))
    assert kept == [] and all(r.startswith("bad:") for r in reasons)
    e = tmp_path / "empty.warc.gz"
    e.write_bytes(b"")
    kept, reasons = summary(outcomes(e))
    assert kept == [] and reasons == Counter({"bad:empty_file": 1})


def test_non_html_oversized_and_missing_content_type(tmp_path):
    p = tmp_path / "mixed.warc.gz"
    with open(p, "wb") as f:
        w = WARCWriter(f, gzip=True)
        w.write_record(response(w, "http://x/img.png", b"\x89PNG\r\n\x1a\n" + bytes(100), "image/png"))
        w.write_record(response(w, "http://x/big", b"<html><body>" + b"a " * (3 << 20) + b"</body></html>"))
        w.write_record(response(w, "http://x/none", b"<p>no type</p>", ""))
        w.write_record(response(w, "http://x/ok", b"<p>fine</p>", "text/html"))
    kept, reasons = summary(outcomes(p))
    assert [pg.url for pg in kept] == ["http://x/ok"]
    assert reasons == Counter({"not_html:image/png": 1, "oversized": 1, "not_html:none": 1})


def test_plain_warc_record_cut_inside_its_headers(tmp_path):
    # warcio's lenient parser would merge the cut record with the next one; both must not vanish uncounted.
    p = tmp_path / "plain-broken.warc"
    chunks = write_warc(p, n=10, gz=False)
    p.write_bytes(b"".join(chunks[:3]) + chunks[3][:200] + b"\x00garbage" * 50 + b"".join(chunks[4:]))
    kept, reasons = summary(outcomes(p))
    assert [pg.url for pg in kept] == [f"http://example.com/{i}" for i in range(10) if i != 3]
    assert reasons == Counter({"bad:warc_headers": 1, "type:request": 1, "status:404": 1})


def test_two_damaged_regions_and_offsets_after_resync(tmp_path):
    p = tmp_path / "twice.warc.gz"
    chunks = write_warc(p, n=12)
    junk = random.Random(2).randbytes(3000)
    data = b"".join(chunks[:3]) + junk + b"".join(chunks[3:8]) + junk + b"".join(chunks[8:])
    p.write_bytes(data)
    outs = outcomes(p)
    kept, reasons = summary(outs)
    assert [pg.url for pg in kept] == [f"http://example.com/{i}" for i in range(12)]
    assert sum(n for r, n in reasons.items() if r.startswith("bad:")) == 2
    for pg in kept:  # offsets are absolute in the file, also for records found by re-synchronising
        rec = next(iter(ArchiveIterator(io.BytesIO(data[pg.offset:]))))
        assert rec.rec_headers.get_header("WARC-Target-URI") == pg.url


def _fates(outs):
    """Each outcome as (warc type, url, payload, reason): comparable between files whose offsets differ."""
    return [(o.warc_type, o.page.url, o.page.payload, None) if o.page else (o.warc_type, None, None, o.reason)
            for o in outs]


def test_plain_warc_record_cut_inside_its_payload(tmp_path):
    # Content-Length runs past the cut, so warcio reads on into the next record; it must neither swallow
    # that record nor keep the cut one as a page.
    p = tmp_path / "plain-cut.warc"
    chunks = write_warc(p, n=8, gz=False)
    good = outcomes(p)
    body = chunks[3].index(b"<body>")
    data = b"".join(chunks[:3]) + chunks[3][: body + 40] + b"".join(chunks[4:])
    p.write_bytes(data)
    outs = outcomes(p)
    expected = _fates(good)
    expected[3] = ("response", None, None, "bad:payload_length")
    assert _fates(outs) == expected
    for pg in (o.page for o in outs if o.page):  # offsets still point at the records after the resync
        rec = next(iter(ArchiveIterator(io.BytesIO(data[pg.offset:]))))
        assert rec.rec_headers.get_header("WARC-Target-URI") == pg.url


def test_plain_warc_cut_inside_a_payload_near_the_end(tmp_path):
    # The request record (second to last) cut short; and, separately, the file cut inside the last payload.
    p = tmp_path / "plain-cut-end.warc"
    chunks = write_warc(p, n=4, gz=False)
    good = _fates(outcomes(p))
    last = chunks[-1]
    req_end = last.index(b"WARC/1.", 10)
    p.write_bytes(b"".join(chunks[:-1]) + last[: req_end - 20] + last[req_end:])
    assert _fates(outcomes(p)) == good[:4] + [("request", None, None, "bad:payload_length")] + good[5:]
    p.write_bytes(b"".join(chunks[:-1]) + last[:-10])
    assert _fates(outcomes(p)) == good[:5] + [("response", None, None, "bad:payload_length")]


def _pages_and_reasons(data: bytes, name="x.warc.gz"):
    outs = list(iter_warc(io.BytesIO(data), name))
    return [(o.page.url, o.page.payload) for o in outs if o.page], Counter(o.reason for o in outs if o.page is None)


def test_a_whole_plain_file_gzipped_as_one_stream_is_read_through(tmp_path):
    # `gzip crawl.warc`: one gzip member holds every record, which warcio refuses after the first.
    p = tmp_path / "plain.warc"
    write_warc(p, n=6, gz=False)
    plain = p.read_bytes()
    reference = _pages_and_reasons(plain, "plain.warc")
    whole = gzip.compress(plain, mtime=0)
    assert _pages_and_reasons(whole) == reference
    assert _pages_and_reasons(whole + b"\x00" * 64) == reference  # NUL padding after it is no record
    pages, reasons = _pages_and_reasons(whole[: len(whole) * 2 // 3])  # cut short: what precedes the cut is read
    assert 0 < len(pages) < 6 and pages == reference[0][: len(pages)]
    assert sum(n for r, n in reasons.items() if r.startswith("bad:")) == 1


def test_a_damaged_first_byte_or_leading_junk_costs_only_the_first_record(tmp_path):
    chunks = write_warc(tmp_path / "a.warc.gz", n=20)
    good_pages, good_reasons = _pages_and_reasons(b"".join(chunks))
    flipped = bytes([chunks[0][0] ^ 0xFF]) + chunks[0][1:]
    pages, reasons = _pages_and_reasons(flipped + b"".join(chunks[1:]))
    assert pages == good_pages[1:] and reasons == good_reasons + Counter({"bad:not_warc": 1})
    pages, reasons = _pages_and_reasons(b"junk " * 10 + b"".join(chunks))
    bad = Counter({r: n for r, n in reasons.items() if r.startswith("bad:")})
    assert pages == good_pages and reasons - bad == good_reasons and sum(bad.values()) == 1


def test_padding_is_not_a_record_and_a_cut_payload_is_not_a_page(tmp_path):
    chunks = write_warc(tmp_path / "a.warc.gz", n=5)
    good = _pages_and_reasons(b"".join(chunks))
    assert _pages_and_reasons(b"".join(chunks) + b"\x00" * 100) == good
    assert _pages_and_reasons(chunks[0] + gzip.compress(b"\r\n") + b"".join(chunks[1:])) == good
    # the last page's gzip member cut inside its payload: counted once, not kept with half its HTML
    last_page = chunks[4]
    pages, reasons = _pages_and_reasons(b"".join(chunks[:4]) + last_page[: len(last_page) * 3 // 4])
    assert pages == good[0][:4] and reasons == Counter({"bad:truncated": 1})


@pytest.mark.parametrize("name", ["a.warc.gz", "a.arc.gz"])
@pytest.mark.parametrize("tail", [gzip.compress(b"", mtime=0), gzip.compress(b"", mtime=0) * 2,
                                  gzip.compress(b"", mtime=0) + b"\x00" * 10, gzip.compress(b"\r\n", mtime=0)],
                         ids=["empty", "two-empty", "empty-then-nul", "crlf"])
def test_empty_or_padding_gzip_members_at_the_end_are_no_record(tmp_path, name, tail):
    # An empty member (`gzip.compress(b"")`, 20 bytes) holds no record, as `zcat` shows; warcio stops at one, and
    # what it left over was counted bad:truncated (bad:not_warc with NULs after it): one outcome with nothing in.
    (write_warc if name.endswith(".warc.gz") else write_arc)(tmp_path / name, n=5)
    data = (tmp_path / name).read_bytes()
    assert gzip.decompress(tail).strip(b"\r\n") == b""
    good = _pages_and_reasons(data, name)
    assert len(good[0]) == 5
    assert _pages_and_reasons(data + tail, name) == good
    # an empty member cut short is damage, and counted once
    pages, reasons = _pages_and_reasons(data + gzip.compress(b"", mtime=0)[:-3], name)
    assert pages == good[0] and reasons == good[1] + Counter({"bad:truncated": 1})


_JUNK = bytes(random.Random(1).randrange(256) for _ in range(300))


@pytest.mark.parametrize("data, counted", [
    (b"\nARC/1.0 not a record\r\nmore\r\n\r\n", "bad:not_warc"),
    (b"\n" + arc_record("http://example.com/x", "20080101120000", http_response(page(9))), "bad:not_warc"),
    (b"\n" + _JUNK, "bad:not_warc"),
    (b"\r\n\r\n" + raw_response(target_uri=b"http://example.com/in-member"), "http://example.com/in-member"),
    (b"\r\n\r\n\n", None), (b"\n\x00\x00 \r\n", None)],
    ids=["lf-arc-line", "lf-arc-record", "lf-junk", "crlf-crlf-record", "blank-lines", "padding"])
def test_a_gzip_member_that_begins_with_a_blank_line_is_not_lost(data, counted):
    # warcio reads a member's leading blank line as a padding "record" and drains the member's rest as its block:
    # whatever followed (junk, a record of another kind, a WARC record) was lost with nothing counted. Padding alone
    # is still no record; a WARC record after blank lines is read, as after blank lines before a plain record.
    chunks = write_warc_bytes(4)
    good_pages, good_reasons = _pages_and_reasons(b"".join(chunks))
    member = gzip.compress(data, mtime=0)
    for at in (1, 3, len(chunks)):  # between members, and last
        pages, reasons = _pages_and_reasons(b"".join(chunks[:at]) + member + b"".join(chunks[at:]))
        if counted is None:
            assert (pages, reasons) == (good_pages, good_reasons)
        elif counted.startswith("bad:"):
            assert (pages, reasons) == (good_pages, good_reasons + Counter({counted: 1}))
        else:
            assert [url for url, _ in pages] == ([url for url, _ in good_pages[:at]] + [counted]
                                                 + [url for url, _ in good_pages[at:]])
            assert reasons == good_reasons


def test_a_blank_line_before_an_arc_gz_members_record_is_passed_over(tmp_path):
    # As in a .warc.gz (above): the record after the blank line was drained unseen by warcio's WARC parser. In an
    # ARC, warcio's ARC parser rejected the blank line, and the record was counted as bad:not_warc, not read.
    records = write_arc(tmp_path / "a.arc", n=3, gz=False)
    good = _pages_and_reasons(b"".join(gzip.compress(r, mtime=0) for r in records), "a.arc.gz")
    data = b"".join(gzip.compress(b"\n" + r if i == 2 else r, mtime=0) for i, r in enumerate(records))
    assert _pages_and_reasons(data, "a.arc.gz") == good
    junk = b"".join(gzip.compress(r, mtime=0) for r in records[:2]) + gzip.compress(b"\n" + _JUNK, mtime=0)
    assert _pages_and_reasons(junk, "a.arc.gz")[1]["bad:not_warc"] == 1


@pytest.mark.parametrize("between", [b"\n", b"\r\n\r\n", b"\r\n\r\n junk"], ids=["lf", "crlf-crlf", "then-junk"])
def test_plain_bytes_between_gzip_members_hide_no_member_after_them(between):
    # warcio reads bytes between members as plain data, and every member after them too: blank lines were one
    # padding "record" to the end of the file, and the file's rest was lost with nothing counted.
    chunks = write_warc_bytes(5)
    good_pages, good_reasons = _pages_and_reasons(b"".join(chunks))
    junk = Counter({"bad:not_warc": 1}) if between.strip() else Counter()
    for data in (chunks[0] + between + b"".join(chunks[1:]), b"".join(chunks[:3]) + between + b"".join(chunks[3:])):
        assert _pages_and_reasons(data) == (good_pages, good_reasons + junk)


@pytest.mark.parametrize("kind", ["warc.gz", "warc", "arc.gz", "arc"])
def test_a_file_that_begins_with_blank_lines_or_junk_loses_no_record(tmp_path, kind):
    # warcio read leading blank lines and the whole file after them as one padding "record": nothing was counted.
    # Junk before a plain ARC's first record was searched past for a WARC or gzip record only, and the file lost.
    path = tmp_path / f"a.{kind}"
    if kind.startswith("arc"):
        write_arc(path, n=4, gz=kind.endswith(".gz"))
    else:
        write_warc(path, n=4, gz=kind.endswith(".gz"))
    data = path.read_bytes()
    good = _pages_and_reasons(data, path.name)
    assert len(good[0]) == 4
    for lead in (b"\n", b"\r\n\r\n"):
        assert _pages_and_reasons(lead + data, path.name) == good
    pages, reasons = _pages_and_reasons(b"junk\n" + data, path.name)
    assert (pages, reasons) == (good[0], good[1] + Counter({"bad:not_warc": 1}))


@pytest.mark.parametrize("kind", ["warc.gz", "arc.gz", "warc", "arc"])
@pytest.mark.parametrize("junk", [b"WARC/1.0\r\n", gzip.compress(b"junk", mtime=0), b"\x1f\x8b\x08junk"],
                         ids=["warc-line", "gzip-member", "gzip-magic"])
def test_leading_junk_that_looks_like_another_kind_of_file_costs_only_itself(tmp_path, kind, junk):
    # The file's kind was taken from its first bytes, and the rest searched for records of that kind only: a
    # `WARC/1.` line before gzip members, or a gzip member before plain records, lost the whole file.
    path = tmp_path / f"a.{kind}"
    (write_arc if kind.startswith("arc") else write_warc)(path, n=4, gz=kind.endswith(".gz"))
    good_pages, good_reasons = _pages_and_reasons(path.read_bytes(), path.name)
    pages, reasons = _pages_and_reasons(junk + path.read_bytes(), path.name)
    assert pages == good_pages
    assert good_reasons - reasons == Counter() and sum((reasons - good_reasons).values()) <= 1


def _big_page(i: int) -> bytes:
    """An HTML page whose gzip member spans several of warcio's 16 KiB reads (random words barely compress)."""
    rnd = random.Random(i)
    words = " ".join(f"w{rnd.randrange(10**6)}" for _ in range(30000)).encode()
    return b"<html><body><p>" + words + b"</p></body></html>"


def _members(n: int, big: set[int]) -> list[bytes]:
    out = []
    for i in range(n):
        buf = io.BytesIO()
        w = WARCWriter(buf, gzip=True)
        w.write_record(response(w, f"http://example.com/{i}", _big_page(i) if i in big else page(i)))
        out.append(buf.getvalue())
    return out


def _damage(member: bytes, how: str) -> bytes:
    m = bytearray(member)
    if how == "crc":  # the CRC-32 in the member's 8-byte trailer (RFC 1952)
        m[-8] ^= 0xFF
    elif how == "isize":  # the length in the trailer
        m[-2] ^= 0xFF
    else:  # deflate data flipped at a fraction of the member
        at = int(len(m) * float(how))
        for i in range(at, at + 8):
            m[i] ^= 0x55
    return bytes(m)


@pytest.mark.parametrize("big", [False, True], ids=["small-member", "member-over-16KiB"])
@pytest.mark.parametrize("how", ["0.1", "0.5", "0.9", "crc", "isize"])
def test_a_damaged_gzip_member_mid_file_costs_only_its_record(capfd, big, how):
    chunks = _members(8, {4} if big else set())
    assert zlib_fails(_damage(chunks[4], how))  # the damage is real: zlib refuses the member
    # Reference: warcio itself on the file without that member.
    with io.BytesIO(b"".join(chunks[:4] + chunks[5:])) as f:
        reference = [r.rec_headers.get_header("WARC-Target-URI") for r in ArchiveIterator(f)]
    pages, reasons = _pages_and_reasons(b"".join(chunks[:4]) + _damage(chunks[4], how) + b"".join(chunks[5:]))
    assert [url for url, _ in pages] == reference
    assert reasons == Counter({"bad:bad_gzip": 1})
    assert capfd.readouterr().err == ""  # warcio's own "Error -3 while decompressing" is not printed


def test_a_gzip_member_cut_short_that_zlib_reads_on_from_costs_only_its_record():
    # Cut short, a member's deflate data may go on, for zlib, into the members after it without an error: warcio
    # read them as the rest of the cut record, which was kept with that garbage as its payload (then taken for a
    # gzip stream around plain records, and the file's rest lost) or counted with the members after it. Whatever
    # the cut, it costs only its record.
    def member(i: int, words: int) -> bytes:
        buf = io.BytesIO()
        w = WARCWriter(buf, gzip=True)
        rec = response(w, f"http://example.com/{i}", page(i, words))
        rec.rec_headers.replace_header("WARC-Record-ID", f"<urn:uuid:{i:012d}>")  # the same bytes on every run
        w.write_record(rec)
        return buf.getvalue()

    before, cut_one, after = member(99, 40), member(71, 31), b"".join(member(100 + k, 40) for k in range(3))
    good_pages = _pages_and_reasons(before + after)[0]
    for cut in range(11, len(cut_one)):  # after its 10-byte gzip header
        pages, reasons = _pages_and_reasons(before + cut_one[:cut] + after)
        assert pages == good_pages and sum(reasons.values()) == 1 and next(iter(reasons)).startswith("bad:"), cut


def zlib_fails(member: bytes) -> bool:
    try:
        zlib.decompress(member, 16 + zlib.MAX_WBITS)
    except zlib.error:
        return True
    return False


def test_a_wrong_content_length_is_counted_not_printed_and_not_kept_cut(capfd):
    # A gzip member whose record declares 10 bytes fewer than its block holds: warcio cuts the payload at the
    # declared length and prints a warning; the record is counted as bad:payload_length, as in a plain file.
    chunks = write_warc_bytes(6)
    raw = gzip.decompress(chunks[2])
    declared = int(re.search(rb"Content-Length: (\d+)", raw).group(1))
    short = raw.replace(b"Content-Length: %d" % declared, b"Content-Length: %d" % (declared - 10), 1)
    pages, reasons = _pages_and_reasons(b"".join(chunks[:2]) + gzip.compress(short, mtime=0) + b"".join(chunks[3:]))
    good_pages, good_reasons = _pages_and_reasons(b"".join(chunks))
    assert pages == good_pages[:2] + good_pages[3:]
    assert reasons == good_reasons + Counter({"bad:payload_length": 1})
    # A plain file written with bare LF line ends: every Content-Length is wrong; each record is counted once.
    plain = b"".join(write_warc_bytes(4, gz=False)).replace(b"\r\n", b"\n")
    outs = list(iter_warc(io.BytesIO(plain), "lf.warc"))
    assert Counter((o.warc_type, o.reason) for o in outs) == Counter(
        {("response", "bad:payload_length"): 5, ("request", "bad:payload_length"): 1})
    assert capfd.readouterr().err == ""  # no "WARNING: Record not followed by newline" from warcio


@pytest.mark.parametrize("length", [b"0", b"20", b"abc"])
def test_a_gzip_member_that_goes_on_past_a_short_length_costs_only_its_record(tmp_path, length):
    # The member's rest (HTTP headers, the page) is more than one line, which warcio parsed as a record of its own;
    # with warcio's length for the short record (a file offset less a decompressed line's length), the resync
    # went back before the record: in an .arc.gz, the same records were read again and again, without end.
    chunks = write_warc_bytes(6)
    raw = re.sub(rb"Content-Length: \d+", b"Content-Length: " + length, gzip.decompress(chunks[2]), count=1)
    good_pages, good_reasons = _pages_and_reasons(b"".join(chunks))
    outs = list(itertools.islice(iter_warc(io.BytesIO(
        b"".join(chunks[:2]) + gzip.compress(raw, mtime=0) + b"".join(chunks[3:])), "x.warc.gz"), 100))
    assert [(o.page.url, o.page.payload) for o in outs if o.page] == good_pages[:2] + good_pages[3:]
    assert Counter(o.reason for o in outs if o.page is None) == good_reasons + Counter({"bad:payload_length": 1})

    records = write_arc(tmp_path / "a.arc", n=4, gz=False)
    line, block = records[2].split(b"\n", 1)
    short = line.rsplit(b" ", 1)[0] + b" " + length.replace(b"abc", b"-5") + b"\n" + block
    members = [gzip.compress(r, mtime=0) for r in records[:2] + [short] + records[3:]]
    good_pages, good_reasons = _pages_and_reasons(b"".join(gzip.compress(r, mtime=0) for r in records), "a.arc.gz")
    outs = list(itertools.islice(iter_warc(io.BytesIO(b"".join(members)), "a.arc.gz"), 100))
    assert [(o.page.url, o.page.payload) for o in outs if o.page] == good_pages[:1] + good_pages[2:]
    assert Counter(o.reason for o in outs if o.page is None) == good_reasons + Counter({"bad:payload_length": 1})


def write_warc_bytes(n: int, gz: bool = True) -> list[bytes]:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        return write_warc(Path(d) / "x.warc", n=n, gz=gz)


class _FailingStream(io.BytesIO):
    """A file whose reads fail with EIO past `after` bytes, as a failing disk or a dropped mount does."""

    def __init__(self, data: bytes, after: int):
        super().__init__(data)
        self.after = after

    def read(self, size=-1):
        left = self.after - self.tell()
        if left <= 0:
            raise OSError(errno.EIO, "Input/output error")
        return super().read(left if size is None or size < 0 else min(size, left))


def test_a_file_that_fails_as_it_is_read_counts_its_rest_as_one_record(monkeypatch, capfd):
    from gristmill.pipeline import fs
    from gristmill.pipeline import warc as warc_module

    chunks = write_warc_bytes(6)
    data = b"".join(chunks)
    monkeypatch.setattr(fs, "open_input", lambda path: _FailingStream(data, len(b"".join(chunks[:3])) + 10))
    fn = warc_module._ReadWarcFn("Read", 2 << 20)
    fn.setup()
    counts = Counter()
    fn.counters = type("C", (), {"inc": lambda self, k, n=1: counts.update({k: n})})()
    pages = list(fn.process("/crawl/x.warc.gz"))
    assert [p.url for p in pages] == [f"http://example.com/{i}" for i in range(len(pages))] and len(pages) >= 2
    assert counts["dropped/bad:unreadable_file"] == 1
    assert counts["in"] == counts["kept"] + sum(n for k, n in counts.items() if k.startswith("dropped/"))
    assert "cannot read /crawl/x.warc.gz (OSError: Input/output error)" in capfd.readouterr().err


# ARC files (ARC v1, the format before WARC), written by hand from the spec; the reference is warcio's own
# ARC-to-WARC reading of them.

def _warcio_arc(data: bytes) -> tuple[list[tuple], Counter]:
    """warcio's ArchiveIterator(arc2warc=True): (url, date, payload) of each HTTP 200 HTML response, and the
    records' types."""
    pages, types = [], Counter()
    for r in ArchiveIterator(io.BytesIO(data), arc2warc=True):
        types[r.rec_type] += 1
        http = r.http_headers
        if r.rec_type == "response" and http.get_statuscode() == "200" and \
                http.get_header("Content-Type").startswith("text/html"):
            pages.append((r.rec_headers.get_header("WARC-Target-URI"), r.rec_headers.get_header("WARC-Date"),
                          r.content_stream().read()))
    return pages, types


@pytest.mark.parametrize("gz", [True, False], ids=["arc.gz", "arc"])
def test_arc_records_read_as_warcio_converts_them(tmp_path, gz):
    p = tmp_path / ("crawl.arc.gz" if gz else "crawl.arc")
    write_arc(p, n=6, gz=gz)
    data = p.read_bytes()
    want_pages, want_types = _warcio_arc(data)
    outs = outcomes(p)
    pages = [o.page for o in outs if o.page]
    assert [(pg.url, pg.date, pg.payload) for pg in pages] == want_pages
    assert [pg.url for pg in pages] == [f"http://example.com/{i}" for i in range(6)]
    assert pages[0].date == "2008-01-01T12:00:00Z"  # Archive-date 20080101120000, as ISO 8601
    assert Counter(o.warc_type for o in outs) == want_types  # warcinfo (filedesc) 1, response 8
    assert summary(outs)[1] == Counter({"type:warcinfo": 1, "not_html:image/png": 1, "status:404": 1})
    ids = [pg.record_id for pg in pages]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"<urn:uuid:[0-9a-f-]{36}>", i) for i in ids)
    assert [pg.record_id for pg in summary(outcomes(p))[0]] == ids  # no random ids: a second read agrees
    for pg in pages:  # the offsets point at the records
        rec = next(iter(ArchiveIterator(io.BytesIO(data[pg.offset:]), arc2warc=True)))
        assert rec.rec_headers.get_header("WARC-Target-URI") == pg.url
    whole = gzip.compress(b"".join(write_arc(tmp_path / "x.arc", gz=False)), mtime=0)  # `gzip crawl.arc`
    assert [(pg.url, pg.payload) for pg in summary(list(iter_warc(io.BytesIO(whole), "x.arc.gz")))[0]] == \
        [(u, b) for u, _, b in want_pages]


def test_arc_pages_become_documents_with_distinct_ids(tmp_path):
    # Before ARC records were read for what they are, every page of an .arc.gz had an empty URL and record id,
    # hence one document id for all, and deduplication took them for copies of one another.
    from gristmill.pipeline.docio import WriteDocuments, read_documents
    from gristmill.pipeline.document import stable_id
    from gristmill.pipeline.extract import ExtractText
    from gristmill.pipeline.runner import run_stages
    from gristmill.pipeline.stages import RunContext
    from gristmill.pipeline.warc import ReadWarc

    crawl = tmp_path / "crawl"
    crawl.mkdir()
    write_arc(crawl / "old.arc.gz", n=5, host="example.org")
    write_warc(crawl / "new.warc.gz", n=5)  # the same pages under other URLs, in a WARC: the reference text
    stages = [ReadWarc("Read"), ExtractText("Extract"), WriteDocuments("Write", shards=1)]
    stats = run_stages(stages, RunContext(input=str(crawl / "*.gz"), output=str(tmp_path / "out")),
                       ["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    assert stats["balanced"], stats["unbalanced_stages"]
    docs = {d.url: d for d in read_documents(str(tmp_path / "out" / "documents"))}
    arc = [docs[f"http://example.org/{i}"] for i in range(5)]
    assert [d.text for d in arc] == [docs[f"http://example.com/{i}"].text for i in range(5)]
    assert len({d.id for d in docs.values()}) == len(docs) == 10
    assert all(d.id == stable_id(d.warc["record_id"], d.url) for d in arc)
    assert [d.warc["date"] for d in arc] == [f"2008-01-01T12:00:0{i}Z" for i in range(5)]
    assert stats["stages"]["Read"]["type"]["warcinfo"] == 1


def test_damaged_arc_files_cost_only_the_damaged_records(tmp_path):
    records = write_arc(tmp_path / "a.arc", n=6, gz=False)
    members = [gzip.compress(r, mtime=0) for r in records]
    good_pages = [(u, b) for u, _, b in _warcio_arc(b"".join(records))[0]]

    def read(data, name):
        pages, reasons = _pages_and_reasons(data, name)
        return pages, Counter({r: n for r, n in reasons.items() if r.startswith("bad:")})

    # A gzip member that does not decompress (record 3, the page example.com/2).
    bad = bytearray(members[3])
    for i in range(30, len(bad) - 30):
        bad[i] ^= 0x5A
    gz = b"".join(members[:3]) + bytes(bad) + b"".join(members[4:])
    assert read(gz, "a.arc.gz") == (good_pages[:2] + good_pages[3:], Counter({"bad:bad_gzip": 1}))
    # A file cut inside its last page's member.
    cut = b"".join(members[:6]) + members[6][: len(members[6]) // 2]
    assert read(cut, "a.arc.gz") == (good_pages[:5], Counter({"bad:truncated": 1}))
    # A plain ARC record whose Archive-length runs 20 bytes past its block: warcio reads on into the next record.
    line, block = records[3].split(b"\n", 1)
    head, length = line.rsplit(b" ", 1)
    long = b"".join(records[:3]) + head + b" %d\n" % (int(length) + 20) + block + b"".join(records[4:])
    pages, bad = read(long, "a.arc")
    assert (pages, bad) == (good_pages[:2] + good_pages[3:], Counter({"bad:payload_length": 1}))
    for o in iter_warc(io.BytesIO(long), "a.arc"):  # the offsets after the resync still point at the records
        if o.page:
            rec = next(iter(ArchiveIterator(io.BytesIO(long[o.page.offset:]), arc2warc=True)))
            assert rec.rec_headers.get_header("WARC-Target-URI") == o.page.url
    # ARC v2 header lines (ten fields) are not read as v1's five: each such record is counted, not made a page.
    http = block[:-1]  # the record's block, without the newline that ends the record
    v2 = b"http://example.com/v2 192.0.2.1 20080101120000 text/html 200 SHA1 - 0 a.arc %d\n" % len(http) + http + b"\n"
    for data, name in ((b"".join(records[:2]) + v2 + b"".join(records[2:]), "a.arc"),
                       (b"".join(members[:2]) + gzip.compress(v2, mtime=0) + b"".join(members[2:]), "a.arc.gz")):
        assert read(data, name) == (good_pages, Counter({"bad:arc_header": 1}))


def _warcio_pages(data: bytes) -> list[tuple[str, bytes]]:
    """warcio's own reading of a plain WARC: (url, payload) of each HTTP 200 HTML response."""
    return [(r.rec_headers.get_header("WARC-Target-URI"), r.content_stream().read())
            for r in ArchiveIterator(io.BytesIO(data))
            if r.rec_type == "response" and r.http_headers.get_statuscode() == "200"]


@pytest.mark.parametrize("junk", [b"junk", b"WAR", b"\x00\x00junk\r\n\r\nmore junk\r\n", b"HTTP/1.1 200 OK\r\n\r\n<p>",
                                  random.Random(3).randbytes(5000)], ids=["word", "cut-magic", "lines", "http", "random"])
@pytest.mark.parametrize("after", [2, 7], ids=["mid-file", "after-the-last-page"])
def test_junk_after_a_whole_plain_record_costs_only_itself(junk, after):
    # Before, the whole record in front of the junk was counted as bad:payload_length and its page lost.
    chunks = write_warc_bytes(7, gz=False)
    good = b"".join(chunks)
    data = b"".join(chunks[:after]) + junk + b"".join(chunks[after:])
    outs = list(iter_warc(io.BytesIO(data), "junk.warc"))
    expected = _fates(list(iter_warc(io.BytesIO(good), "good.warc")))
    expected.insert(after, ("unknown", None, None, "bad:not_warc"))  # the junk, one record of its own
    assert _fates(outs) == expected
    assert [(o.page.url, o.page.payload) for o in outs if o.page] == _warcio_pages(good)
    assert len(outs) == len(list(ArchiveIterator(io.BytesIO(good)))) + 1  # in = kept + dropped, the junk included
    for pg in (o.page for o in outs if o.page):  # offsets still point at the records after the resync
        rec = next(iter(ArchiveIterator(io.BytesIO(data[pg.offset:]))))
        assert rec.rec_headers.get_header("WARC-Target-URI") == pg.url
    tail = list(iter_warc(io.BytesIO(good + junk), "tail.warc"))  # junk after the file's last record
    assert _fates(tail) == _fates(list(iter_warc(io.BytesIO(good), "good.warc"))) + [
        ("unknown", None, None, "bad:not_warc")]


def test_a_content_length_that_runs_to_the_next_records_blank_line_is_not_junk():
    # Record 2 declares a block that ends exactly at the blank line after record 3's WARC headers: its terminator is
    # there, and no `WARC/1.` follows, as with junk; but the block holds record 3's start, so it is no whole record.
    chunks = write_warc_bytes(6, gz=False)
    declared = int(re.search(rb"Content-Length: (\d+)", chunks[2]).group(1))
    run_on = len(b"\r\n\r\n") + chunks[3].index(b"\r\n\r\n")
    long = chunks[2].replace(b"Content-Length: %d" % declared, b"Content-Length: %d" % (declared + run_on), 1)
    data = b"".join(chunks[:2]) + long + b"".join(chunks[3:])
    good = list(iter_warc(io.BytesIO(b"".join(chunks)), "good.warc"))
    expected = _fates(good)
    expected[2] = ("response", None, None, "bad:payload_length")
    assert _fates(list(iter_warc(io.BytesIO(data), "long.warc"))) == expected


def _with_http_length(record: bytes, blank_line_in_body: bool) -> bytes:
    """A plain WARC response record given an HTTP Content-Length (and, optionally, a blank line inside its page),
    its WARC Content-Length made to agree."""
    head, block = record.split(b"\r\n\r\n", 1)
    http, body = block.split(b"\r\n\r\n", 1)
    body = body[:-len(b"\r\n\r\n")]
    if blank_line_in_body:
        body = body.replace(b"</p>", b"</p>\r\n\r\n<p>more</p>", 1)
    block = http + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    head = re.sub(rb"Content-Length: \d+", b"Content-Length: %d" % len(block), head)
    return head + b"\r\n\r\n" + block + b"\r\n\r\n"


@pytest.mark.parametrize("stop", ["http_headers", "in_body"])
def test_a_content_length_that_stops_at_a_blank_line_of_its_own_is_not_junk(stop):
    # Record 2 declares a block that ends at the blank line closing its HTTP headers (or at one inside its page):
    # the terminator is there, and the page's rest follows, which is no record, as junk is; but the payload is
    # shorter than the HTTP Content-Length, so the record is cut, not whole. Before: a page kept with its body
    # cut off, and the rest counted as junk.
    chunks = write_warc_bytes(6, gz=False)
    chunks[2] = _with_http_length(chunks[2], blank_line_in_body=stop == "in_body")
    good = b"".join(chunks)
    expected = _fates(list(iter_warc(io.BytesIO(good), "good.warc")))
    assert expected[2][3] is None and len(expected) == len(list(ArchiveIterator(io.BytesIO(good))))
    head, block = chunks[2].split(b"\r\n\r\n", 1)
    http_end = block.index(b"\r\n\r\n")
    cut_at = http_end if stop == "http_headers" else block.index(b"</p>\r\n\r\n") + len(b"</p>")
    short = chunks[2].replace(b"Content-Length: %d" % len(block[:-4]), b"Content-Length: %d" % cut_at, 1)
    assert short != chunks[2]
    data = b"".join(chunks[:2]) + short + b"".join(chunks[3:])
    expected[2] = ("response", None, None, "bad:payload_length")
    assert _fates(list(iter_warc(io.BytesIO(data), "short.warc"))) == expected


def _arc_line_cuts(record: bytes) -> dict[str, int]:
    """Cut points inside an ARC record's header line `http://example.com/2 192.0.2.1 20080101120002 text/html N`."""
    line = record.split(b"\n", 1)[0]
    return {"in-url": 10, "bare-scheme": 6, "after-url": line.index(b" ") + 1, "in-ip": line.index(b" ") + 5,
            "in-date": line.index(b" 2008") + 6, "in-type": line.index(b"text/") + 3,
            "in-type-after-slash": line.index(b"text/") + 5, "before-newline": len(line)}


@pytest.mark.parametrize("where", list(_arc_line_cuts(arc_record("http://example.com/2", "20080101120002", b"x"))))
def test_plain_arc_record_cut_inside_its_header_line(tmp_path, where):
    # Before, the cut line ran on into the next record's header line, and the two were read as one record (a page
    # under a URL made of both); the cut record must be counted, and the next one read whole.
    records = write_arc(tmp_path / "a.arc", n=6, gz=False)
    cut = _arc_line_cuts(records[3])[where]
    data = b"".join(records[:3]) + records[3][:cut] + b"".join(records[4:])
    outs = list(iter_warc(io.BytesIO(data), "a.arc"))
    want_pages, _ = _warcio_arc(b"".join(records[:3] + records[4:]))  # warcio, on the file without the cut record
    assert [(o.page.url, o.page.date, o.page.payload) for o in outs if o.page] == [
        (u, d, b) for u, d, b in want_pages]
    assert summary(outs)[1] == Counter({"bad:arc_header": 1, "type:warcinfo": 1, "not_html:image/png": 1,
                                        "status:404": 1})
    assert len(outs) == len(records)  # the cut record counted once, each other record once
    for o in outs:  # the offsets point at the records, also the one whose line began inside the cut one's
        if o.page:
            rec = next(iter(ArchiveIterator(io.BytesIO(data[o.page.offset:]), arc2warc=True)))
            assert rec.rec_headers.get_header("WARC-Target-URI") == o.page.url


def test_arc_urls_that_hold_urls_are_no_cut():
    urls = ["http://www.example.com/share.php?u=http://example.org/x", "http://web.archive.org/web/2008/http://x.org/",
            "http://example.com/go?http://example.net/", "http://example.com/#http://example.net/"]
    data = arc_filedesc("u.arc") + b"".join(
        arc_record(u, "20080101120000", http_response(page(i))) for i, u in enumerate(urls))
    outs = list(iter_warc(io.BytesIO(data), "u.arc"))
    assert [(o.page.url, o.page.payload) for o in outs if o.page] == [(u, b) for u, _, b in _warcio_arc(data)[0]]
    assert [o.page.url for o in outs if o.page] == urls and summary(outs)[1] == Counter({"type:warcinfo": 1})


def _arc_fates_with(records: list[bytes], at: int, fate: tuple) -> list[tuple]:
    """The reader's outcomes on the whole ARC file of `records`, with `fate` put in at `at`."""
    expected = _fates(list(iter_warc(io.BytesIO(b"".join(records)), "good.arc")))
    expected.insert(at, fate)
    return expected


@pytest.mark.parametrize("junk", [b"junk\n", b"\n\nmore junk\n\n", b"HTTP/1.0 200 OK\r\n\r\n<p>\n", b"junk",
                                  random.Random(3).randbytes(5000)], ids=["line", "lines", "http", "no-newline",
                                                                          "random"])
@pytest.mark.parametrize("after", [3, 9], ids=["mid-file", "after-the-last-record"])
def test_junk_after_a_whole_plain_arc_record_costs_only_itself(tmp_path, junk, after):
    # Before, the whole record in front of the junk was counted as bad:payload_length and its page lost (and random
    # junk that did not end in a newline took the next record with it, uncounted).
    records = write_arc(tmp_path / "a.arc", n=6, gz=False)
    good = b"".join(records)
    data = b"".join(records[:after]) + junk + b"".join(records[after:])
    outs = list(iter_warc(io.BytesIO(data), "junk.arc"))
    # Junk that runs on into the next record's header line with no newline is that line's cut start: bad:arc_header.
    fate = ("response", None, None, "bad:arc_header") if junk == b"junk" and after < len(records) else \
        ("unknown", None, None, "bad:not_warc")
    assert _fates(outs) == _arc_fates_with(records, after, fate)
    assert [(o.page.url, o.page.date, o.page.payload) for o in outs if o.page] == _warcio_arc(good)[0]
    assert len(outs) == len(records) + 1  # in = kept + dropped, the junk included
    for pg in (o.page for o in outs if o.page):  # offsets still point at the records after the resync
        rec = next(iter(ArchiveIterator(io.BytesIO(data[pg.offset:]), arc2warc=True)))
        assert rec.rec_headers.get_header("WARC-Target-URI") == pg.url


def _lined_page(i: int) -> bytes:
    """An HTML page of many lines, for Archive-lengths that end at one of its newlines."""
    return b"<html><body>\n" + b"".join(b"<p>line %d of page %d</p>\n" % (j, i) for j in range(12)) + b"</body></html>"


def _http(body: bytes, content_length: int | None) -> bytes:
    length = b"" if content_length is None else b"Content-Length: %d\r\n" % content_length
    return b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n" + length + b"\r\n" + body


def _lined_arc(n: int = 6) -> list[bytes]:
    return [arc_filedesc("l.arc")] + [arc_record(f"http://example.com/{i}", "20080101120000",
                                                 _http(_lined_page(i), len(_lined_page(i)))) for i in range(n)]


def _with_length(url: str, block: bytes, length: int) -> bytes:
    return f"{url} 192.0.2.1 20080101120000 text/html {length}\n".encode() + block + b"\n"


@pytest.mark.parametrize("wrong", ["long-to-the-next-line", "long-to-the-next-line-http-agrees",
                                   "long-into-the-next-body-http-agrees", "short-at-a-newline"])
def test_a_wrong_plain_arc_length_that_ends_at_a_newline_is_still_a_cut(wrong):
    # Each declared block ends at a newline that no header line follows, as a whole record's does before junk; yet
    # it is no whole record, and must not be kept: a long Archive-length holds the next record's header line, a
    # short one leaves the HTTP body shorter than its Content-Length. The next record is read whole all the same.
    records = _lined_arc()
    body, nxt = _lined_page(2), records[4]
    if wrong == "short-at-a-newline":
        block = _http(body, len(body))
        length = block.rindex(b"\n", 0, len(block) - 40)
    else:
        run_on = 1 + (nxt.index(b"\n") if "line" in wrong else nxt.index(b"\n", nxt.index(b"<p>line 5")))
        block = _http(body, len(body) + run_on if "http-agrees" in wrong else len(body))
        length = len(block) + run_on
    data = b"".join(records[:3]) + _with_length("http://example.com/2", block, length) + b"".join(records[4:])
    at = len(b"".join(records[:3])) + len(_with_length("http://example.com/2", b"", length)) - 1 + length
    assert data[at:at + 1] == b"\n" and not data[at + 1:].startswith(b"http://")  # where the declared block ends
    expected = _arc_fates_with(records[:3] + records[4:], 3, ("response", None, None, "bad:payload_length"))
    assert _fates(list(iter_warc(io.BytesIO(data), "wrong.arc"))) == expected


def test_junk_after_an_arc_record_with_no_evidence_of_its_length_still_costs_it():
    # No HTTP Content-Length (a chunked or a close-delimited response): its newline may be a cut block's, so the
    # record is counted bad:payload_length, as before, the junk with it; the next record is read.
    records = _lined_arc()
    records[3] = arc_record("http://example.com/2", "20080101120000", _http(_lined_page(2), None))
    data = b"".join(records[:4]) + b"junk\n" + b"".join(records[4:])
    expected = _arc_fates_with(records[:3] + records[4:], 3, ("response", None, None, "bad:payload_length"))
    assert _fates(list(iter_warc(io.BytesIO(data), "nolen.arc"))) == expected


@pytest.mark.parametrize("record, fate", [
    # Damaged bytes name no counter of their own: one name, `malformed`, stands for them all.
    (raw_record(b"conFer\xbbion", b"abc"), ("malformed", "type:malformed")),
    (raw_record(b"Response", b"abc"), ("malformed", "type:malformed")),
    (raw_record(b"x" * 40, b"abc"), ("malformed", "type:malformed")),
    (raw_record(b"conversion", b"text", b"Content-Type: text/pla\xff\r\n"), ("conversion", "not_text:malformed")),
    (raw_record(b"conversion", b"text", b"Content-Type: text plain\r\n"), ("conversion", "not_text:malformed")),
    (raw_response(b"image/p\x01ng; q=1"), ("response", "not_html:malformed")),
    (raw_response(b"text/html charset=utf-8"), ("response", "not_html:malformed")),
    (raw_response(b"*/*"), ("response", "not_html:malformed")),
    # Well-formed names are kept as they were: the WARC types, an extension type, a MIME type (cut short or not).
    (raw_record(b"request", b"GET / HTTP/1.1\r\n\r\n"), ("request", "type:request")),
    (raw_record(b"continuation", b"abc"), ("continuation", "type:continuation")),
    (raw_record(b"x-crawl-log2", b"abc"), ("x-crawl-log2", "type:x-crawl-log2")),
    (raw_record(b"conversion", b"text", b"Content-Type: text/pla\r\n"), ("conversion", "not_text:text/pla")),
    (raw_record(b"conversion", b"text"), ("conversion", "not_text:none")),
    (raw_response(b"Image/SVG+XML; charset=utf-8"), ("response", "not_html:image/svg+xml")),
    (raw_response(b"application/vnd.ms-excel"), ("response", "not_html:application/vnd.ms-excel")),
    (raw_response(b""), ("response", "not_html:none")),
])
def test_reasons_are_named_after_well_formed_types_only(record, fate):
    # The record before and after it are read as ever: the name is all that changes.
    good = raw_response(target_uri=b"http://example.com/ok")
    outs = list(iter_warc(io.BytesIO(good + record + good), "names.warc"))
    assert [(o.warc_type, o.reason) for o in outs] == [("response", None), fate, ("response", None)]


@pytest.mark.parametrize("status, reason", [(b"404 Not Found", "status:404"), (b"599 X", "status:599"),
                                            (b"2000 OK", "bad:http_status"), (b"-1 X", "bad:http_status"),
                                            (b"20000000000000000000 OK", "bad:http_status"), (b"2x0 OK", "bad:http_status")])
def test_an_http_status_is_a_reason_only_when_it_has_three_digits(status, reason):
    outs = list(iter_warc(io.BytesIO(raw_response(status=status)), "status.warc"))
    assert [(o.warc_type, o.reason) for o in outs] == [("response", reason)]


@pytest.mark.parametrize("gz", [False, True])
def test_a_record_with_no_target_uri_is_counted_once_as_such(gz):
    # warcio takes the missing URI for a string and raises AttributeError: the record was `bad:attributeerror`, and,
    # in a plain file, counted twice. Each record is counted once, under a reason that says what is wrong.
    records = [raw_response(target_uri=b"http://example.com/1"), raw_response(target_uri=None),
               raw_record(b"request", b"GET / HTTP/1.1\r\n\r\n", target_uri=None),
               raw_response(target_uri=b""), raw_response(target_uri=b"http://example.com/2")]
    data = b"".join(gzip.compress(r, mtime=0) if gz else r for r in records)
    outs = list(iter_warc(io.BytesIO(data), "nouri.warc.gz" if gz else "nouri.warc"))
    assert [(o.warc_type, o.reason, o.page and o.page.url) for o in outs] == [
        ("response", None, "http://example.com/1"), ("response", "bad:no_target_uri", None),
        ("request", "type:request", None), ("response", "bad:no_target_uri", None),
        ("response", None, "http://example.com/2")]


@pytest.mark.parametrize("version", [b"WARC/1.9", b"WARC/1."])
@pytest.mark.parametrize("gz", [False, True], ids=["warc", "warc.gz"])
def test_a_record_warcio_fails_to_parse_is_counted_once(version, gz):
    # The resync search takes `WARC/1.` for a record's start, warcio's parser only WARC/1.0 and 1.1, so it raises
    # on this record mid-file. The search went on from the end of the record before it, found this one again and
    # counted it twice (in a plain file, whose records' terminators lie between one record's end and the next).
    records = [raw_response(target_uri=b"http://example.com/1"),
               raw_response(target_uri=b"http://example.com/2").replace(b"WARC/1.0", version, 1),
               raw_response(target_uri=b"http://example.com/3")]
    data = b"".join(gzip.compress(r, mtime=0) if gz else r for r in records)
    outs = list(iter_warc(io.BytesIO(data), "unparsed.warc.gz" if gz else "unparsed.warc"))
    assert [(o.reason, o.page and o.page.url) for o in outs] == [
        (None, "http://example.com/1"), ("bad:not_warc", None), (None, "http://example.com/3")]


@pytest.mark.parametrize("padding", [b"\n", b"\r\n\r\n", b"\n\x00\x00 \r\n"], ids=["lf", "crlf-crlf", "nuls"])
def test_a_gzip_member_of_padding_alone_in_an_arc_gz_is_no_record(tmp_path, padding):
    # As in a .warc.gz (test_a_gzip_member_that_begins_with_a_blank_line_is_not_lost). Once warcio has read an ARC
    # record it parses with its ARC parser alone, which rejects a blank line: the member was counted bad:not_warc.
    # First in the file, the member made warcio take the file for a WARC, and the filedesc record was counted so.
    members = [gzip.compress(r, mtime=0) for r in write_arc(tmp_path / "a.arc", n=3, gz=False)]
    good = _fates(list(iter_warc(io.BytesIO(b"".join(members)), "a.arc.gz")))
    for at in (0, 1, 3, len(members)):  # first, after the filedesc record, between pages, last
        data = b"".join(members[:at]) + gzip.compress(padding, mtime=0) + b"".join(members[at:])
        assert _fates(list(iter_warc(io.BytesIO(data), "a.arc.gz"))) == good, at


@pytest.mark.parametrize("between", [b"\n", b"\r\n", b"\r\n\r\n", b"\r\n\r\n junk\n"],
                         ids=["lf", "crlf", "crlf-crlf", "then-junk"])
def test_blank_lines_between_arc_gz_members_are_no_record(tmp_path, between):
    # As between a .warc.gz's members (above). warcio's ARC parser, unlike its WARC one, rejects a blank line, and
    # the blank lines after each member were counted as a record, bad:not_warc.
    members = [gzip.compress(r, mtime=0) for r in write_arc(tmp_path / "a.arc", n=3, gz=False)]  # 6 records
    outs = list(iter_warc(io.BytesIO(between.join(members)), "a.arc.gz"))
    junk = [("unknown", "bad:not_warc", None)] if between.strip() else []
    assert [(o.warc_type, o.reason, o.page and o.page.url) for o in outs] == [
        ("warcinfo", "type:warcinfo", None), *junk,
        ("response", None, "http://example.com/0"), *junk, ("response", None, "http://example.com/1"), *junk,
        ("response", None, "http://example.com/2"), *junk, ("response", "not_html:image/png", None), *junk,
        ("response", "status:404", None)]


@pytest.mark.parametrize("damage", ["filedesc-newline-to-letter", "page-newline-to-letter", "page-block-short"])
def test_a_cut_plain_arc_record_whose_rest_runs_into_the_next_header_line_is_counted_once(tmp_path, damage):
    # The cut record's last bytes run on into the next record's header line without a newline between. The resync
    # search found that line (it begins inside the cut record), took the bytes before the URL's scheme for a record
    # cut inside its header line and counted them as bad:arc_header: the damaged record twice.
    records = write_arc(tmp_path / "a.arc", n=3, gz=False)  # filedesc, 3 pages, an image, a 404
    hit = 0 if damage.startswith("filedesc") else 2
    if damage.endswith("newline-to-letter"):
        records[hit] = records[hit][:-1] + b"g"  # its terminator
    else:
        records[hit] = records[hit][:-3]  # its block two bytes short of its Archive-length, and no newline
    outs = list(iter_warc(io.BytesIO(b"".join(records)), "a.arc"))
    fates = [("warcinfo", "type:warcinfo", None), ("response", None, "http://example.com/0"),
             ("response", None, "http://example.com/1"), ("response", None, "http://example.com/2"),
             ("response", "not_html:image/png", None), ("response", "status:404", None)]
    fates[hit] = (fates[hit][0], "bad:payload_length", None)
    assert [(o.warc_type, o.reason, o.page and o.page.url) for o in outs] == fates


def test_an_http_content_length_that_is_no_number_is_none_not_a_failed_record():
    # '²' passes str.isdigit and fails int(): the reader counted the page bad:valueerror, and the junk after it
    # with it. HTTP's Content-Length is ASCII digits (RFC 9110 8.6), so '²' is no length: as a record without one,
    # the page is kept and the junk after it is one record of its own.
    def page_record(length: bytes) -> bytes:
        http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: " + length + b"\r\n\r\n<p>a page</p>"
        return raw_record(b"response", http, b"Content-Type: application/http; msgtype=response\r\n")

    for length in ("²".encode(), "١٣".encode(), b"x"):
        pages, reasons = _pages_and_reasons(page_record(length) + b"junk junk\r\n" + page_record(b"13"), "x.warc")
        assert len(pages) == 2 and reasons == {"bad:not_warc": 1}, length


@pytest.mark.parametrize("k", [2, 3, 5])
def test_a_newline_inside_a_plain_arc_records_url_costs_that_record_once(tmp_path, k):
    # `http://exam\nple.com/2 192.0.2.1 ...`: the line's rest passed for a header line (an ARC URL was any
    # non-blank text), so the damaged record counted twice, as junk and as a record with no HTTP headers. An
    # ARC URL begins with its scheme.
    records = write_arc(tmp_path / "a.arc", n=6, gz=False)
    good = [(o.page is not None, o.reason) for o in iter_warc(io.BytesIO(b"".join(records)), "a.arc")]
    r = records[k]
    cut = r.index(b"example") + 4
    damaged = records[:k] + [r[:cut] + b"\n" + r[cut:]] + records[k + 1:]
    got = [(o.page is not None, o.reason) for o in iter_warc(io.BytesIO(b"".join(damaged)), "a.arc")]
    assert got == good[:k] + [(False, "bad:not_warc")] + good[k + 1:]


def _linked_arc(n: int = 5) -> list[bytes]:
    """A plain ARC file's records, each page holding a link."""
    pages = [b'<html><body>\n<p>Page %d: <a href="http://example.net/%d/">a link</a>.</p>\n</body></html>' % (i, i)
             for i in range(n)]
    return [arc_filedesc("c.arc")] + [arc_record(f"http://example.com/{i}", "20080101120000", http_response(body))
                                      for i, body in enumerate(pages)]


@pytest.mark.parametrize("after", [b"HTTP/", b"200 OK\r", b"Content-Type:", b"Content-Type: text/", b"<p>",
                                   b'<a href="', b'href="http://ex', b'href="http://', b"a link</", b"</body></"])
def test_a_plain_arc_record_cut_inside_its_block_after_punctuation_costs_only_itself(after):
    # The next record's header line runs on from the cut. Its seam was looked for only after a letter, digit, dot,
    # dash, underscore or space (a URL inside a URL follows other punctuation), so the next record was read from
    # the start of the cut page's line, a URL that is none (`<p>...</http://...`): its page was lost, counted as
    # bad:no_http_headers. After a CR, which no header line holds, the line was not found at all: two records in,
    # one outcome. What precedes the seam is the cut record's, counted already, so any URL scheme may begin it.
    records = _linked_arc()
    cut = records[3].index(after) + len(after)
    data = b"".join(records[:3]) + records[3][:cut] + b"".join(records[4:])
    outs = list(iter_warc(io.BytesIO(data), "c.arc"))
    assert _fates(outs) == _arc_fates_with(records[:3] + records[4:], 3, ("response", None, None, "bad:payload_length"))
    for pg in (o.page for o in outs if o.page):  # the offsets point at the records
        rec = next(iter(ArchiveIterator(io.BytesIO(data[pg.offset:]), arc2warc=True)))
        assert rec.rec_headers.get_header("WARC-Target-URI") == pg.url
