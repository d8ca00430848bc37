"""Encoding documents to token ids and packing them into fixed-length sequences in a fixed order.

The steps are plain functions so the Beam stage (gristmill.tokenize.stages) and the local command share
them and produce byte-identical shards:
    encode      DocumentEncoder: batch encoding, huge documents cut at safe points
    assign      validation split and order keys, pure functions of (seed, doc id, copy)
    pack        a bucket's documents, sorted by order key, concatenated with EOS and cut into rows
    finalize    temporary bucket files renamed to train-00000.arrow ..., manifest.json written
"""
from __future__ import annotations

import bisect
import hashlib
import json
import math
import re
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

import numpy as np

from gristmill.errors import UserError
from gristmill.pipeline import fs
from gristmill.tokenize import shards
from gristmill.tokenize.train import TokenizerInfo, load_tokenizer, read_tokenizer_json, token_byte_lengths

# Documents longer than this are cut into pieces for encoding: bounded memory per call, and the pieces
# of one huge document are encoded in parallel.
CHUNK_CHARS = 1 << 16
# Characters per encode_batch call: big enough for the tokenizer's thread pool to stay busy.
BATCH_CHARS = 1 << 20
BATCH_DOCS = 4096
TMP_DIR = ".tmp"


@dataclass(frozen=True)
class TokenizeConfig:
    """How documents become shards. `shard_bytes` is the target size of one Arrow file. `buckets` is the
    number of buckets of the train split (the validation split gets that times validation_fraction,
    rounded up): the unit of sorting, packing and memory on one worker. A bucket is written as as many
    shards of at most `shard_bytes` as its size needs."""

    seq_len: int = 2048
    shard_bytes: int = 128 << 20
    validation_fraction: float = 0.01
    domain: str = "web"
    buckets: int = 8

    def __post_init__(self):
        if self.seq_len < 2:
            raise UserError(f"seq_len must be at least 2, not {self.seq_len}")
        if self.shard_bytes < 4 * self.seq_len:
            raise UserError(f"shard_bytes ({self.shard_bytes}) must hold at least one sequence ({4 * self.seq_len} bytes)")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise UserError(f"validation_fraction must be in [0, 1), not {self.validation_fraction}")
        if self.buckets < 1:
            raise UserError(f"buckets must be at least 1, not {self.buckets}")


_SURROGATE = re.compile("[\ud800-\udfff]")


# A candidate cut is confirmed by pre-tokenizing this many characters on each side of it.
BOUNDARY_WINDOW = 64
# Candidates of one kind refused by the pre-tokenizer before the next kind is tried (bounds the cost).
MAX_REFUSED = 16
# Positions tried one by one before a hard cut, where the check is exact anywhere (vocabulary_check).
HARD_SEARCH = 256


def split_text(text: str, chunk_chars: int = CHUNK_CHARS,
               is_boundary: Callable[[str, int, int], bool] | None = None, anywhere: bool = False) -> list[str]:
    """Cut a long text into pieces of at most `chunk_chars` whose encodings concatenate to the text's.

    Cut points, tried in this order from the top of the window [chunk_chars / 2, chunk_chars) down: just
    before a single space between two non-space characters, then just before a single newline between two,
    then (only with `is_boundary`) just after a newline run, before a non-space character. For the byte-level
    GPT-2 regex the first two are always pre-token boundaries (a pre-token holds a space only at its start,
    and the regex has no look-behind), so cutting there leaves the tokens unchanged. Other regexes differ:
    Llama 3's and Qwen's keep a newline with the punctuation before it. So `is_boundary(text, piece_start,
    pos)`, when given, confirms each candidate with the tokenizer's own pre-tokenizer (boundary_check) or,
    for a tokenizer that takes the whole text as one pre-token, with its vocabulary (vocabulary_check); a
    refused one is passed over. With `anywhere` (the vocabulary check, which is exact at any position) the
    last HARD_SEARCH positions of the window are tried one by one before cutting hard. A piece with no
    usable point is cut hard; byte-level tokens still decode to exactly the original bytes, and only the
    tokens at the cut can differ.
    """
    if len(text) <= chunk_chars:
        return [text]
    pieces = []
    start = 0
    n = len(text)
    while n - start > chunk_chars:
        cut = _cut_point(text, start, start + chunk_chars // 2, start + chunk_chars, is_boundary, anywhere)
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def _cut_point(text: str, start: int, lo: int, hi: int, is_boundary, anywhere: bool) -> int:
    for sep in (" ", "\n"):
        refused = 0
        pos = text.rfind(sep, lo, hi)
        while pos > lo and refused < MAX_REFUSED:
            if not (text[pos - 1].isspace() or text[pos + 1].isspace()):
                if is_boundary is None or is_boundary(text, start, pos):
                    return pos
                refused += 1
            pos = text.rfind(sep, lo, pos)
    if is_boundary is not None:
        refused = 0
        pos = text.rfind("\n", lo, hi - 1)
        while pos > lo and refused < MAX_REFUSED:
            after = pos + 1
            if not text[after].isspace():
                if is_boundary(text, start, after):
                    return after
                refused += 1
            pos = text.rfind("\n", lo, pos)
        if anywhere:
            for pos in range(hi, max(lo, hi - HARD_SEARCH), -1):
                if is_boundary(text, start, pos):
                    return pos
    return hi


def boundary_check(pre_tokenizer) -> Callable[[str, int, int], bool] | None:
    """is_boundary for split_text from a tokenizer's pre-tokenizer: whether a pre-token starts at `pos` when
    the text around it (from the piece start at most BOUNDARY_WINDOW before) is pre-tokenized. None when
    there is no pre-tokenizer, or one that does not split text at spaces (Metaspace with split=False): the
    whole text is then one pre-token, and vocabulary_check confirms the cuts instead."""
    if pre_tokenizer is None or len(pre_tokenizer.pre_tokenize_str("a b c")) < 2:
        return None

    def is_boundary(text: str, start: int, pos: int) -> bool:
        a = max(start, pos - BOUNDARY_WINDOW)
        window = text[a : pos + BOUNDARY_WINDOW]
        return any(a + s == pos for _, (s, _) in pre_tokenizer.pre_tokenize_str(window))

    return is_boundary


def vocabulary_check(tokenizer_json: bytes, tok) -> Callable[[str, int, int], bool] | None:
    """is_boundary for split_text from a tokenizer that takes the whole text as one pre-token (no
    pre-tokenizer, as in the older Llama 2 layout, or Metaspace with split=False): whether no token of the
    vocabulary spans `pos` in the text as the model sees it (normalized, with `▁` for spaces).

    Exact for BPE: a merge only ever forms a vocabulary token, so when none spans the point the merges on
    either side never meet, and the whole text's tokens are the two pieces' tokens. Exact for Unigram too:
    every segmentation has a boundary there, so the best one is the best of each side joined. Also refused:
    a point between two unknown characters (they fuse into one <unk> without byte fallback), one where
    normalizing the two sides apart differs from normalizing them together, and, with BPE's ignore_merges,
    one before a last piece short enough to be one vocabulary token. `tokenizer_json` is the tokenizer
    without its prefix (without_prefix), as the pieces after the first are encoded, and `tok` that tokenizer
    loaded. None for other models (WordPiece, BPE with dropout or a subword prefix or suffix), whose cuts stay
    unconfirmed."""
    spec = json.loads(tokenizer_json)
    model = spec.get("model") or {}
    kind = model.get("type")
    if kind == "BPE":
        if model.get("dropout") or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
            return None
        fuse_unk = bool(model.get("fuse_unk")) and not model.get("byte_fallback")
    elif kind == "Unigram":
        fuse_unk = not model.get("byte_fallback")
    else:
        return None
    normalizer, pre_tokenizer = tok.normalizer, tok.pre_tokenizer
    vocab = set(tok.get_vocab(with_added_tokens=False))
    longest = max(map(len, vocab), default=1)
    reach = longest - 1  # characters a spanning token can take on each side
    window = max(BOUNDARY_WINDOW, longest)
    ignore_merges = kind == "BPE" and bool(model.get("ignore_merges"))
    ordered = sorted(vocab)

    def starts_a_token(s: str) -> bool:
        k = bisect.bisect_left(ordered, s)
        return k < len(ordered) and ordered[k].startswith(s)

    def model_text(s: str) -> str | None:
        if normalizer is not None:
            s = normalizer.normalize_str(s)
        if pre_tokenizer is not None:
            split = pre_tokenizer.pre_tokenize_str(s)
            if len(split) != 1:
                return None
            s = split[0][0]
        return s

    def is_boundary(text: str, start: int, pos: int) -> bool:
        if ignore_merges and len(text) - pos <= longest:
            return False
        a, b = max(start, pos - window), min(len(text), pos + window)
        left, right, both = model_text(text[a:pos]), model_text(text[pos:b]), model_text(text[a:b])
        if not left or not right or left + right != both:  # None: the pre-tokenizer splits it
            return False
        if (len(left) < reach and a > start) or (len(right) < reach and b < len(text)):
            return False  # a normalizer that drops characters: the window may not hold a spanning token
        if fuse_unk and left[-1] not in vocab and right[0] not in vocab:
            return False
        for i in range(1, min(reach, len(left)) + 1):
            tail = left[-i:]
            if not starts_a_token(tail):
                continue
            for j in range(1, min(longest - i, len(right)) + 1):
                spanning = tail + right[:j]
                if not starts_a_token(spanning):
                    break
                if spanning in vocab:
                    return False
        return True

    return is_boundary


def without_prefix(tokenizer_json: bytes) -> bytes | None:
    """The tokenizer without the space it puts before each text (Llama 2 and Mistral's `Prepend("▁")`
    normalizer, Metaspace's prepend_scheme, ByteLevel's add_prefix_space), for encoding the pieces after the
    first of a cut document: with the prefix each would start with an extra space. None when it has none."""
    spec = json.loads(tokenizer_json)
    changed = False

    def strip(node):
        nonlocal changed
        if not isinstance(node, dict):
            return node
        kind = node.get("type")
        if kind == "Prepend":
            changed = True
            return None
        if kind == "Sequence":
            key = "normalizers" if "normalizers" in node else "pretokenizers"
            node[key] = [c for c in map(strip, node.get(key) or []) if c is not None]
        elif kind == "Metaspace":
            if node.get("prepend_scheme", "never") != "never":
                node["prepend_scheme"], changed = "never", True
            if node.get("add_prefix_space"):
                node["add_prefix_space"], changed = False, True
        elif kind == "ByteLevel" and node.get("add_prefix_space"):
            node["add_prefix_space"], changed = False, True
        return node

    spec["normalizer"] = strip(spec.get("normalizer"))
    spec["pre_tokenizer"] = strip(spec.get("pre_tokenizer"))
    return json.dumps(spec).encode("utf-8") if changed else None


def clean_text(text: str) -> tuple[str, bool]:
    """Replace lone surrogates (valid in JSON, not in UTF-8) by U+FFFD; returns (text, changed)."""
    if text.isascii():
        return text, False
    try:
        text.encode("utf-8")
        return text, False
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text), True


class DocumentEncoder:
    """A loaded tokenizer plus batch encoding of whole documents to int32 id arrays."""

    def __init__(self, tokenizer: str | bytes, chunk_chars: int = CHUNK_CHARS):
        self.tokenizer_json = read_tokenizer_json(tokenizer)
        self.tok, self.info = load_tokenizer(self.tokenizer_json)
        self.chunk_chars = chunk_chars
        self.byte_lengths = token_byte_lengths(self.tok)
        # encode_batch_fast skips offset tracking, which the shards do not need.
        self._encode_batch = _batch_encoder(self.tok)
        # A tokenizer that puts a space before each text encodes the later pieces of a cut document without it
        # (loaded when a document is first cut, or by the vocabulary check).
        self._rest_json = without_prefix(self.tokenizer_json)
        self._rest_tok = None
        self._encode_rest = None
        self._is_boundary = boundary_check(self.tok.pre_tokenizer)
        self._anywhere = False
        if self._is_boundary is None:  # the whole text is one pre-token: the vocabulary confirms the cuts
            self._is_boundary = vocabulary_check(self._rest_json or self.tokenizer_json, self._later_tokenizer())
            self._anywhere = self._is_boundary is not None

    def _later_tokenizer(self):
        """The tokenizer the pieces after a cut document's first are encoded with, loaded once."""
        if self._rest_json is None:
            return self.tok
        if self._rest_tok is None:
            self._rest_tok = load_tokenizer(self._rest_json)[0]
        return self._rest_tok

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        pieces: list[str] = []
        owner: list[int] = []
        later: list[int] = []  # indices of pieces after a document's first
        for k, text in enumerate(texts):
            for j, piece in enumerate(split_text(text, self.chunk_chars, self._is_boundary, self._anywhere)):
                if j:
                    later.append(len(pieces))
                pieces.append(piece)
                owner.append(k)
        if self._rest_json is None or not later:
            encodings = self._encode_batch(pieces, add_special_tokens=False)
        else:
            if self._encode_rest is None:
                self._encode_rest = _batch_encoder(self._later_tokenizer())
            is_later = set(later)
            first = [i for i in range(len(pieces)) if i not in is_later]
            encodings = [None] * len(pieces)
            for idx, encode in ((first, self._encode_batch), (later, self._encode_rest)):
                for i, enc in zip(idx, encode([pieces[i] for i in idx], add_special_tokens=False)):
                    encodings[i] = enc
        parts: list[list[np.ndarray]] = [[] for _ in texts]
        for k, enc in zip(owner, encodings):
            parts[k].append(np.array(enc.ids, dtype=np.int32))
        return [p[0] if len(p) == 1 else np.concatenate(p) for p in parts]

    def decode(self, ids) -> str:
        return self.tok.decode(list(map(int, ids)), skip_special_tokens=True)


def _batch_encoder(tok):
    return getattr(tok, "encode_batch_fast", tok.encode_batch)


def _hash64(*parts: Any) -> int:
    h = hashlib.blake2b(":".join(map(str, parts)).encode("utf-8", "surrogatepass"), digest_size=8)
    return struct.unpack(">Q", h.digest())[0]


def split_of(doc_id: str, seed: int, validation_fraction: float) -> str:
    """The split a document belongs to: a pure function of (seed, doc id), so it never changes between runs."""
    return "validation" if _hash64("split", seed, doc_id) < validation_fraction * 2.0**64 else "train"


def order_key(doc_id: str, seed: int, copy: int) -> int:
    """Where copy `copy` of a document goes: its bucket (key % buckets) and its place inside the bucket.
    Copies of one document get unrelated keys, so repeats are spread over the dataset."""
    return _hash64("order", seed, doc_id, copy)


class Piece(NamedTuple):
    """One copy of one encoded document on its way to packing."""

    key: int
    doc_id: str
    copy: int
    crc: int  # tie-break on content, for inputs that repeat a document id
    ids: np.ndarray

    def sort_key(self):
        return (self.key, self.doc_id, self.copy, self.crc)


def pieces_of(doc_id: str, ids: np.ndarray, repeats: int, seed: int, validation_fraction: float):
    """(split, Piece) for each copy to emit: `repeats` copies in train, one in validation (held-out
    text is measured once, not resampled)."""
    split = split_of(doc_id, seed, validation_fraction)
    copies = 1 if split == "validation" else repeats
    crc = zlib.crc32(ids)
    return split, [Piece(order_key(doc_id, seed, c), doc_id, c, crc, ids) for c in range(copies)]


def n_buckets(split: str, config: TokenizeConfig) -> int:
    """Buckets of a split: fixed by the config, not by the data, so a piece's bucket is known as soon as it
    is encoded (no pass over the totals first)."""
    if split == "validation":
        return max(1, math.ceil(config.buckets * config.validation_fraction))
    return config.buckets


def bucket_of(split: str, key: int, config: TokenizeConfig) -> int:
    return key % n_buckets(split, config)


def pack(pieces: list[Piece], seq_len: int, eos_id: int, pad_id: int, byte_lengths: np.ndarray):
    """Concatenate the pieces in order, each followed by EOS, and cut into rows of seq_len; the last row
    is filled with PAD. Returns (ids (n, seq_len) int32, doc_starts per row, n_bytes per row)."""
    lengths = np.fromiter((p.ids.size + 1 for p in pieces), dtype=np.int64, count=len(pieces))
    total = int(lengths.sum())
    rows = math.ceil(total / seq_len)
    flat = np.full(rows * seq_len, pad_id, dtype=np.int32)
    starts = np.zeros(len(pieces), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    for p, s in zip(pieces, starts):
        flat[s : s + p.ids.size] = p.ids
        flat[s + p.ids.size] = eos_id
    ids = flat.reshape(rows, seq_len)
    n_bytes = byte_lengths[ids].sum(axis=1, dtype=np.int64)
    row_of = starts // seq_len
    cuts = np.searchsorted(row_of, np.arange(1, rows))
    doc_starts = [s.astype(np.int32) % seq_len for s in np.split(starts, cuts)] if rows else []
    return ids, doc_starts, n_bytes


def write_bucket(pieces: Iterable[Piece], folder: str | Path, split: str, bucket: int, config: TokenizeConfig,
                 info: TokenizerInfo, byte_lengths: np.ndarray) -> list[dict[str, Any]]:
    """Sort and pack one bucket, write it as one or more temporary shards (each at most shard_bytes of
    ids), and return their manifest entries tagged with split, bucket and part."""
    ordered = sorted(pieces, key=Piece.sort_key)
    if not ordered:
        return []
    ids, doc_starts, n_bytes = pack(ordered, config.seq_len, info.eos_id, info.pad_id, byte_lengths)
    rows_per_file = max(1, config.shard_bytes // (4 * config.seq_len))
    tmp = fs.join(str(folder), TMP_DIR)
    fs.makedirs(tmp)
    entries = []
    for part, a in enumerate(range(0, ids.shape[0], rows_per_file)):
        b = a + rows_per_file
        w = shards.ShardWriter(fs.join(tmp, f"{split}-b{bucket:05d}-p{part:04d}.arrow"), config.seq_len,
                               info.vocab_size, info.pad_id)
        w.write_rows(ids[a:b], doc_starts[a:b], n_bytes[a:b])
        entry = w.close()
        entries.append({**entry, "split": split, "bucket": bucket, "part": part})
    return entries


def finalize(folder: str | Path, entries: list[dict[str, Any]], tokenizer_json: bytes, info: TokenizerInfo,
             config: TokenizeConfig, *, source: str, recipe_sha256: str, seed: int,
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Give the temporary shards their final names in (bucket, part) order, drop shards left over from an
    earlier run, write tokenizer.json and manifest.json. Returns the manifest."""
    folder = str(folder)
    fs.makedirs(folder)
    for split in shards.SPLITS:
        fs.delete(fs.matching(fs.join(folder, f"{split}-*.arrow")))
    by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in shards.SPLITS}
    for e in sorted(entries, key=lambda e: (e["split"], e["bucket"], e["part"])):
        name = shards.shard_name(e["split"], len(by_split[e["split"]]))
        fs.rename(fs.join(folder, TMP_DIR, e["path"]), fs.join(folder, name))
        entry = {k: v for k, v in e.items() if k not in ("split", "bucket", "part")}
        by_split[e["split"]].append({**entry, "path": name})
    fs.remove_folder(fs.join(folder, TMP_DIR))
    fs.write_bytes(fs.join(folder, shards.TOKENIZER), tokenizer_json, mime_type="application/json")
    manifest = shards.build_manifest(
        source=source, domain=config.domain, seq_len=config.seq_len,
        tokenizer=info.manifest_entry(shards.TOKENIZER), recipe_sha256=recipe_sha256, seed=seed,
        splits=by_split,
        extra={"validation_fraction": config.validation_fraction, **(extra or {})},
    )
    shards.write_manifest(folder, manifest)
    return manifest


class Counts(dict):
    """Counter sink with StageCounters' `inc` interface, for runs outside Beam."""

    def __init__(self, label: str):
        super().__init__()
        self.label = label

    def inc(self, key: str, n: int = 1) -> None:
        name = f"{self.label}/{key}"
        self[name] = self.get(name, 0) + n


def encode_documents(encoder: DocumentEncoder, docs: list, counters, seed: int, validation_fraction: float):
    """Encode a batch of Documents; yield (split, Piece) for every copy to emit, and count
    in / kept / dropped/<reason> plus tokens_unique (each document once, with its EOS) and
    tokens_emitted (after resampling by `repeats`, the tokens that reach the shards)."""
    texts, kept = [], []
    for doc in docs:
        counters.inc("in")
        if doc.repeats < 1:
            counters.inc("dropped/zero_repeats")
            continue
        text, repaired = clean_text(doc.text)
        if repaired:
            counters.inc("repaired/lone_surrogates")
        if not text:
            counters.inc("dropped/empty")
            continue
        texts.append(text)
        kept.append(doc)
    if not texts:
        return
    for doc, ids in zip(kept, encoder.encode(texts)):
        counters.inc("kept")
        split, pieces = pieces_of(doc.id, ids, doc.repeats, seed, validation_fraction)
        counters.inc("tokens_unique", ids.size + 1)
        counters.inc("tokens_emitted", (ids.size + 1) * len(pieces))
        counters.inc(f"documents_{split}")
        for p in pieces:
            yield split, p


def batches(docs: Iterable, max_chars: int = BATCH_CHARS, max_docs: int = BATCH_DOCS):
    """Group documents into encode batches of about max_chars characters."""
    batch, chars = [], 0
    for doc in docs:
        batch.append(doc)
        chars += len(doc.text)
        if chars >= max_chars or len(batch) >= max_docs:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def tokenize_documents(docs: Iterable, tokenizer: str, folder: str | Path, config: TokenizeConfig, *,
                       seed: int = 0, source: str = "", recipe_sha256: str = "", label: str = "Tokenize"):
    """Documents in, shards out, in this process: the same functions as the Beam stage and the same bytes.
    Holds all token ids in memory; for corpora larger than RAM run the Beam stage on a distributed runner.
    Returns (manifest, counts)."""
    encoder = DocumentEncoder(tokenizer)
    counts = Counts(label)
    pieces: dict[str, list[Piece]] = {s: [] for s in shards.SPLITS}

    def encode_batch(batch):
        return list(encode_documents(encoder, batch, counts, seed, config.validation_fraction))

    # Reading and parsing the next batch overlaps with encoding this one (the tokenizer releases the GIL).
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = []
        for batch in batches(docs):
            pending.append(pool.submit(encode_batch, batch))
            if len(pending) > 1:
                for split, piece in pending.pop(0).result():
                    pieces[split].append(piece)
        for fut in pending:
            for split, piece in fut.result():
                pieces[split].append(piece)
    entries = []
    for split, items in pieces.items():
        buckets: dict[int, list[Piece]] = {}
        for p in items:
            buckets.setdefault(bucket_of(split, p.key, config), []).append(p)
        for b in sorted(buckets):
            entries += write_bucket(buckets[b], folder, split, b, config, encoder.info, encoder.byte_lengths)
    manifest = finalize(folder, entries, encoder.tokenizer_json, encoder.info, config,
                        source=source, recipe_sha256=recipe_sha256, seed=seed)
    return manifest, dict(counts)
