"""WET files (Common Crawl's extracted text, what CCNet and Dolma start from) read as documents: the text is
the conversion record's payload as warcio reads it, and everything else is counted under a reason."""
from __future__ import annotations

import io
from collections import Counter

from warcio.archiveiterator import ArchiveIterator
from warcio.warcwriter import WARCWriter

from gristmill.pipeline.docio import WriteDocuments, read_documents
from gristmill.pipeline.extract import ExtractText
from gristmill.pipeline.runner import run_stages
from gristmill.pipeline.stages import RunContext
from gristmill.pipeline.warc import ReadWarc, iter_warc
from warc_factory import write_warc

BEAM_ARGS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
TEXTS = {
    "http://a.example/1": "Line one of the first page.\nLine two, with ümlauts and 漢字.\n",
    "http://a.example/2": "The second page has a single line.",
    "http://a.example/3": "Bad bytes \udcff are replaced.",
}


def write_wet(path):
    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=True)
    w.write_record(w.create_warc_record("", "warcinfo", payload=io.BytesIO(b"software: test\r\n"),
                                        warc_headers_dict={"Content-Type": "application/warc-fields"}))
    for i, (url, text) in enumerate(TEXTS.items()):
        body = text.encode("utf-8", "surrogateescape")
        w.write_record(w.create_warc_record(url, "conversion", payload=io.BytesIO(body), warc_headers_dict={
            "Content-Type": "text/plain", "WARC-Date": "2026-01-01T00:00:00Z",
            "WARC-Record-ID": f"<urn:uuid:0000000{i}>"}))
    w.write_record(w.create_warc_record("http://a.example/bin", "conversion", payload=io.BytesIO(b"\x00\x01"),
                                        warc_headers_dict={"Content-Type": "application/octet-stream"}))
    path.write_bytes(buf.getvalue())


def test_wet_records_become_documents(tmp_path):
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    write_wet(crawl / "a.warc.wet.gz")
    write_warc(crawl / "b.warc.gz", n=4)  # a WARC beside it: both kinds in one input
    stages = [ReadWarc("Read"), ExtractText("Extract"), WriteDocuments("Write", shards=1)]
    stats = run_stages(stages, RunContext(input=str(crawl / "*.gz"), output=str(tmp_path / "out")), BEAM_ARGS)
    assert stats["balanced"], stats["unbalanced_stages"]
    read, extract = stats["stages"]["Read"], stats["stages"]["Extract"]
    assert read["type"]["conversion"] == 4 and read["type"]["warcinfo"] == 1
    assert read["dropped"]["not_text:application/octet-stream"] == 1
    assert extract["charset"]["wet"] == 3 and extract["in"] == 3 + 4
    docs = {d.url: d for d in read_documents(str(tmp_path / "out" / "documents"))}
    with open(crawl / "a.warc.wet.gz", "rb") as f:  # the reference: warcio's own reading of each payload
        want = {r.rec_headers.get_header("WARC-Target-URI"): r.content_stream().read().decode("utf-8", "replace")
                for r in ArchiveIterator(f) if r.rec_type == "conversion"
                and r.rec_headers.get_header("Content-Type") == "text/plain"}
    assert {u: docs[u].text for u in TEXTS} == {u: t.strip() for u, t in want.items()}
    assert "\ufffd" in docs["http://a.example/3"].text
    assert docs["http://a.example/1"].warc["charset_source"] == "wet" and docs["http://a.example/1"].warc["status"] is None
    assert sum(1 for u in docs if u.startswith("http://example.com/")) == 4  # the WARC's pages, extracted from HTML


def test_a_damaged_first_member_that_warcio_reads_as_a_record_costs_only_itself(tmp_path):
    # Its first deflate byte damaged, the warcinfo member is read by warcio as plain data, which happens to parse as
    # an ARC record that runs to the end of the file: every conversion record after it was lost.
    path = tmp_path / "a.wet.gz"
    write_wet(path)
    data = bytearray(path.read_bytes())
    data[10] ^= 0x55  # the byte after the member's 10-byte gzip header
    outs = list(iter_warc(io.BytesIO(bytes(data)), path.name))
    assert [o.page.url for o in outs if o.page] == list(TEXTS)
    assert Counter(o.reason for o in outs if o.page is None) == Counter(
        {"bad:bad_gzip": 1, "not_text:application/octet-stream": 1})
