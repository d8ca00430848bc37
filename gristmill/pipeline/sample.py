"""The bundled sample crawl: a deterministic, Common-Crawl-shaped WARC generated offline, with a ground-truth sidecar.

`beam sample OUT.warc.gz` (or `write_sample`) writes gzip-per-record WARC files holding, per page, a request,
a response and a metadata record (the types Common Crawl has), plus one warcinfo record per file. The same
seed gives byte-identical files: WARC-Date values are fixed, WARC-Record-IDs are hashes of the seed and page,
and gzip headers carry no mtime. The pages cover English prose (stdlib docstrings), twelve other languages,
boilerplate-heavy pages, spam, a few offensive pages, exact and near duplicates at known Jaccard, PNG and PDF
payloads, non-UTF-8 charsets (declared in the header, in a meta tag, undeclared, mislabeled), an oversized
page, redirects, 404s and one malformed record. See `textgen` for how the text is made.

Ground truth: next to each WARC file `X.warc.gz` lies `X.truth.jsonl`, one JSON object per WARC record, in
file order, with these keys:
  record_id     the WARC-Record-ID ("<urn:uuid:...>")
  warc_type     "warcinfo" | "request" | "response" | "metadata"
  warc_file     the WARC file's base name
  page          index of the capture (global over all files; null for warcinfo)
  url           WARC-Target-URI (null for warcinfo)
  kind          what the page is: "prose" (English docstring prose), "lang" (other languages), "boilerplate",
                "spam", "offensive", "dup" (exact copy), "near_dup", "image" (PNG), "pdf", "charset" (non-UTF-8
                body), "oversized" (HTML above OVERSIZED_BYTES), "malformed" (garbage HTTP block),
                "redirect" (301), "not_found" (404); "warcinfo" for the warcinfo record. Request and metadata
                lines repeat their page's fields, so ground truth about documents is read from response lines.
  language      ISO 639-1 code of the main text, or null (images, redirects, malformed, ...)
  dup_group     "d0001"-style for an exact-duplicate group (the original and its copies, byte-identical
                bodies), "n0001"-style for a near-duplicate pair (the original and its variant), else null
  jaccard       for "dup" 1.0; for "near_dup" the exact Jaccard of 5-word shingles (textgen.shingles) between
                the variant's and the original's main text (the <p> elements inside <article>); else null
  status        HTTP status code of the capture (null for the malformed record and for warcinfo)
  content_type  the HTTP Content-Type header value, or null
  charset       the encoding the body is really in (null for binary bodies)
  declared_charset     the charset the page declares (header first, then meta), or null; may be wrong
  charset_declared_in  "header" | "meta" | "header+meta" | null
  bytes         length of the HTTP body in bytes
"""
from __future__ import annotations

import argparse
import hashlib
import html
import io
import json
import os
import random
import shutil
import struct
import sys
import time
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from gristmill.errors import UserError
from gristmill.pipeline import textgen

DEFAULT_PAGES = 2000
DEFAULT_FILES = 4
MIN_PAGES = 60
# Part of every record id and named in each warcinfo record: bump it only to change the ids (and with them the
# document ids, hence every measured count downstream).
GENERATOR_VERSION = 1
# Bump whenever the generator's bytes change, so that cached default samples are regenerated. Revision 2: WARC-IP-
# Address only in RFC 5737's three documentation blocks (revision 1 also used 198.51.101.0/24, a public block).
SAMPLE_REVISION = 2
OVERSIZED_BYTES = 2_600_000  # above the reader's default 2 MiB cap
NEAR_DUP_TARGETS = (0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5, 0.4, 0.3)
CRAWL_START = datetime(2024, 3, 1, tzinfo=timezone.utc)
USER_AGENT = "gristmill-sample/1.0 (synthetic crawl; no network)"

# (language, real encoding, where it is declared, the declared name). Cycled through for the charset pages.
CHARSET_CASES = (
    ("ru", "windows-1251", "header", "windows-1251"),
    ("ja", "shift_jis", "meta", "shift_jis"),
    ("zh", "gb18030", "meta", "gb18030"),
    ("el", "iso-8859-7", "header", "iso-8859-7"),
    ("fr", "iso-8859-1", "header", "iso-8859-1"),
    ("ru", "koi8-r", "meta", "koi8-r"),
    ("ja", "euc-jp", "header", "euc-jp"),
    ("de", "windows-1252", None, None),
    ("ru", "windows-1251", None, None),
    ("es", "iso-8859-1", "header", "utf-8"),  # mislabeled: the header says UTF-8, the bytes are Latin-1
)

_TLS_GARBAGE = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"


@dataclass
class Site:
    domain: str
    language: str
    theme: int
    name: str
    nav: list[str]
    footer: list[str]
    cookie: str | None
    n_paths: int = 0


@dataclass
class Page:
    kind: str
    url: str
    body: bytes
    status: int | None = 200
    reason: str = "OK"
    content_type: str | None = "text/html; charset=utf-8"
    language: str | None = None
    charset: str | None = "utf-8"
    declared_charset: str | None = "utf-8"
    charset_declared_in: str | None = "header"
    dup_group: str | None = None
    jaccard: float | None = None
    extra_headers: list[tuple[str, str]] = field(default_factory=list)
    raw_http: bytes | None = None  # a complete, deliberately broken HTTP block (the malformed record)
    text: str = ""  # the article text an HTML page was rendered from
    site: Site | None = field(default=None, repr=False)


def composition(pages: int) -> dict[str, int]:
    """How many captures of each kind a sample of `pages` captures holds (summing to `pages`)."""
    if pages < MIN_PAGES:
        raise UserError(f"--pages must be at least {MIN_PAGES} to hold every kind of page, got {pages}")
    c = {"image": 3, "pdf": 2, "oversized": 1, "malformed": 1, "redirect": 2, "not_found": 2,
         "charset": max(len(CHARSET_CASES), round(0.02 * pages)),
         "offensive": max(3, round(0.01 * pages)),
         "boilerplate": max(3, round(0.07 * pages)),
         "spam": max(3, round(0.06 * pages)),
         "near_dup": max(len(NEAR_DUP_TARGETS) // 2, round(0.06 * pages)),
         "dup": max(3, round(0.06 * pages)),
         "lang": max(len(textgen.SUPPORTED_LANGUAGES) - 1, round(0.2 * pages))}
    c["prose"] = pages - sum(c.values())
    if c["prose"] < c["near_dup"] + 2:
        raise UserError(f"--pages {pages} is too small for the fixed special pages; use at least {MIN_PAGES}")
    return c


class _Builder:
    """Plans and renders every page in a fixed order, so one seed always gives the same bytes."""

    def __init__(self, seed: int, pages: int):
        self.rng = random.Random(seed)
        self.counts = composition(pages)
        self.sites: dict[str, list[Site]] = {}
        self.pages: list[Page] = []

    # --- sites and URLs -------------------------------------------------------------------------
    def _site(self, lang: str) -> Site:
        rng = self.rng
        sites = self.sites.setdefault(lang, [])
        want = 40 if lang == "en" else 3
        if len(sites) < want:
            a, b = textgen.sample_words("en", rng, 2)
            slug = "".join(ch for ch in f"{a}-{b}-{len(sites)}" if (ch.isascii() and ch.isalnum()) or ch == "-")
            domain = f"www.{slug}.example" if lang == "en" else f"{lang}.{slug}.example"
            if lang == "en":
                nav = textgen.nav_items(rng, rng.randint(5, 9))
            else:
                nav = [w.capitalize() for w in textgen.sample_words(lang, rng, rng.randint(5, 8))]
            if lang != "en":
                a, b = textgen.sample_words(lang, rng, 2)
            name = f"{a.capitalize()} {b.capitalize()}"
            cookie = textgen.cookie_banner(rng) if lang == "en" and rng.random() < 0.6 else None
            footer = textgen.footer_lines(rng, name) if lang == "en" else [f"© 2024 {domain}"]
            site = Site(domain, lang, rng.randrange(4), name, nav, footer, cookie)
            sites.append(site)
            return site
        return rng.choice(sites)

    def _url(self, site: Site, section: str = "") -> str:
        site.n_paths += 1
        section = section or self.rng.choice(("articles", "blog", "news", "docs", "p", "2023", "2024"))
        return f"https://{site.domain}/{section}/{site.n_paths:05d}.html"

    # --- HTML rendering ---------------------------------------------------------------------------
    def _html(self, site: Site, title: str, paragraphs: list[str], *, lang: str, extra_body: str = "",
              head_extra: str = "", meta_charset: str | None = "utf-8", heavy: list[str] | None = None) -> str:
        e = html.escape
        head = [f'<meta charset="{meta_charset}">' if meta_charset else "",
                head_extra, f"<title>{e(title)}</title>",
                '<meta name="viewport" content="width=device-width, initial-scale=1">',
                '<link rel="stylesheet" href="/static/site.css">']
        if site.theme != 3:
            head.append("<script>window.dataLayer=window.dataLayer||[];function gtag(){dataLayer.push(arguments);}"
                        "</script>")
        nav = "".join(f'<li><a href="/{i}">{e(item)}</a></li>' for i, item in enumerate(site.nav))
        article = f"<h1>{e(title)}</h1>\n" + "\n".join(f"<p>{e(p)}</p>" for p in paragraphs)
        direction = ' dir="rtl"' if lang == "ar" else ""
        parts = [f'<!DOCTYPE html>\n<html lang="{lang}"{direction}>\n<head>\n' + "\n".join(h for h in head if h)
                 + "\n</head>\n<body>"]
        if site.theme == 0:  # blog
            parts.append(f'<header><a class="logo" href="/">{e(site.name)}</a><nav><ul>{nav}</ul></nav></header>')
            parts.append(f"<main><article>\n{article}\n</article></main>")
            parts.append('<aside><h3>Related</h3><ul>' + "".join(
                f'<li><a href="/r{i}">{e(item)}</a></li>' for i, item in enumerate(site.nav[:4])) + "</ul></aside>")
        elif site.theme == 1:  # news, with breadcrumbs and a byline
            parts.append(f'<div class="topbar"><ul class="menu">{nav}</ul></div>')
            parts.append(f'<div class="breadcrumbs"><a href="/">{e(site.name)}</a> &gt; {e(title[:40])}</div>')
            parts.append(f'<article>\n<div class="byline">{e(site.name)} · 2024</div>\n{article}\n</article>')
        elif site.theme == 2:  # documentation, with a sidebar
            parts.append(f'<div class="sidebar"><ul>{nav}</ul></div>')
            parts.append(f'<main><article>\n{article}\n</article></main>')
        else:  # bare page
            parts.append(f"<article>\n{article}\n</article>")
        if heavy:
            parts.append('<div class="widgets">' + "".join(f"<div>{e(line)}</div>" for line in heavy) + "</div>")
        parts.append(extra_body)
        parts.append("<footer>" + "".join(f"<span>{e(line)}</span> " for line in site.footer) + "</footer>")
        if site.cookie:
            parts.append(f'<div id="cookie-banner"><p>{e(site.cookie)}</p><button>Accept</button></div>')
        parts.append("</body>\n</html>\n")
        return "\n".join(p for p in parts if p)

    @staticmethod
    def _title(text: str, lang: str) -> str:
        first = text.split("\n\n", 1)[0]
        if lang in textgen.UNSPACED_LANGUAGES:
            return first[:16]
        return " ".join(first.split()[:7]).rstrip(",.;:")

    def _html_page(self, kind: str, lang: str, text: str, **kw) -> Page:
        site = kw.pop("site", None) or self._site(lang)
        paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
        meta = None if self.rng.random() < 0.1 else "utf-8"
        body = self._html(site, self._title(text, lang), paragraphs, lang=lang, meta_charset=meta, **kw)
        ctype = self.rng.choice(("text/html; charset=utf-8", "text/html; charset=UTF-8", "text/html",
                                 "text/html;charset=utf-8", "application/xhtml+xml; charset=utf-8"))
        declared_in = _declared_in("charset" in ctype, meta is not None)
        return Page(kind, self._url(site), body.encode("utf-8"), content_type=ctype, language=lang,
                    declared_charset="utf-8" if declared_in else None, charset_declared_in=declared_in,
                    text="\n\n".join(paragraphs), site=site)

    # --- page kinds -------------------------------------------------------------------------------------
    def build(self) -> list[Page]:
        rng, c = self.rng, self.counts
        prose = [self._html_page("prose", "en", textgen.english_text(rng, rng.randint(200, 1000)))
                 for _ in range(c["prose"])]
        langs = [lang for lang in textgen.SUPPORTED_LANGUAGES if lang != "en"]
        lang_pages = [self._html_page("lang", lang, textgen.language_text(lang, rng, rng.randint(150, 700)))
                      for lang in (langs[i % len(langs)] for i in range(c["lang"]))]
        out = prose + lang_pages
        out += self._near_duplicates(prose[:c["near_dup"]])
        out += self._exact_duplicates(prose[c["near_dup"]:] + lang_pages, c["dup"])
        out += [self._boilerplate() for _ in range(c["boilerplate"])]
        out += [self._spam() for _ in range(c["spam"])]
        out += [self._html_page("offensive", "en", textgen.offensive_text(rng, rng.randint(3, 6)))
                for _ in range(c["offensive"])]
        out += [self._charset(*CHARSET_CASES[i % len(CHARSET_CASES)]) for i in range(c["charset"])]
        out += [self._image(i) for i in range(c["image"])]
        out += [self._pdf(i) for i in range(c["pdf"])]
        out += [self._oversized() for _ in range(c["oversized"])]
        out += [self._malformed() for _ in range(c["malformed"])]
        out += [self._redirect(rng.choice(prose).url) for _ in range(c["redirect"])]
        out += [self._not_found() for _ in range(c["not_found"])]
        rng.shuffle(out)
        return out

    def _near_duplicates(self, originals: list[Page]) -> list[Page]:
        out = []
        for i, orig in enumerate(originals):
            group = f"n{i + 1:04d}"
            orig.dup_group = group
            site, text = orig.site, orig.text
            target = NEAR_DUP_TARGETS[i % len(NEAR_DUP_TARGETS)]
            variant = textgen.near_duplicate(text, target, self.rng)
            # Same site chrome and title as the original, so only the article text differs.
            paragraphs = [p.strip() for p in variant.split("\n\n") if p.strip()]
            meta = "utf-8" if orig.charset_declared_in in ("meta", "header+meta") else None
            body = self._html(site, self._title(text, "en"), paragraphs, lang="en", meta_charset=meta).encode("utf-8")
            j = textgen.jaccard(textgen.shingles(text), textgen.shingles("\n\n".join(paragraphs)))
            out.append(Page("near_dup", self._url(site), body, content_type=orig.content_type, language="en",
                            declared_charset=orig.declared_charset, charset_declared_in=orig.charset_declared_in,
                            dup_group=group, jaccard=round(j, 4)))
        return out

    def _exact_duplicates(self, candidates: list[Page], n_copies: int) -> list[Page]:
        out: list[Page] = []
        group = 0
        for orig in self.rng.sample(candidates, min(len(candidates), n_copies)):
            if len(out) >= n_copies:
                break
            group += 1
            orig.dup_group = f"d{group:04d}"
            for k in range(min(self.rng.randint(1, 3), n_copies - len(out))):
                # Real copies: tracking parameters, http vs https, an AMP path, a mirror host.
                variants = (orig.url + "?utm_source=newsletter&utm_medium=email", orig.url.replace("https:", "http:"),
                            orig.url.replace(".html", "/amp.html"),
                            orig.url.replace("https://", f"https://mirror{k}."))
                out.append(Page("dup", variants[(group + k) % len(variants)], orig.body,
                                content_type=orig.content_type, language=orig.language,
                                declared_charset=orig.declared_charset, charset_declared_in=orig.charset_declared_in,
                                dup_group=orig.dup_group, jaccard=1.0))
        return out

    def _boilerplate(self) -> Page:
        rng = self.rng
        text = textgen.english_paragraphs(rng, 1)[0].split(". ")[0].rstrip(".:") + "."
        heavy = textgen.boilerplate_lines(rng) + textgen.boilerplate_lines(rng)
        return self._html_page("boilerplate", "en", text, heavy=heavy)

    def _spam(self) -> Page:
        rng = self.rng
        lines = textgen.spam_text(rng).split("\n")
        links = "<ul>" + "".join(f'<li><a href="/go/{i}">{html.escape(t)}</a></li>'
                                 for i, t in enumerate(lines[: rng.randint(0, 30)])) + "</ul>"
        return self._html_page("spam", "en", "\n\n".join(lines), extra_body=links)

    def _charset(self, lang: str, encoding: str, declared_in: str | None, declared: str | None) -> Page:
        rng = self.rng
        site = self._site(lang)
        text = textgen.language_text(lang, rng, rng.randint(150, 500), charset=encoding)
        head_extra, meta = "", None
        if declared_in == "meta":
            if rng.random() < 0.5:
                meta = declared
            else:
                head_extra = f'<meta http-equiv="Content-Type" content="text/html; charset={declared}">'
        paragraphs = [p for p in text.split("\n\n") if p]
        page_html = self._html(site, self._title(text, lang), paragraphs, lang=lang, meta_charset=meta,
                               head_extra=head_extra)
        ctype = f"text/html; charset={declared}" if declared_in == "header" else "text/html"
        # Site chrome outside the charset (·, ©) becomes character references, as real legacy pages do.
        body = page_html.encode(encoding, "xmlcharrefreplace")
        return Page("charset", self._url(site), body, content_type=ctype, language=lang,
                    charset=encoding, declared_charset=declared, charset_declared_in=declared_in)

    def _image(self, i: int) -> Page:
        w, h = ((16, 16), (64, 48), (120, 90))[i % 3]
        site = self._site("en")
        return Page("image", f"https://{site.domain}/images/{i:03d}.png", png_bytes(w, h, self.rng.randrange(256)),
                    content_type="image/png", charset=None, declared_charset=None, charset_declared_in=None)

    def _pdf(self, i: int) -> Page:
        lines = textgen.english_paragraphs(self.rng, 1)[0].split(". ")[:6]
        site = self._site("en")
        return Page("pdf", f"https://{site.domain}/files/report-{i}.pdf", pdf_bytes(lines),
                    content_type="application/pdf", language="en", charset=None, declared_charset=None,
                    charset_declared_in=None)

    def _oversized(self) -> Page:
        rng = self.rng
        site = self._site("en")
        text = textgen.english_text(rng, 3000)
        # Real oversized pages are mostly inline application state; it dwarfs the article.
        catalog_words = textgen.sample_words("en", rng, 60)
        items, size = [], 0
        while size < OVERSIZED_BYTES:
            n = len(items)
            item = {"id": n, "sku": f"SKU-{n:08d}", "name": " ".join(rng.choices(catalog_words, k=3)),
                    "price": f"{n % 97 + 0.99:.2f}", "currency": "EUR", "in_stock": n % 3 != 0}
            items.append(item)
            size += len(json.dumps(item)) + 2
        blob = f'<script id="__STATE__" type="application/json">{json.dumps({"products": items})}</script>'
        paragraphs = [p for p in text.split("\n\n") if p]
        body = self._html(site, self._title(text, "en"), paragraphs, lang="en", extra_body=blob).encode("utf-8")
        return Page("oversized", self._url(site, "catalog"), body, language="en", charset_declared_in="header+meta")

    def _malformed(self) -> Page:
        # A TLS handshake where an HTTP response should be (a crawler speaking HTTP to an HTTPS port), with a
        # Content-Length that lies: warcio with verify_http=True refuses it; without, the status is not a number.
        site = self._site("en")
        raw = _TLS_GARBAGE + b" garbage\r\nContent-Length: 99999\r\n\r\n<html><body>trunc"
        return Page("malformed", self._url(site), b"<html><body>trunc", status=None, content_type=None,
                    charset=None, declared_charset=None, charset_declared_in=None, raw_http=raw)

    def _redirect(self, target: str) -> Page:
        site = self._site("en")
        return Page("redirect", self._url(site, "old"), b"", status=301, reason="Moved Permanently",
                    content_type="text/html", charset=None, declared_charset=None, charset_declared_in=None,
                    extra_headers=[("Location", target)])

    def _not_found(self) -> Page:
        site = self._site("en")
        body = (f"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body><h1>Not Found</h1>"
                f"<p>The requested URL was not found on this server.</p><hr><address>{site.domain}</address>"
                f"</body></html>\n").encode()
        return Page("not_found", self._url(site), body, status=404, reason="Not Found", language="en",
                    charset_declared_in=None, declared_charset=None, content_type="text/html")


def _declared_in(header: bool, meta: bool) -> str | None:
    return {(True, True): "header+meta", (True, False): "header", (False, True): "meta"}.get((header, meta))


def png_bytes(width: int, height: int, hue: int) -> bytes:
    """A valid 8-bit RGB PNG with a gradient."""
    rows = b"".join(b"\x00" + bytes(v for x in range(width) for v in ((x * 255 // max(1, width - 1)),
                                                                        (y * 255 // max(1, height - 1)), hue))
                    for y in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def pdf_bytes(lines: list[str]) -> bytes:
    """A valid one-page PDF 1.4 showing `lines` in Helvetica (ASCII only), with a correct xref table."""
    def esc(s: str) -> str:
        s = s.encode("ascii", "replace").decode("ascii")
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    ops = ["BT", "/F1 11 Tf", "72 720 Td", "14 TL"] + [f"({esc(line[:90])}) Tj T*" for line in lines] + ["ET"]
    content = "\n".join(ops).encode("ascii")
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


# --- WARC writing -------------------------------------------------------------------------------------------

def _record_id(seed: int, page: int | str, rtype: str) -> str:
    digest = hashlib.sha256(f"gristmill-sample/{GENERATOR_VERSION}:{seed}:{page}:{rtype}".encode()).digest()
    return f"<urn:uuid:{uuid.UUID(bytes=digest[:16], version=4)}>"


def _warc_date(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _http_date(t: datetime) -> str:
    return t.strftime("%a, %d %b %Y %H:%M:%S GMT")


def _ip(domain: str) -> str:
    h = hashlib.sha256(domain.encode()).digest()
    # RFC 5737's documentation blocks (TEST-NET-1, -2, -3): never a real host.
    return f"{('192.0.2', '198.51.100', '203.0.113')[h[0] % 3]}.{1 + h[1] % 254}"


def _truth_line(rec_id: str, wtype: str, warc_file: str, index: int | None, page: Page | None) -> dict:
    if page is None:
        return {"record_id": rec_id, "warc_type": wtype, "warc_file": warc_file, "page": None, "url": None,
                "kind": "warcinfo", "language": None, "dup_group": None, "jaccard": None, "status": None,
                "content_type": None, "charset": None, "declared_charset": None, "charset_declared_in": None,
                "bytes": 0}
    return {"record_id": rec_id, "warc_type": wtype, "warc_file": warc_file, "page": index, "url": page.url,
            "kind": page.kind, "language": page.language, "dup_group": page.dup_group, "jaccard": page.jaccard,
            "status": page.status, "content_type": page.content_type, "charset": page.charset,
            "declared_charset": page.declared_charset, "charset_declared_in": page.charset_declared_in,
            "bytes": len(page.body)}


_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
_SERVERS = ("nginx", "Apache/2.4.58 (Debian)", "cloudflare")


def _write_page(writer, index: int, page: Page, seed: int, info_id: str) -> tuple[str, str, str]:
    """Writes the request, response and metadata records of one capture; returns their record ids."""
    from warcio.recordloader import ArcWarcRecord
    from warcio.statusandheaders import StatusAndHeaders

    when = CRAWL_START + timedelta(seconds=17 * index)
    req_id, resp_id, meta_id = (_record_id(seed, index, t) for t in ("request", "response", "metadata"))
    host, path = page.url.split("/", 3)[2:]
    common = {"WARC-Date": _warc_date(when), "WARC-Warcinfo-ID": info_id}

    request = StatusAndHeaders(f"GET /{path} HTTP/1.1", [
        ("User-Agent", USER_AGENT), ("Accept", _ACCEPT), ("Accept-Language", "en-US,en;q=0.5"),
        ("Accept-Encoding", "br,gzip"), ("Host", host), ("Connection", "Keep-Alive")], is_http_request=True)
    writer.write_record(writer.create_warc_record(
        page.url, "request", http_headers=request,
        warc_headers_dict={"WARC-Type": "request", **common, "WARC-Record-ID": req_id}))

    warc = {"WARC-Type": "response", **common, "WARC-Record-ID": resp_id, "WARC-Concurrent-To": req_id,
            "WARC-IP-Address": _ip(host)}
    if page.raw_http is not None:
        # warcio would parse (and refuse) the broken HTTP block; write it as an opaque record body instead.
        headers = StatusAndHeaders("", [*warc.items(), ("WARC-Target-URI", page.url)], protocol="WARC/1.0")
        record = ArcWarcRecord("warc", "response", headers, io.BytesIO(page.raw_http), None,
                               "application/http; msgtype=response", len(page.raw_http))
        record.payload_length = len(page.raw_http)
        writer.write_record(record)
    else:
        headers = [("Date", _http_date(when)), ("Server", _SERVERS[index % len(_SERVERS)])]
        if page.content_type:
            headers.append(("Content-Type", page.content_type))
        headers += page.extra_headers + [("Content-Length", str(len(page.body))), ("Connection", "close")]
        if page.status == 200:
            headers.append(("Last-Modified", _http_date(when - timedelta(days=index % 400 + 1))))
            warc["WARC-Identified-Payload-Type"] = (page.content_type or "").split(";")[0]
        http = StatusAndHeaders(f"{page.status} {page.reason}", headers, protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record(
            page.url, "response", payload=io.BytesIO(page.body), length=len(page.body), http_headers=http,
            warc_headers_dict=warc))

    meta = f"fetchTimeMs: {50 + (index * 37) % 900}\r\n".encode()
    writer.write_record(writer.create_warc_record(
        page.url, "metadata", payload=io.BytesIO(meta), length=len(meta),
        warc_headers_dict={"WARC-Type": "metadata", **common, "WARC-Record-ID": meta_id,
                           "WARC-Concurrent-To": resp_id}))
    return req_id, resp_id, meta_id


def _write_file(path: str, seed: int, first: int, pages: list[Page], total: int) -> None:
    from warcio.warcwriter import WARCWriter

    name = os.path.basename(path)
    info_id = _record_id(seed, name, "warcinfo")
    truth = [_truth_line(info_id, "warcinfo", name, None, None)]
    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=True)  # zlib's gzip header has MTIME 0: no timestamp leaks in
        info = (f"software: gristmill-sample/{GENERATOR_VERSION}\r\nformat: WARC File Format 1.0\r\n"
                f"description: synthetic crawl generated offline by gristmill (seed {seed}, {total} pages)\r\n"
                f"robots: classic\r\nisPartOf: gristmill-sample\r\noperator: nobody\r\n").encode()
        writer.write_record(writer.create_warc_record(
            "", "warcinfo", payload=io.BytesIO(info), length=len(info),
            warc_headers_dict={"WARC-Type": "warcinfo", "WARC-Record-ID": info_id,
                               "WARC-Date": _warc_date(CRAWL_START), "WARC-Filename": name}))
        for index, page in enumerate(pages, first):
            ids = _write_page(writer, index, page, seed, info_id)
            truth += [_truth_line(rid, wtype, name, index, page)
                      for rid, wtype in zip(ids, ("request", "response", "metadata"))]
    with open(truth_path(path), "w", encoding="utf-8") as f:
        f.writelines(json.dumps(t, ensure_ascii=False, sort_keys=True) + "\n" for t in truth)


def truth_path(warc_path: str | os.PathLike) -> str:
    """The ground-truth sidecar of a sample WARC: X.warc.gz -> X.truth.jsonl."""
    p = str(warc_path)
    return p[: -len(".warc.gz")] + ".truth.jsonl"


def read_truth(warc_paths) -> list[dict]:
    """The truth lines of one or several sample WARC files, concatenated in the given order."""
    if isinstance(warc_paths, (str, os.PathLike)):
        warc_paths = [warc_paths]
    out = []
    for p in warc_paths:
        with open(truth_path(p), encoding="utf-8") as f:
            out += [json.loads(line) for line in f]
    return out


def output_paths(path: str, files: int) -> list[str]:
    """OUT.warc.gz for one file; OUT-00000.warc.gz, OUT-00001.warc.gz, ... for several."""
    if not str(path).endswith(".warc.gz"):
        raise UserError(f"the output name must end in .warc.gz (gzip per record), got {path}")
    if files == 1:
        return [str(path)]
    stem = str(path)[: -len(".warc.gz")]
    return [f"{stem}-{i:05d}.warc.gz" for i in range(files)]


def write_sample(path: str | os.PathLike, pages: int = DEFAULT_PAGES, seed: int = 0, files: int = 1) -> list[str]:
    """Write the sample crawl (`pages` captures, split into `files` WARC files) and its truth sidecars.

    Returns the WARC paths written. Same arguments => byte-identical files.
    """
    composition(pages)  # checks --pages first: a bad page count would otherwise read as a bad file count
    if files < 1 or files > pages:
        raise UserError(f"--files must be between 1 and the number of pages ({pages}), got {files}")
    paths = output_paths(str(path), files)
    plan = _Builder(seed, pages).build()
    parent = os.path.dirname(paths[0])
    try:
        if parent:
            os.makedirs(parent, exist_ok=True)
        for k, p in enumerate(paths):
            lo, hi = k * pages // files, (k + 1) * pages // files
            _write_file(p, seed, lo, plan[lo:hi], pages)
    except OSError as e:
        raise UserError(f"cannot write {e.filename or paths[0]}: {e.strerror or e}") from None
    return paths


def default_sample_paths() -> list[str]:
    """The default sample crawl in gristmill.paths.cache_dir()/sample/, generated on first use; its WARC paths."""
    from gristmill.paths import cache_dir

    folder = cache_dir() / "sample"
    stamp = {"generator": GENERATOR_VERSION, "revision": SAMPLE_REVISION, "pages": DEFAULT_PAGES, "seed": 0,
             "files": DEFAULT_FILES, "python": f"{sys.version_info.major}.{sys.version_info.minor}"}
    names = [os.path.basename(p) for p in output_paths("sample.warc.gz", DEFAULT_FILES)]
    stamp_file = folder / "stamp.json"
    try:
        if json.loads(stamp_file.read_text()) == stamp and all((folder / n).is_file() for n in names):
            return [str(folder / n) for n in names]
    except (OSError, ValueError):
        pass
    # Generate beside the final folder and rename it into place, so a concurrent run never sees half a sample.
    tmp = folder.with_name(f"sample.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    write_sample(tmp / "sample.warc.gz", DEFAULT_PAGES, 0, DEFAULT_FILES)
    (tmp / "stamp.json").write_text(json.dumps(stamp, sort_keys=True) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    try:
        os.rename(tmp, folder)
    except OSError:  # another process put an identical sample there first
        shutil.rmtree(tmp, ignore_errors=True)
    return [str(folder / n) for n in names]


EPILOG = """\
examples:
  beam sample sample.warc.gz                          # 2000 pages, one file, with sample.truth.jsonl beside it
  beam sample crawl/cc.warc.gz --pages 500 --files 4  # crawl/cc-00000.warc.gz ... crawl/cc-00003.warc.gz
  beam sample s.warc.gz --seed 7                      # another, equally deterministic sample
"""


def _cmd_sample(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    paths = write_sample(args.output, pages=args.pages, seed=args.seed, files=args.files)
    size = sum(os.path.getsize(p) for p in paths)
    for p in paths:
        print(p)
    print(f"wrote {args.pages} pages ({3 * args.pages + len(paths)} records, {size / 1e6:.1f} MB) in "
          f"{time.perf_counter() - t0:.1f} s; ground truth in {truth_path(paths[0])}"
          + (" and siblings" if len(paths) > 1 else ""), file=sys.stderr)
    return 0


def register(subparsers) -> None:
    """Adds `beam sample` to the beam CLI."""
    p = subparsers.add_parser(
        "sample", help="write the bundled sample crawl: a synthetic, deterministic Common-Crawl-like WARC",
        description="Generate a sample crawl with no network: request/response/metadata records for English "
                    "prose, other languages, boilerplate, spam, duplicates and near duplicates, images, PDFs, "
                    "legacy charsets, an oversized page and a malformed record, plus a ground-truth "
                    "OUT.truth.jsonl (format: see gristmill/pipeline/sample.py).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output", metavar="OUT.warc.gz", help="where to write (must end in .warc.gz)")
    p.add_argument("--pages", type=int, default=DEFAULT_PAGES,
                   help=f"number of captured pages (default {DEFAULT_PAGES}, minimum {MIN_PAGES})")
    p.add_argument("--seed", type=int, default=0, help="seed; the same seed gives byte-identical files (default 0)")
    p.add_argument("--files", type=int, default=1, help="split into K files OUT-00000.warc.gz ... (default 1)")
    p.set_defaults(func=_cmd_sample)
