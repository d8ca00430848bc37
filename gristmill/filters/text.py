"""Word and sentence splitting for the heuristic rules, with the `re` module only (no NLP library).

The published rules count "words" and "sentences". The reference implementation (datatrove) uses spaCy's blank
English tokenizer and sentencizer; this module re-implements spaCy's algorithm (split on whitespace, peel
prefixes and suffixes, split infixes) with a subset of its English rules (spaCy 3.8's character classes):
punctuation split off as its own token, "don't" -> "do" "n't", "it's" -> "it" "'s", hyphens between letters of any
script split, icons (emoji, "°") split off anywhere, "e.g.", "U.S.", "Mr." and URLs kept whole. Chunks are
memoized, so repeated words cost one dictionary lookup, and so are the token lists of the latest documents, which
each filter of a chain asks for in turn.
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# Sentence terminals as the reference implementation uses them (datatrove 0.10, as code points). spaCy's
# sentencizer (Sentencizer.default_punct_chars) ends sentences, so C4's sentence count uses these:
_SENTENCE_TERMINALS = (
    0x21, 0x2E, 0x3F, 0x589, 0x61F, 0x6D4, 0x700, 0x701, 0x702, 0x7F9, 0x964, 0x965, 0x104A, 0x104B, 0x1362, 0x1367,
    0x1368, 0x166E, 0x1735, 0x1736, 0x1803, 0x1809, 0x1944, 0x1945, 0x1AA8, 0x1AA9, 0x1AAA, 0x1AAB, 0x1B5A, 0x1B5B,
    0x1B5E, 0x1B5F, 0x1C3B, 0x1C3C, 0x1C7E, 0x1C7F, 0x203C, 0x203D, 0x2047, 0x2048, 0x2049, 0x2E2E, 0x2E3C, 0x3002,
    0xA4FF, 0xA60E, 0xA60F, 0xA6F3, 0xA6F7, 0xA876, 0xA877, 0xA8CE, 0xA8CF, 0xA92F, 0xA9C8, 0xA9C9, 0xAA5D, 0xAA5E,
    0xAA5F, 0xAAF0, 0xAAF1, 0xABEB, 0xFE52, 0xFE56, 0xFE57, 0xFF01, 0xFF0E, 0xFF1F, 0xFF61, 0x10A56, 0x10A57,
    0x11047, 0x11048, 0x110BE, 0x110BF, 0x110C0, 0x110C1, 0x11141, 0x11142, 0x11143, 0x111C5, 0x111C6, 0x111CD,
    0x111DE, 0x111DF, 0x11238, 0x11239, 0x1123B, 0x1123C, 0x112A9, 0x1144B, 0x1144C, 0x115C2, 0x115C3, 0x115C9,
    0x115CA, 0x115CB, 0x115CC, 0x115CD, 0x115CE, 0x115CF, 0x115D0, 0x115D1, 0x115D2, 0x115D3, 0x115D4, 0x115D5,
    0x115D6, 0x115D7, 0x11641, 0x11642, 0x1173C, 0x1173D, 0x1173E, 0x11A42, 0x11A43, 0x11A9B, 0x11A9C, 0x11C41,
    0x11C42, 0x16A6E, 0x16A6F, 0x16AF5, 0x16B37, 0x16B38, 0x16B44, 0x1BC9F, 0x1DA88,
)
SENTENCE_TERMINALS = frozenset(map(chr, _SENTENCE_TERMINALS))
# datatrove's TERMINAL_PUNCTUATION, a slightly larger set: FineWeb's line-end characters.
_TERMINAL_PUNCTUATION = (
    0x21, 0x2E, 0x3F, 0x589, 0x61D, 0x61E, 0x61F, 0x6D4, 0x700, 0x701, 0x702, 0x7F9, 0x837, 0x839, 0x83D, 0x83E,
    0x964, 0x965, 0x104A, 0x104B, 0x1362, 0x1367, 0x1368, 0x166E, 0x1735, 0x1736, 0x17D4, 0x17D5, 0x17D6, 0x17D9,
    0x17DA, 0x1803, 0x1809, 0x1944, 0x1945, 0x1AA8, 0x1AA9, 0x1AAA, 0x1AAB, 0x1B5A, 0x1B5B, 0x1B5E, 0x1B5F, 0x1B7D,
    0x1B7E, 0x1C3B, 0x1C3C, 0x1C7E, 0x1C7F, 0x203C, 0x203D, 0x2047, 0x2048, 0x2049, 0x2E2E, 0x2E3C, 0x2E53, 0x2E54,
    0x3002, 0xA4FF, 0xA60E, 0xA60F, 0xA6F3, 0xA6F7, 0xA876, 0xA877, 0xA8CE, 0xA8CF, 0xA92F, 0xA9C8, 0xA9C9, 0xAA5D,
    0xAA5E, 0xAA5F, 0xAAF0, 0xAAF1, 0xABEB, 0xFE52, 0xFE56, 0xFE57, 0xFF01, 0xFF0E, 0xFF1F, 0xFF61, 0x10A56,
    0x10A57, 0x10F55, 0x10F56, 0x10F57, 0x10F58, 0x10F59, 0x10F86, 0x10F87, 0x10F88, 0x10F89, 0x11047, 0x11048,
    0x110BE, 0x110BF, 0x110C0, 0x110C1, 0x11141, 0x11142, 0x11143, 0x111C5, 0x111C6, 0x111CD, 0x111DE, 0x111DF,
    0x11238, 0x11239, 0x1123B, 0x1123C, 0x112A9, 0x1144B, 0x1144C, 0x115C2, 0x115C3, 0x115C9, 0x115CA, 0x115CB,
    0x115CC, 0x115CD, 0x115CE, 0x115CF, 0x115D0, 0x115D1, 0x115D2, 0x115D3, 0x115D4, 0x115D5, 0x115D6, 0x115D7,
    0x11641, 0x11642, 0x1173C, 0x1173D, 0x1173E, 0x11944, 0x11946, 0x11A42, 0x11A43, 0x11A9B, 0x11A9C, 0x11C41,
    0x11C42, 0x11EF7, 0x11EF8, 0x11F43, 0x11F44, 0x16A6E, 0x16A6F, 0x16AF5, 0x16B37, 0x16B38, 0x16B44, 0x16E98,
    0x1BC9F, 0x1DA88,
)
TERMINAL_PUNCTUATION = frozenset(map(chr, _TERMINAL_PUNCTUATION))
# datatrove's PUNCTUATION_SET (CCNet's punctuation list, control characters, the terminals above): a Gopher
# "symbol" token is made only of these. It is narrower than Unicode's P*/S* categories: '•', '·' or '×' are words.
SYMBOL_CHARS = frozenset(
    '!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„\';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_."}►»'
    + "".join(map(chr, [*range(0, 9), *range(11, 32), *range(127, 160)]))
) | TERMINAL_PUNCTUATION

# Abbreviations that keep their final period (a subset of spaCy's English exceptions).
_ABBREVIATIONS = frozenset(
    "Mr. Mrs. Ms. Dr. St. Jr. Sr. Prof. Gen. Gov. Sen. Rep. Rev. Capt. Col. Lt. Sgt. Mt. Inc. Ltd. Co. Corp. vs. "
    "Jan. Feb. Mar. Apr. Jun. Jul. Aug. Sep. Sept. Oct. Nov. Dec. Ala. Ariz. Ark. Calif. Colo. Conn. Del. Fla. "
    "Ga. Ill. Ind. Kan. Ky. La. Md. Mass. Mich. Minn. Miss. Mo. Neb. Nev. Okla. Ore. Pa. Tenn. Va. Wash. Wis. "
    "a.m. p.m. e.g. i.e. E.g. I.e. Ph.D. co.".split()
)
# Contractions written without an apostrophe, which spaCy's English exceptions split ("dont" -> "do" "nt").
_BARE_CONTRACTIONS = {
    "cannot": ("can", "not"), "dont": ("do", "nt"), "cant": ("ca", "nt"), "wont": ("wo", "nt"), "isnt": ("is", "nt"),
    "arent": ("are", "nt"), "wasnt": ("was", "nt"), "werent": ("were", "nt"), "didnt": ("did", "nt"),
    "doesnt": ("does", "nt"), "hasnt": ("has", "nt"), "havent": ("have", "nt"), "hadnt": ("had", "nt"),
    "couldnt": ("could", "nt"), "shouldnt": ("should", "nt"), "wouldnt": ("would", "nt"), "mustnt": ("must", "nt"),
    "neednt": ("need", "nt"), "aint": ("ai", "nt"), "im": ("i", "m"), "id": ("i", "d"), "ive": ("i", "ve"),
    "youre": ("you", "re"), "youve": ("you", "ve"), "youll": ("you", "ll"), "youd": ("you", "d"), "hes": ("he", "s"),
    "shes": ("she", "s"), "theyre": ("they", "re"), "theyve": ("they", "ve"), "theyll": ("they", "ll"),
    "theyd": ("they", "d"), "wed": ("we", "d"), "weve": ("we", "ve"), "gonna": ("gon", "na"), "gotta": ("got", "ta"),
    "whats": ("what", "s"), "thats": ("that", "s"), "theres": ("there", "s"), "whos": ("who", "s"),
    "hows": ("how", "s"), "wheres": ("where", "s"),
}
_SPECIAL = _BARE_CONTRACTIONS | {k.capitalize(): (v[0].capitalize(),) + v[1:] for k, v in _BARE_CONTRACTIONS.items()}
_SPECIAL["and/or"] = ("and/or",)
_SPECIAL["''"] = ("''",)
# spaCy's English emoticon exceptions: pieces split off by the affix rules are merged back ("(see x):" -> "):").
_EMOTICONS = frozenset(r"""
(*_*) (-: (-; (-_-) (._.) (: (; (= (>_<) (^_^) (¬_¬) )-: ): -_- -__- ._. 8) 8-) :'( :') :'-( :'-) :( :(( :(((
:() :) :)) :))) :* :-( :-(( :-((( :-) :-)) :-))) :-* :-/ :-> :-] :-| :-} :/ :0 :1 :3 :> :D :O :P :X :] :o :o)
:p :x :| :} :’( :’) :’-( :’-) ;) ;-) ;_; <.< =( =) =/ =[ =] =| >.< >.> >:( ><(((*> @_@ XD [-: [: [= ]= ^_^
^__^ ^___^ xD <3
""".split())
# spaCy 3.8's char_classes.ALPHA as code point ranges: the letters its affix rules look at (Latin, Cyrillic,
# Greek, Hebrew, Arabic, Indic, Hangul, Kana, CJK, ...). Lower and upper add the uncased scripts to both, as there.
_ALPHA_RANGES = (
    (0x41, 0x5A), (0x61, 0x7A), (0xC0, 0xD6), (0xD8, 0xF6), (0xF8, 0x1BF), (0x1C4, 0x2AF), (0x386, 0x386),
    (0x388, 0x38A), (0x38C, 0x38C), (0x38E, 0x38F), (0x391, 0x3A9), (0x3AC, 0x3AF), (0x3B1, 0x3C9), (0x3CC, 0x3CE),
    (0x400, 0x401), (0x403, 0x40A), (0x40C, 0x40D), (0x410, 0x451), (0x453, 0x45A), (0x45C, 0x45D), (0x490, 0x491),
    (0x496, 0x497), (0x4A2, 0x4A3), (0x4AE, 0x4AF), (0x4BA, 0x4BB), (0x4D8, 0x4D9), (0x4E8, 0x4E9), (0x591, 0x5F4),
    (0x620, 0x64A), (0x66E, 0x6D5), (0x6E5, 0x6FF), (0x750, 0x77F), (0x8A0, 0x8BD), (0x900, 0x9FF), (0xB80, 0xCFF),
    (0xD80, 0xDFF), (0x1100, 0x137F), (0x1D00, 0x1D25), (0x1D6B, 0x1D77), (0x1D79, 0x1D9A), (0x1E00, 0x1EFF),
    (0x2C60, 0x2C7B), (0x2C7E, 0x2C7F), (0x2E80, 0x2FDF), (0x2FF0, 0x30FF), (0x31C0, 0x31EF), (0x3200, 0x4DBF),
    (0x4E00, 0x9FFF), (0xA722, 0xA76F), (0xA771, 0xA787), (0xA78B, 0xA78E), (0xA790, 0xA7B9), (0xA7FA, 0xA7FA),
    (0xAB30, 0xAB5A), (0xAB60, 0xAB64), (0xAC00, 0xD7AF), (0xF900, 0xFAFF), (0xFB1D, 0xFBB1), (0xFBD3, 0xFD3D),
    (0xFD50, 0xFDC7), (0xFDF0, 0xFDFB), (0xFE30, 0xFE4F), (0xFE70, 0xFEFC), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A),
    (0x1EE00, 0x1EEBB), (0x1F200, 0x1F2FF), (0x20000, 0x2A6DF), (0x2A700, 0x2EBEF), (0x2F800, 0x2FA1F),
)


def _char_class(ranges) -> str:
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)


def _alpha_class(keep=None) -> str:
    """A regex class of the ALPHA code points (those `keep` accepts)."""
    if keep is None:
        return _char_class(_ALPHA_RANGES)
    out: list[list[int]] = []
    for a, b in _ALPHA_RANGES:
        for cp in range(a, b + 1):
            if keep(chr(cp)):
                if out and out[-1][1] == cp - 1:
                    out[-1][1] = cp
                else:
                    out.append([cp, cp])
    return _char_class(out)


_QUOTES = "'\"”“`‘´’‚„»«「」『』（）〔〕【】《》〈〉⟦⟧"
_PUNCT = "…,:;!?¿؟¡()[]{}<>_#*&。？！，、；：～·।،۔؛٪"
_CURRENCY = "$£€¥฿₽﷼₴₠₡₢₣₤₥₦₧₨₩₪₫₭₮₯₰₱₲₳₵₶₷₸₹₺₻₼₾₿"
_PREFIX_CHARS = frozenset(_QUOTES + _PUNCT + _CURRENCY + "§%=—–")
_SUFFIX_CHARS = frozenset(_QUOTES + _PUNCT + "—–")
# spaCy 3.8's units (its list runs "тб" and "كم" together, so neither is a unit alone), currencies, and am/pm
# (English exceptions such as "5pm"); a suffix after a digit.
_UNITS = ("km|km²|km³|m|m²|m³|dm|dm²|dm³|cm|cm²|cm³|mm|mm²|mm³|ha|µm|nm|yd|in|ft|kg|g|mg|µg|t|lb|oz|m/s|km/h|kmh|"
          "mph|hPa|Pa|mbar|mb|MB|kb|KB|gb|GB|tb|TB|T|G|M|K|%|км|км²|км³|м|м²|м³|дм|дм²|дм³|см|см²|см³|мм|мм²|мм³|нм|"
          "кг|г|мг|м/с|км/ч|кПа|Па|мбар|Кб|КБ|кб|Мб|МБ|мб|Гб|ГБ|гб|Тб|ТБ|тбكم|كم²|كم³|م|م²|م³|سم|سم²|سم³|مم|مم²|مم³|كم|"
          r"غرام|جرام|جم|كغ|ملغ|كوب|اكواب|US\$|C\$|A\$|[$£€¥฿₽﷼₴₠-₿]|am|pm")
_UNIT_SUFFIX = re.compile(rf"(?<=[0-9])(?:{_UNITS})$")
_CLITIC_SUFFIX = re.compile(r"(?:(?<=[^\W_])[nN]['’][tT]|['’](?:s|S|m|M|d|D|ll|LL|re|RE|ve|VE))$")
_PERIOD_AFTER = frozenset("%²-+'\"”“`‘´’…,:;!?¿؟¡()[]{}<>_#*&。？！，、；：～·।،۔؛٪")
_URL = re.compile(r"^(?:https?://|ftp://|www\.)\S+?(?=[.,;:!?)\]}'\"’”]*$)")


@lru_cache(maxsize=None)
def _infix_pattern() -> re.Pattern:
    """spaCy's English infixes (icons apart). Built on first use: the case classes take ~0.1 s to derive."""
    a, q = _alpha_class(), re.escape(_QUOTES)
    lower, upper = _alpha_class(lambda c: not c.isupper()), _alpha_class(lambda c: not c.islower())
    return re.compile(
        r"\.\.+|…"
        r"|(?<=[0-9])[+\-*^](?=[0-9-])"
        rf"|(?<=[{lower}{q}])\.(?=[{upper}{q}])"
        rf"|(?<=[{a}]),(?=[{a}])"
        rf"|(?<=[{a}0-9])(?:---|--|——|-|–|—|~)(?=[{a}])"
        rf"|(?<=[{a}0-9])[:<>=/](?=[{a}])"
    )


_INITIALISM = re.compile(r"(?:[^\W\d_]\.){2,}|[a-zA-Z]\.")
_ELLIPSIS_PREFIX = re.compile(r"^(?:\.\.+|…)")
_ELLIPSIS_SUFFIX = re.compile(r"(?:\.\.+|…)$")


def _is_icon(c: str) -> bool:
    """spaCy's icons (emoji, dingbats, '°', '©'): Unicode's other symbols, split off wherever they stand."""
    return unicodedata.category(c) == "So"


def _period_suffix(chunk: str) -> bool:
    """A final period splits off after a lowercase or uncased letter (any script), a digit, some symbols, or two
    capitals."""
    if len(chunk) < 2 or chunk[-1] != ".":
        return False
    prev = chunk[-2]
    return ((prev.isalpha() and not prev.isupper()) or prev.isdigit() or prev in _PERIOD_AFTER
            or (len(chunk) > 2 and (prev.isupper() and chunk[-3].isupper() or chunk[-3] == "°" and prev in "FfCcKk")))


def _split_chunk(chunk: str, out: list[str]) -> None:
    """spaCy's affix algorithm on one whitespace-free chunk: peel prefixes, then suffixes, then split infixes."""
    suffixes: list[str] = []
    while chunk:
        if chunk in _ABBREVIATIONS:
            out.append(chunk)
            chunk = ""
            break
        # "U.S.", "X.Y.Z." stay whole; after a lowercase letter spaCy's suffix rule splits the period ("a.k.a" ".").
        if _INITIALISM.fullmatch(chunk) and (len(chunk) == 2 or not _period_suffix(chunk)):
            break
        if chunk in _SPECIAL:
            out.extend(_SPECIAL[chunk])
            chunk = ""
            break
        if len(chunk) > 2 and chunk.startswith("''"):
            out.append("''")
            chunk = chunk[2:]
            continue
        if len(chunk) > 2 and chunk.endswith("''"):
            suffixes.append("''")
            chunk = chunk[:-2]
            continue
        m = _URL.match(chunk)
        if m:
            out.append(m.group())
            chunk = chunk[m.end():]
            suffixes.extend(reversed(chunk))
            chunk = ""
            break
        m = _ELLIPSIS_PREFIX.match(chunk)
        if m and len(chunk) > m.end():
            out.append(m.group())
            chunk = chunk[m.end():]
            continue
        c = chunk[0]
        if len(chunk) > 1 and (c in _PREFIX_CHARS or _is_icon(c) or (c == "+" and not chunk[1].isdigit())):
            out.append(c)
            chunk = chunk[1:]
            continue
        m = _ELLIPSIS_SUFFIX.search(chunk) or _CLITIC_SUFFIX.search(chunk) or _UNIT_SUFFIX.search(chunk)
        if m is None and _period_suffix(chunk):
            suffixes.append(".")
            chunk = chunk[:-1]
            continue
        if m and m.start() > 0:
            suffixes.append(m.group())
            chunk = chunk[:m.start()]
            continue
        c = chunk[-1]
        if len(chunk) > 1 and (c in _SUFFIX_CHARS or _is_icon(c)):
            suffixes.append(c)
            chunk = chunk[:-1]
            continue
        break
    if chunk:
        start = 0
        for i, c in enumerate(chunk):  # icons are infixes too; no other infix rule looks across one
            if _is_icon(c):
                _split_infixes(chunk[start:i], out)
                out.append(c)
                start = i + 1
        _split_infixes(chunk[start:], out)
    out.extend(reversed(suffixes))


def _split_infixes(chunk: str, out: list[str]) -> None:
    if chunk:
        pos = 0
        for m in _infix_pattern().finditer(chunk):
            if m.start() > pos:
                out.append(chunk[pos:m.start()])
            if m.end() > m.start():
                out.append(m.group())
            pos = m.end()
        if pos < len(chunk):
            out.append(chunk[pos:])


@lru_cache(maxsize=1 << 17)
def _chunk_tokens(chunk: str) -> tuple[str, ...]:
    out: list[str] = []
    _split_chunk(chunk, out)
    if len(out) < 2:
        return tuple(out)
    merged: list[str] = []
    i = 0
    while i < len(out):
        # spaCy's special cases include every ASCII letter with a period ("m."), and its matcher re-merges one
        # split off inside a chunk: "im." -> "i" "m.", "a-b." -> "a" "-" "b."; its "°C." case keeps "C" "." apart.
        if (i + 1 < len(out) and out[i + 1] == "." and len(out[i]) == 1 and out[i].isascii() and out[i].isalpha()
                and not (i and out[i - 1] == "°" and out[i] in "FfCcKk")):
            merged.append(out[i] + ".")
            i += 2
            continue
        for k in (3, 2):
            if i + k <= len(out) and "".join(out[i:i + k]) in _EMOTICONS:
                merged.append("".join(out[i:i + k]))
                i += k
                break
        else:
            merged.append(out[i])
            i += 1
    return tuple(merged)


# The filters of a chain tokenize the same document in turn (Gopher's two, FineWeb), a batch or two apart: the token
# lists of the latest 1,024 texts are kept. Texts over 32k characters are left out, to bound the memory held.
_TEXT_CACHE_SIZE = 1024
_TEXT_CACHE_MAX_CHARS = 1 << 15


def split_words(text: str) -> list[str]:
    """Word and punctuation tokens of `text` (whitespace dropped)."""
    if len(text) <= _TEXT_CACHE_MAX_CHARS:
        return list(_text_tokens(text))
    return _split_words(text)


@lru_cache(maxsize=_TEXT_CACHE_SIZE)
def _text_tokens(text: str) -> tuple[str, ...]:
    return tuple(_split_words(text))


def _split_words(text: str) -> list[str]:
    out: list[str] = []
    for chunk in text.split():
        if chunk.isalpha() and chunk not in _SPECIAL:  # no affix or infix rule can apply
            out.append(chunk)
        else:
            out.extend(_chunk_tokens(chunk))
    return out


def is_punct(token: str) -> bool:
    """True when every character is Unicode punctuation (category P*), as spaCy's is_punct."""
    return all(unicodedata.category(c)[0] == "P" for c in token)


_is_punct = lru_cache(maxsize=1 << 16)(is_punct)


def count_sentences(text: str) -> int:
    """Sentences in `text`: a new one starts at the first non-punctuation token after a sentence terminal."""
    if SENTENCE_TERMINALS.isdisjoint(text):  # no terminal token is possible; every chunk gives a token
        return 0 if not text or text.isspace() else 1
    n, seen_terminal = 1, False
    for tok in _split_words(text):  # C4 counts line by line: lines would crowd the documents out of the cache
        if tok in SENTENCE_TERMINALS:
            seen_terminal = True
        elif seen_terminal and not _is_punct(tok):
            n += 1
            seen_terminal = False
    return n


@lru_cache(maxsize=1 << 17)
def is_symbol_token(token: str) -> bool:
    """A token made only of punctuation and control characters (datatrove's PUNCTUATION_SET)."""
    return all(c in SYMBOL_CHARS for c in token)
