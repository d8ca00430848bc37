"""Deterministic text generators for the sample crawl and for tests: prose, other languages, spam, boilerplate.

Nothing is copied from the web. English prose is the standard library's own docstrings; other languages are
words drawn from `wordfreq` frequency lists with their real (Zipf-like) frequencies; the offensive vocabulary
is read off the linear model that ships in `alt-profanity-check`. Every generator takes a `random.Random`, so
the same seed gives the same text (for one Python version: docstrings change between releases).
"""
from __future__ import annotations

import importlib
import inspect
import random
import re
import warnings
from functools import lru_cache

# wordfreq has good lists for these; languages whose lists are morpheme-split (ko) would read badly when joined.
SUPPORTED_LANGUAGES: tuple[str, ...] = ("en", "fr", "de", "es", "it", "pt", "nl", "ru", "el", "ar", "hi", "zh", "ja")

# Written without spaces between words.
UNSPACED_LANGUAGES = frozenset({"zh", "ja"})

_SENTENCE_END = {"zh": "。", "ja": "。", "hi": "।", "ar": "."}
_COMMA = {"zh": "，", "ja": "、", "ar": "،"}
# French/Italian list elided articles as separate entries ("l", "d"); glue them to the next word with an apostrophe.
_ELIDED = {"fr": frozenset({"l", "d", "j", "n", "s", "c", "qu", "m", "t", "jusqu", "lorsqu", "puisqu"}),
           "it": frozenset({"l", "dell", "all", "nell", "dall", "sull", "un", "c", "d", "quest", "po"})}

# Their wordfreq lists include some English loanwords in Latin letters, which would blur language ID.
_NON_LATIN = frozenset({"ru", "el", "ar", "hi", "zh", "ja"})

VOCAB_SIZE = 5000


def _has_latin(word: str) -> bool:
    return any(ch.isalpha() and ord(ch) < 0x250 for ch in word)  # Basic Latin through Latin Extended-B

# Pure-Python stdlib modules with long, well-written docstrings. Modules with import side effects
# (antigravity, this, turtle, tkinter, idlelib) are deliberately absent.
_PROSE_MODULES = (
    "abc argparse ast asyncio.base_events asyncio.events asyncio.futures asyncio.locks asyncio.queues "
    "asyncio.streams asyncio.tasks base64 bdb bisect bz2 calendar cmd code codecs collections "
    "concurrent.futures configparser contextlib copy csv dataclasses datetime decimal difflib dis doctest "
    "email.message email.parser email.utils enum filecmp fileinput fnmatch fractions ftplib functools getopt "
    "gettext glob graphlib gzip hashlib heapq hmac html.parser http.client http.cookiejar http.cookies "
    "http.server imaplib importlib.abc importlib.metadata importlib.resources inspect io ipaddress json "
    "json.decoder json.encoder linecache locale logging logging.handlers lzma mailbox mimetypes modulefinder "
    "multiprocessing.pool multiprocessing.process multiprocessing.queues netrc numbers operator optparse os "
    "pathlib pdb pickle pickletools pkgutil platform plistlib poplib pprint profile pstats queue quopri random "
    "re reprlib rlcompleter runpy sched secrets selectors shelve shlex shutil smtplib socket socketserver "
    "sqlite3 ssl statistics string subprocess symtable sysconfig tabnanny tarfile tempfile textwrap threading "
    "timeit tokenize tomllib trace traceback tracemalloc types typing unittest.case unittest.loader "
    "unittest.mock unittest.result urllib.parse urllib.request uuid warnings wave weakref xml.dom.minidom "
    "xml.etree.ElementTree xml.sax.handler zipapp zipfile zipimport zoneinfo"
).split()

_WORD_RE = re.compile(r"[A-Za-z][a-z]*(?:'[a-z]+)?[,.;:]?")


def _objects_with_docs(module) -> list:
    objs = [module]
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj) or inspect.isfunction(obj):
            objs.append(obj)
        if inspect.isclass(obj):
            objs.extend(m for n, m in sorted(vars(obj).items()) if not n.startswith("_") and inspect.isfunction(m))
    return objs


def _is_prose(lines: list[str]) -> bool:
    # Indented lines, doctest prompts, bullet lists and field lists are code or tables, not prose.
    return not any(line.startswith((" ", ">>>", "...", "-", "*", ":", "|", "+", "=")) for line in lines)


@lru_cache(maxsize=1)
def prose_paragraphs() -> tuple[str, ...]:
    """Every paragraph of running English prose in the docstrings of a fixed list of stdlib modules, in order."""
    out: list[str] = []
    seen: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in _PROSE_MODULES:
            try:
                module = importlib.import_module(name)
            except ImportError:  # an optional stdlib part (e.g. sqlite3) missing from this build
                continue
            for obj in _objects_with_docs(module):
                doc = getattr(obj, "__doc__", None)
                if not isinstance(doc, str):
                    continue
                for block in re.split(r"\n\s*\n", inspect.cleandoc(doc)):
                    lines = block.split("\n")
                    if not _is_prose(lines):
                        continue
                    text = " ".join(line.strip() for line in lines)
                    text = re.sub(r"\s+", " ", text)
                    words = text.split()
                    if len(words) < 15 or not text.endswith((".", ":")) or text in seen:
                        continue
                    if sum(1 for w in words if _WORD_RE.fullmatch(w)) < 0.8 * len(words):
                        continue
                    seen.add(text)
                    out.append(text)
    return tuple(out)


def english_paragraphs(rng: random.Random, n: int) -> list[str]:
    """n paragraphs of English prose; each is one or two docstring paragraphs, so pages rarely share a paragraph."""
    pool = prose_paragraphs()
    out = []
    for _ in range(n):
        k = 1 if rng.random() < 0.6 else 2
        out.append(" ".join(pool[rng.randrange(len(pool))] for _ in range(k)))
    return out


def english_text(rng: random.Random, n_words: int) -> str:
    """English prose paragraphs (separated by blank lines) with at least n_words words."""
    paras: list[str] = []
    count = 0
    while count < n_words:
        p = english_paragraphs(rng, 1)[0]
        paras.append(p)
        count += len(p.split())
    return "\n\n".join(paras)


def _fix_word(lang: str, w: str) -> str:
    if lang == "el" and w.endswith("σ"):  # wordfreq folds final sigma into σ
        return w[:-1] + "ς"
    return w


@lru_cache(maxsize=None)
def _frequency_buckets(lang: str) -> list[list[str]]:
    import wordfreq

    # The 'small' lists hold the same top words as 'large' and load ten times faster.
    return wordfreq.get_frequency_list(lang, wordlist="small")


@lru_cache(maxsize=64)
def _vocabulary(lang: str, charset: str | None = None) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """The language's most frequent words and cumulative weights (wordfreq bucket i has frequency 10**(-i/100))."""
    if lang not in SUPPORTED_LANGUAGES:
        raise ValueError(f"unsupported language {lang!r}; supported: {', '.join(SUPPORTED_LANGUAGES)}")
    words: list[str] = []
    cum: list[float] = []
    total = 0.0
    for i, bucket in enumerate(_frequency_buckets(lang)):
        for w in bucket:
            if not any(ch.isalpha() for ch in w) or (lang in _NON_LATIN and _has_latin(w)):
                continue
            w = _fix_word(lang, w)
            if charset is not None:
                try:
                    w.encode(charset)
                except UnicodeEncodeError:
                    continue
            total += 10 ** (-i / 100)
            words.append(w)
            cum.append(total)
            if len(words) >= VOCAB_SIZE:
                return tuple(words), tuple(cum)
    return tuple(words), tuple(cum)


def sample_words(lang: str, rng: random.Random, k: int, charset: str | None = None) -> list[str]:
    """k words drawn with the language's word frequencies (optionally only words encodable in `charset`)."""
    words, cum = _vocabulary(lang, charset)
    return rng.choices(words, cum_weights=cum, k=k)


def _sentence(lang: str, words: list[str], rng: random.Random) -> str:
    elided = _ELIDED.get(lang, frozenset())
    glued: list[str] = []
    for w in words:
        if glued and glued[-1] in elided:
            if w[:1] in "aeiouhàâéèêîôûAEIOUH" and w not in elided:
                glued[-1] = glued[-1] + "'" + w
                continue
            glued.pop()  # an elided article before a consonant would be a misspelling; drop it
        glued.append(w)
    if glued and glued[-1] in elided:
        glued.pop()
    if not glued:
        glued = [words[0]]
    if len(glued) > 6 and rng.random() < 0.5:
        i = rng.randrange(2, len(glued) - 2)
        glued[i] = glued[i] + _COMMA.get(lang, ",")
    sep = "" if lang in UNSPACED_LANGUAGES else " "
    text = sep.join(glued).replace("、" + sep, "、").replace("，" + sep, "，")
    text = text[:1].upper() + text[1:]
    return text + _SENTENCE_END.get(lang, ".")


def language_text(lang: str, rng: random.Random, n_words: int, charset: str | None = None) -> str:
    """About n_words words of text in `lang`: sentences of 5-18 frequency-weighted words, paragraphs separated
    by blank lines; zh/ja without spaces. With `charset`, only words encodable in that charset are used."""
    if lang == "en" and charset is None:
        return english_text(rng, n_words)
    paragraphs: list[str] = []
    done = 0
    while done < n_words:
        sentences = []
        for _ in range(rng.randint(2, 6)):
            m = rng.randint(5, 18)
            sentences.append(_sentence(lang, sample_words(lang, rng, m, charset), rng))
            done += m
        paragraphs.append(("" if lang in UNSPACED_LANGUAGES else " ").join(sentences))
    return "\n\n".join(paragraphs)


_SPAM_PRODUCTS = ("watches", "sneakers", "handbags", "casino bonus", "payday loans", "crypto signals", "forex robot",
                  "diet pills", "phone cases", "sunglasses", "essay writing", "followers", "backlinks", "car insurance",
                  "web hosting", "vpn deals", "gift cards", "slot games")
_SPAM_HOOKS = ("cheap", "best", "buy", "discount", "free", "top", "official", "online", "sale", "wholesale", "2024",
               "deals", "outlet", "coupon", "lowest price", "fast shipping", "no prescription", "guaranteed")
_SPAM_CITIES = ("london", "new york", "paris", "berlin", "madrid", "dubai", "sydney", "toronto", "mumbai", "tokyo")


def spam_text(rng: random.Random) -> str:
    """A spam page body, one of: keyword stuffing, a link farm, word salad, or a templated SEO page."""
    product = rng.choice(_SPAM_PRODUCTS)
    style = rng.randrange(4)
    lines: list[str] = []
    if style == 0:  # keyword stuffing: the same few terms, comma separated, over and over
        for _ in range(rng.randint(15, 40)):
            terms = [f"{rng.choice(_SPAM_HOOKS)} {product}" for _ in range(rng.randint(4, 10))]
            lines.append(", ".join(terms))
    elif style == 1:  # link farm: short anchor-text lines
        for _ in range(rng.randint(40, 120)):
            lines.append(f"{rng.choice(_SPAM_HOOKS)} {product} {rng.choice(_SPAM_CITIES)}")
    elif style == 2:  # word salad: frequent English words with no syntax, long unpunctuated lines
        for _ in range(rng.randint(10, 30)):
            lines.append(" ".join(sample_words("en", rng, rng.randint(20, 60)) + [product]))
    else:  # templated SEO text: one sentence repeated with the slots swapped
        for _ in range(rng.randint(20, 50)):
            lines.append(f"Looking for {rng.choice(_SPAM_HOOKS)} {product} in {rng.choice(_SPAM_CITIES).title()}? "
                         f"We offer the {rng.choice(_SPAM_HOOKS)} {product} at the {rng.choice(_SPAM_HOOKS)} price, "
                         f"call now {rng.randint(200, 999)}-{rng.randint(1000, 9999)}!!!")
        if rng.random() < 0.5:
            lines = [line.upper() for line in lines]
    return "\n".join(lines)


NAV_ITEMS = ("Home", "About us", "Contact", "Blog", "News", "Products", "Services", "Support", "Careers", "Login",
             "Sign up", "Search", "Shop", "Events", "FAQ", "Press", "Partners", "Community", "Docs", "Pricing")
_COOKIE_BANNERS = (
    "We use cookies to improve your experience on our site. By continuing to browse you agree to our use of cookies.",
    "This website uses cookies to personalise content and ads and to analyse our traffic. Accept all | Reject all",
    "Cookie settings: we and our partners store and access information on your device. Manage preferences",
    "By clicking Accept you consent to the use of cookies as described in our cookie policy.",
)
_FOOTER_LINES = ("Privacy Policy", "Terms of Use", "Cookie Policy", "Imprint", "Sitemap", "Accessibility",
                 "All rights reserved.", "Follow us on social media", "Back to top", "Powered by WordPress")
_WIDGET_LINES = ("Share on Facebook", "Share on Twitter", "Share by email", "Print this page", "Read more",
                 "Subscribe to our newsletter", "Enter your email address", "Related articles", "Most popular",
                 "Leave a comment", "You must be logged in to post a comment.",
                 "Please enable JavaScript to view the comments.",
                 "Advertisement", "Skip to main content", "Previous post", "Next post", "Loading...", "Show more")


def nav_items(rng: random.Random, k: int = 6) -> list[str]:
    return rng.sample(NAV_ITEMS, k)


def cookie_banner(rng: random.Random) -> str:
    return rng.choice(_COOKIE_BANNERS)


def footer_lines(rng: random.Random, site: str = "Example", year: int = 2024) -> list[str]:
    return [f"© {year} {site}. All rights reserved."] + rng.sample(_FOOTER_LINES, 5)


def boilerplate_lines(rng: random.Random) -> list[str]:
    """20-40 short lines of site chrome: menu entries, a cookie banner, share widgets, footer links."""
    lines = nav_items(rng, rng.randint(6, 12)) + [cookie_banner(rng)]
    lines += rng.sample(_WIDGET_LINES, rng.randint(6, 12))
    lines += footer_lines(rng)
    while len(lines) < 20:
        lines.append(rng.choice(_WIDGET_LINES))
    rng.shuffle(lines)
    return lines


@lru_cache(maxsize=1)
def _offensive_vocabulary() -> tuple[str, ...]:
    import numpy as np
    from profanity_check.profanity_check import model, vectorizer  # the package loads its model on import

    # The model is a calibrated LinearSVC ensemble; the mean coefficient says how much a word pushes to "offensive".
    coef = np.mean([c.estimator.coef_[0] for c in model.calibrated_classifiers_], axis=0)
    vocab = vectorizer.get_feature_names_out()
    order = np.argsort(-coef, kind="stable")
    return tuple(str(vocab[i]) for i in order[:500] if coef[i] > 0 and str(vocab[i]).isalpha())


def offensive_words(k: int = 40) -> list[str]:
    """The k words with the largest positive weights in alt-profanity-check's shipped linear model."""
    return list(_offensive_vocabulary()[:k])


def offensive_text(rng: random.Random, n_paragraphs: int = 4, rate: float = 0.12, k: int = 40) -> str:
    """Ordinary English prose with words from `offensive_words(k)` inserted after about `rate` of its words."""
    vocab = offensive_words(k)
    paras = []
    for p in english_paragraphs(rng, n_paragraphs):
        out = []
        for w in p.split():
            out.append(w)
            if rng.random() < rate:
                out.append(rng.choice(vocab))
        paras.append(" ".join(out))
    return "\n\n".join(paras)


_TOKEN_RE = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """The word sequence shingles are taken over: lower-cased runs of word characters."""
    return _TOKEN_RE.findall(text.lower())


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    """The set of n-word shingles of `text` (a text shorter than n words is one shingle)."""
    w = words(text)
    if len(w) < n:
        return {tuple(w)} if w else set()
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def jaccard(a: set, b: set) -> float:
    """|a & b| / |a | b| (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


_set_jaccard = jaccard  # near_duplicate's `jaccard` argument shadows the function


_EDITABLE = re.compile(r"([^\W\d_]+)([,.;:!?]?)")


def near_duplicate(text: str, jaccard: float, rng: random.Random, ngram: int = 5, lang: str = "en") -> str:
    """A variant of `text` whose exact `ngram`-shingle Jaccard with `text` is as close to `jaccard` as word edits allow.

    Edits are word substitutions (70%), deletions and insertions (new words drawn from `lang`'s vocabulary)
    at random word positions; paragraph breaks are kept. Meant for space-separated text. The number of edits
    is found by bisection on the exact Jaccard, so the result is usually within 0.005 of the target (at most
    ~0.016 seen) for texts of a few hundred words. Measure the value reached with
    `jaccard(shingles(text), shingles(variant))`.
    """
    if not 0.0 <= jaccard <= 1.0:
        raise ValueError(f"jaccard must be in [0, 1], got {jaccard}")
    tokens = re.split(r"(\s+)", text)
    editable = [i for i in range(0, len(tokens), 2) if _EDITABLE.fullmatch(tokens[i])]
    rng.shuffle(editable)
    fillers = sample_words(lang, rng, len(editable))
    ops = [("replace" if r < 0.7 else "delete" if r < 0.85 else "insert") for r in
           (rng.random() for _ in editable)]
    original = shingles(text, ngram)

    def variant(k: int) -> str:
        out = list(tokens)
        for pos, op, filler in zip(editable[:k], ops[:k], fillers[:k]):
            core, punct = _EDITABLE.fullmatch(tokens[pos]).groups()
            if op == "replace":
                new = filler.capitalize() if core[:1].isupper() else filler
                out[pos] = new + punct
            elif op == "delete":
                out[pos] = punct  # keeps sentence punctuation; the word itself disappears
            else:
                out[pos] = core + " " + filler + punct
        return re.sub(r"[ \t]+([,.;:!?])", r"\1", re.sub(r"[ \t]{2,}", " ", "".join(out)))

    def score(k: int) -> float:
        return _set_jaccard(original, shingles(variant(k), ngram))

    lo, hi = 0, len(editable)
    while hi - lo > 1:  # J(k) falls as k grows; find the k where it crosses the target
        mid = (lo + hi) // 2
        if score(mid) >= jaccard:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda k: abs(score(k) - jaccard))
    return variant(best)
