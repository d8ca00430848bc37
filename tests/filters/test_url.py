"""The URL filter against datatrove's URLFilter (FineWeb's first step), rule by rule, with the same lists."""
from __future__ import annotations

import random

import pytest

from gristmill.errors import UserError
from gristmill.filters.url import URLFilter, hash_domains, lists_folder, normalize, write_lists


@pytest.fixture(scope="session")
def url_lists():
    """The provisioned lists (install.sh runs `beam model provision`, which fetches them; tests never download)."""
    from gristmill.filters.models import default_path

    folder = default_path("url_lists").parent
    if not (folder / "domains.u64.npy").is_file():
        pytest.fail(f"{folder} has no URL lists: run `beam model fetch-url-lists` (install.sh does) first")
    return folder


@pytest.fixture(scope="session")
def datatrove_filter():
    """datatrove's URLFilter with its integrated lists, on tldextract's bundled suffix list (as ours: offline)."""
    import tldextract
    from datatrove.pipeline.filters.url_filter import URLFilter as DatatroveURLFilter

    theirs = DatatroveURLFilter()
    theirs.tldextractor = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    theirs.download_data()  # extracts the UT1 tarball from datatrove's own wheel into the HF assets cache
    return theirs


@pytest.fixture(scope="session")
def sample_urls() -> list[str]:
    """The response URLs of the bundled sample crawl."""
    from gristmill.pipeline.sample import default_sample_paths, read_truth

    return sorted({t["url"] for t in read_truth(default_sample_paths()) if t["url"] and t["warc_type"] == "response"})


def _their_reason(flt, url: str):
    from datatrove.data import Document

    out = flt.filter(Document(text="x", id="0", metadata={"url": url}))
    return None if out is True else out[1]


def _urls(theirs) -> list[str]:
    """URLs that reach every rule: listed domains, their subdomains, listed hosts below an unlisted domain, listed
    URLs, banned / soft-banned / sub- words in several spellings, and ordinary pages."""
    rng = random.Random(0)
    domains = sorted(theirs.block_listed_domains)
    urls = sorted(theirs.block_listed_url)
    words, soft, subwords = sorted(theirs.banned_words), sorted(theirs.soft_banned_words), sorted(theirs.banned_subwords)
    out = []
    for d in rng.sample(domains, 150):
        out += [f"http://{d}/", f"https://www.{d}/index.html", f"https://cdn.{d}:8080/a?b=c"]
    hosts = [d for d in domains if d.count(".") >= 2]
    out += [f"https://{h}/page" for h in rng.sample(hosts, 100)]
    out += rng.sample(urls, 100) + [u + "x" for u in rng.sample(urls, 20)]
    for w in rng.sample(words, 40):
        out += [f"https://news.example.com/{w}/1", f"https://news.example.com/{w.upper()}-story",
                f"https://news.example.com/my{w}page"]
    for a, b in zip(rng.sample(soft, 30), rng.sample(soft, 30)):
        out += [f"https://shop.example.org/{a}-{b}.html", f"https://shop.example.org/{a}.html"]
    out += [f"https://blog.example.net/post-{s}-{s}" for s in rng.sample(subwords, 30)]
    out += ["https://www.wikipedia.org/wiki/Essex", "http://192.168.0.1/admin", "http://localhost:8000/",
            "https://www.bbc.co.uk/news/uk-123", "https://docs.python.org/3/library/re.html",
            "https://example.com/sussex-university", "https://www.amazon.co.jp/dp/B000"]
    return out


def test_matches_datatrove_rule_by_rule(url_lists, datatrove_filter, sample_urls):
    ours = URLFilter(lists=str(url_lists))
    urls = _urls(datatrove_filter) + sample_urls
    got = {u: ours.reason(u) for u in urls}
    expected = {u: _their_reason(datatrove_filter, u) for u in urls}
    assert got == expected
    # every rule fired somewhere, and most ordinary pages pass
    reasons = set(got.values())
    assert reasons >= {"domain", "subdomain", "url", "hard_blacklisted", "soft_blacklisted", "blacklisted_subword",
                       None}, reasons
    assert all(got[u] is None for u in sample_urls)


def test_lists_are_the_datatrove_lists(url_lists, datatrove_filter):
    import numpy as np

    hashes = np.load(url_lists / "domains.u64.npy")
    assert np.array_equal(hashes, hash_domains(datatrove_filter.block_listed_domains - {""}))
    assert len(hashes) > 4_000_000  # the UT1 adult category


def test_extra_lists_alone_and_verdicts(as_docs):
    flt = URLFilter(use_integrated_lists=False, extra_domains=["spam.com", "blog.host.co.uk", "# a comment"],
                    extra_urls=["https://a.b/c"], banned_words=["Casino"], soft_banned_words=["cheap", "deal"],
                    banned_subwords=["viagra"])
    assert flt.reason("https://spam.com/x") == "domain" and flt.reason("https://www.spam.com/x") == "domain"
    # a listed host below an unlisted registered domain covers that host only (datatrove's semantics)
    assert flt.reason("https://blog.host.co.uk/") == "subdomain" and flt.reason("https://x.blog.host.co.uk/") is None
    assert flt.reason("https://a.b/c") == "url"
    assert flt.reason("https://ok.example.org/casino") == "hard_blacklisted"
    assert flt.reason("https://ok.example.org/cheap-deal") == "soft_blacklisted"
    assert flt.reason("https://ok.example.org/cheap") is None
    assert flt.reason("https://ok.example.org/Buy-VIAGRA-now") == "blacklisted_subword"
    assert normalize("https://x.org/A-b_C") == "httpsxorgabc"
    docs = as_docs(["text one", "text two"])
    docs[0].url, docs[1].url = "https://spam.com/", ""
    v_spam, v_nourl = flt.check_batch(docs)
    assert (v_spam.keep, v_spam.reason) == (False, "url:domain") and v_nourl.keep


def test_missing_and_corrupt_lists(tmp_path):
    with pytest.raises(UserError, match="lacks domains.u64.npy.*beam model fetch-url-lists"):
        lists_folder(str(tmp_path))
    write_lists(tmp_path, ["a.com"], [], [], [], [], "test")
    (tmp_path / "domains.u64.npy").write_bytes(b"junk")
    with pytest.raises(UserError, match="unreadable.*fetch-url-lists --force"):
        URLFilter(lists=str(tmp_path)).setup()
    with pytest.raises(UserError, match="soft_word_threshold"):
        URLFilter(soft_word_threshold=0)
