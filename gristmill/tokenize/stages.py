"""Beam stages of a recipe's final steps: TrainTokenizer (byte-level BPE on a deterministic sample) and
Tokenize (encode, resample by `repeats`, pack, write Arrow shards and manifest.json under OUTPUT/tokens/).

Both return their input documents unchanged, so WriteDocuments can still follow them. Tokenize uses the
tokenizer trained by a TrainTokenizer earlier in the same pipeline, else the `tokenizer` path it is given.
"""
from __future__ import annotations

import weakref

import apache_beam as beam
import numpy as np
from apache_beam.pvalue import AsSingleton

from gristmill.errors import UserError
from gristmill.pipeline import fs
from gristmill.pipeline.stages import RunContext, Stage, StageCounters
from gristmill.tokenize import encode as E
from gristmill.tokenize.shards import TOKENIZER
from gristmill.tokenize.train import (
    check_training,
    default_vocab_size,
    load_tokenizer,
    read_tokenizer_json,
    sample_key,
    save_tokenizer,
    token_byte_lengths,
    tokenizer_bytes,
    train_tokenizer,
)

TOKENS_DIR = "tokens"
NO_TOKENIZER = "no_tokenizer"  # counted when no document reached TrainTokenizer, so nothing was written
# pipeline -> PCollection holding the tokenizer.json text trained in it (weak: pipelines are short-lived)
_trained: "weakref.WeakKeyDictionary[beam.Pipeline, beam.PCollection]" = weakref.WeakKeyDictionary()


class _TrainFn(beam.DoFn):
    def __init__(self, label: str, path: str, vocab_size: int, min_frequency: int, n: int):
        self.label, self.path, self.vocab_size, self.min_frequency = label, path, vocab_size, min_frequency
        self.n = n

    def process(self, item):
        _, sample = item
        # Training does not depend on text order (measured), but sorting makes that independent of it too.
        # Every copy of a chosen id arrives; documents sharing an id are ordered by text and cut to n, as
        # select_sample does (without the cut, copies at the boundary made the sample larger than n).
        texts = [text for _, _, text in sorted(sample)[: self.n]]
        counters = StageCounters(self.label)
        counters.inc("sample_documents", len(texts))
        counters.inc("sample_chars", sum(len(t) for t in texts))
        tok = train_tokenizer(texts, self.vocab_size, self.min_frequency)
        save_tokenizer(tok, self.path)
        yield tokenizer_bytes(tok).decode("utf-8")


class TrainTokenizer(Stage):
    """Trains a byte-level BPE tokenizer on the `sample_docs` non-empty documents with the smallest
    seeded hash of their id (the same sample on any runner) and writes OUTPUT/tokens/tokenizer.json.

    vocab_size defaults to 32k, or 100k when `multilingual` is true.
    """

    def __init__(self, label: str = "TrainTokenizer", vocab_size: int | None = None, multilingual: bool = False,
                 sample_docs: int = 50_000, min_frequency: int = 2):
        self.label = label
        self.vocab_size = default_vocab_size(multilingual) if vocab_size is None else vocab_size
        self.multilingual = multilingual
        self.sample_docs = sample_docs
        self.min_frequency = min_frequency
        if sample_docs < 1:
            raise UserError(f"stage {label}: sample_docs must be >= 1, not {sample_docs}")
        try:  # here, not in the worker: the trainer would fail (or abort the process) after the whole run
            check_training(self.vocab_size, min_frequency)
        except UserError as e:
            raise UserError(f"stage {label}: {e}") from None

    def expand(self, docs, ctx: RunContext):
        seed, n, label = ctx.seed, self.sample_docs, self.label
        fs.makedirs(ctx.path(TOKENS_DIR))
        nonempty = docs | f"{label}/NonEmpty" >> beam.Filter(lambda d: bool(d.text))
        chosen = (
            nonempty
            | f"{label}/Keys" >> beam.Map(lambda d: (sample_key(seed, d.id), d.id))
            | f"{label}/Smallest" >> beam.combiners.Top.Smallest(n)
            | f"{label}/IdSet" >> beam.Map(lambda kv: frozenset(i for _, i in kv))
        )
        tokenizer = (
            nonempty
            | f"{label}/Sample" >> beam.Filter(lambda d, ids: d.id in ids, AsSingleton(chosen))
            # clean_text: a lone surrogate (valid in JSON) cannot cross the runner as UTF-8, nor reach the trainer
            | f"{label}/OneKey" >> beam.Map(lambda d: (0, (sample_key(seed, d.id), d.id, E.clean_text(d.text)[0])))
            | f"{label}/Gather" >> beam.GroupByKey()
            | f"{label}/Train" >> beam.ParDo(_TrainFn(label, ctx.path(TOKENS_DIR, TOKENIZER), self.vocab_size,
                                                      self.min_frequency, n))
        )
        _trained[docs.pipeline] = tokenizer
        return docs


def _narrow(vocab_size: int) -> bool:
    """Whether ids cross the shuffle as uint16 (half the bytes) rather than int32."""
    return vocab_size <= 1 << 16


class _EncodeFn(beam.DoFn):
    """Batch-encodes documents; the tokenizer (a side input) is loaded once per worker and kept."""

    def __init__(self, label: str, seed: int, config: E.TokenizeConfig):
        self.label, self.seed, self.config = label, seed, config

    def setup(self):
        self.counters = StageCounters(self.label)
        self.encoder = None
        self._source = None

    def start_bundle(self):
        self.buf, self.chars = [], 0

    def process(self, doc, tokenizer_json):
        if tokenizer_json is None:  # no document reached TrainTokenizer; the Manifest step counts no_tokenizer
            self.counters.inc("in")
            self.counters.inc("dropped/" + ("empty" if not doc.text else NO_TOKENIZER))
            return
        # The side input is the same object on every call, so this compares MBs of JSON only once.
        if tokenizer_json is not self._source:
            if tokenizer_json != self._source:
                self.encoder = E.DocumentEncoder(tokenizer_json)
            self._source = tokenizer_json
        self.buf.append(doc)
        self.chars += len(doc.text)
        if self.chars >= E.BATCH_CHARS or len(self.buf) >= E.BATCH_DOCS:
            yield from self._flush()

    def finish_bundle(self):
        for item in self._flush():
            yield beam.transforms.window.GlobalWindows.windowed_value(item)

    def _flush(self):
        docs, self.buf, self.chars = self.buf, [], 0
        if not docs:
            return
        config, narrow = self.config, _narrow(self.encoder.info.vocab_size)
        for split, p in E.encode_documents(self.encoder, docs, self.counters, self.seed, config.validation_fraction):
            # The bucket is fixed by the config, so encoding and bucketing fuse and the ids cross the runner
            # once (the GroupByKey). Plain tuples with raw bytes use Beam's fast coders.
            ids = p.ids.astype(np.uint16) if narrow else p.ids
            yield (split, E.bucket_of(split, p.key, config)), (p.key, p.doc_id, p.copy, p.crc, ids.tobytes())


class _WriteBucketFn(beam.DoFn):
    def __init__(self, folder: str, config: E.TokenizeConfig):
        self.folder, self.config = folder, config

    def setup(self):
        self._source = None

    def process(self, item, tokenizer_json):
        (split, bucket), rows = item
        if tokenizer_json is None:  # Encode emits nothing without a tokenizer
            return
        if tokenizer_json != self._source:
            tok, self.info = load_tokenizer(tokenizer_json)
            self.byte_lengths = token_byte_lengths(tok)
            self._source = tokenizer_json
        dtype = np.uint16 if _narrow(self.info.vocab_size) else np.int32
        pieces = [E.Piece(key, doc_id, copy, crc, np.frombuffer(ids, dtype=dtype).astype(np.int32))
                  for key, doc_id, copy, crc, ids in rows]
        yield from E.write_bucket(pieces, self.folder, split, bucket, self.config, self.info, self.byte_lengths)


class Tokenize(Stage):
    """Encodes documents (each emitted `repeats` times, EOS after each), packs them into sequences of
    `seq_len` ids and writes train/validation Arrow shards of about `shard_bytes` plus manifest.json to
    OUTPUT/<subdir> ("" for OUTPUT itself). The validation split holds about `validation_fraction` of the
    documents, chosen by a seeded hash of the id. Pieces go to `buckets` buckets (train; validation gets
    buckets × validation_fraction, rounded up), each sorted and packed on one worker. Counters: in, kept,
    dropped/empty, dropped/zero_repeats, tokens_unique, tokens_emitted, documents_train, documents_validation.
    """

    def __init__(self, label: str = "Tokenize", seq_len: int = 2048, shard_bytes: int = 128 << 20,
                 validation_fraction: float = 0.01, domain: str = "web", tokenizer: str | None = None,
                 source: str | None = None, subdir: str = TOKENS_DIR, buckets: int = E.TokenizeConfig.buckets):
        self.label = label
        self.subdir = subdir
        self.config = E.TokenizeConfig(seq_len=seq_len, shard_bytes=shard_bytes,
                                       validation_fraction=validation_fraction, domain=domain, buckets=buckets)
        self.tokenizer = tokenizer
        self.source = source

    def validate(self, ctx: RunContext) -> None:
        # A given tokenizer is loaded here, on the launching machine, so every problem with it (a missing file, a
        # bad URL, malformed JSON, no end-of-text token, unknown bytes per token) is one line before the run.
        if self.tokenizer is not None:
            try:
                tok, _ = load_tokenizer(self.tokenizer)
                token_byte_lengths(tok)
            except UserError as e:
                raise UserError(f"stage {self.label}: {e}") from None

    def expand(self, docs, ctx: RunContext):
        label, config, seed = self.label, self.config, ctx.seed
        folder = ctx.path(self.subdir) if self.subdir else ctx.output
        fs.makedirs(folder)
        tokenizer = _trained.get(docs.pipeline) if self.tokenizer is None else None
        if tokenizer is None:
            path = self.tokenizer or fs.join(folder, TOKENIZER)
            if self.tokenizer is None and not fs.is_file(path):
                raise UserError(f"stage {label}: no tokenizer: add a TrainTokenizer stage before it, "
                                f"or pass tokenizer=PATH (looked for {path})")
            # read_tokenizer_json: a published tokenizer with no PAD gets one here, once, so the workers' ids
            # and the tokenizer.json the dataset ships are the same tokenizer.
            text = read_tokenizer_json(path).decode("utf-8")
            tokenizer = docs.pipeline | f"{label}/Tokenizer" >> beam.Create([text])
        # default_value: a TrainTokenizer that saw no document yields nothing, and without a default Beam hands
        # the DoFns an EmptySideInput object instead of None.
        tok = AsSingleton(tokenizer, default_value=None)
        encoded = docs | f"{label}/Encode" >> beam.ParDo(_EncodeFn(label, seed, config), tok)
        source = self.source or ctx.recipe_name

        def finish(entries, tokenizer_json):
            if tokenizer_json is None:  # nothing reached TrainTokenizer: the driver reports it after the run
                StageCounters(label).inc(NO_TOKENIZER)
                return
            _, info = load_tokenizer(tokenizer_json)
            E.finalize(folder, entries, tokenizer_json.encode("utf-8"), info, config, source=source,
                       recipe_sha256=ctx.recipe_hash, seed=seed)

        (
            encoded
            | f"{label}/Group" >> beam.GroupByKey()
            | f"{label}/Pack" >> beam.ParDo(_WriteBucketFn(folder, config), tok)
            | f"{label}/Entries" >> beam.combiners.ToList()
            | f"{label}/Manifest" >> beam.Map(finish, tok)
        )
        return docs
