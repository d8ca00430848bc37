"""Connected components of the near-duplicate graph by alternating large-star / small-star rounds.

Kiveris et al., "Connected Components in MapReduce and Beyond" (SoCC 2014). Each round is two groupings by
node, so no worker ever holds more than one node's neighbourhood. The component id is the smallest node id.
A pipeline graph cannot loop until convergence, so the Beam transform runs a fixed number of rounds and then
finishes exactly: each node takes the smallest id among itself and its neighbours, edges whose two ends
still disagree (none once the rounds have converged, few otherwise) are merged by union-find on one worker.
"""
from __future__ import annotations

from typing import Hashable, Iterable

import apache_beam as beam

from gristmill.pipeline.stages import StageCounters


def large_star(node, neighbors: Iterable) -> list[tuple]:
    """Connect every larger neighbour of `node` to the smallest id in its closed neighbourhood."""
    neighbors = set(neighbors)
    m = min(neighbors | {node})
    return [(v, m) for v in neighbors if v > node]


def small_star(node, smaller_neighbors: Iterable) -> list[tuple]:
    """Connect `node` and its smaller neighbours to the smallest of them."""
    group = set(smaller_neighbors) | {node}
    m = min(group)
    return [(v, m) for v in group if v != m]


def _adjacency(edges: Iterable[tuple]) -> dict:
    adj: dict = {}
    for a, b in edges:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    return adj


def _large_star_round(edges: set) -> set:
    return {e for u, nbrs in _adjacency(edges).items() for e in large_star(u, nbrs)}


def _small_star_round(edges: set) -> set:
    smaller: dict = {}
    for a, b in edges:
        lo, hi = (a, b) if a < b else (b, a)
        smaller.setdefault(hi, set()).add(lo)
    return {e for u, nbrs in smaller.items() for e in small_star(u, nbrs)}


def union_find_roots(edges: Iterable[tuple]) -> dict:
    """node -> smallest node of its component, for the nodes in `edges` (used on the small residual)."""
    parent: dict = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            lo, hi = (ra, rb) if ra < rb else (rb, ra)
            parent[hi] = lo
    return {x: find(x) for x in list(parent)}


def star_components(edges: Iterable[tuple]) -> dict[Hashable, Hashable]:
    """node -> component id (smallest node id), by large-star/small-star rounds run to convergence."""
    current = {(a, b) for a, b in edges if a != b}
    nodes = {x for e in current for x in e}
    while True:
        nxt = _small_star_round(_large_star_round(current))
        if nxt == current:
            break
        current = nxt
    labels = {u: min(nbrs | {u}) for u, nbrs in _adjacency(current).items()}
    return {u: labels.get(u, u) for u in nodes}


def _both_directions(edge):
    a, b = edge
    yield a, b
    yield b, a


def _smaller_to_larger(edge):
    a, b = edge
    return (a, b) if a > b else (b, a)


def _label_edges(kv):
    _, grouped = kv
    labels = list(grouped["label"])
    for other in grouped["edge"]:
        for lab in labels:
            yield other, lab


class _ResidualFn(beam.DoFn):
    def __init__(self, label: str):
        self.label = label

    def setup(self):
        self.counters = StageCounters(self.label)

    def process(self, kv):
        _, grouped = kv
        own = list(grouped["label"])
        for lab_other in grouped["other_label"]:
            for lab in own:
                if lab != lab_other:
                    self.counters.inc("cc_residual_edges")
                    yield (lab, lab_other) if lab < lab_other else (lab_other, lab)


def _relabel(node_label, roots):
    node, lab = node_label
    return node, roots.get(lab, lab)


class StarComponents(beam.PTransform):
    """PCollection of undirected edges (a, b) -> PCollection of (node, component id) for every node in an edge.

    `rounds` large-star + small-star rounds run in the pipeline; convergence usually takes a handful
    (O(log n) in practice), and whatever is left is finished exactly on one worker (counted as
    `<label>/cc_residual_edges`).
    """

    def __init__(self, label: str, rounds: int = 5):
        super().__init__()
        self.label = label
        self.rounds = rounds

    def expand(self, edges):
        for i in range(self.rounds):
            edges = (
                edges
                | f"LargeStarKeys{i}" >> beam.FlatMap(_both_directions)
                | f"LargeStarGroup{i}" >> beam.GroupByKey()
                | f"LargeStar{i}" >> beam.FlatMap(lambda kv: large_star(kv[0], kv[1]))
                | f"SmallStarKeys{i}" >> beam.Map(_smaller_to_larger)
                | f"SmallStarGroup{i}" >> beam.GroupByKey()
                | f"SmallStar{i}" >> beam.FlatMap(lambda kv: small_star(kv[0], kv[1]))
            )
        labels = (
            edges
            | "LabelKeys" >> beam.FlatMap(_both_directions)
            | "LabelGroup" >> beam.GroupByKey()
            | "Label" >> beam.Map(lambda kv: (kv[0], min(min(kv[1]), kv[0])))
        )
        first_end = (
            {"label": labels, "edge": edges}
            | "JoinFirstEnd" >> beam.CoGroupByKey()
            | "FirstEndLabel" >> beam.FlatMap(_label_edges)
        )
        residual = (
            {"label": labels, "other_label": first_end}
            | "JoinSecondEnd" >> beam.CoGroupByKey()
            | "Residual" >> beam.ParDo(_ResidualFn(self.label))
            | "ResidualDistinct" >> beam.Distinct()
        )
        roots = residual | "ResidualRoots" >> beam.combiners.ToList() | beam.Map(union_find_roots)
        return labels | "Relabel" >> beam.Map(_relabel, roots=beam.pvalue.AsSingleton(roots))
