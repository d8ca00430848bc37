"""Beam stages for dedup: ExactDedup, BloomDedup, MinHashDedup and LogCountResample.

Thin wrappers over the pure cores in this package. Every stage counts `<label>/in`, `kept`, `dropped/<reason>`
and whitespace tokens `tokens_in` / `tokens_out` (for LogCountResample, tokens_out counts tokens x repeats).
Nothing depends on bundle order or worker count: representatives are the smallest document id (then the smallest
text hash, then serialization, for documents sharing an id: see doc_key), Bloom shards are visited in id order,
and stochastic rounding is seeded from (run seed, document id).
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
from dataclasses import asdict

import apache_beam as beam
import numpy as np
from apache_beam.transforms.window import GlobalWindows

from gristmill.dedup import bloom as bloom_core
from gristmill.dedup.clusters import StarComponents
from gristmill.dedup.exact import text_key, word_count
from gristmill.dedup.minhash import MinHashConfig, band_keys, bucket_pairs, estimated_jaccard, shingles, signatures
from gristmill.dedup.resample import ResampleConfig, cluster_weight, stochastic_round
from gristmill.errors import UserError
from gristmill.pipeline.stages import RunContext, Stage, StageCounters

# ---------------------------------------------------------------- document keys


def doc_key(doc) -> tuple[str, str]:
    """What BloomDedup and MinHashDedup tell documents apart by: the id, then a hash of the text. Ids are unique
    but for a WARC that reuses a record id (or two records without one, from one URL): such documents are then
    still each deduplicated as itself (Bloom), and each its own node of the near-duplicate graph (MinHash),
    instead of one page's lines or cluster being given to all of them. Ordered as the id alone when ids are
    unique, so the copy of a line kept, and a cluster's representative, are still the smallest id's."""
    return doc.id, hashlib.blake2b(doc.text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def serialization(doc) -> tuple[str, str]:
    """The order copies under one id and text are kept in: their serialization without same_id_member, which an
    earlier keep="all" run set on all copies but the one it kept (so a later run keeps that one too), then with it."""
    marked = doc.to_json()
    return (dataclasses.replace(doc, same_id_member=False).to_json() if doc.same_id_member else marked), marked


def by_serialization(docs: list) -> list:
    """Copies under one doc_key (one record read from two copies of its WARC file: only `warc` differs) in the
    order of their serialization, so the copy kept never depends on the order they arrive in."""
    return sorted(docs, key=serialization) if len(docs) > 1 else docs


def is_representative(doc) -> bool:
    """Whether a document is its near-duplicate cluster's representative: cluster_id is its own id, and it is not
    a member left in by keep="all" under the representative's id (same_id_member, see _AssignFn)."""
    return doc.cluster_id == doc.id and not doc.same_id_member


# ---------------------------------------------------------------- copies of earlier clusters


def earlier_cluster_copies(doc) -> tuple[str, int, int]:
    """(earlier cluster, dup_count, earlier cluster size if the document is its representative else 0). Summing
    dup_count over the members of one earlier cluster that are present, and taking the larger of that and the
    representative's size, counts each copy once whether the earlier run kept only representatives or all."""
    earlier = doc.id if doc.cluster_id is None else doc.cluster_id
    return earlier, doc.dup_count, doc.cluster_size if is_representative(doc) else 0


def add_copies(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    """Two (dup_count total, representative's size) of one earlier cluster's members, together: the one rule
    ExactDedup (add_earlier_copies) and MinHashDedup (_EarlierClusterCopies) count earlier clusters by."""
    return a[0] + b[0], max(a[1], b[1])


def add_earlier_copies(counts: dict, doc) -> None:
    """Adds a document to counts, {earlier cluster: (dup_count total, representative's size)}."""
    cluster, dup_count, rep_size = earlier_cluster_copies(doc)
    counts[cluster] = add_copies(counts.get(cluster, (0, 0)), (dup_count, rep_size))


def merge_earlier_copies(counts: dict, other: dict) -> None:
    """Adds other's entries to counts (see add_earlier_copies)."""
    for cluster, copies in other.items():
        counts[cluster] = add_copies(counts.get(cluster, (0, 0)), copies)


def earlier_copies_total(counts: dict) -> int:
    """Copies the earlier clusters in counts stand for: per cluster, the larger of its members' dup_count total and
    its representative's size (see earlier_cluster_copies)."""
    return sum(max(v) for v in counts.values())


# ---------------------------------------------------------------- exact


def counts_alone(doc) -> bool:
    """Whether a copy's count needs no earlier cluster's entry in ExactDedup: it is in no earlier cluster, or it is
    the representative of one that stands for no copy but its own (a singleton, such as a text with no shingles).
    Its dup_count is then what earlier_copies_total would give it, whatever else comes, and the copies of one text
    cost no memory however many there are."""
    return doc.cluster_id is None or (is_representative(doc) and doc.cluster_size <= doc.dup_count)


def _first(a, b) -> bool:
    """Whether copy `a` is kept before `b`: the smaller id, then (copies under one id, from a WARC that reuses a
    record id) the smaller text, then (one record read twice, from two copies of its WARC file: only `warc`
    differs) the smaller serialization, so the one kept never depends on the order copies arrive in."""
    if (a.id, a.text) != (b.id, b.text):
        return (a.id, a.text) < (b.id, b.text)
    return serialization(a) < serialization(b)


class _KeepSmallestId(beam.CombineFn):
    """Accumulator (documents, copies, copies counted alone, earlier clusters' copies, any earlier representative,
    smallest-id document). copies sums dup_count, so chained runs add up. The copies stood for are counted as
    MinHashDedup counts an earlier cluster's members (earlier_cluster_copies): a member left in by keep="all" and
    its representative, whose cluster_size already counts it, are not both counted; counts_alone copies add
    their dup_count."""

    def create_accumulator(self):
        return 0, 0, 0, {}, False, None

    def add_input(self, acc, doc):
        n, copies, alone, earlier, rep, best = acc
        if counts_alone(doc):
            alone += doc.dup_count
        else:
            add_earlier_copies(earlier, doc)
        return (n + 1, copies + doc.dup_count, alone, earlier, rep or is_representative(doc),
                doc if best is None or _first(doc, best) else best)

    def merge_accumulators(self, accs):
        n, copies, alone, earlier, rep, best = 0, 0, 0, {}, False, None
        for an, ac, al, ae, ar, ab in accs:
            n, copies, alone, rep = n + an, copies + ac, alone + al, rep or ar
            merge_earlier_copies(earlier, ae)
            if ab is not None and (best is None or _first(ab, best)):
                best = ab
        return n, copies, alone, earlier, rep, best

    def extract_output(self, acc):
        n, copies, alone, earlier, rep, best = acc
        return n, copies, alone + earlier_copies_total(earlier), rep, best


class _CountInFn(beam.DoFn):
    def __init__(self, label: str):
        self.label = label

    def setup(self):
        self.counters = StageCounters(self.label)

    def process(self, doc):
        self.counters.inc("in")
        self.counters.inc("tokens_in", word_count(doc.text))
        yield text_key(doc.text), doc


class _EmitRepresentativeFn(beam.DoFn):
    def __init__(self, label: str):
        self.label = label

    def setup(self):
        self.counters = StageCounters(self.label)

    def process(self, kv):
        n, copies, stood, rep, best = kv[1]
        doc = copy.copy(best)
        doc.dup_count = copies
        if rep:
            # A copy is the representative of an earlier run's near-duplicate cluster (dedup run again over
            # earlier output): the one kept stands for every cluster merged here, so the size is not lost
            # when a copy with a smaller id is kept, nor when two runs' representatives meet.
            doc.cluster_id, doc.cluster_size, doc.same_id_member = doc.id, stood, False
        self.counters.inc("kept")
        if n > 1:
            self.counters.inc("dropped/exact_duplicate", n - 1)
        self.counters.inc("tokens_out", word_count(doc.text))
        yield doc


class ExactDedup(Stage):
    """Groups documents by the hash of their normalized text; keeps the smallest id with dup_count = copies.
    When a copy is an earlier MinHashDedup's representative, the kept one becomes the representative of a
    cluster of all the copies they stand for, counted per earlier cluster as MinHashDedup counts them."""

    def __init__(self, label: str = "ExactDedup"):
        self.label = label

    def expand(self, pcoll, ctx: RunContext):
        return (
            pcoll
            | f"{self.label}/Key" >> beam.ParDo(_CountInFn(self.label))
            | f"{self.label}/Group" >> beam.CombinePerKey(_KeepSmallestId())
            | f"{self.label}/Emit" >> beam.ParDo(_EmitRepresentativeFn(self.label))
        )


# ---------------------------------------------------------------- bloom


class _UnitKeysFn(beam.DoFn):
    """Documents -> (shard, [(key, doc_key, unit_index), ...]), buffered per shard: one element per shard
    and buffer instead of one per line keeps Beam's per-element cost off the hot path. Each document also
    goes out as (doc_key, document) on "docs", for the join, so its text is hashed once."""

    FLUSH_AT = 50_000

    def __init__(self, label: str, cfg: bloom_core.BloomConfig):
        self.label, self.cfg = label, cfg

    def setup(self):
        self.counters = StageCounters(self.label)

    def start_bundle(self):
        self.buf, self.buffered = {}, 0

    def process(self, doc):
        self.counters.inc("in")
        self.counters.inc("tokens_in", word_count(doc.text))
        units, _ = bloom_core.split_units(doc.text, self.cfg.unit)
        this_doc = doc_key(doc)
        yield beam.pvalue.TaggedOutput("docs", (this_doc, doc))
        keyed = 0
        for idx, u in enumerate(units):
            key = bloom_core.unit_key(u)
            if key is not None:  # blank units are never deduplicated, so they are not counted in units_in
                self.buf.setdefault(bloom_core.shard_of(key, self.cfg.num_shards), []).append((key, this_doc, idx))
                keyed += 1
        self.counters.inc("units_in", keyed)
        self.buffered += keyed
        if self.buffered >= self.FLUSH_AT:
            yield from self._flush()

    def finish_bundle(self):
        for kv in self._flush():
            yield GlobalWindows.windowed_value(kv)

    def _flush(self):
        buf, self.buf, self.buffered = self.buf, {}, 0
        yield from sorted(buf.items())


class _ShardDedupFn(beam.DoFn):
    def __init__(self, label, cfg: bloom_core.BloomConfig, capacity: int, rate: float, save_to: str | None):
        self.label, self.cfg, self.capacity, self.rate, self.save_to = label, cfg, capacity, rate, save_to

    def process(self, kv):
        shard, items = kv
        n = self.cfg.num_shards
        previous = None
        if self.cfg.load_from:
            previous = bloom_core.load_filter(bloom_core.shard_path(self.cfg.load_from, shard, n))
        current = bloom_core.new_filter(self.capacity, self.rate)
        # With a loaded filter the new keys go into it (dedup_shard), so it is the one saved: both runs' keys.
        dups = bloom_core.dedup_shard((o for chunk in items if chunk is not None for o in chunk), previous, current)
        if self.save_to is not None:
            saved = current if previous is None else previous
            bloom_core.save_filter(bloom_core.shard_path(self.save_to, shard, n), saved, shard, n, self.cfg.unit)
        for key, idx, where in dups:
            yield key, (idx, where)


class _RebuildFn(beam.DoFn):
    def __init__(self, label: str, cfg: bloom_core.BloomConfig):
        self.label, self.cfg = label, cfg

    def setup(self):
        self.counters = StageCounters(self.label)

    def process(self, kv):
        _, grouped = kv
        # Documents under one key are copies with one id and one text (see doc_key): a unit of theirs is
        # found duplicate once per copy after the first to hold it, so of k copies, a unit found duplicate m
        # times is removed from the last m, and one copy of each unit stays. The copies may differ in the rest
        # (one record read from two copies of its WARC file: `warc` differs), so they are put in the order of
        # their serialization first (by_serialization).
        dups: dict[int, list[str]] = {}
        for idx, where in grouped["dup"]:
            dups.setdefault(idx, []).append(where)
        docs = by_serialization(list(grouped["doc"]))
        for wheres in dups.values():
            wheres.sort()
        k = len(docs)
        for n, doc in enumerate(docs):
            removed = {idx: wheres[n - k + len(wheres)] for idx, wheres in dups.items() if n >= k - len(wheres)}
            if removed:
                units, sep = bloom_core.split_units(doc.text, self.cfg.unit)
                self.counters.inc("units_removed", len(removed))
                cross = sum(1 for w in removed.values() if w == "previous_run")
                if cross:
                    self.counters.inc("units_removed_previous_run", cross)
                doc = copy.copy(doc)
                doc.text = sep.join(u for i, u in enumerate(units) if i not in removed)
            words = word_count(doc.text)
            if words < self.cfg.min_words:
                self.counters.inc("dropped/" + ("empty_after_dedup" if words == 0 else "too_short_after_dedup"))
                continue
            self.counters.inc("kept")
            self.counters.inc("tokens_out", words)
            yield doc


class BloomDedup(Stage):
    """Removes lines or paragraphs seen before (in this run, or in the filter saved by an earlier run)."""

    def __init__(self, label: str = "BloomDedup", config: bloom_core.BloomConfig | None = None, **kwargs):
        self.label = label
        self.config = config or bloom_core.BloomConfig(**kwargs)

    def validate(self, ctx: RunContext) -> dict | None:
        """Checks the saved filter up front, so a missing or corrupt file fails before any work."""
        if not self.config.load_from:
            return None
        # The runner validates before building the graph and expand() needs the header again: read once.
        if getattr(self, "_checked", None) is None:
            # A run's output folder stands for its bloom_filter/ subfolder; resolved once, here, so the
            # workers' load_filter reads the same folder that was checked.
            resolved = bloom_core.resolve_filter_folder(self.config.load_from)
            if resolved != self.config.load_from:
                self.config = dataclasses.replace(self.config, load_from=resolved)
            self._checked = bloom_core.check_saved_filter(self.config.load_from, self.config.num_shards,
                                                          self.config.unit)
        return self._checked

    def expand(self, pcoll, ctx: RunContext):
        loaded = self.validate(ctx)
        cfg, label = self.config, self.label
        # A loaded filter fixes the rate and initial size: the new keys are added to it (it grows when full),
        # and this run's own filter, used only to tell this-run from previous-run duplicates, uses the same.
        capacity = loaded["initial_capacity"] if loaded else cfg.shard_capacity()
        rate = loaded["false_positive_rate"] if loaded else cfg.false_positive_rate
        save_to = None if cfg.save_to is None else (cfg.save_to or ctx.path("bloom_filter"))
        every_shard = pcoll.pipeline | f"{label}/Shards" >> beam.Create([(s, None) for s in range(cfg.num_shards)])
        keys = pcoll | f"{label}/UnitKeys" >> beam.ParDo(_UnitKeysFn(label, cfg)).with_outputs("docs", main="units")
        dups = (
            (keys.units, every_shard)
            | f"{label}/AllShards" >> beam.Flatten()
            | f"{label}/GroupShards" >> beam.GroupByKey()
            | f"{label}/Filter" >> beam.ParDo(_ShardDedupFn(label, cfg, capacity, rate, save_to))
        )
        return (
            {"doc": keys.docs, "dup": dups}
            | f"{label}/Join" >> beam.CoGroupByKey()
            | f"{label}/Rebuild" >> beam.ParDo(_RebuildFn(label, cfg))
        )


# ---------------------------------------------------------------- minhash


class _EarlierClusterCopies(beam.CombineFn):
    """(dup_count, representative's size) of one earlier cluster's members in one new cluster -> copies."""

    def create_accumulator(self):
        return 0, 0

    def add_input(self, acc, value):
        return add_copies(acc, value)

    def merge_accumulators(self, accs):
        return functools.reduce(add_copies, accs, (0, 0))

    def extract_output(self, acc):
        return max(acc)


def node_copies(docs) -> int:
    """Copies the documents of one node (copies under one doc_key) stand for when the node is in no cluster:
    counted as for a cluster's members (see _EarlierClusterCopies), so one document stands for its dup_count, or
    the size of the earlier cluster it represents if larger."""
    earlier: dict = {}
    for doc in docs:
        add_earlier_copies(earlier, doc)
    return earlier_copies_total(earlier)


class _SignatureFn(beam.DoFn):
    """A batch of documents -> band keys, signatures (for verification) and copy counts, all by node: the
    doc_key, so different pages under one id are different nodes, and copies of one page are one."""

    def __init__(self, label: str, cfg: MinHashConfig):
        self.label, self.cfg = label, cfg

    def setup(self):
        self.counters = StageCounters(self.label)
        self.bands, self.rows = self.cfg.banding()

    def process(self, docs):
        sets = [shingles(d.text, self.cfg.ngram) for d in docs]
        sigs = signatures(sets, self.cfg)
        for doc, ss, sig in zip(docs, sets, sigs):
            self.counters.inc("in")
            self.counters.inc("tokens_in", word_count(doc.text))
            node = doc_key(doc)
            yield beam.pvalue.TaggedOutput("docs", (node, doc))
            if not ss:
                self.counters.inc("no_shingles")
                continue
            yield beam.pvalue.TaggedOutput("copies", (node, earlier_cluster_copies(doc)))
            if self.cfg.verify:
                yield beam.pvalue.TaggedOutput("sigs", (node, sig.tobytes()))
            for key in band_keys(sig, self.bands, self.rows):
                yield beam.pvalue.TaggedOutput("bands", (key, node))


class _BucketPairsFn(beam.DoFn):
    def __init__(self, label: str, max_bucket_size: int):
        self.label, self.max_bucket_size = label, max_bucket_size

    def setup(self):
        self.counters = StageCounters(self.label)

    def process(self, kv):
        pairs, oversized = bucket_pairs(kv[1], self.max_bucket_size)
        if oversized:
            self.counters.inc("oversized_buckets")
        yield from pairs


def _probe_second(kv):
    a, grouped = kv
    for sig_a in grouped["sig"]:
        for b in grouped["pair"]:
            yield b, (a, sig_a)


class _VerifyFn(beam.DoFn):
    def __init__(self, label: str, threshold: float):
        self.label, self.threshold = label, threshold

    def setup(self):
        self.counters = StageCounters(self.label)

    def process(self, kv):
        b, grouped = kv
        for sig_b in grouped["sig"]:
            vb = np.frombuffer(sig_b, dtype=np.uint32)
            for a, sig_a in grouped["probe"]:
                self.counters.inc("candidate_pairs")
                if estimated_jaccard(np.frombuffer(sig_a, dtype=np.uint32), vb) >= self.threshold:
                    self.counters.inc("verified_pairs")
                    yield a, b


class _CountPairsFn(beam.DoFn):
    def __init__(self, label: str):
        self.label = label

    def setup(self):
        self.counters = StageCounters(self.label)

    def process(self, pair):
        self.counters.inc("candidate_pairs")
        yield pair


def _member_copies(kv):
    _, grouped = kv
    for cid in grouped["cluster"]:
        for earlier, dup_count, rep_size in grouped["copies"]:
            yield (cid, earlier), (dup_count, rep_size)


def _member_cluster(kv):
    cid, grouped = kv
    for size in grouped["size"]:
        for node in grouped["member"]:
            yield node, (cid, size)


class _AssignFn(beam.DoFn):
    def __init__(self, label: str, keep: str):
        self.label, self.keep = label, keep

    def setup(self):
        self.counters = StageCounters(self.label)

    def process(self, kv):
        node, grouped = kv
        cluster = list(grouped["cluster"])
        # Copies of one page under one id are one node: as near-duplicates of each other (which copies under two
        # ids are), one of them, the first by_serialization, stands for the node.
        docs = by_serialization(list(grouped["doc"]))
        cluster_node, size = cluster[0] if cluster else (node, node_copies(docs))
        for n, doc in enumerate(docs):
            representative = cluster_node == node and n == 0
            doc = copy.copy(doc)
            doc.cluster_id, doc.cluster_size = cluster_node[0], size
            # A member under the representative's id (another version of its page, or a copy) has cluster_id ==
            # id too: marked, so that LogCountResample and a later dedup do not take it for a representative.
            # Never set where ids are unique, so such output is unchanged.
            doc.same_id_member = not representative and doc.id == cluster_node[0]
            if self.keep == "representative" and not representative:
                self.counters.inc("dropped/near_duplicate")
                continue
            if doc.cluster_size > 1:
                self.counters.inc("in_clusters")
            self.counters.inc("kept")
            self.counters.inc("tokens_out", word_count(doc.text))
            yield doc


class MinHashDedup(Stage):
    """Near-duplicate clusters by MinHash-LSH; sets cluster_id (smallest id) and cluster_size on every document.

    cluster_size counts copies (the sum of dup_count over the cluster), so it is the same whether or not
    ExactDedup ran first. Run again over its own output, it keeps the earlier sizes: a representative of
    an earlier cluster stands for that cluster's size (see earlier_cluster_copies). The graph's nodes are
    doc_keys: pages that share an id are clustered only when they are near-duplicates, and copies of one page
    under one id are one node. keep="representative" keeps one document per cluster, of its smallest node (the
    smallest id), the first by_serialization; keep="all" only annotates, and marks same_id_member the members that
    share the representative's id (see is_representative).
    """

    def __init__(self, label: str = "MinHashDedup", config: MinHashConfig | None = None, keep: str = "representative",
                 rounds: int = 5, batch_size: int = 256, **kwargs):
        if keep not in ("representative", "all"):
            raise UserError(f"stage {label}: keep must be 'representative' or 'all', not {keep!r}")
        self.label = label
        self.config = config or MinHashConfig(**kwargs)
        self.keep, self.rounds, self.batch_size = keep, rounds, batch_size

    def describe(self):
        d = super().describe()
        d["config"] = {**asdict(self.config), "banding": list(self.config.banding())}
        return d

    def expand(self, pcoll, ctx: RunContext):
        label, cfg = self.label, self.config
        parts = (
            pcoll
            | f"{label}/Batch" >> beam.BatchElements(min_batch_size=self.batch_size, max_batch_size=self.batch_size)
            | f"{label}/Signatures"
            >> beam.ParDo(_SignatureFn(label, cfg)).with_outputs("docs", "copies", "sigs", "bands")
        )
        pairs = (
            parts.bands
            | f"{label}/GroupBands" >> beam.GroupByKey()
            | f"{label}/BucketPairs" >> beam.ParDo(_BucketPairsFn(label, cfg.max_bucket_size))
            | f"{label}/DistinctPairs" >> beam.Distinct()
        )
        if cfg.verify:
            probes = (
                {"sig": parts.sigs, "pair": pairs}
                | f"{label}/JoinFirst" >> beam.CoGroupByKey()
                | f"{label}/Probe" >> beam.FlatMap(_probe_second)
            )
            edges = (
                {"sig": parts.sigs, "probe": probes}
                | f"{label}/JoinSecond" >> beam.CoGroupByKey()
                | f"{label}/Verify" >> beam.ParDo(_VerifyFn(label, cfg.verify_threshold()))
            )
        else:
            edges = pairs | f"{label}/CountPairs" >> beam.ParDo(_CountPairsFn(label))
        components = edges | f"{label}/Components" >> StarComponents(label, self.rounds)
        sizes = (
            {"cluster": components, "copies": parts.copies}
            | f"{label}/JoinCopies" >> beam.CoGroupByKey()
            | f"{label}/MemberCopies" >> beam.FlatMap(_member_copies)
            | f"{label}/EarlierClusters" >> beam.CombinePerKey(_EarlierClusterCopies())
            | f"{label}/ByNewCluster" >> beam.Map(lambda kv: (kv[0][0], kv[1]))
            | f"{label}/ClusterSize" >> beam.CombinePerKey(sum)
        )
        member_cluster = (
            {"member": components | f"{label}/ByCluster" >> beam.Map(lambda nc: (nc[1], nc[0])), "size": sizes}
            | f"{label}/JoinSizes" >> beam.CoGroupByKey()
            | f"{label}/MemberCluster" >> beam.FlatMap(_member_cluster)
        )
        return (
            {"doc": parts.docs, "cluster": member_cluster}
            | f"{label}/JoinDocs" >> beam.CoGroupByKey()
            | f"{label}/Assign" >> beam.ParDo(_AssignFn(label, self.keep))
        )


# ---------------------------------------------------------------- resampling


class _ResampleFn(beam.DoFn):
    def __init__(self, label: str, cfg: ResampleConfig, seed: int):
        self.label, self.cfg, self.seed = label, cfg, seed

    def setup(self):
        self.counters = StageCounters(self.label)

    def process(self, doc):
        self.counters.inc("in")
        words = word_count(doc.text)
        self.counters.inc("tokens_in", words)
        if doc.cluster_id is not None and not is_representative(doc):
            self.counters.inc("dropped/near_duplicate")
            return
        doc = copy.copy(doc)
        doc.weight = cluster_weight(max(doc.cluster_size, doc.dup_count), self.cfg)
        doc.repeats = stochastic_round(doc.weight, self.seed, doc.id)
        self.counters.inc("kept")
        self.counters.inc("repeats", doc.repeats)
        self.counters.inc("tokens_out", words * doc.repeats)
        yield doc


class LogCountResample(Stage):
    """Keeps one representative per cluster with weight 1 + log_base(copies) and whole `repeats`."""

    def __init__(self, label: str = "LogCountResample", config: ResampleConfig | None = None, **kwargs):
        self.label = label
        self.config = config or ResampleConfig(**kwargs)

    def expand(self, pcoll, ctx: RunContext):
        return pcoll | f"{self.label}/Weigh" >> beam.ParDo(_ResampleFn(self.label, self.config, ctx.seed))
