"""The ablation report: per-mixture summary over seeds, a ranked Markdown table, JSON and CSV results, PNG plots,
and for a sweep a RegMix-style regression from mixture proportions to validation loss.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_FORMAT = "gristmill.ablation-results/1"
RIDGE_LAMBDAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
REGMIX_CANDIDATES = 100_000
REGMIX_TOP = 100
MIN_FIT_RUNS = 5
PLOT_MIXTURES = 8  # bars per set in the bar chart; with more mixtures the best ones are shown


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values or any(v is None for v in values):
        return None, None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else None


def summarize(plan: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per mixture, mean and sample standard deviation over its finished seeds, ranked by average bits
    per byte over the evaluation sets (average loss where a set has no byte counts); lowest first."""
    set_names = [s["name"] for s in plan["eval_sets"]]
    rows = []
    for mix in plan["mixtures"]:
        runs = [r for r in records if r["mixture"] == mix["name"]]
        ok = [r for r in runs if r["status"] == "ok"]
        row: dict[str, Any] = {"mixture": mix["name"], "seeds_ok": len(ok), "seeds_failed": len(runs) - len(ok),
                               "errors": sorted({r["error"] for r in runs if r["status"] != "ok"}),
                               "proportions": mix["proportions"], "sets": {}}
        for key in ("avg_bpb", "avg_loss"):
            row[key], row[key + "_std"] = _mean_std([r[key] for r in ok])
        for name in set_names:
            entry = {}
            for key in ("bits_per_byte", "loss"):
                entry[key], entry[key + "_std"] = _mean_std([r["sets"][name][key] for r in ok])
            row["sets"][name] = entry
        steps = [e["step"] for e in ok[0]["curve"]] if ok else []
        row["curve"] = [{"step": s, "tokens": ok[0]["curve"][i]["tokens"],
                         "avg_loss": float(np.mean([r["curve"][i]["avg_loss"] for r in ok])),
                         "sets": {n: float(np.mean([r["curve"][i]["sets"][n]["loss"] for r in ok])) for n in set_names}}
                        for i, s in enumerate(steps)]
        rows.append(row)
    done = [r for r in rows if r["seeds_ok"]]
    rank_set = plan.get("rank_by", "avg")
    if rank_set == "avg":
        key = "avg_bpb" if all(r["avg_bpb"] is not None for r in done) else "avg_loss"
        for r in done:
            r["score"] = r[key]
    else:
        key = "bits_per_byte" if all(r["sets"][rank_set]["bits_per_byte"] is not None for r in done) else "loss"
        for r in done:
            r["score"] = r["sets"][rank_set][key]
    ranked = sorted(done, key=lambda r: (r["score"], r["mixture"]))
    best = ranked[0]["score"] if ranked else None
    for i, r in enumerate(ranked, 1):
        r["rank"] = i
        r["gap"] = r["score"] - best
        r["gap_pct"] = 100 * r["gap"] / best if best else None
    for r in rows:
        r["rank_by"] = {"set": rank_set, "metric": "bits_per_byte" if "bpb" in key or "byte" in key else "loss"}
        if not r["seeds_ok"]:
            r["rank"], r["score"], r["gap"], r["gap_pct"] = None, None, None, None
    return ranked + [r for r in rows if not r["seeds_ok"]]


# ----------------------------------------------------------------------------------------------------------
# RegMix: proportions -> validation loss


def features(p: np.ndarray, kind: str) -> np.ndarray:
    """Scheffé mixture terms: the proportions, plus their pairwise products for `quadratic`."""
    if kind == "linear":
        return p
    i, j = np.triu_indices(p.shape[1], k=1)
    return np.hstack([p, p[:, i] * p[:, j]])


def ridge_fit(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, float]:
    """Ridge regression with an unpenalised intercept: (weights, intercept)."""
    xm, ym = x.mean(axis=0), y.mean()
    xc = x - xm
    w = np.linalg.solve(xc.T @ xc + lam * np.eye(x.shape[1]), xc.T @ (y - ym))
    return w, float(ym - xm @ w)


def _loo_errors(p: np.ndarray, y: np.ndarray, kind: str, lam: float) -> np.ndarray:
    x = features(p, kind)
    pred = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        w, b = ridge_fit(x[keep], y[keep], lam)
        pred[i] = x[i] @ w + b
    return pred


def choose_model(p: np.ndarray, y: np.ndarray) -> tuple[str, float]:
    """The (kind, lambda) with the lowest leave-one-out squared error."""
    best = None
    for kind in ("linear", "quadratic"):
        for lam in RIDGE_LAMBDAS:
            err = float(np.mean((_loo_errors(p, y, kind, lam) - y) ** 2))
            if best is None or err < best[0] - 1e-15:
                best = (err, kind, lam)
    return best[1], best[2]


def held_out_predictions(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Nested leave-one-out: each run is predicted by a model chosen and fitted without it."""
    pred = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        kind, lam = choose_model(p[keep], y[keep])
        w, b = ridge_fit(features(p[keep], kind), y[keep], lam)
        pred[i] = features(p[i:i + 1], kind)[0] @ w + b
    return pred


def regmix(plan: dict[str, Any], summary: list[dict[str, Any]]) -> dict[str, Any]:
    """Fit average validation loss on the sweep's proportions; predict the best mixture among Dirichlet
    candidates drawn like the sweep's own members (the mean of the REGMIX_TOP best, as in RegMix)."""
    from scipy.stats import spearmanr

    sweep = plan["sweep"]
    names = list(sweep["prior_proportions"])
    live = [n for n in names if sweep["prior_proportions"][n] > 0]
    done = [r for r in summary if r["seeds_ok"]]
    out: dict[str, Any] = {"target": "avg_loss", "sources": names, "runs": len(done)}
    if len(done) < MIN_FIT_RUNS:
        out["skipped"] = f"{len(done)} finished mixture(s); a fit needs at least {MIN_FIT_RUNS}"
        return out
    p = np.array([[r["proportions"][n] for n in live] for r in done])
    y = np.array([r["avg_loss"] for r in done])
    pred = held_out_predictions(p, y)
    rho = spearmanr(pred, y).statistic if np.ptp(y) > 0 and np.ptp(pred) > 0 else float("nan")
    kind, lam = choose_model(p, y)
    w, b = ridge_fit(features(p, kind), y, lam)
    rng = np.random.default_rng(sweep["seed"])
    alpha = np.array([sweep["concentration"] * sweep["prior_proportions"][n] for n in live])
    cand = rng.dirichlet(alpha, size=REGMIX_CANDIDATES)
    scores = features(cand, kind) @ w + b
    top = cand[np.argsort(scores, kind="stable")[:REGMIX_TOP]].mean(axis=0)
    best_props = {n: 0.0 for n in names} | {n: float(v) for n, v in zip(live, top)}
    observed = min(done, key=lambda r: (r["avg_loss"], r["mixture"]))
    out.update({
        "model": kind, "ridge_lambda": lam,
        "loo_spearman": None if math.isnan(rho) else float(rho),
        "loo_rmse": float(np.sqrt(np.mean((pred - y) ** 2))),
        "held_out": [{"mixture": r["mixture"], "avg_loss": float(t), "predicted": float(q)}
                     for r, t, q in zip(done, y, pred)],
        "predicted_best": {"proportions": best_props,
                           "predicted_avg_loss": float(features(top[None, :], kind)[0] @ w + b)},
        "best_observed": {"mixture": observed["mixture"], "avg_loss": observed["avg_loss"],
                          "proportions": observed["proportions"]},
    })
    return out


# ----------------------------------------------------------------------------------------------------------
# Writing


def _fmt(mean: float | None, std: float | None, digits: int = 4) -> str:
    if mean is None:
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _csv(rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def results_csv(plan: dict[str, Any], records: list[dict[str, Any]]) -> str:
    sets = [s["name"] for s in plan["eval_sets"]]
    head = ["run", "mixture", "seed", "status", "avg_bpb", "avg_loss", *(f"{s}_bpb" for s in sets),
            *(f"{s}_loss" for s in sets), "error"]
    rows = [head]
    for r in records:
        ok = r["status"] == "ok"
        rows.append([r["name"], r["mixture"], r["seed"], r["status"], r.get("avg_bpb") if ok else "",
                     r.get("avg_loss") if ok else "",
                     *(r["sets"][s]["bits_per_byte"] if ok else "" for s in sets),
                     *(r["sets"][s]["loss"] if ok else "" for s in sets), r.get("error", "")])
    return _csv(rows)


def summary_csv(plan: dict[str, Any], summary: list[dict[str, Any]]) -> str:
    sets = [s["name"] for s in plan["eval_sets"]]
    head = ["rank", "mixture", "seeds_ok", "seeds_failed", "score", "avg_bpb", "avg_bpb_std", "avg_loss",
            "avg_loss_std",
            "gap", "gap_pct", *(f"{s}_bpb" for s in sets), *(f"{s}_bpb_std" for s in sets)]
    rows = [head]
    for r in summary:
        cells = [r["rank"], r["mixture"], r["seeds_ok"], r["seeds_failed"], r["score"], r["avg_bpb"], r["avg_bpb_std"],
                 r["avg_loss"], r["avg_loss_std"], r["gap"], r["gap_pct"],
                 *(r["sets"][s]["bits_per_byte"] for s in sets), *(r["sets"][s]["bits_per_byte_std"] for s in sets)]
        rows.append(["" if c is None else c for c in cells])
    return _csv(rows)


def markdown(plan: dict[str, Any], summary: list[dict[str, Any]], fit: dict[str, Any] | None) -> str:
    s = plan["settings"]
    sets = [e["name"] for e in plan["eval_sets"]]
    k = len(plan["seeds"])
    by = summary[0]["rank_by"] if summary else {"set": "avg", "metric": "bits_per_byte"}
    unit = "bits per byte" if by["metric"] == "bits_per_byte" else "loss (nats/token)"
    ranked_on = "the average over the evaluation sets" if by["set"] == "avg" else f"the set `{by['set']}`"
    model = s["train"].get("model")
    lines = [
        "# Ablation report", "",
        f"{len(plan['mixtures'])} mixture(s) × {k} seed(s) ({', '.join(map(str, plan['seeds']))}); model "
        f"`{json.dumps(model) if isinstance(model, dict) else model}`; {s['steps']} steps of "
        f"{s['train']['batch_size']} "
        f"sequences × {s['seq_len']} tokens = {s['tokens']:,} tokens per run; lr {s['train']['lr']:g}, "
        f"precision {s['train']['precision']}; tokenizer `{s['tokenizer_sha256'][:12]}`.", "",
        "Evaluation sets (every model on every set): " + "; ".join(
            f"`{e['name']}` ({'mixture domain' if e['kind'] == 'domain' else 'extra'}, "
            f"{sum(x['sequences'] for x in e['sources'])} sequences)" for e in plan["eval_sets"]) + ".", "",
        "## Ranking", "",
        f"Ranked by {unit} on {ranked_on}; lower is better. "
        + ("± is the sample standard deviation over seeds (n − 1 in the denominator). " if k > 1 else "")
        + "Gap: difference to the best mixture.", "",
        "| rank | mixture | " + " | ".join(f"{n} bpb" for n in sets) + " | avg bpb | avg loss | gap to best | seeds |",
        "|---:|:---|" + "---:|" * len(sets) + "---:|---:|---:|---:|",
    ]
    for r in summary:
        if r["rank"] is None:
            lines.append(f"| – | {r['mixture']} | " + " | ".join("–" for _ in sets)
                         + f" | failed | – | – | 0/{r['seeds_failed']}: {'; '.join(r['errors'])} |")
            continue
        gap = "best" if r["gap"] == 0 else f"+{r['gap']:.4f} (+{r['gap_pct']:.2f}%)"
        seeds = f"{r['seeds_ok']}/{r['seeds_ok'] + r['seeds_failed']}"
        if r["seeds_failed"]:
            seeds += f" ({r['seeds_failed']} failed: {'; '.join(r['errors'])})"
        lines.append(f"| {r['rank']} | {r['mixture']} | "
                     + " | ".join(_fmt(r["sets"][n]["bits_per_byte"], r["sets"][n]["bits_per_byte_std"]) for n in sets)
                     + f" | {_fmt(r['avg_bpb'], r['avg_bpb_std'])} | {_fmt(r['avg_loss'], r['avg_loss_std'])}"
                     + f" | {gap} | {seeds} |")
    lines += ["", "## Validation loss", "", "![validation loss curves](val_loss.png)", "",
              "![bits per byte per evaluation set](bpb_by_domain.png)", ""]
    if fit is not None:
        lines += ["## Sweep regression (RegMix)", ""]
        if "skipped" in fit:
            lines += [f"Not fitted: {fit['skipped']}.", ""]
        else:
            names = fit["sources"]
            rho = "n/a" if fit["loo_spearman"] is None else f"{fit['loo_spearman']:.3f}"
            lines += [
                f"Ridge regression of average validation loss on the proportions ({fit['model']} terms, "
                f"λ = {fit['ridge_lambda']:g}, chosen by leave-one-out error) over {fit['runs']} mixtures. Fit "
                f"quality on held-out runs (nested leave-one-out): Spearman ρ = {rho}, RMSE {fit['loo_rmse']:.4f}.",
                "", "| | " + " | ".join(names) + " | avg loss |", "|:---|" + "---:|" * (len(names) + 1),
                "| predicted best (mean of the top "
                f"{REGMIX_TOP} of {REGMIX_CANDIDATES:,} candidates) | "
                + " | ".join(f"{100 * fit['predicted_best']['proportions'][n]:.1f}%" for n in names)
                + f" | {fit['predicted_best']['predicted_avg_loss']:.4f} (predicted) |",
                f"| best run: {fit['best_observed']['mixture']} | "
                + " | ".join(f"{100 * fit['best_observed']['proportions'][n]:.1f}%" for n in names)
                + f" | {fit['best_observed']['avg_loss']:.4f} (measured) |", "",
                "A predicted optimum is only as good as the fit: check ρ, and confirm it with a run of its own.", ""]
    names = sorted({n for m in plan["mixtures"] for n in m["proportions"]})
    lines += ["## Mixtures", "", "| mixture | " + " | ".join(names) + " |", "|:---|" + "---:|" * len(names)]
    for m in plan["mixtures"]:
        lines.append(f"| {m['name']} | " + " | ".join(
            f"{100 * m['proportions'][n]:.1f}%" if n in m["proportions"] else "–" for n in names) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(plan: dict[str, Any], summary: list[dict[str, Any]], path: Path) -> None:
    """One panel per evaluation set, plus their average when there are several; mean over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter, MaxNLocator

    panels = [e["name"] for e in plan["eval_sets"]] + (["average"] if len(plan["eval_sets"]) > 1 else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), squeeze=False)
    shown = [r for r in summary if r["curve"]]
    for ax, panel in zip(axes[0], panels):
        for i, r in enumerate(shown):
            label = r["mixture"] if i < PLOT_MIXTURES else None
            style = {} if i < PLOT_MIXTURES else {"color": "0.75", "linewidth": 0.8}
            ys = [c["avg_loss"] if panel == "average" else c["sets"][panel] for c in r["curve"]]
            ax.plot([c["tokens"] for c in r["curve"]], ys, marker=".", label=label, **style)
        ax.set_title(f"{panel}" + (" of the sets" if panel == "average" else ""))
        ax.set_xlabel("training tokens")
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation loss (nats/token)")
    if shown:
        axes[0][-1].legend(fontsize=8)
    fig.suptitle("Validation loss per mixture (mean over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def plot_bars(plan: dict[str, Any], summary: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = [e["name"] for e in plan["eval_sets"]]
    shown = [r for r in summary if r["seeds_ok"]][:PLOT_MIXTURES]
    key = "bits_per_byte" if all(r["sets"][s]["bits_per_byte"] is not None for r in shown for s in sets) else "loss"
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(sets) * max(1, len(shown)) / 2), 4.5))
    width = 0.8 / max(1, len(shown))
    x = np.arange(len(sets))
    for i, r in enumerate(shown):
        vals = [r["sets"][s][key] for s in sets]
        errs = [r["sets"][s][key + "_std"] or 0.0 for s in sets]
        ax.bar(x + (i - (len(shown) - 1) / 2) * width, vals, width, yerr=errs, capsize=2, label=r["mixture"])
    ax.set_xticks(x, sets)
    ax.set_ylabel("bits per byte" if key == "bits_per_byte" else "loss (nats/token)")
    ax.set_title("Per evaluation set, lower is better")
    if shown:
        lo = min(r["sets"][s][key] for r in shown for s in sets)
        ax.set_ylim(bottom=max(0.0, 0.9 * lo))
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def write_report(plan: dict[str, Any], records: list[dict[str, Any]], rundir: Path) -> dict[str, Path]:
    """Write results.json, results.csv, summary.csv, report.md, val_loss.png and bpb_by_domain.png."""
    rundir = Path(rundir)
    summary = summarize(plan, records)
    fit = regmix(plan, summary) if plan.get("sweep") else None
    paths = {"results": rundir / "results.json", "results_csv": rundir / "results.csv",
             "summary_csv": rundir / "summary.csv", "report": rundir / "report.md",
             "curves": rundir / "val_loss.png", "bars": rundir / "bpb_by_domain.png"}
    paths["results"].write_text(json.dumps({"format": RESULTS_FORMAT, "settings": plan["settings"],
                                            "eval_sets": plan["eval_sets"], "summary": summary, "regmix": fit,
                                            "runs": records}, indent=2) + "\n", encoding="utf-8")
    paths["results_csv"].write_text(results_csv(plan, records), encoding="utf-8")
    paths["summary_csv"].write_text(summary_csv(plan, summary), encoding="utf-8")
    paths["report"].write_text(markdown(plan, summary, fit), encoding="utf-8")
    plot_curves(plan, summary, paths["curves"])
    plot_bars(plan, summary, paths["bars"])
    return paths
