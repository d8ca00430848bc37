"""Star-contraction connected components against scipy's connected_components, in memory and on Beam."""
import random

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from gristmill.dedup.clusters import StarComponents, large_star, small_star, star_components, union_find_roots


def reference_components(edges):
    """node -> smallest node of its component, from scipy."""
    nodes = sorted({x for e in edges for x in e})
    pos = {n: i for i, n in enumerate(nodes)}
    rows = [pos[a] for a, _ in edges]
    cols = [pos[b] for _, b in edges]
    _, lab = connected_components(coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(nodes),) * 2),
                                  directed=False)
    smallest = {}
    for n in nodes:
        smallest.setdefault(lab[pos[n]], n)
    return {n: smallest[lab[pos[n]]] for n in nodes}


def random_graphs():
    rng = random.Random(0)
    path = [(f"n{i:04d}", f"n{i + 1:04d}") for i in range(300)]  # long chains need the most rounds
    rng.shuffle(path)
    sparse_random = [(f"n{rng.randrange(400):04d}", f"n{rng.randrange(400):04d}") for _ in range(300)]
    stars_and_cycles = [("z", "a"), ("a", "b"), ("b", "c"), ("c", "z"), ("q", "r"), ("r", "s"), ("s", "q")]
    return [path, sparse_random, stars_and_cycles]


def test_star_operations_follow_the_paper():
    assert sorted(large_star(5, [2, 7, 9])) == [(7, 2), (9, 2)]
    assert sorted(large_star(1, [2, 3])) == [(2, 1), (3, 1)]
    assert sorted(small_star(5, [2, 3])) == [(3, 2), (5, 2)]


@pytest.mark.parametrize("graph", range(3))
def test_in_memory_components_match_scipy(graph):
    edges = random_graphs()[graph]
    assert star_components(edges) == reference_components([e for e in edges if e[0] != e[1]])
    assert union_find_roots(edges) == reference_components(edges)


@pytest.mark.parametrize("rounds", [0, 1, 4])
def test_beam_components_match_scipy_for_any_round_count(rounds):
    # Few rounds leave residual edges that the exact finish must still merge correctly.
    graphs = random_graphs()
    edges = [e for e in graphs[0] + graphs[1] if e[0] != e[1]]
    expected = sorted(reference_components(edges).items())
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        out = p | beam.Create(edges) | StarComponents("cc", rounds)
        assert_that(out, equal_to(expected))


def _residual_edges(rounds):
    """cc/cc_residual_edges of StarComponents on a shuffled 300-node path: the edges its star rounds left to
    the single-worker finish."""
    from apache_beam.metrics.metric import MetricsFilter

    rng = random.Random(0)
    path = [(f"n{i:04d}", f"n{i + 1:04d}") for i in range(300)]
    rng.shuffle(path)
    p = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    _ = p | beam.Create(path) | StarComponents("cc", rounds)
    result = p.run()
    result.wait_until_finish()
    return sum(c.committed for c in result.metrics().query(MetricsFilter())["counters"]
               if c.key.metric.name == "cc/cc_residual_edges")


def test_star_rounds_converge_and_leave_the_finish_nothing():
    """The exact finish hides a star round that does nothing (the components stay right): the residual count
    shows it, all edges with no rounds and none once the rounds have converged."""
    assert _residual_edges(0) > 0
    assert _residual_edges(12) == 0
