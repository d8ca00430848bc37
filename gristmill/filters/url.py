"""URL filter (RefinedWeb / FineWeb): block-listed domains and URLs, and banned words in the URL.

The rules and their order are datatrove's URLFilter, which FineWeb runs first:
  url:domain              the registered domain (public-suffix aware: news.bbc.co.uk -> bbc.co.uk) is listed
  url:subdomain           the full host name is listed
  url:url                 the URL itself is listed
  url:hard_blacklisted    a word of the URL (split at non-alphanumerics, case kept, as datatrove does) is banned
  url:soft_blacklisted    at least `soft_word_threshold` of its words are soft-banned
  url:blacklisted_subword a banned subword occurs in the URL with non-alphanumerics removed and lowercased

The lists are the ones datatrove ships in its wheel: the UT1 blocklist (Université Toulouse 1 Capitole, adult
category, CC BY-SA 4.0) and RefinedWeb's banned, soft-banned and sub- words. `beam model fetch-url-lists` puts
them in the cache; the domains, several million, are kept as a sorted array of 64-bit hashes (tens of MB,
memory-mapped and shared by the worker processes) rather than a set of strings (about half a GB per process).
A document without a URL is kept.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Iterable

import numpy as np
import xxhash

from gristmill.errors import UserError
from gristmill.filters.base import Filter, Verdict
from gristmill.pipeline.document import Document

LIST_FILES = ("domains.u64.npy", "urls.txt", "banned_words.txt", "banned_subwords.txt", "soft_banned_words.txt")
_NON_ALNUM = re.compile(r"[^a-zA-Z0-9]+")


def normalize(text: str) -> str:
    """datatrove's URL normalization for word lists and subword search: non-alphanumerics removed, lowercased."""
    return _NON_ALNUM.sub("", text).lower()


def list_lines(lines: Iterable[str]) -> list[str]:
    """Entries of a list file as datatrove parses them: comment lines (starting with #) skipped, stripped."""
    return [x.strip() for x in lines if x and x[0] != "#"]


def domain_hash(domain: str) -> int:
    return xxhash.xxh64_intdigest(domain.encode("utf-8", "surrogatepass"))


def hash_domains(domains: Iterable[str]) -> np.ndarray:
    """Sorted, unique uint64 hashes: membership is a binary search (collisions: ~n / 2^64, none in practice)."""
    return np.unique(np.fromiter((domain_hash(d) for d in domains), dtype=np.uint64))


def _extractor():
    import tldextract

    # The public suffix list snapshot bundled with tldextract: no network, the same answer on every machine.
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def registered_domain(parts) -> str:
    # tldextract >= 5.3 renamed registered_domain; both give "" for hosts with no public suffix
    value = getattr(parts, "top_domain_under_public_suffix", None)
    return parts.registered_domain if value is None else value


@dataclass
class URLFilter(Filter):
    """Drops a page whose URL is block-listed or carries banned words. `lists` is the folder written by
    `beam model fetch-url-lists` (None: the provisioned one); the `extra_*` lists add to it, and with
    use_integrated_lists=False they are the only lists."""

    lists: str | None = None
    soft_word_threshold: int = 2
    extra_domains: tuple[str, ...] = ()
    extra_urls: tuple[str, ...] = ()
    banned_words: tuple[str, ...] = ()
    banned_subwords: tuple[str, ...] = ()
    soft_banned_words: tuple[str, ...] = ()
    use_integrated_lists: bool = True
    name: str = "url"
    needs_text: ClassVar[bool] = False  # runs on raw pages, before extraction, as in FineWeb
    _loaded: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        if self.soft_word_threshold < 1:
            raise UserError(f"url: soft_word_threshold must be >= 1, not {self.soft_word_threshold}")
        for attr in ("extra_domains", "extra_urls", "banned_words", "banned_subwords", "soft_banned_words"):
            setattr(self, attr, tuple(getattr(self, attr)))

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_loaded"} | {"_loaded": {}}

    def setup(self) -> None:
        if self._loaded:
            return
        domains, urls = set(list_lines(self.extra_domains)), set(list_lines(self.extra_urls))
        words = {normalize(w) for w in list_lines(self.banned_words)}
        subwords = {normalize(w) for w in list_lines(self.banned_subwords)}
        soft = {normalize(w) for w in list_lines(self.soft_banned_words)}
        hashes = np.zeros(0, dtype=np.uint64)
        if self.use_integrated_lists:
            folder = lists_folder(self.lists)
            try:
                hashes = np.load(folder / "domains.u64.npy", mmap_mode="r")
                urls |= set(list_lines(_read_lines(folder / "urls.txt")))
                words |= {normalize(w) for w in list_lines(_read_lines(folder / "banned_words.txt"))}
                subwords |= {normalize(w) for w in list_lines(_read_lines(folder / "banned_subwords.txt"))}
                soft |= {normalize(w) for w in list_lines(_read_lines(folder / "soft_banned_words.txt"))}
            except (OSError, ValueError) as e:
                raise UserError(f"url: the lists in {folder} are unreadable ({type(e).__name__}): re-create them "
                                f"with `beam model fetch-url-lists --force`") from None
        for entries in (words, subwords, soft):  # an entry of punctuation alone would match every URL
            entries.discard("")
        self._loaded = {
            "hashes": hashes, "domains": domains, "urls": urls, "words": words, "soft": soft,
            "subwords": re.compile("|".join(re.escape(w) for w in sorted(subwords))) if subwords else None,
            "extract": _extractor(),
        }

    def _listed(self, domain: str) -> bool:
        if not domain:
            return False
        if domain in self._loaded["domains"]:
            return True
        hashes = self._loaded["hashes"]
        h = np.uint64(domain_hash(domain))
        i = int(np.searchsorted(hashes, h))
        return i < len(hashes) and hashes[i] == h

    def reason(self, url: str) -> str | None:
        """The first rule the URL breaks, or None."""
        self.setup()
        state = self._loaded
        parts = state["extract"](url)
        if self._listed(registered_domain(parts)):
            return "domain"
        if self._listed(parts.fqdn):
            return "subdomain"
        if url in state["urls"]:
            return "url"
        url_words = set(_NON_ALNUM.split(url))
        if not state["words"].isdisjoint(url_words):
            return "hard_blacklisted"
        if len(state["soft"] & url_words) >= self.soft_word_threshold:
            return "soft_blacklisted"
        if state["subwords"] is not None and state["subwords"].search(normalize(url)):
            return "blacklisted_subword"
        return None

    def check(self, doc: Document) -> Verdict:
        rule = self.reason(doc.url) if doc.url else None
        return Verdict(rule is None, None if rule is None else f"{self.name}:{rule}")


def _read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


def lists_folder(spec: str | None) -> Path:
    from gristmill.filters.models import default_path

    folder = Path(spec).expanduser() if spec else default_path("url_lists").parent
    missing = [n for n in LIST_FILES if not (folder / n).is_file()]
    if missing:
        command = "beam model fetch-url-lists" + (f" --out {folder}" if spec else "")
        raise UserError(f"url: {folder} lacks {', '.join(missing)}: run `{command}`")
    return folder


def write_lists(out: Path, domains: Iterable[str], urls: Iterable[str], banned_words: Iterable[str],
                banned_subwords: Iterable[str], soft_banned_words: Iterable[str], source: str) -> dict:
    """Write a lists folder (see LIST_FILES) and SOURCE.json; returns the counts."""
    out.mkdir(parents=True, exist_ok=True)
    hashes = hash_domains(list_lines(domains))
    part = out / "domains.u64.npy.part"
    with open(part, "wb") as f:  # a file object, so np.save adds no second .npy suffix
        np.save(f, hashes)
    part.replace(out / "domains.u64.npy")
    counts = {"domains": int(hashes.size)}
    for name, lines in (("urls.txt", urls), ("banned_words.txt", banned_words),
                        ("banned_subwords.txt", banned_subwords), ("soft_banned_words.txt", soft_banned_words)):
        entries = list(lines)
        (out / name).write_text("\n".join(entries) + "\n", encoding="utf-8")
        counts[name.removesuffix(".txt")] = len(list_lines(entries))
    (out / "SOURCE.json").write_text(json.dumps({"source": source, "counts": counts}, indent=1, sort_keys=True) + "\n")
    return counts
