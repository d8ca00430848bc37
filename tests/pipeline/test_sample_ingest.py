"""The reader and the extractor on the generated sample crawl, checked against its ground-truth sidecar."""
from __future__ import annotations

import pytest

from gristmill.pipeline import sample
from gristmill.pipeline.extract import html_to_text
from gristmill.pipeline.warc import iter_warc
from test_sample import article_text

# What the truth file says a response record is -> the reason the reader must count it under (None = a page).
EXPECTED_REASON = {"image": "not_html:image/png", "pdf": "not_html:application/pdf", "oversized": "oversized",
                   "redirect": "status:301", "not_found": "status:404"}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    paths = sample.write_sample(tmp_path_factory.mktemp("s") / "s.warc.gz", pages=60, seed=5, files=2)
    outs = []
    for p in paths:
        with open(p, "rb") as f:
            outs.extend(iter_warc(f, p))
    truth = sample.read_truth(paths)
    assert len(outs) == len(truth)  # one outcome per record, also past the malformed one
    return list(zip(truth, outs))


def test_every_record_gets_the_outcome_its_truth_implies(pairs):
    for t, o in pairs:
        assert o.warc_type == t["warc_type"] or t["kind"] == "malformed", (t, o)
        if t["warc_type"] != "response":
            assert o.reason == f"type:{t['warc_type']}"
        elif t["kind"] == "malformed":
            assert o.page is None and o.reason.startswith("bad:")
        elif t["kind"] in EXPECTED_REASON:
            assert o.reason == EXPECTED_REASON[t["kind"]], (t, o.reason)
        else:
            assert o.page is not None and o.page.url == t["url"] and o.page.record_id == t["record_id"], (t, o)


def test_every_charset_page_decodes_to_its_article_text(pairs):
    seen = set()
    for t, o in pairs:
        if t["kind"] == "charset" and t["warc_type"] == "response":
            text, _, how = html_to_text(o.page.payload, o.page.charset)
            assert "\ufffd" not in text
            for paragraph in article_text(o.page.payload, t["charset"]).split("\n\n"):
                assert paragraph in text, (t["charset"], t["charset_declared_in"])
            seen.add((t["charset"], how))
    assert {how for _, how in seen} == {"http", "meta", "detected"}
