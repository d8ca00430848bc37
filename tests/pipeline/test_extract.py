"""Charset handling and text extraction, checked against the exact strings that were encoded."""
from __future__ import annotations

import pytest

from gristmill.pipeline.extract import choose_encoding, html_to_text

RUSSIAN = "Съешь же ещё этих мягких французских булок, да выпей чаю. " * 6
JAPANESE = "日本語のテキストです。これは文字コードの試験のための文章です。" * 6
FRENCH = "Le cœur déçu mais l'âme plutôt naïve, Louÿs rêva de crapaüter en canoë. " * 6


def html(body: str, meta: str = "") -> str:
    return f"<html><head>{meta}<title>t</title></head><body><article><p>{body}</p></article></body></html>"


@pytest.mark.parametrize("text,codec", [(RUSSIAN, "windows-1251"), (JAPANESE, "shift_jis"), (FRENCH, "windows-1252")])
def test_declared_http_charset(text, codec):
    out, enc, how = html_to_text(html(text).encode(codec), codec)
    assert out == text.strip() and how == "http"


@pytest.mark.parametrize("text,codec", [(RUSSIAN, "koi8-r"), (JAPANESE, "euc-jp")])
def test_meta_charset(text, codec):
    payload = html(text, f'<meta charset="{codec}">').encode(codec)
    out, enc, how = html_to_text(payload, None)
    assert out == text.strip() and how == "meta"


@pytest.mark.parametrize("text,codec", [(RUSSIAN, "utf-8"), (JAPANESE, "utf-8"), (RUSSIAN, "windows-1251")])
def test_undeclared_charset_is_detected(text, codec):
    out, enc, how = html_to_text(html(text).encode(codec), None)
    assert how == "detected" and out == text.strip()


def test_unknown_declared_charset_falls_back():
    enc, how = choose_encoding(html(FRENCH).encode("utf-8"), "x-no-such-charset")
    assert how == "detected" and enc == "utf-8"


def test_boilerplate_removed_from_main_content():
    page = ("<html><body><nav><ul><li><a href='/'>Home</a></li><li><a href='/a'>About us</a></li></ul></nav>"
            f"<main><p>{FRENCH}</p></main><footer>Copyright 2026 All rights reserved</footer></body></html>")
    out, _, _ = html_to_text(page.encode(), "utf-8")
    assert FRENCH.strip() in out and "About us" not in out


def test_undecodable_and_empty_pages_are_dropped_with_a_reason():
    import random

    from gristmill.pipeline.extract import _ExtractFn
    from gristmill.pipeline.warc import RawPage

    fn = _ExtractFn("Extract", min_chars=1, max_bad_char_ratio=0.05, source="t")
    fn.setup()
    counted = []
    fn.counters.inc = lambda key, n=1: counted.append(key)

    def page(payload, charset):
        return RawPage(url="u", record_id="r", date="", file="f", offset=0, content_type="text/html",
                       charset=charset, status=200, payload=payload)

    garbage = b"<html><body><p>" + random.Random(0).randbytes(4000) + b"</p></body></html>"
    assert list(fn.process(page(garbage, "utf-8"))) == []
    assert list(fn.process(page(b"<html><body><script>x()</script></body></html>", "utf-8"))) == []
    good = list(fn.process(page(f"<html><body><p>{FRENCH}</p></body></html>".encode(), "utf-8")))
    assert [d.text for d in good] == [FRENCH.strip()]
    assert counted.count("in") == 3 and "dropped/undecodable" in counted and "dropped/empty_text" in counted


@pytest.mark.parametrize("codec", ["base64", "rot13", "hex", "zlib", "quopri"])
def test_a_codec_that_is_not_a_text_encoding_is_no_charset(codec):
    # Python's codecs.lookup knows these, but they turn bytes into bytes (or str into str): no page is written in one.
    payload = html(FRENCH, f'<meta charset="{codec}">').encode("utf-8")
    for declared in (codec, None):
        out, enc, how = html_to_text(payload, declared)
        assert out == FRENCH.strip() and (enc, how) == ("utf-8", "detected")


def _extracted(payload: bytes, charset: str | None, content_type: str = "text/html", **kwargs):
    """(documents, dropped reasons) of one page (HTML, or a WET record's text/plain) through ExtractText's DoFn."""
    from gristmill.pipeline.extract import _ExtractFn
    from gristmill.pipeline.warc import RawPage

    fn = _ExtractFn("Extract", **{"min_chars": 1, "max_bad_char_ratio": 0.05, "source": "t", **kwargs})
    fn.setup()
    counted = []
    fn.counters.inc = lambda key, n=1: counted.append(key)
    pg = RawPage(url="http://example.com/p", record_id="<urn:uuid:1>", date="", file="f", offset=0,
                 content_type=content_type, charset=charset, status=200, payload=payload)
    return list(fn.process(pg)), [k.split("/", 1)[1] for k in counted if k.startswith("dropped/")]


def test_a_meta_charset_inside_whatwgs_1024_byte_prescan_is_honoured():
    # WHATWG HTML, "prescan a byte stream to determine its encoding": a <meta charset> in the first 1024 bytes.
    meta = " " * 900 + '<meta charset="koi8-r">'
    payload = html(RUSSIAN, meta).encode("koi8-r")
    assert payload.index(b"<meta") > 64
    out, enc, how = html_to_text(payload, None)
    assert (out, enc, how) == (RUSSIAN.strip(), "koi8-r", "meta")


def test_min_chars_keeps_a_text_of_exactly_that_length():
    text = "exactly twenty chars"
    assert len(text) == 20
    payload = html(text).encode()
    docs, dropped = _extracted(payload, "utf-8", min_chars=20)
    assert [d.text for d in docs] == [text] and dropped == []
    assert _extracted(payload, "utf-8", min_chars=21) == ([], ["empty_text"])


def test_the_bad_char_ratio_drops_only_more_than_the_limit():
    # A WET record's 20 characters, one an invalid UTF-8 byte (U+FFFD once decoded): a ratio of exactly 1/20.
    payload = b"abcdefghi\xffjklmnopqrs"
    text = payload.decode("utf-8", "replace")
    assert (len(text), text.count("\ufffd")) == (20, 1)
    docs, dropped = _extracted(payload, "utf-8", "text/plain", max_bad_char_ratio=0.05)
    assert [d.text for d in docs] == [text] and dropped == []
    assert _extracted(payload, "utf-8", "text/plain", max_bad_char_ratio=0.049) == ([], ["undecodable"])


def test_html_bytes_is_the_payloads_length_in_bytes():
    payload = html(JAPANESE).encode("utf-8")
    (doc,), _ = _extracted(payload, "utf-8")
    assert doc.warc["html_bytes"] == len(payload) != len(doc.text)
