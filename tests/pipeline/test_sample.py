"""The generated sample crawl: determinism, WARC validity (warcio, http.client, Pillow as references), ground truth."""
from __future__ import annotations

import argparse
import collections
import gzip
import http.client
import io
import json
import os
import random
import re
import string
import unicodedata
from html.parser import HTMLParser

import pytest
from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeadersParserException

from gristmill.errors import UserError
from gristmill.pipeline import sample, textgen

PAGES, SEED, FILES = 150, 3, 2


@pytest.fixture(scope="module")
def crawl(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "s.warc.gz"
    paths = sample.write_sample(out, pages=PAGES, seed=SEED, files=FILES)
    return paths, sample.read_truth(paths)


def records(paths, **kw):
    """(warc type, record id, url, record headers, HTTP headers, body) for every record, read with plain warcio."""
    out = []
    for p in paths:
        with open(p, "rb") as f:
            for r in ArchiveIterator(f, **kw):
                out.append((r.rec_type, r.rec_headers.get_header("WARC-Record-ID"),
                            r.rec_headers.get_header("WARC-Target-URI"), r.rec_headers, r.http_headers,
                            r.content_stream().read()))
    return out


def responses(crawl):
    """record id -> (truth line, HTTP headers, body) for every response record."""
    paths, truth = crawl
    by_id = {t["record_id"]: t for t in truth}
    return {rid: (by_id[rid], hdrs, body) for wtype, rid, _, _, hdrs, body in records(paths) if wtype == "response"}


class _Article(HTMLParser):
    """Collects the text of <p> elements inside <article>: the main text the truth file talks about."""

    def __init__(self):
        super().__init__()
        self.depth, self.in_p, self.paragraphs = 0, False, []

    def handle_starttag(self, tag, attrs):
        if tag == "article":
            self.depth += 1
        elif tag == "p" and self.depth:
            self.in_p = True
            self.paragraphs.append("")

    def handle_endtag(self, tag):
        self.depth -= tag == "article"
        self.in_p = self.in_p and tag != "p"

    def handle_data(self, data):
        if self.in_p:
            self.paragraphs[-1] += data


def article_text(body: bytes, charset: str = "utf-8") -> str:
    parser = _Article()
    parser.feed(body.decode(charset))
    return "\n\n".join(parser.paragraphs)


def whitespace_shingles(text: str, n: int = 5) -> set:
    # Deliberately not textgen's tokenizer: whitespace split, punctuation stripped.
    words = [w.strip(string.punctuation).lower() for w in text.split()]
    words = [w for w in words if w]
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def test_same_seed_gives_byte_identical_files(crawl, tmp_path):
    paths, _ = crawl
    again = sample.write_sample(tmp_path / "s.warc.gz", pages=PAGES, seed=SEED, files=FILES)
    assert [os.path.basename(p) for p in again] == ["s-00000.warc.gz", "s-00001.warc.gz"]
    for a, b in zip(paths, again):
        assert open(a, "rb").read() == open(b, "rb").read()
        assert open(sample.truth_path(a), "rb").read() == open(sample.truth_path(b), "rb").read()
    other = sample.write_sample(tmp_path / "o.warc.gz", pages=PAGES, seed=SEED + 1, files=1)
    assert open(other[0], "rb").read() != open(paths[0], "rb").read()


def test_gzip_members_carry_no_timestamp(crawl):
    paths, _ = crawl
    for p in paths:
        data = open(p, "rb").read()
        with open(p, "rb") as f:
            it = ArchiveIterator(f)
            offsets = []
            for _ in it:
                offsets.append(it.get_record_offset())
        assert len(offsets) > 10
        for off in offsets:
            assert data[off:off + 3] == b"\x1f\x8b\x08"  # one gzip member per record
            assert data[off + 4:off + 8] == b"\0\0\0\0"  # MTIME field
        assert gzip.decompress(data).startswith(b"WARC/1.0\r\nWARC-Type: warcinfo")


def test_warcio_reads_every_record_and_truth_matches(crawl):
    paths, truth = crawl
    recs = records(paths)
    assert [(r[0], r[1], r[2] or None) for r in recs] == [(t["warc_type"], t["record_id"], t["url"]) for t in truth]
    counts = collections.Counter(r[0] for r in recs)
    assert counts == {"warcinfo": FILES, "request": PAGES, "response": PAGES, "metadata": PAGES}
    assert len({r[1] for r in recs}) == len(recs)  # record ids are unique
    dates = {r[3].get_header("WARC-Date") for r in recs}
    assert all(d.startswith("2024-03-01T") for d in dates)  # fixed crawl dates, not the time of generation
    ids = {r[1]: r for r in recs}
    for wtype, rid, url, rec_headers, hdrs, body in recs:
        if wtype == "response":  # request -> response -> metadata are linked as in Common Crawl
            assert ids[rec_headers.get_header("WARC-Concurrent-To")][0] == "request"
        elif wtype == "metadata":
            assert ids[rec_headers.get_header("WARC-Concurrent-To")][0] == "response"
            assert body.startswith(b"fetchTimeMs: ")
    kinds = collections.Counter(t["kind"] for t in truth if t["warc_type"] == "response")
    assert kinds == sample.composition(PAGES)


def test_malformed_record_is_refused_by_http_parsers(crawl):
    paths, truth = crawl
    bad = [t for t in truth if t["kind"] == "malformed" and t["warc_type"] == "response"]
    assert len(bad) == 1
    bad_file = [p for p in paths if os.path.basename(p) == bad[0]["warc_file"]][0]
    # warcio in strict mode stops at it ...
    with pytest.raises(StatusAndHeadersParserException):
        records([bad_file], verify_http=True)
    # ... in its default lenient mode the "status code" is not a number, and the raw block fails Python's HTTP parser.
    with open(bad_file, "rb") as f:
        rec = next(r for r in ArchiveIterator(f, no_record_parse=True)
                   if r.rec_headers.get_header("WARC-Record-ID") == bad[0]["record_id"])
        raw = rec.content_stream().read()

    class _Sock:
        def makefile(self, mode):
            return io.BytesIO(raw)

    resp = http.client.HTTPResponse(_Sock())
    with pytest.raises(http.client.HTTPException):
        resp.begin()
    lenient = {t["kind"]: hdrs for t, hdrs, _ in responses(crawl).values()}["malformed"]
    assert not lenient.get_statuscode().isdigit()
    declared = int(lenient.get_header("Content-Length"))
    assert declared != len(raw.split(b"\r\n\r\n", 1)[1])  # the Content-Length lies


SCRIPTS = {"ru": "CYRILLIC", "el": "GREEK", "ar": "ARABIC", "hi": "DEVANAGARI", "zh": "CJK",
           "ja": ("HIRAGANA", "KATAKANA", "CJK")}


def test_languages_present_in_their_scripts(crawl):
    langs = collections.defaultdict(list)
    for t, hdrs, body in responses(crawl).values():
        if t["kind"] in ("lang", "charset") and t["language"]:
            langs[t["language"]].append(article_text(body, t["charset"]))
    assert len(langs) >= 6 and {"ru", "zh", "ja", "ar", "el", "hi"} <= set(langs)
    for lang, script in SCRIPTS.items():
        letters = [ch for text in langs[lang] for ch in text if ch.isalpha()]
        share = sum(unicodedata.name(ch, "").startswith(script) for ch in letters) / len(letters)
        assert share > 0.95, (lang, share)
    assert all(" " not in t.replace("\n\n", "") for t in langs["zh"] + langs["ja"])


def test_near_duplicates_have_the_recorded_jaccard(crawl):
    by_group = collections.defaultdict(list)
    for t, hdrs, body in responses(crawl).values():
        if t["dup_group"] and t["dup_group"].startswith("n"):
            by_group[t["dup_group"]].append((t, article_text(body)))
    assert len(by_group) == sample.composition(PAGES)["near_dup"]
    for group, members in by_group.items():
        (orig_t, orig), = [m for m in members if m[0]["kind"] != "near_dup"]
        (var_t, var), = [m for m in members if m[0]["kind"] == "near_dup"]
        a, b = whitespace_shingles(orig), whitespace_shingles(var)
        exact = len(a & b) / len(a | b)
        assert abs(exact - var_t["jaccard"]) <= 0.05, (group, exact, var_t["jaccard"])
        target = sample.NEAR_DUP_TARGETS[(int(group[1:]) - 1) % len(sample.NEAR_DUP_TARGETS)]
        assert abs(var_t["jaccard"] - target) <= 0.03


def test_exact_duplicates_are_byte_identical_at_other_urls(crawl):
    groups = collections.defaultdict(list)
    for t, hdrs, body in responses(crawl).values():
        if t["dup_group"] and t["dup_group"].startswith("d"):
            groups[t["dup_group"]].append((t, body))
    assert sum(len(m) - 1 for m in groups.values()) == sample.composition(PAGES)["dup"]
    for members in groups.values():
        assert len({body for _, body in members}) == 1
        assert len({t["url"] for t, _ in members}) == len(members)
        assert sum(t["kind"] != "dup" for t, _ in members) == 1


def test_payload_kinds(crawl):
    from PIL import Image

    seen = collections.Counter()
    html_ctypes = set()
    for t, hdrs, body in responses(crawl).values():
        kind = t["kind"]
        seen[kind] += 1
        assert len(body) == t["bytes"] or kind == "malformed"
        if kind == "image":
            img = Image.open(io.BytesIO(body))
            img.load()
            assert img.format == "PNG" and img.size[0] >= 16
        elif kind == "pdf":
            assert body.startswith(b"%PDF-1.4") and body.rstrip().endswith(b"%%EOF")
            xref = int(body.rsplit(b"startxref", 1)[1].split()[0])
            assert body[xref:xref + 4] == b"xref"
            entries = body[xref:].split(b"\n")[3:8]
            for i, entry in enumerate(entries, 1):
                off = int(entry.split()[0])
                assert body[off:].startswith(b"%d 0 obj" % i)
        elif kind == "oversized":
            assert len(body) > 2 * 1024 * 1024
        elif kind == "redirect":
            assert hdrs.get_statuscode() == "301" and hdrs.get_header("Location").startswith("https://")
        elif kind == "not_found":
            assert hdrs.get_statuscode() == "404"
        elif hdrs is not None and kind != "malformed":
            body.decode(t["charset"])  # strict: the body really is in the recorded charset
            if kind == "charset":
                with pytest.raises(UnicodeDecodeError):
                    body.decode("utf-8")
            html_ctypes.add(hdrs.get_header("Content-Type"))
            head = body[:body.index(b"</head>")].decode("ascii", "replace").lower()
            ctype = hdrs.get_header("Content-Type").lower()
            where = t["charset_declared_in"] or ""
            assert ("charset=" in ctype) == ("header" in where)
            assert ("charset" in head) == ("meta" in where)
            if where:
                assert t["declared_charset"] in (ctype + head)
            assert hdrs.get_statuscode() == "200"
            assert len(article_text(body, t["charset"])) > 0
    assert {"text/html", "text/html; charset=utf-8"} <= html_ctypes
    assert {"image", "pdf", "oversized", "malformed", "charset", "spam", "boilerplate", "offensive"} <= set(seen)
    declared = collections.Counter((t["charset"] != "utf-8", t["charset_declared_in"])
                                   for t, _, _ in responses(crawl).values() if t["kind"] not in ("malformed", "image",
                                                                                         "pdf", "redirect"))
    assert declared[(True, None)] and declared[(True, "header")] and declared[(True, "meta")]
    assert declared[(False, "header+meta")] and declared[(False, "meta")]


def test_text_kinds_behave_as_labelled(crawl):
    from profanity_check import predict_prob

    texts = collections.defaultdict(list)
    for t, hdrs, body in responses(crawl).values():
        if t["kind"] in ("prose", "offensive", "spam", "boilerplate"):
            texts[t["kind"]].append((article_text(body), body))
    # The offensive pages are offensive to the model their vocabulary came from; ordinary prose is not.
    assert min(predict_prob([x for x, _ in texts["offensive"]])) > 0.5
    assert sorted(predict_prob([x for x, _ in texts["prose"]]))[len(texts["prose"]) // 2] < 0.2

    def distinct_word_ratio(text):
        w = textgen.words(text)
        return len(set(w)) / len(w)
    prose_ratio = sorted(distinct_word_ratio(x) for x, _ in texts["prose"])[len(texts["prose"]) // 2]
    spam_ratio = sorted(distinct_word_ratio(x) for x, _ in texts["spam"])[len(texts["spam"]) // 2]
    assert spam_ratio < prose_ratio
    for _, body in texts["boilerplate"]:  # a sentence of content drowned in site chrome
        main = len(article_text(body))
        chrome = len(re.sub(r"<[^>]+>", " ", body.decode()).split())
        assert chrome > 5 * len(textgen.words(article_text(body))) and main < 1000


def test_near_duplicate_hits_targets():
    rng = random.Random(0)
    text = textgen.english_text(rng, 600)
    for target in (0.9, 0.7, 0.5, 0.3):
        variant = textgen.near_duplicate(text, target, random.Random(1))
        assert abs(textgen.jaccard(textgen.shingles(text), textgen.shingles(variant)) - target) < 0.01
        assert variant.count("\n\n") == text.count("\n\n")
    assert textgen.near_duplicate(text, 0.8, random.Random(5)) == textgen.near_duplicate(text, 0.8, random.Random(5))


def test_generators_are_deterministic():
    for lang in textgen.SUPPORTED_LANGUAGES:
        assert textgen.language_text(lang, random.Random(4), 50) == textgen.language_text(lang, random.Random(4), 50)
    assert textgen.spam_text(random.Random(2)) == textgen.spam_text(random.Random(2))
    assert textgen.boilerplate_lines(random.Random(2)) == textgen.boilerplate_lines(random.Random(2))
    assert len(textgen.offensive_words(20)) == 20


def test_default_sample_is_cached_and_a_few_megabytes(tmp_path, monkeypatch):
    monkeypatch.setenv("GRISTMILL_CACHE", str(tmp_path))
    paths = sample.default_sample_paths()
    assert len(paths) == sample.DEFAULT_FILES and all(p.startswith(str(tmp_path / "sample")) for p in paths)
    size = sum(os.path.getsize(p) for p in paths)
    assert 2e6 < size < 12e6
    truth = sample.read_truth(paths)
    assert sum(t["warc_type"] == "response" for t in truth) == sample.DEFAULT_PAGES
    mtimes = [os.stat(p).st_mtime_ns for p in paths]
    assert sample.default_sample_paths() == paths  # second call reuses the files
    assert [os.stat(p).st_mtime_ns for p in paths] == mtimes
    stamp_file = tmp_path / "sample" / "stamp.json"
    stamp = json.loads(stamp_file.read_text())
    assert stamp["pages"] == sample.DEFAULT_PAGES and stamp["revision"] == sample.SAMPLE_REVISION
    # A sample cached by revision 1 (its stamp had no revision; its bytes differ in WARC-IP-Address) is regenerated,
    # and its record ids, which follow GENERATOR_VERSION alone, stay as they were.
    del stamp["revision"]
    stamp_file.write_text(json.dumps(stamp, sort_keys=True) + "\n")
    assert sample.default_sample_paths() == paths
    assert all(os.stat(p).st_mtime_ns != m for p, m in zip(paths, mtimes))
    assert [t["record_id"] for t in sample.read_truth(paths)] == [t["record_id"] for t in truth]


def test_cli_writes_files_and_rejects_bad_input(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="beam")
    sample.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "c.warc.gz"
    args = parser.parse_args(["sample", str(out), "--pages", "60", "--files", "3", "--seed", "1"])
    assert args.func(args) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / f"c-{i:05d}.warc.gz") for i in range(3)]
    for bad in (["sample", str(out), "--pages", "5"], ["sample", str(tmp_path / "c.warc"), "--pages", "60"],
                ["sample", str(out), "--pages", "60", "--files", "0"]):
        args = parser.parse_args(bad)
        with pytest.raises(UserError):
            args.func(args)
    with pytest.raises(SystemExit):
        parser.parse_args(["sample", "--help"])
    assert "example" in capsys.readouterr().out


# --- edges of the generators, each against a rule written out by hand --------------------------------------------

def test_composition_by_hand_and_every_plan_holds_it():
    # 60 pages: 11 fixed specials, the floors (10 charset cases, 12 languages, 5 near-dup targets) and 7 prose.
    assert sample.composition(60) == {"image": 3, "pdf": 2, "oversized": 1, "malformed": 1, "redirect": 2,
                                      "not_found": 2, "charset": 10, "offensive": 3, "boilerplate": 4, "spam": 4,
                                      "near_dup": 5, "dup": 4, "lang": 12, "prose": 7}
    # 2000 pages (the default): 2% charset, 1% offensive, 7% boilerplate, 6% spam, near_dup and dup, 20% lang.
    assert sample.composition(2000) == {"image": 3, "pdf": 2, "oversized": 1, "malformed": 1, "redirect": 2,
                                        "not_found": 2, "charset": 40, "offensive": 20, "boilerplate": 140,
                                        "spam": 120, "near_dup": 120, "dup": 120, "lang": 400, "prose": 1029}
    for seed in range(12):  # the last duplicate group is cut to the copies still wanted, whatever the seed
        kinds = collections.Counter(p.kind for p in sample._Builder(seed, 60).build())
        assert kinds == sample.composition(60), seed


def test_one_file_keeps_its_name_and_there_may_be_one_file_per_page(tmp_path):
    assert sample.output_paths("a/x.warc.gz", 1) == ["a/x.warc.gz"]
    assert sample.write_sample(tmp_path / "one.warc.gz", pages=60, files=1) == [str(tmp_path / "one.warc.gz")]
    paths = sample.write_sample(tmp_path / "many.warc.gz", pages=60, files=60)
    assert len(paths) == 60 and all(len(records([p])) == 1 + 3 for p in paths)  # warcinfo + one capture each
    with pytest.raises(UserError, match=r"--files must be between 1 and the number of pages \(60\), got 61"):
        sample.write_sample(tmp_path / "more.warc.gz", pages=60, files=61)


def test_cli_counts_the_records_it_wrote(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="beam")
    sample.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sample", str(tmp_path / "c.warc.gz"), "--pages", "60", "--files", "2"])
    assert args.func(args) == 0
    captured = capsys.readouterr()
    paths = captured.out.split()
    written = len(records(paths))  # counted by warcio: a warcinfo per file, then request, response, metadata
    assert written == 2 + 3 * 60
    assert captured.err.startswith(f"wrote 60 pages ({written} records, ")


def test_capture_headers_agree_with_the_warc_record(crawl):
    import email.utils
    import ipaddress
    from datetime import datetime

    paths, _ = crawl
    # RFC 5737: the three address blocks reserved for documentation, which no real host uses.
    test_nets = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]
    by_id = {t["record_id"]: t for t in crawl[1]}
    n = 0
    for wtype, rid, url, rec_headers, hdrs, body in records(paths):
        if wtype != "response" or by_id[rid]["kind"] == "malformed":
            continue
        n += 1
        ip = ipaddress.ip_address(rec_headers.get_header("WARC-IP-Address"))
        assert any(ip in net for net in test_nets), ip
        warc_date = datetime.strptime(rec_headers.get_header("WARC-Date"), "%Y-%m-%dT%H:%M:%SZ")
        assert email.utils.parsedate_to_datetime(hdrs.get_header("Date")).replace(tzinfo=None) == warc_date
        if hdrs.get_statuscode() == "200":  # Common Crawl's header: the media type, without parameters
            ctype = hdrs.get_header("Content-Type")
            assert rec_headers.get_header("WARC-Identified-Payload-Type") == ctype.split(";")[0].strip()
    assert n == PAGES - 1


def test_pdf_xref_and_the_malformed_body(crawl):
    # PDF 1.4 (ISO 32000-1, 7.5.4): the xref subsection "0 N" lists objects 0..N-1, object 0 the free head,
    # and the trailer's /Size is that same N.
    body = sample.pdf_bytes(["one line", "another (with parentheses)"])
    n_objects = len(re.findall(rb"^\d+ 0 obj$", body, flags=re.M))
    xref = body[int(body.rsplit(b"startxref", 1)[1].split()[0]):]
    assert xref.split(b"\n")[1] == b"0 %d" % (n_objects + 1)
    assert re.search(rb"/Size (\d+)", body).group(1) == b"%d" % (n_objects + 1)
    assert len(re.findall(rb"^\d{10} \d{5} [nf] $", xref, flags=re.M)) == n_objects + 1
    # The malformed capture's `bytes` is the length of what follows its (broken) HTTP headers, read raw.
    paths, truth = crawl
    bad, = [t for t in truth if t["kind"] == "malformed" and t["warc_type"] == "response"]
    raw, = [body for wtype, rid, _, _, _, body in records(paths, no_record_parse=True) if rid == bad["record_id"]]
    assert bad["bytes"] == len(raw.split(b"\r\n\r\n", 1)[1])


def test_arabic_pages_are_right_to_left(crawl):
    class _Root(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "html":
                self.attrs = dict(attrs)

    seen = 0
    for t, hdrs, body in responses(crawl).values():
        if t["kind"] in ("lang", "charset") and t["warc_type"] == "response" and t["language"] in ("ar", "fr"):
            root = _Root()
            root.feed(body.decode(t["charset"]))
            assert root.attrs["lang"] == t["language"]
            assert root.attrs.get("dir") == ("rtl" if t["language"] == "ar" else None)  # HTML: dir="rtl" for Arabic
            seen += t["language"] == "ar"
    assert seen


def test_jaccard_and_shingles_at_their_edges():
    assert textgen.jaccard(set(), set()) == 1.0 and textgen.jaccard({("a",)}, set()) == 0.0
    assert textgen.shingles("") == set() and textgen.shingles(" ... -- ") == set()
    assert textgen.shingles("Two words.", 5) == {("two", "words")}
    assert textgen.shingles("a b c d e F", 5) == {("a", "b", "c", "d", "e"), ("b", "c", "d", "e", "f")}
    for bad in (-0.01, 1.01):
        with pytest.raises(ValueError, match="jaccard must be in"):
            textgen.near_duplicate("some words here", bad, random.Random(0))


SENTENCE_END = {"zh": "\u3002", "ja": "\u3002", "hi": "\u0964"}  # the ideographic full stop; the Devanagari danda


def test_sentences_are_written_as_each_language_writes_them():
    for lang in textgen.SUPPORTED_LANGUAGES:
        if lang == "en":
            continue
        text = textgen.language_text(lang, random.Random(11), 600)
        for paragraph in text.split("\n\n"):
            assert paragraph.endswith(SENTENCE_END.get(lang, ".")), (lang, paragraph[-20:])
            first = paragraph[0]
            assert first == first.upper(), (lang, paragraph[:20])  # cased scripts start a sentence upper-case
        if lang == "el":  # Greek spelling: a word ends in final sigma, never in medial sigma
            assert not any(w.endswith("\u03c3") for w in re.findall(r"\w+", text))
        if lang in ("ru", "el", "ar", "hi", "zh", "ja"):
            assert not any(unicodedata.name(ch, "").startswith("LATIN") for ch in text), lang
    # French elision: l', d', qu' ... stand only before a vowel or a mute h, never alone.
    fr = textgen.language_text("fr", random.Random(3), 3000)
    elided = {"l", "d", "j", "n", "s", "c", "qu", "m", "t", "jusqu", "lorsqu", "puisqu"}
    assert not [w for w in re.findall(r"[\w']+", fr.lower()) if w in elided]
    glued = re.findall(r"\b(\w+)'(\w)", fr.lower())
    assert glued and all(first in elided and nxt in "aeiouhàâéèêîôû" for first, nxt in glued)


def test_charset_text_and_boilerplate_sizes():
    for lang, encoding, _, _ in sample.CHARSET_CASES:
        textgen.language_text(lang, random.Random(1), 400, charset=encoding).encode(encoding)  # strict
    assert textgen.language_text("fr", random.Random(1), 400, charset="ascii").isascii()  # no é, à, ç ...
    sizes = {len(textgen.boilerplate_lines(random.Random(s))) for s in range(400)}
    assert min(sizes) == 20 and max(sizes) <= 40  # "20-40 short lines"
