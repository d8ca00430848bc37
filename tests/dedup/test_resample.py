"""Log-count weights, seeded stochastic rounding, and the Beam stage's token accounting."""
import math

import pytest

from gristmill.dedup.resample import ResampleConfig, cluster_weight, stochastic_round
from gristmill.dedup.stages import LogCountResample
from gristmill.errors import UserError


def test_default_weight_is_one_plus_log10_count():
    cfg = ResampleConfig()
    assert [cluster_weight(c, cfg) for c in (1, 10, 100)] == [1.0, 2.0, 3.0]
    assert cluster_weight(2, cfg) == pytest.approx(1 + math.log10(2))
    assert cluster_weight(8, ResampleConfig(base=2)) == pytest.approx(4.0)
    assert cluster_weight(9, ResampleConfig(form="sqrt")) == 3.0
    assert cluster_weight(9, ResampleConfig(form="one")) == 1.0
    assert cluster_weight(1000, ResampleConfig(max_weight=2.5)) == 2.5


def test_powers_of_the_base_give_whole_weights_and_repeats():
    # math.log(1000, 10) is 2.9999999999999996: a cluster of 1000 copies got 3 repeats for some documents
    for base, top in ((10.0, 16), (2.0, 60), (3.0, 30)):
        cfg = ResampleConfig(base=base)
        for k in range(top):
            c = int(base) ** k
            assert cluster_weight(c, cfg) == 1.0 + k
            assert {stochastic_round(cluster_weight(c, cfg), 0, f"d{i}") for i in range(50)} == {1 + k}
    # every other count keeps math.log's value bit for bit, so weights written by earlier runs are unchanged
    assert all(cluster_weight(c, ResampleConfig()) == 1.0 + math.log(c, 10) for c in range(1, 5000) if c != 1000)


def test_bad_config_is_a_user_error():
    with pytest.raises(UserError, match="form must be one of"):
        ResampleConfig(form="cube")
    with pytest.raises(UserError, match="base must be > 1"):
        ResampleConfig(base=1.0)
    with pytest.raises(UserError, match="max_weight must be >= 1, not 0.5"):  # a cap below one copy drops data
        ResampleConfig(max_weight=0.5)


def test_the_other_forms_are_their_formulas():
    assert [cluster_weight(c, ResampleConfig(form="count")) for c in (1, 7, 100)] == [1.0, 7.0, 100.0]  # w = c
    assert [cluster_weight(c, ResampleConfig(form="sqrt")) for c in (1, 7, 100)] == [1.0, math.sqrt(7), 10.0]
    assert [cluster_weight(c, ResampleConfig(form="one")) for c in (1, 7, 100)] == [1.0, 1.0, 1.0]
    assert cluster_weight(100, ResampleConfig(form="count", max_weight=3.5)) == 3.5


def test_stochastic_rounding_is_unbiased_and_seeded():
    w = 1.3
    reps = [stochastic_round(w, 7, f"doc{i}") for i in range(20000)]
    assert set(reps) == {1, 2}
    # 20000 Bernoulli(0.3) draws: the mean is within 4 standard errors (0.013) of 1.3.
    assert abs(sum(reps) / len(reps) - w) < 4 * math.sqrt(0.3 * 0.7 / 20000)
    assert reps == [stochastic_round(w, 7, f"doc{i}") for i in range(20000)]
    assert reps != [stochastic_round(w, 8, f"doc{i}") for i in range(20000)]
    assert stochastic_round(3.0, 1, "x") == 3


def test_resample_stage_keeps_representatives_and_counts_repeated_tokens(run_dedup, make_docs):
    docs = make_docs(["one two three", "four five", "six", "seven eight"])
    docs[0].cluster_id, docs[0].cluster_size = docs[0].id, 100  # representative of 100 copies
    docs[1].cluster_id, docs[1].cluster_size = docs[0].id, 100  # a member: dropped
    docs[2].dup_count = 10  # exact copies only
    out, stats = run_dedup(docs, [LogCountResample()], seed=5)
    by_id = {d.id: d for d in out}
    assert set(by_id) == {docs[0].id, docs[2].id, docs[3].id}
    assert by_id[docs[0].id].weight == 3.0 and by_id[docs[0].id].repeats == 3
    assert by_id[docs[2].id].weight == 2.0 and by_id[docs[2].id].repeats == 2
    assert by_id[docs[3].id].weight == 1.0 and by_id[docs[3].id].repeats == 1
    s = stats["stages"]["LogCountResample"]
    assert s["dropped"] == {"near_duplicate": 1} and s["kept"] == 3
    assert s["tokens_out"] == 3 * 3 + 1 * 2 + 2 * 1


def test_the_stage_rounds_with_the_run_seed(run_dedup, make_docs):
    """Pairs (weight 1 + log10 2): each document's repeats are 1, plus 1 when blake2b-64 of "SEED\\0ID" over
    2**64 is below log10 2, with the run's seed; the `repeats` counter is their sum."""
    import hashlib

    docs = make_docs([f"document number {i}" for i in range(60)])
    for d in docs:
        d.dup_count = 2
    frac = math.log10(2)

    def expected(seed, doc_id):
        u = int.from_bytes(hashlib.blake2b(f"{seed}\x00{doc_id}".encode(), digest_size=8).digest(), "big") / 2.0**64
        return 1 + (u < frac)

    repeats = {}
    for seed in (1, 2):
        out, stats = run_dedup(docs, [LogCountResample()], seed=seed, name=f"seed{seed}")
        repeats[seed] = {d.id: d.repeats for d in out}
        assert repeats[seed] == {d.id: expected(seed, d.id) for d in docs}
        assert stats["stages"]["LogCountResample"]["repeats"] == sum(repeats[seed].values())
    assert repeats[1] != repeats[2]
