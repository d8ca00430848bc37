"""Bloom-filter dedup core (Dolma style): drop lines or paragraphs already seen, in this run or an earlier one.

Keys are 128-bit hashes of normalized units; the first 32 bits pick one of `num_shards` filters, so the same
key always meets the same filter whatever the number of workers. Within a shard the occurrences are visited
in (document id, unit index) order, so the first copy kept is always the one in the smallest document id.
A filter is a pybloom-live ScalableBloomFilter sized from the expected key count: it holds the configured
false-positive rate up to that count and grows (instead of failing) beyond it. Each shard is saved as one
file: a small JSON header (parameters, payload size and SHA-256) followed by pybloom-live's `tofile` bytes.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import re
import struct
from dataclasses import dataclass
from typing import Iterable

from apache_beam.io.filesystems import CompressionTypes, FileSystems
from pybloom_live import ScalableBloomFilter

from gristmill.dedup.exact import normalize_text
from gristmill.errors import UserError

UNITS = ("line", "paragraph")
MAGIC = b"GRISTMILL-BLOOM/1\n"
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")


@dataclass(frozen=True)
class BloomConfig:
    """unit: "line" (split on newlines, as Dolma's paragraph dedup does) or "paragraph" (split on blank lines).
    expected_keys: distinct units expected over all shards, including those later runs add (cross-run).
    min_words: a document left with fewer words after removal is dropped.
    load_from: folder of a filter saved by an earlier run (cross-run dedup), or that run's output folder (its
        bloom_filter/ subfolder is used); this run's new keys are added to it and it is what this run saves;
        its rate and initial capacity are reused.
    save_to: folder to save this run's filter in ("" = <output>/bloom_filter, None = do not save)."""

    unit: str = "line"
    expected_keys: int = 10_000_000
    false_positive_rate: float = 1e-4
    num_shards: int = 16
    min_words: int = 1
    load_from: str | None = None
    save_to: str | None = ""

    def __post_init__(self):
        if self.unit not in UNITS:
            raise UserError(f"bloom dedup: unit must be one of {', '.join(UNITS)}, not {self.unit!r}")
        if not 0.0 < self.false_positive_rate < 1.0:
            raise UserError(f"bloom dedup: false_positive_rate must be between 0 and 1, not {self.false_positive_rate}")
        if self.expected_keys < 1 or self.num_shards < 1:
            raise UserError("bloom dedup: expected_keys and num_shards must be >= 1")

    def shard_capacity(self) -> int:
        # 10% headroom: shard loads are binomial around expected_keys / num_shards.
        return int(math.ceil(self.expected_keys / self.num_shards * 1.1)) + 64


def split_units(text: str, unit: str) -> tuple[list[str], str]:
    """The text's units and the separator that joins the kept ones back."""
    if unit == "line":
        return text.split("\n"), "\n"
    return _PARAGRAPH_BREAK.split(text), "\n\n"


def unit_key(unit_text: str) -> str | None:
    """128-bit hex key of a normalized unit; None for blank units, which are never deduplicated."""
    norm = normalize_text(unit_text)
    if not norm:
        return None
    return hashlib.blake2b(norm.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def shard_of(key: str, num_shards: int) -> int:
    return int(key[:8], 16) % num_shards


def new_filter(capacity: int, false_positive_rate: float) -> ScalableBloomFilter:
    return ScalableBloomFilter(
        initial_capacity=capacity, error_rate=false_positive_rate, mode=ScalableBloomFilter.SMALL_SET_GROWTH
    )


def dedup_shard(
    occurrences: Iterable[tuple[str, str, int]], previous: ScalableBloomFilter | None, current: ScalableBloomFilter
) -> list[tuple[str, int, str]]:
    """Visit (key, doc_id, unit_index) in (doc_id, unit_index) order; return the duplicates as
    (doc_id, unit_index, "previous_run" | "this_run").

    A new key is added to `current` and, when an earlier run's filter is given, to `previous` itself: that
    filter is what the run saves, and adding (rather than OR-ing a separate filter into it) lets it grow a
    level when it is full and keeps its key count. `current` holds only this run's keys, so a key found there
    is a this-run duplicate even though it is in `previous` too by then."""
    dups = []
    for key, doc_id, idx in sorted(occurrences, key=lambda o: (o[1], o[2])):
        if previous is None:
            if current.add(key):
                dups.append((doc_id, idx, "this_run"))
        elif key in current:
            dups.append((doc_id, idx, "this_run"))
        elif previous.add(key):  # True: it was there already (add checks first)
            dups.append((doc_id, idx, "previous_run"))
        else:
            current.add(key)
    return dups


def shard_path(folder: str, shard: int, num_shards: int) -> str:
    return FileSystems.join(folder, f"bloom-{shard:05d}-of-{num_shards:05d}.bin")


def _has_shard_files(folder: str) -> bool:
    try:
        return any(r.metadata_list for r in FileSystems.match([FileSystems.join(folder, "bloom-*-of-*.bin")]))
    except Exception:  # noqa: BLE001 - a folder that cannot be listed has no shard files
        return False


def resolve_filter_folder(folder: str) -> str:
    """The folder holding a saved filter's shard files: `folder` itself, or, when `folder` is an earlier run's
    output folder (no shard files of its own), its bloom_filter/ subfolder."""
    if _has_shard_files(folder):
        return folder
    inner = FileSystems.join(folder, "bloom_filter")
    return inner if _has_shard_files(inner) else folder


def save_filter(path: str, flt: ScalableBloomFilter, shard: int, num_shards: int, unit: str) -> None:
    buf = io.BytesIO()
    flt.tofile(buf)  # pybloom seeks back to patch its header, so it cannot stream to a remote file
    payload = buf.getvalue()
    header = {
        "shard": shard,
        "num_shards": num_shards,
        "unit": unit,
        "normalization": "nfkc-lower-ws",
        "false_positive_rate": flt.error_rate,
        "initial_capacity": flt.initial_capacity,
        "keys": len(flt),
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
    }
    hb = json.dumps(header, sort_keys=True).encode()
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(MAGIC + struct.pack("<I", len(hb)) + hb + payload)


def _read_header(f, path: str) -> tuple[dict, int]:
    magic = f.read(len(MAGIC))
    if magic != MAGIC:
        raise UserError(f"bloom filter {path} is corrupt or not a gristmill Bloom filter (bad magic bytes)")
    raw = f.read(4)
    if len(raw) != 4:
        raise UserError(f"bloom filter {path} is corrupt (truncated header)")
    (n,) = struct.unpack("<I", raw)
    try:
        header = json.loads(f.read(n))
        header["payload_bytes"], header["payload_sha256"], header["num_shards"], header["unit"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"bloom filter {path} is corrupt (unreadable header)") from None
    return header, len(MAGIC) + 4 + n


def check_saved_filter(folder: str, num_shards: int, unit: str) -> dict:
    """Check a saved filter folder before the pipeline runs: every shard file present, readable, with the size
    and checksum its header gives, and parameters matching. Returns the header of shard 0 (rate and capacity
    to reuse). Reading every file once here costs a few seconds per GB and turns damage into one clear line."""
    first = None
    for shard in range(num_shards):
        path = shard_path(folder, shard, num_shards)
        if not FileSystems.exists(path):
            raise UserError(
                f"bloom filter {path} is missing (load_from={folder} needs all {num_shards} shard files "
                f"written by a run with num_shards={num_shards})"
            )
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            header, header_len = _read_header(f, path)
            digest, size = hashlib.sha256(), 0
            while chunk := f.read(1 << 22):
                digest.update(chunk)
                size += len(chunk)
        if size != header["payload_bytes"]:
            raise UserError(
                f"bloom filter {path} is corrupt (payload is {size} bytes, header says {header['payload_bytes']})"
            )
        if digest.hexdigest() != header["payload_sha256"]:
            raise UserError(f"bloom filter {path} is corrupt (checksum mismatch)")
        if header["num_shards"] != num_shards or header.get("shard") != shard or header["unit"] != unit:
            raise UserError(
                f"bloom filter {path} was saved with num_shards={header['num_shards']}, unit={header['unit']!r}; "
                f"this stage uses num_shards={num_shards}, unit={unit!r}"
            )
        first = first or header
    return first


def load_filter(path: str) -> ScalableBloomFilter:
    """Load one shard file, verifying its checksum."""
    if not FileSystems.exists(path):
        raise UserError(f"bloom filter {path} is missing")
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        header, _ = _read_header(f, path)
        payload = f.read()
    if len(payload) != header["payload_bytes"] or hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
        raise UserError(f"bloom filter {path} is corrupt (checksum mismatch)")
    try:
        flt = ScalableBloomFilter.fromfile(io.BytesIO(payload))
    except Exception as e:  # a payload with a right checksum but wrong layout: written by something else
        raise UserError(f"bloom filter {path} is corrupt ({e})") from None
    _restore_counts(flt)
    return flt


def _restore_counts(flt: ScalableBloomFilter) -> None:
    """Filters saved by cross-run dedup in earlier versions OR-ed two filters with pybloom's `|`, which resets
    each level's key count to 0: such a level would take keys past its capacity instead of a new level being
    added. A level with bits set but no count gets the count its fill implies (per slice of m bits, n keys
    leave m (1 - (1 - 1/m)^n) bits set)."""
    for level in flt.filters:
        if level.count:
            continue
        ones = level.bitarray.count(1, 0, level.num_bits) / level.num_slices
        if ones:
            m = level.bits_per_slice
            level.count = level.capacity if ones >= m else round(math.log1p(-ones / m) / math.log1p(-1 / m))
