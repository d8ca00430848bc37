"""End to end on the local runner in multi-process mode: counts add up, output matches a plain loop,
and two runs (and different worker counts) give byte-identical shards."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gristmill.pipeline.docio import read_documents
from gristmill.pipeline.extract import html_to_text
from gristmill.pipeline.warc import iter_warc
from warc_factory import write_warc

ROOT = Path(__file__).resolve().parents[2]
BEAM = str(Path(sys.executable).parent / "beam")


@pytest.fixture(scope="module")
def crawl(tmp_path_factory):
    d = tmp_path_factory.mktemp("crawl")
    for k in range(3):
        write_warc(d / f"crawl-{k}.warc.gz", n=25, start=100 * k)
    chunks = write_warc(d / "crawl-broken.warc.gz", n=10, start=900)
    (d / "crawl-broken.warc.gz").write_bytes(b"".join(chunks[:5]) + b"garbage" * 100 + b"".join(chunks[5:]))
    (d / "crawl-empty.warc.gz").write_bytes(b"")
    return d


def run(crawl, out, *extra):
    r = subprocess.run([BEAM, "run", "recipes/cc_en.py", "--input", str(crawl / "*.warc.gz"), "--output", str(out), *extra],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads((out / "stats.json").read_text())


def reference_texts(crawl):
    texts = {}
    for f in sorted(crawl.glob("*.warc.gz")):
        with open(f, "rb") as fh:
            for o in iter_warc(fh, f.name):
                if o.page is not None:
                    texts[o.page.url] = html_to_text(o.page.payload, o.page.charset)[0]
    return texts


def test_multiprocess_run_matches_plain_loop_and_is_deterministic(crawl, tmp_path):
    stats = run(crawl, tmp_path / "a", "--direct_num_workers=2")
    assert stats["balanced"], stats
    read = stats["stages"]["Read"]
    assert read["in"] == read["kept"] + read["dropped_total"]
    assert read["dropped"]["bad:empty_file"] == 1
    assert sum(n for r, n in read["dropped"].items() if r.startswith("bad:")) >= 2
    ref = reference_texts(crawl)
    docs = read_documents(str(tmp_path / "a" / "documents"))
    assert {d.url: d.text for d in docs} == ref
    assert len(ref) == 3 * 25 + 10 and stats["documents_out"] == len(ref)

    run(crawl, tmp_path / "b", "--direct_num_workers=2")
    run(crawl, tmp_path / "c", "--direct_num_workers=1", "--direct_running_mode=in_memory")
    for other in ("b", "c"):
        for f in sorted((tmp_path / "a" / "documents").iterdir()):
            assert f.read_bytes() == (tmp_path / other / "documents" / f.name).read_bytes(), f"{other}/{f.name}"
        assert (tmp_path / "a" / "stats.json").read_bytes() == (tmp_path / other / "stats.json").read_bytes()
