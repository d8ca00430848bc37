"""End to end on the local runner in multi-process mode: counts add up, output matches a plain loop,
and two runs (and different worker counts, input folders and hash seeds) give byte-identical outputs, for the
full cc_en recipe too."""
from __future__ import annotations

import json
import os
import shutil
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


READ_EXTRACT = str(Path(__file__).with_name("recipe_read_extract.py"))


def run(crawl, out, *extra, recipe=READ_EXTRACT, env=None):
    r = subprocess.run([BEAM, "run", recipe, "--input", str(crawl / "*.warc.gz"), "--output", str(out), *extra],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads((out / "stats.json").read_text())


def reference_texts(crawl):
    return reference_texts_of(sorted(crawl.glob("*.warc.gz")))


def reference_texts_of(files):
    texts = {}
    for f in files:
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


def all_files(root: Path) -> dict[str, bytes]:
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()
            and f.name != "run.json"}


def test_full_recipe_on_generated_crawl(tmp_path):
    from gristmill.pipeline.sample import read_truth, write_sample

    paths = write_sample(tmp_path / "crawl" / "c.warc.gz", pages=240, seed=3, files=2)
    small = ["-p", "vocab_size=600", "-p", "seq_len=64", "-p", "validation_fraction=0.1", "-p", "doc_shards=2"]
    stats = run(tmp_path / "crawl", tmp_path / "a", *small, "--direct_num_workers=2", recipe="recipes/cc_en.py")
    assert stats["balanced"], stats["unbalanced_stages"]
    truth = [t for t in read_truth(paths)]
    by_type = {}
    for t in truth:
        by_type[t["warc_type"]] = by_type.get(t["warc_type"], 0) + 1
    read = stats["stages"]["Read"]
    assert read["in"] == len(truth) and read["type"] == by_type
    counted = [label for label, node in stats["stages"].items() if "in" in node]  # pass-through stages count nothing
    assert counted[:4] == ["Read", "URL", "Extract", "LanguageID"] and counted[-2:] == ["WriteDocuments", "Tokenize"]
    for before, after in zip(counted, counted[1:]):  # each stage consumes exactly what the previous one kept
        assert stats["stages"][after]["in"] == stats["stages"][before]["kept"], (before, after)
    manifest = json.loads((tmp_path / "a" / "tokens" / "manifest.json").read_text())
    assert manifest["splits"]["train"]["tokens"] > 0 and manifest["tokenizer"]["vocab_size"] == 600
    docs = read_documents(str(tmp_path / "a" / "documents"))
    assert len(docs) == stats["stages"]["WriteDocuments"]["kept"]
    assert all(d.language == "en" and d.language_score >= 0.65 for d in docs)

    # Again, with what must not matter changed at once: the crawl's folder, the worker count, str hashing and
    # the tokenizer's threads. Document ids come from record ids and URLs, and `warc.file` is a base name.
    shutil.copytree(tmp_path / "crawl", tmp_path / "moved" / "crawl")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "RAYON_NUM_THREADS": "1"}
    run(tmp_path / "moved" / "crawl", tmp_path / "b", *small, "--direct_num_workers=1", recipe="recipes/cc_en.py",
        env=env)
    a, b = all_files(tmp_path / "a"), all_files(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) > 8
    assert [k for k in a if a[k] != b[k]] == []


def test_counts_that_do_not_add_up_fail_the_run(crawl, tmp_path):
    r = subprocess.run([BEAM, "run", str(Path(__file__).with_name("recipe_leaky.py")), "--input",
                        str(crawl / "crawl-0.warc.gz"), "--output", str(tmp_path), "--direct_num_workers=2"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "error: counts do not add up in Leaky" in r.stderr, r.stderr
    stats = json.loads((tmp_path / "stats.json").read_text())
    leaky = stats["stages"]["Leaky"]
    lost = sum(1 for i in range(25) if str(i).endswith("3"))  # crawl-0 holds pages 0..24
    assert not stats["balanced"] and stats["unbalanced_stages"] == ["Leaky"]
    assert leaky["in"] == 25 and leaky["kept"] == 25 - lost and leaky["dropped_total"] == 0


def test_local_run_shows_live_progress_from_every_worker(tmp_path):
    import os
    import re

    crawl = tmp_path / "crawl"
    crawl.mkdir()
    for k in range(2):
        write_warc(crawl / f"c-{k}.warc.gz", n=200, start=1000 * k)
    line = re.compile(r"^\[Read pid (\d+)\] \d+ records, \d+ records/s$", re.M)
    cmd = [BEAM, "run", READ_EXTRACT, "--input", str(crawl / "*.warc.gz"), "--direct_num_workers=2"]
    env = {**os.environ, "GRISTMILL_PROGRESS": "1", "GRISTMILL_PROGRESS_SECONDS": "0"}
    r = subprocess.run(cmd + ["--output", str(tmp_path / "a")], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(line.findall(r.stderr)) >= 2 * (202 // 64), r.stderr  # a line per 64 records in each file
    # Not a terminal (stderr is a pipe here) and nothing set: the runner still turns progress on, at a slower
    # default pace (30 s), which the interval overrides.
    piped = {k: v for k, v in os.environ.items() if k != "GRISTMILL_PROGRESS"} | {"GRISTMILL_PROGRESS_SECONDS": "0"}
    r = subprocess.run(cmd + ["--output", str(tmp_path / "b")], cwd=ROOT, env=piped, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and len(line.findall(r.stderr)) >= 2, r.stderr


def test_progress_pace_and_opt_out(monkeypatch):
    from gristmill.pipeline.warc import _Progress

    monkeypatch.delenv("GRISTMILL_PROGRESS_SECONDS", raising=False)
    for mode, enabled, every in (("1", True, 2.0), ("log", True, 30.0), ("0", False, 2.0)):
        monkeypatch.setenv("GRISTMILL_PROGRESS", mode)
        p = _Progress("Read")
        assert (p.enabled, p.every) == (enabled, every)


def _release_fifo(path: Path) -> None:
    """Let a reader blocked opening the FIFO at `path` go (it reads an empty file), if one is waiting."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def test_input_files_that_go_bad_during_the_run_are_counted_and_the_rest_is_read(tmp_path):
    # Files listed by the input glob that are gone, a folder or a FIFO by the time a worker opens them.
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    for k in range(5):
        write_warc(crawl / f"c{k}.warc.gz", n=4, start=10 * k)
    keep = [crawl / "c0.warc.gz", crawl / "c4.warc.gz"]
    expected = reference_texts_of(keep)
    bad = {crawl / "c1.warc.gz": "gone", crawl / "c2.warc.gz": "folder", crawl / "c3.warc.gz": "fifo"}
    env = {**os.environ, "GRISTMILL_TEST_VANISH": ",".join(f"{p}={how}" for p, how in bad.items())}
    out = tmp_path / "out"
    try:
        r = subprocess.run([BEAM, "run", str(Path(__file__).with_name("recipe_vanish.py")), "--input",
                            str(crawl / "*.warc.gz"), "--output", str(out), "--direct_num_workers=2"],
                           cwd=ROOT, capture_output=True, text=True, timeout=240, env=env)
    finally:
        _release_fifo(crawl / "c3.warc.gz")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    for p in bad:
        assert f"warning: cannot read {p} (" in r.stderr
    stats = json.loads((out / "stats.json").read_text())
    read = stats["stages"]["Read"]
    assert stats["balanced"] and read["in"] == read["kept"] + read["dropped_total"]
    assert read["dropped"]["bad:unreadable_file"] == 3 and read["type"]["none"] == 3
    assert read["kept"] == len(expected) == 8
    docs = read_documents(str(out / "documents"))
    assert {d.url: d.text for d in docs} == expected

