"""The token dataset format (`gristmill.tokens/1`): Arrow IPC file shards plus manifest.json, and a
memory-mapped reader with random access to sequence i across shards and clean data-parallel sharding.

Layout of a token dataset folder:
    manifest.json        totals, tokenizer hash, recipe hash, per-shard counts (see `build_manifest`)
    tokenizer.json       the tokenizer that produced the ids
    train-00000.arrow    Arrow IPC *file* format, uncompressed, so readers memory-map it with zero copies
    validation-00000.arrow

Each shard has three columns:
    input_ids   fixed_size_list<int32>[seq_len]   one packed training sequence per row
    doc_starts  list<int32>                       offsets in the row where a new document begins
    n_bytes     int32                             UTF-8 bytes the row's tokens decode to (specials count 0)
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable

import numpy as np
import pyarrow as pa

from gristmill.counts import is_count
from gristmill.errors import UserError
from gristmill.pipeline import fs

FORMAT = "gristmill.tokens/1"
SPLITS = ("train", "validation")
MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
# Rows per Arrow record batch: large enough that per-batch overhead vanishes, small enough that a
# writer never holds more than a few MB before flushing.
BATCH_ROWS = 1024
NO_SHA256 = "no sha256 recorded (written before gristmill recorded shard hashes)"
_HEX64 = re.compile(r"[0-9a-f]{64}")


def shard_schema(seq_len: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("input_ids", pa.list_(pa.int32(), seq_len), nullable=False),
            pa.field("doc_starts", pa.list_(pa.int32()), nullable=False),
            pa.field("n_bytes", pa.int32(), nullable=False),
        ]
    )


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.arrow"


def file_sha256(path: str | os.PathLike) -> str:
    """The hex sha256 of a local file, read in 1 MiB blocks (a shard is up to shard_bytes, 128 MB by default)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class ShardWriter:
    """Writes packed rows to one Arrow IPC file, in record batches of BATCH_ROWS rows.

    Checks every id against the vocabulary: an id outside [0, vocab_size) raises ValueError, because
    a trainer would otherwise index past its embedding table. Output bytes depend only on the rows
    written (Arrow IPC files carry no timestamps), so equal input gives byte-identical files.

    A local path is written as it goes. A Beam filesystem path (gs://, s3://) is built in memory (a shard
    is at most `shard_bytes`, 128 MB by default) and uploaded through Beam's FileSystems at close.
    Either way the manifest entry holds the sha256 of the bytes written, for `beam tokenize verify`.
    """

    def __init__(self, path: str | os.PathLike, seq_len: int, vocab_size: int, pad_id: int):
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, not {seq_len}")
        self.path = str(path)
        self.remote = fs.is_remote(self.path)
        self.seq_len = seq_len
        self.vocab_size = vocab_size
        self.pad_id = pad_id
        self.sequences = 0
        self.tokens = 0
        self.documents = 0
        self.text_bytes = 0
        self._ids: list[np.ndarray] = []
        self._starts: list[np.ndarray] = []
        self._nbytes: list[np.ndarray] = []
        self._buffered = 0
        self._sink = pa.BufferOutputStream() if self.remote else pa.OSFile(self.path, "wb")
        self._writer = pa.ipc.new_file(
            self._sink, shard_schema(seq_len), options=pa.ipc.IpcWriteOptions(compression=None)
        )

    def write_row(self, input_ids: np.ndarray, doc_starts: Iterable[int], n_bytes: int) -> None:
        """Add one sequence: `seq_len` ids, the offsets where documents begin in it, its decoded bytes."""
        self.write_rows(np.asarray(input_ids)[None, :], [np.asarray(list(doc_starts), dtype=np.int32)], [n_bytes])

    def write_rows(self, input_ids: np.ndarray, doc_starts: list[np.ndarray], n_bytes) -> None:
        """Add sequences: ids of shape (n, seq_len), n arrays of document start offsets, n byte counts."""
        ids = np.asarray(input_ids)
        n_bytes = np.asarray(n_bytes, dtype=np.int64)
        if ids.ndim != 2 or ids.shape[1] != self.seq_len:
            raise ValueError(f"rows have shape {ids.shape}, expected (n, {self.seq_len})")
        if len(doc_starts) != ids.shape[0] or n_bytes.shape != (ids.shape[0],):
            raise ValueError("input_ids, doc_starts and n_bytes must have one entry per row")
        if ids.size == 0:
            return
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= self.vocab_size:
            bad = hi if hi >= self.vocab_size else lo
            raise ValueError(f"token id {bad} is outside the vocabulary [0, {self.vocab_size})")
        starts = [np.asarray(s, dtype=np.int32) for s in doc_starts]
        for s in starts:
            if s.size and (int(s.min()) < 0 or int(s.max()) >= self.seq_len):
                raise ValueError(f"doc_starts {s.tolist()} fall outside a row of length {self.seq_len}")
        self._ids.append(ids.astype(np.int32, copy=False))
        self._starts.extend(starts)
        self._nbytes.append(n_bytes.astype(np.int32))
        self._buffered += ids.shape[0]
        self.sequences += ids.shape[0]
        self.tokens += int(np.count_nonzero(ids != self.pad_id))
        self.documents += sum(int(s.size) for s in starts)
        self.text_bytes += int(n_bytes.sum())
        if self._buffered >= BATCH_ROWS:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        """Write whole batches of BATCH_ROWS rows (and, at close, the rest), so the file layout does not
        depend on how callers grouped their rows."""
        if not self._buffered:
            return
        ids = np.concatenate(self._ids)
        nbytes = np.concatenate(self._nbytes)
        stop = ids.shape[0] if final else ids.shape[0] - ids.shape[0] % BATCH_ROWS
        for a in range(0, stop, BATCH_ROWS):
            b = min(a + BATCH_ROWS, stop)
            self._write_batch(ids[a:b], self._starts[a:b], nbytes[a:b])
        self._ids, self._nbytes = [ids[stop:]], [nbytes[stop:]]
        self._starts = self._starts[stop:]
        self._buffered = ids.shape[0] - stop

    def _write_batch(self, ids: np.ndarray, starts: list[np.ndarray], nbytes: np.ndarray) -> None:
        offsets = np.zeros(len(starts) + 1, dtype=np.int32)
        np.cumsum([s.size for s in starts], out=offsets[1:])
        starts_flat = np.concatenate(starts) if offsets[-1] else np.zeros(0, dtype=np.int32)
        batch = pa.RecordBatch.from_arrays(
            [
                pa.FixedSizeListArray.from_arrays(pa.array(ids.reshape(-1), type=pa.int32()), self.seq_len),
                pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), pa.array(starts_flat, type=pa.int32())),
                pa.array(nbytes, type=pa.int32()),
            ],
            schema=shard_schema(self.seq_len),
        )
        self._writer.write_batch(batch)

    def close(self) -> dict[str, Any]:
        """Finish the file and return its manifest entry. A local file is hashed once closed (Arrow's file
        sink has no hook for its bytes; they are still in the page cache); a remote one before upload."""
        self._flush(final=True)
        self._writer.close()
        size = self._sink.tell()
        if self.remote:
            data = self._sink.getvalue()
            sha256 = hashlib.sha256(data).hexdigest()
            fs.write_bytes(self.path, data.to_pybytes())
        else:
            self._sink.close()
            sha256 = file_sha256(self.path)
        return {
            "path": fs.basename(self.path),
            "sequences": self.sequences,
            "tokens": self.tokens,
            "documents": self.documents,
            "bytes_on_disk": size,
            "text_bytes": self.text_bytes,
            "sha256": sha256,
        }


def summarize_split(shards: list[dict[str, Any]]) -> dict[str, Any]:
    """A split's totals are the sums over its shards, so they can never disagree with them."""
    return {
        "sequences": sum(s["sequences"] for s in shards),
        "tokens": sum(s["tokens"] for s in shards),
        "documents": sum(s["documents"] for s in shards),
        "bytes": sum(s["text_bytes"] for s in shards),
        "shards": list(shards),
    }


def build_manifest(
    *,
    source: str,
    domain: str,
    seq_len: int,
    tokenizer: dict[str, Any],
    recipe_sha256: str,
    seed: int,
    splits: dict[str, list[dict[str, Any]]],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest.json contents. `tokenizer` holds path, sha256, vocab_size, bos_id, eos_id, pad_id;
    `splits` maps split name -> list of shard entries from ShardWriter.close()."""
    m: dict[str, Any] = {
        "format": FORMAT,
        "source": source,
        "domain": domain,
        "seq_len": seq_len,
        "tokenizer": dict(tokenizer),
        "recipe_sha256": recipe_sha256,
        "seed": seed,
        "splits": {name: summarize_split(splits.get(name, [])) for name in SPLITS},
    }
    if extra:
        m.update(extra)
    return m


def write_manifest(folder: str | os.PathLike, manifest: dict[str, Any]) -> str | Path:
    """Write manifest.json into `folder` (local, or a Beam filesystem path); returns its path."""
    path = fs.join(str(folder), MANIFEST)
    fs.write_bytes(path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8"),
                   mime_type="application/json")
    return path if fs.is_remote(path) else Path(path)


def load_manifest(path_or_manifest: str | os.PathLike, splits: Iterable[str] = ()) -> tuple[dict[str, Any], Path]:
    """Read a manifest given its folder or the manifest.json path; returns (manifest, folder).

    A remote dataset (gs://, s3://, ...) is read through a local copy in the cache: its manifest, plus the
    tokenizer and shards of `splits` (see `gristmill.tokenize.remote`); the folder returned is that copy's."""
    if fs.is_remote(str(path_or_manifest)):
        from gristmill.tokenize import remote

        path_or_manifest = remote.stage(str(path_or_manifest), splits)
    p = Path(path_or_manifest)
    mpath = p / MANIFEST if p.is_dir() else p
    if not mpath.is_file():
        raise UserError(f"no token dataset at {p}: {mpath} does not exist")
    try:
        manifest = json.loads(mpath.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{mpath} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{mpath} is not a token dataset manifest (a JSON {type(manifest).__name__}, not an object)")
    check_format(manifest, mpath)
    if problem := manifest_problem(manifest):
        raise UserError(f"{mpath} is damaged: {problem}; write the token dataset again")
    return manifest, mpath.parent


def check_format(manifest: dict[str, Any], where) -> None:
    """One line where `manifest` (read from `where`) is not a token dataset manifest of this format."""
    if manifest.get("format") != FORMAT:
        raise UserError(f"{where}: format is {manifest.get('format')!r}, expected {FORMAT!r}")


def manifest_problem(manifest: dict[str, Any]) -> str | None:
    """What is wrong with the fields a reader uses (an edited or hand-made manifest), or None. A split's totals
    must be its shards' sums, as summarize_split writes them; a shard's path must name a file in the folder.
    A shard's sha256 may be missing (manifests written before it was recorded), but not malformed: a verify
    against a mangled digest would report every shard damaged."""
    if not is_count(manifest.get("seq_len")) or manifest["seq_len"] < 1:
        return f"seq_len is {manifest.get('seq_len')!r}, not a positive integer"
    tok = manifest.get("tokenizer")
    if not isinstance(tok, dict):
        return "it has no tokenizer object"
    if not isinstance(tok.get("sha256"), str) or not isinstance(tok.get("path"), str):
        return "tokenizer.sha256 or tokenizer.path is not a string"
    if not is_count(tok.get("vocab_size")) or tok["vocab_size"] < 1:
        return f"tokenizer.vocab_size is {tok.get('vocab_size')!r}, not a positive integer"
    for key in ("pad_id", "bos_id", "eos_id"):
        if tok.get(key) is not None and not is_count(tok[key]):
            return f"tokenizer.{key} is {tok[key]!r}, not a token id"
    splits = manifest.get("splits")
    if not isinstance(splits, dict):
        return "splits is not an object"
    for name, split in splits.items():
        if not isinstance(split, dict) or not isinstance(split.get("shards"), list):
            return f"split {name!r} has no list of shards"
        for k, entry in enumerate(split["shards"]):
            if not isinstance(entry, dict):
                return f"shard {k} of split {name!r} is not an object"
            path = entry.get("path")
            if not isinstance(path, str) or not path or path != Path(path).name or path in (".", ".."):
                return f"shard {k} of split {name!r} has path {path!r}, not a file name in the dataset folder"
            for field in ("sequences", "tokens", "documents", "bytes_on_disk", "text_bytes"):
                if field in entry and not is_count(entry[field]):
                    return f"shard {path}: {field} is {entry[field]!r}, not a count"
            if "sequences" not in entry or "tokens" not in entry or "bytes_on_disk" not in entry:
                return f"shard {path} has no sequences, tokens or bytes_on_disk"
            if "sha256" in entry and not (isinstance(entry["sha256"], str) and _HEX64.fullmatch(entry["sha256"])):
                return f"shard {path}: sha256 is {entry['sha256']!r:.80}, not 64 lower-case hex digits"
        for total, field in (("sequences", "sequences"), ("tokens", "tokens"), ("documents", "documents"),
                             ("bytes", "text_bytes")):
            if total not in split and field not in ("sequences", "tokens"):
                continue
            have = sum(e.get(field, 0) for e in split["shards"])
            if split.get(total) != have:
                return (f"manifest {total[:-1]} totals do not match the shards (split {name!r} says {split.get(total)!r}, "
                        f"its shards sum to {have})")
    return None


def _checked_batch(reader: pa.ipc.RecordBatchFileReader, k: int, path: Path, seq_len: int) -> pa.RecordBatch:
    """Record batch k of a shard, checked before any view is taken into it: a damaged file (bytes overwritten
    in place, so its size still matches the manifest) is one clear error, where Arrow would otherwise raise
    a dozen kinds of error or read outside the mapping and crash the process. The checks read the batch's
    metadata, its list offsets and its doc_starts (a few bytes per row), not its input_ids."""
    try:
        batch = reader.get_batch(k)
        batch.validate(full=True)  # buffers within the file and as long as the lengths need, offsets in bounds
        ids, starts, nbytes = batch.columns
        if ids.offset or ids.values.offset or starts.offset or nbytes.offset:
            raise ValueError("a column does not start at offset 0")
        if len(ids.values) != batch.num_rows * seq_len:
            raise ValueError(f"{len(ids.values)} input ids for {batch.num_rows} rows of {seq_len}")
        if any(a.null_count for a in (ids, ids.values, starts, starts.values, nbytes)):
            raise ValueError("a column has nulls")
        flat = starts.values.to_numpy(zero_copy_only=True)
        if flat.size and (int(flat.min()) < 0 or int(flat.max()) >= seq_len):
            raise ValueError(f"doc_starts outside a row of {seq_len}")
    except (pa.ArrowException, OSError, ValueError) as e:
        raise UserError(f"shard {path} is damaged: record batch {k} is unreadable ({str(e).splitlines()[0][:200]}); "
                        f"write the token dataset again") from None
    return batch


def open_shard(path: Path, entry: dict[str, Any], seq_len: int) -> tuple[pa.MemoryMappedFile, list[pa.RecordBatch]]:
    """Map one shard and check it against its manifest entry: there, its size, its schema, each record batch
    (_checked_batch), its sequences, and its documents and text_bytes summed. Reads a few bytes per row, never
    input_ids, so opening stays cheap; a problem is a UserError naming the shard."""
    if not path.is_file():
        raise UserError(f"shard {path} listed in the manifest does not exist")
    size = entry.get("bytes_on_disk")
    if size is not None and path.stat().st_size != size:
        raise UserError(f"shard {path} is {path.stat().st_size:,} bytes, the manifest says {size:,}: it was "
                        f"cut short or replaced; write the token dataset again")
    mm = pa.memory_map(str(path), "r")
    try:
        reader = pa.ipc.open_file(mm)
    except (pa.ArrowInvalid, OSError) as e:
        raise UserError(f"shard {path} is not a readable Arrow file ({str(e).splitlines()[0]}); write the "
                        f"token dataset again") from None
    if not reader.schema.equals(shard_schema(seq_len)):
        raise UserError(f"{path}: schema {reader.schema} does not match seq_len {seq_len}")
    batches = [_checked_batch(reader, k, path, seq_len) for k in range(reader.num_record_batches)]
    rows = sum(b.num_rows for b in batches)
    if rows != entry["sequences"]:
        raise UserError(f"{path}: {rows} sequences, manifest says {entry['sequences']}")
    # Two small columns, summed as they are mapped: a shard swapped for another of the same size (the last
    # one of a bucket, or one from a run of the same shard size), or damaged in them, differs here.
    documents = sum(len(b.column(1).values) for b in batches)
    text_bytes = sum(int(b.column(2).to_numpy(zero_copy_only=True).sum(dtype=np.int64)) for b in batches)
    for field, have in (("documents", documents), ("text_bytes", text_bytes)):
        if field in entry and have != entry[field]:
            raise UserError(f"shard {path} holds {have:,} {field}, the manifest says {entry[field]:,}: it was "
                            f"replaced or damaged; write the token dataset again")
    return mm, batches


def first_id_outside(ids: np.ndarray, vocab_size: int) -> tuple[int, int] | None:
    """(row, id) of the first token id outside [0, vocab_size) in a (rows, seq_len) integer array, or None; one
    max over the array when every id is inside (read as unsigned, a negative id is above any vocabulary)."""
    unsigned = ids.view(f"u{ids.dtype.itemsize}") if ids.dtype.kind == "i" else ids
    if not ids.size or int(unsigned.max()) < vocab_size:
        return None
    outside = (ids < 0) | (ids >= vocab_size)
    j = int(np.flatnonzero(outside.any(axis=-1))[0])
    return j, int(ids[j][outside[j]][0])


class TokenDataset:
    """Random access to packed sequences across the shards of one split, memory-mapped, zero copy.

    ds = TokenDataset("out/tokens")            # or the manifest.json path, or gs://... (copied to the cache)
    len(ds); ds[i] -> np.ndarray[int32] of shape (seq_len,), a read-only view into the mapped file
    ds.doc_starts(i), ds.n_bytes(i)            # document boundaries and decoded bytes of sequence i
    ds.shard(rank, world_size)                 # this rank's contiguous, equal-sized slice
    """

    def __init__(self, path_or_manifest: str | os.PathLike, split: str = "train"):
        self.manifest, self.root = load_manifest(path_or_manifest, splits=(split,))
        if split not in self.manifest["splits"]:
            raise UserError(f"{self.root}: no split {split!r} (have {sorted(self.manifest['splits'])})")
        self.split = split
        self.seq_len = int(self.manifest["seq_len"])
        self._maps: list[pa.MemoryMappedFile] = []
        self._ids: list[np.ndarray] = []  # one (rows, seq_len) view per record batch
        self._starts: list[pa.ListArray] = []
        self._nbytes: list[np.ndarray] = []
        self._paths: list[Path] = []  # the shard of each record batch
        for entry in self.manifest["splits"][split]["shards"]:
            path = self.root / entry["path"]
            mm, batches = open_shard(path, entry, self.seq_len)
            for batch in batches:
                self._ids.append(batch.column(0).values.to_numpy(zero_copy_only=True).reshape(-1, self.seq_len))
                self._starts.append(batch.column(1))
                self._nbytes.append(batch.column(2).to_numpy(zero_copy_only=True))
                self._paths.append(path)
            self._maps.append(mm)
        sizes = np.array([a.shape[0] for a in self._ids], dtype=np.int64)
        self._bounds = np.concatenate([[0], np.cumsum(sizes)])
        self._index: np.ndarray | None = None  # global rows of this view; None = all rows in order

    def __getstate__(self):
        # Memory maps do not pickle; a copy sent to a DataLoader worker maps the files again.
        return {"root": str(self.root), "split": self.split, "index": self._index}

    def __setstate__(self, state):
        self.__init__(state["root"], state["split"])
        self._index = state["index"]

    @property
    def tokenizer_info(self) -> dict[str, Any]:
        return self.manifest["tokenizer"]

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["tokenizer"]["vocab_size"])

    @property
    def tokenizer_path(self) -> Path:
        return self.root / self.manifest["tokenizer"]["path"]

    def __len__(self) -> int:
        return int(self._bounds[-1]) if self._index is None else int(self._index.size)

    def _locate(self, i: int) -> tuple[int, int]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sequence {i} out of range for {n} sequences")
        if i < 0:
            i += n
        g = i if self._index is None else int(self._index[i])
        b = int(np.searchsorted(self._bounds, g, side="right")) - 1
        return b, g - int(self._bounds[b])

    def __getitem__(self, i: int) -> np.ndarray:
        b, r = self._locate(int(i))
        return self._ids[b][r]

    def doc_starts(self, i: int) -> np.ndarray:
        b, r = self._locate(int(i))
        return self._starts[b][r].values.to_numpy(zero_copy_only=True)

    def n_bytes(self, i: int) -> int:
        b, r = self._locate(int(i))
        return int(self._nbytes[b][r])

    def shard_path(self, i: int) -> Path:
        """The shard file that holds sequence i."""
        return self._paths[self._locate(int(i))[0]]

    def check_ids(self, ids: np.ndarray, rows) -> None:
        """Raise if `ids` (sequences `rows` of this split, as read) hold an id outside the vocabulary: a shard
        damaged in its input_ids, which open-time checks do not read, would index past the model's embedding.
        The check costs a min and a max over ids the caller has already copied."""
        if (found := first_id_outside(ids, self.vocab_size)) is None:
            return
        j, bad = found
        i = int(list(rows)[j])
        raise UserError(f"shard {self.shard_path(i)} is damaged: sequence {i} of split {self.split!r} holds token id "
                        f"{bad}, outside the vocabulary [0, {self.vocab_size}); write the token dataset again")

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def shard(self, rank: int, world_size: int) -> "TokenDataset":
        """Rank `rank`'s block of floor(len/world_size) consecutive sequences.

        Blocks are disjoint and equal-sized, so every data-parallel rank runs the same number of steps;
        the last len % world_size sequences are left out.
        """
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
        per = len(self) // world_size
        base = np.arange(len(self), dtype=np.int64) if self._index is None else self._index
        view = object.__new__(TokenDataset)
        view.__dict__.update(self.__dict__)
        view._index = base[rank * per : (rank + 1) * per]
        return view

    def attention_segments(self, i: int) -> np.ndarray:
        """Per-position document number within sequence i (0 for the part continuing an earlier
        document), for building a block-diagonal attention mask."""
        seg = np.zeros(self.seq_len, dtype=np.int32)
        seg[self.doc_starts(i)] = 1
        return np.cumsum(seg, dtype=np.int32)

    def verify(self) -> None:
        """Check every id against the vocabulary and the manifest's totals against the shards."""
        v = self.vocab_size
        for ids in self._ids:
            if first_id_outside(ids, v) is not None:
                raise UserError(f"{self.root}: token id outside the vocabulary [0, {v})")
        split = self.manifest["splits"][self.split]
        pad = int(self.manifest["tokenizer"]["pad_id"])
        tokens = sum(int(np.count_nonzero(ids != pad)) for ids in self._ids)
        if tokens != split["tokens"] or tokens != sum(s["tokens"] for s in split["shards"]):
            raise UserError(f"{self.root}: manifest token totals do not match the shards ({tokens} counted)")


def verify_shard(path: Path, entry: dict[str, Any], seq_len: int, vocab_size: int,
                 pad_id: int | None) -> tuple[list[str], int]:
    """Read one shard whole: the checks of opening it (open_shard), then its sha256 against the manifest's,
    every id against the vocabulary, and its non-PAD ids against its `tokens` (as TokenDataset.verify counts a
    split's). An id changed in place inside the vocabulary passes every check but the sha256.
    Returns (one line per problem, bytes hashed)."""
    try:
        _, batches = open_shard(path, entry, seq_len)
    except UserError as e:
        return [str(e)], 0
    problems = []
    sha256 = file_sha256(path)
    if "sha256" in entry and sha256 != entry["sha256"]:
        problems.append(f"shard {path} is damaged: its sha256 is {sha256}, the manifest says {entry['sha256']}; "
                        f"write the token dataset again")
    row = tokens = 0
    for batch in batches:
        ids = batch.column(0).values.to_numpy(zero_copy_only=True).reshape(-1, seq_len)
        if (found := first_id_outside(ids, vocab_size)) is not None:
            problems.append(f"shard {path} is damaged: its sequence {row + found[0]} holds token id {found[1]}, "
                            f"outside the vocabulary [0, {vocab_size}); write the token dataset again")
            break
        tokens += ids.size if pad_id is None else int(np.count_nonzero(ids != pad_id))
        row += batch.num_rows
    else:
        if tokens != entry["tokens"]:
            problems.append(f"shard {path} holds {tokens:,} tokens (ids other than PAD), the manifest says "
                            f"{entry['tokens']:,}: it was replaced or damaged; write the token dataset again")
    return problems, path.stat().st_size


def verify_files(manifest: dict[str, Any], root: Path, say: Callable[[str], None],
                 progress: Callable[[int, int], None] | None = None,
                 fetch: Callable[[str], ContextManager[tuple[Path, str]]] | None = None) -> tuple[int, int, int]:
    """Check every file of a loaded dataset against its manifest, reading every byte: the tokenizer's sha256
    and each shard of each split (verify_shard). Opening a dataset does not do this, as it would read every
    byte at every open. Problems, and shards with no sha256 recorded (not a problem alone), go to `say`, one
    line each; progress(shards done, bytes hashed) after each shard. `fetch(name)` gives (a local file to
    read, the name to report it by) for one file of the manifest, and may raise UserError, a problem of that
    file alone (a remote dataset's: remote.fetched); by default the file in `root`. Returns (shards checked,
    bytes hashed, problems)."""
    fetch = fetch or (lambda name: contextlib.nullcontext((root / name, str(root / name))))
    tok = manifest["tokenizer"]
    problems = hashed = 0
    try:
        with fetch(tok["path"]) as (tok_path, shown):
            if not tok_path.is_file():
                say(f"tokenizer {shown} listed in the manifest does not exist")
                problems += 1
            else:
                sha256 = file_sha256(tok_path)
                hashed += tok_path.stat().st_size
                if sha256 != tok["sha256"]:
                    say(f"tokenizer {shown} is not the one the manifest records: its sha256 is {sha256}, the "
                        f"manifest says {tok['sha256']}")
                    problems += 1
    except UserError as e:
        say(str(e))
        problems += 1
    seq_len, vocab_size = int(manifest["seq_len"]), int(tok["vocab_size"])
    entries = [e for split in manifest["splits"].values() for e in split["shards"]]
    for k, entry in enumerate(entries, 1):
        try:
            with fetch(entry["path"]) as (path, shown):
                if "sha256" not in entry:
                    say(f"shard {shown}: {NO_SHA256}")
                lines, n = verify_shard(path, entry, seq_len, vocab_size, tok.get("pad_id"))
                lines = [line.replace(str(path), shown) for line in lines]  # a fetched copy: by its URL
        except UserError as e:
            lines, n = [str(e)], 0
        for line in lines:
            say(line)
        problems += len(lines)
        hashed += n
        if progress:
            progress(k, hashed)
    return len(entries), hashed, problems
