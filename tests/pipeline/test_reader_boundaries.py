"""The WARC reader at the edges of its rules, each checked against the spec or computation it follows: HTTP's
Content-Type grammar, RFC 6838's name lengths, the ARC v1 header line, the size limit, ARC record ids, and
fs's search and listing."""
from __future__ import annotations

import gzip
import io
import uuid

import pytest

from gristmill.pipeline.warc import iter_warc
from warc_factory import arc_filedesc, arc_record, http_response, page, raw_record, raw_response


def fates(data: bytes, name: str = "t.warc", max_bytes: int = 2 << 20):
    return [(o.warc_type, o.reason) for o in iter_warc(io.BytesIO(data), name, max_bytes)]


def only_page(data: bytes, name: str = "t.warc", max_bytes: int = 2 << 20):
    (out,) = list(iter_warc(io.BytesIO(data), name, max_bytes))
    assert out.page is not None, out.reason
    return out.page


@pytest.mark.parametrize("value, charset", [
    # RFC 9110 sections 5.6.6 and 8.3.2: a parameter value is a token or a quoted-string, its name case-insensitive;
    # the charset names are case-insensitive too (RFC 2978), so lower-cased.
    (b'text/html; charset="ISO-8859-1"', "iso-8859-1"),
    (b"text/html;Charset='Windows-1252'", "windows-1252"),
    (b"TEXT/HTML; q=1; CHARSET=UTF-8", "utf-8"),
    (b"text/html; charset=", None),  # a parameter with no value names no charset
])
def test_the_http_charset_parameter_is_read_as_rfc_9110_writes_it(value, charset):
    pg = only_page(raw_response(value))
    assert (pg.content_type, pg.charset) == ("text/html", charset)


def test_an_xhtml_response_is_a_page():
    # application/xhtml+xml is XHTML's media type (RFC 3236), served as HTML is.
    pg = only_page(raw_response(b"application/xhtml+xml; charset=utf-8"))
    assert (pg.content_type, pg.charset, pg.payload) == ("application/xhtml+xml", "utf-8", b"<p>a page</p>")


@pytest.mark.parametrize("record, payload", [
    (raw_response(), b"<p>a page</p>"),
    (raw_record(b"conversion", b"some text", b"Content-Type: text/plain\r\n"), b"some text"),
])
def test_a_payload_of_exactly_max_bytes_is_kept_and_one_byte_more_is_oversized(record, payload):
    n = len(payload)
    assert only_page(record, max_bytes=n).payload == payload
    assert [r for _, r in fates(record, max_bytes=n - 1)] == ["oversized"]


@pytest.mark.parametrize("mime, reason", [
    # RFC 6838 section 4.2: type-name and subtype-name are each a restricted-name of 1 to 127 characters.
    (b"application/" + b"x" * 127, "not_html:application/" + "x" * 127),
    (b"a" * 127 + b"/png", "not_html:" + "a" * 127 + "/png"),
    (b"application/" + b"x" * 128, "not_html:malformed"),
    (b"a" * 128 + b"/png", "not_html:malformed"),
])
def test_a_mime_type_keeps_its_name_up_to_rfc_6838s_length(mime, reason):
    assert fates(raw_response(mime)) == [("response", reason)]


@pytest.mark.parametrize("n, kept", [(32, True), (33, False)])
def test_an_extension_record_type_keeps_its_name_up_to_32_characters(n, kept):
    wtype = "x-" + "a" * (n - 2)
    name = wtype if kept else "malformed"
    assert fates(raw_record(wtype.encode(), b"abc")) == [(name, f"type:{name}")]


@pytest.mark.parametrize("date, fate", [
    ("20080101120000", ("response", None)),
    # ARC v1: Archive-date is YYYYMMDDhhmmss, 14 digits; a shorter one is no ARC v1 header line.
    ("20080101", ("response", "bad:arc_header")),
    ("200801011200", ("response", "bad:arc_header")),
])
def test_an_arc_archive_date_is_fourteen_digits(date, fate):
    records = [arc_filedesc("d.arc.gz"), arc_record("http://example.com/", date, http_response(page(1)))]
    data = b"".join(gzip.compress(r, mtime=0) for r in records)
    assert fates(data, "d.arc.gz") == [("warcinfo", "type:warcinfo"), fate]


def test_arc_record_ids_are_uuid5_of_the_file_name_and_offset():
    # The same bytes under two names (a crawl copied, or two crawls that begin alike) give two sets of ids.
    records = [arc_filedesc("x.arc")] + [arc_record(f"http://example.com/{i}", "20080101120000",
                                                    http_response(page(i))) for i in range(3)]
    data = b"".join(records)
    offsets = [sum(map(len, records[:i])) for i in range(1, 4)]
    ids = {}
    for name in ("a.arc", "b.arc"):
        pages = [o.page for o in iter_warc(io.BytesIO(data), name) if o.page]
        assert [pg.offset for pg in pages] == offsets
        ids[name] = [pg.record_id for pg in pages]
        assert ids[name] == [f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'arc:{name}:{o}')}>" for o in offsets]
    assert not set(ids["a.arc"]) & set(ids["b.arc"])


@pytest.mark.parametrize("shift", range(-8, 2))
def test_find_first_finds_a_magic_that_straddles_a_read(shift):
    # fs.find_first reads 1 MiB at a time; a needle cut by a read's end is found where bytes.find finds it.
    from gristmill.pipeline import fs

    at = (1 << 20) + shift
    data = b"x" * at + b"WARC/1.0\r\n" + b"y" * 100 + fs.GZIP_MAGIC + b"z" * 10
    needles = (fs.GZIP_MAGIC, b"WARC/1.")
    want = min(i for i in (data.find(n) for n in needles) if i >= 0)
    assert want == at
    assert fs.find_first(io.BytesIO(data), 0, needles) == want
    assert fs.find_first(io.BytesIO(data), at + 1, needles) == data.find(fs.GZIP_MAGIC)
    assert fs.find_first(io.BytesIO(data), data.find(fs.GZIP_MAGIC) + 1, needles) is None


def test_matching_lists_files_in_sorted_order_not_the_directorys(tmp_path):
    # Beam's local match lists files in the directory's order; the run reads them in sorted order, as glob + sorted do.
    import glob

    from gristmill.pipeline import fs

    for name in ("c", "a", "d", "b", "e10", "e9"):
        (tmp_path / f"{name}.warc").write_bytes(b"")
    pattern = str(tmp_path / "*.warc")
    assert fs.matching(pattern) == sorted(glob.glob(pattern))


@pytest.mark.parametrize("repeated", [b"WARC-Type: response\r\n", b"WARC-Record-ID: <urn:uuid:2>\r\n"])
def test_a_header_block_that_repeats_warc_type_or_record_id_is_counted_once(repeated):
    # WARC 1.1 section 5: WARC-Record-ID and WARC-Type are mandatory and not repeatable (WARC-Concurrent-To and
    # WARC-Protocol are the fields that may repeat); a block holding two is two records' headers run together.
    good = raw_response(target_uri=b"http://example.com/ok")
    bad = raw_record(b"response", b"HTTP/1.1 200 OK\r\n\r\n<p>x</p>", repeated)
    assert fates(good + bad + good) == [("response", None), ("response", "bad:warc_headers"), ("response", None)]
