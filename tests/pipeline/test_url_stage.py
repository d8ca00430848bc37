"""The URL filter runs on raw pages, before extraction (FineWeb's order): what it drops is never extracted,
and in annotate mode its decision reaches the document. A filter that reads the text cannot go there."""
from __future__ import annotations

import io

import pytest
from warcio.warcwriter import WARCWriter

from gristmill.errors import UserError
from gristmill.filters.gopher import GopherQualityFilter
from gristmill.filters.url import URLFilter
from gristmill.pipeline.docio import WriteDocuments, read_documents
from gristmill.pipeline.extract import ExtractText
from gristmill.pipeline.runner import run_stages
from gristmill.pipeline.stages import FilterStage, RunContext
from gristmill.pipeline.warc import ReadWarc
from warc_factory import page, response

BEAM_ARGS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
URLS = ["http://ok.example/a", "http://www.blocked.com/b", "http://ok.example/c", "http://news.other.com/d"]


@pytest.fixture
def crawl(tmp_path):
    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=True)
    for i, url in enumerate(URLS):
        w.write_record(response(w, url, page(i)))
    path = tmp_path / "crawl.warc.gz"
    path.write_bytes(buf.getvalue())
    return path


def _run(crawl, out, mode):
    # Lists of our own, so the test needs no provisioned ones: a registered domain blocks its subdomains, a
    # listed subdomain only itself.
    flt = URLFilter(extra_domains=("blocked.com", "news.other.com"), use_integrated_lists=False)
    stages = [ReadWarc("Read"), FilterStage("URL", flt, mode=mode), ExtractText("Extract"),
              WriteDocuments("Write", shards=1)]
    stats = run_stages(stages, RunContext(input=str(crawl), output=str(out)), BEAM_ARGS)
    assert stats["balanced"], stats["unbalanced_stages"]
    return stats["stages"], {d.url: d for d in read_documents(str(out / "documents"))}


def test_dropped_pages_are_never_extracted(crawl, tmp_path):
    stages, docs = _run(crawl, tmp_path / "drop", "drop")
    assert stages["URL"] == {"in": 4, "kept": 2, "dropped": {"url:domain": 1, "url:subdomain": 1}, "dropped_total": 2}
    assert stages["Extract"]["in"] == stages["URL"]["kept"] == 2
    assert sorted(docs) == ["http://ok.example/a", "http://ok.example/c"]


def test_annotate_mode_carries_the_decision_onto_the_document(crawl, tmp_path):
    stages, docs = _run(crawl, tmp_path / "annotate", "annotate")
    assert stages["Extract"]["in"] == 4 and len(docs) == 4
    assert {u: d.decisions["URL"] for u, d in docs.items()} == {
        "http://ok.example/a": "keep", "http://www.blocked.com/b": "url:domain",
        "http://ok.example/c": "keep", "http://news.other.com/d": "url:subdomain"}


def test_a_text_filter_before_extraction_is_one_line(crawl, tmp_path):
    stages = [ReadWarc("Read"), FilterStage("Gopher", GopherQualityFilter()), ExtractText("Extract")]
    with pytest.raises(UserError, match="stage Gopher: GopherQualityFilter reads the text, so it must come after "
                                        "text extraction"):
        run_stages(stages, RunContext(input=str(crawl), output=str(tmp_path / "x")), BEAM_ARGS)
