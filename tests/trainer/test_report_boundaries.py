"""The ablation report's numbers at their edges, against references worked here: the summary's seed statistics
(statistics.mean/stdev), its ranking and gaps by hand, and the RegMix fit's leave-one-out definitions."""
import math
import statistics

import numpy as np
import pytest

from gristmill.trainer import report

SETS = ("clean", "web")


def failed(mixture: str, error: str):
    return {"mixture": mixture, "status": "failed", "error": error}  # as ablate records a run that failed


def run(mixture: str, avg_bpb, avg_loss: float, sets: dict | None = None):
    sets = sets or {n: {"bits_per_byte": avg_bpb, "loss": avg_loss} for n in SETS}
    curve = [{"step": 1, "tokens": 64, "avg_loss": avg_loss + 1, "sets": {n: {"loss": avg_loss + 1} for n in SETS}}]
    return {"mixture": mixture, "status": "ok", "avg_bpb": avg_bpb, "avg_loss": avg_loss,
            "sets": sets, "curve": curve}


def plan(names, rank_by: str = "avg"):
    return {"eval_sets": [{"name": n} for n in SETS], "rank_by": rank_by,
            "mixtures": [{"name": n, "proportions": {"x": 1.0}} for n in names]}


def test_seed_statistics_are_the_mean_and_sample_stdev_and_one_seed_has_no_spread():
    records = [run("a", 1.0, 2.0), run("a", 1.2, 2.5), run("a", 1.5, 2.1), run("b", 1.4, 2.2),
               failed("b", "exit 1: boom")]
    rows = {r["mixture"]: r for r in report.summarize(plan(["a", "b"]), records)}
    a, b = rows["a"], rows["b"]
    assert a["avg_bpb"] == pytest.approx(statistics.mean([1.0, 1.2, 1.5]))
    assert a["avg_bpb_std"] == pytest.approx(statistics.stdev([1.0, 1.2, 1.5]))  # n - 1, not n
    assert a["avg_loss_std"] == pytest.approx(statistics.stdev([2.0, 2.5, 2.1]))
    assert a["sets"]["web"]["loss_std"] == pytest.approx(statistics.stdev([2.0, 2.5, 2.1]))
    assert (b["seeds_ok"], b["seeds_failed"], b["errors"]) == (1, 1, ["exit 1: boom"])
    assert b["avg_bpb"] == 1.4 and b["avg_bpb_std"] is None  # one finished seed: no spread, not nan
    assert a["curve"][0]["avg_loss"] == pytest.approx(statistics.mean([3.0, 3.5, 3.1]))


def test_ranking_gaps_by_hand_and_a_missing_byte_count_ranks_everyone_by_loss():
    rows = report.summarize(plan(["a", "b", "c"]), [run("a", 1.10, 2.0), run("b", 1.00, 2.4), run("c", 1.25, 1.9)])
    assert [r["mixture"] for r in rows] == ["b", "a", "c"]
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert rows[1]["gap"] == pytest.approx(0.10) and rows[1]["gap_pct"] == pytest.approx(10.0)  # percent of best
    assert rows[2]["gap_pct"] == pytest.approx(25.0)
    assert rows[0]["rank_by"] == {"set": "avg", "metric": "bits_per_byte"}
    # One seed of `b` has no byte counts: its mean is None, so no mixture is ranked by bits per byte.
    rows = report.summarize(plan(["a", "b", "c"]), [run("a", 1.10, 2.0), run("b", 1.00, 2.4), run("b", None, 2.4),
                                                     run("c", 1.25, 1.9)])
    b = next(r for r in rows if r["mixture"] == "b")
    assert b["avg_bpb"] is None and b["avg_bpb_std"] is None
    assert [r["mixture"] for r in rows] == ["c", "a", "b"]
    assert [r["score"] for r in rows] == [1.9, 2.0, 2.4]
    assert rows[0]["rank_by"]["metric"] == "loss"


def test_ranking_by_one_set_falls_back_to_loss_when_that_set_lacks_bytes_and_failed_mixtures_come_last():
    sets_a = {"clean": {"bits_per_byte": 0.9, "loss": 3.0}, "web": {"bits_per_byte": 2.0, "loss": 1.0}}
    sets_b = {"clean": {"bits_per_byte": None, "loss": 2.5}, "web": {"bits_per_byte": 2.5, "loss": 1.5}}
    records = [run("a", 1.45, 2.0, sets_a), run("b", None, 2.0, sets_b),
               failed("z", "oom")]
    rows = report.summarize(plan(["z", "a", "b"], rank_by="clean"), records)
    assert [r["mixture"] for r in rows] == ["b", "a", "z"]  # clean loss 2.5 < 3.0, though a's clean bpb is lower
    assert rows[0]["rank_by"] == {"set": "clean", "metric": "loss"}
    assert rows[1]["gap_pct"] == pytest.approx(100 * 0.5 / 2.5)
    assert (rows[2]["rank"], rows[2]["score"], rows[2]["gap"], rows[2]["gap_pct"]) == (None, None, None, None)
    rows = report.summarize(plan(["a", "b"], rank_by="web"), records[:2])
    assert [r["mixture"] for r in rows] == ["a", "b"] and rows[0]["rank_by"]["metric"] == "bits_per_byte"


def test_quadratic_features_are_the_proportions_and_each_distinct_pair_once():
    p = np.array([[0.2, 0.3, 0.5], [0.6, 0.1, 0.3]])
    by_hand = np.array([[a, b, c, a * b, a * c, b * c] for a, b, c in p])
    assert np.array_equal(report.features(p, "quadratic"), by_hand)
    assert np.array_equal(report.features(p, "linear"), p)


def sweep_fit(n: int, prior: dict[str, float]):
    rng = np.random.default_rng(3)
    live = [k for k, v in prior.items() if v > 0]
    p = rng.dirichlet([2.0] * len(live), size=n)
    y = 3.0 + ((p - 1 / len(live)) ** 2).sum(axis=1) + rng.normal(0, 0.01, size=n)
    summary = [{"mixture": f"m{i}", "seeds_ok": 1, "avg_loss": float(v),
                "proportions": {k: 0.0 for k in prior} | dict(zip(live, map(float, row)))}
               for i, (row, v) in enumerate(zip(p, y))]
    return {"sweep": {"prior_proportions": prior, "concentration": 4.0, "seed": 0}}, summary, p, y


def test_leave_one_out_predictions_never_see_the_run_they_predict():
    _, _, p, y = sweep_fit(12, {"a": 0.5, "b": 0.5})
    far = y.copy()
    far[4] += 5.0  # an outlier at run 4 changes every fit that includes it
    for kind, lam in (("linear", 1e-3), ("quadratic", 1e-2)):
        assert report._loo_errors(p, far, kind, lam)[4] == pytest.approx(report._loo_errors(p, y, kind, lam)[4])
        assert report._loo_errors(p, far, kind, lam)[3] != pytest.approx(report._loo_errors(p, y, kind, lam)[3])
    # nested: the model (kind, lambda) for run 4 is chosen without run 4 too
    assert report.held_out_predictions(p, far)[4] == pytest.approx(report.held_out_predictions(p, y)[4])


def test_regmix_fits_at_exactly_the_minimum_and_its_figures_follow_their_definitions():
    sweep, summary, _, y = sweep_fit(report.MIN_FIT_RUNS, {"a": 0.4, "b": 0.6, "off": 0.0})
    fit = report.regmix(sweep, summary)
    assert "skipped" not in fit and fit["runs"] == report.MIN_FIT_RUNS
    held = fit["held_out"]
    assert fit["loo_rmse"] == pytest.approx(math.sqrt(statistics.mean((h["predicted"] - h["avg_loss"]) ** 2
                                                                       for h in held)))
    lowest = min(range(len(y)), key=lambda i: y[i])
    assert fit["best_observed"]["mixture"] == f"m{lowest}" and fit["best_observed"]["avg_loss"] == y[lowest]
    # A source the sweep's prior gives nothing gets nothing in the predicted best.
    best = fit["predicted_best"]["proportions"]
    assert best["off"] == 0.0 and best["a"] + best["b"] == pytest.approx(1.0)
    # RegMix's search: Dirichlet(concentration * prior) candidates from the sweep's seed, the mean of the
    # REGMIX_TOP with the lowest predicted loss under the chosen model, fitted on every run.
    p = np.array([[r["proportions"][n] for n in ("a", "b")] for r in summary])
    x = report.features(p, fit["model"])
    w, b = report.ridge_fit(x, y, fit["ridge_lambda"])
    cand = np.random.default_rng(0).dirichlet([4.0 * 0.4, 4.0 * 0.6], size=report.REGMIX_CANDIDATES)
    scores = report.features(cand, fit["model"]) @ w + b
    top = cand[np.argsort(scores, kind="stable")[:report.REGMIX_TOP]].mean(axis=0)
    assert [best["a"], best["b"]] == pytest.approx(list(top), abs=1e-12)
