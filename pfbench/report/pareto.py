"""Which configuration at which budget: the quality-vs-cost Pareto front of result rows, with uncertainty.

A *configuration* is one (suite, model, sampler, sampler variant, CFG scale and interval, NFE budget, ...) cell
setting; its observations are its seeds. Models trained per seed (``pf@s0``, ``pf@s1``) are one configuration
whose replicates are (training seed, sampling seed), as in ``report.claims``.

Dominance respects the noise: configuration B is *dominated* only when some configuration A that costs no more
has a better mean and the difference is significant (two-sided p < ``ALPHA``): a paired t-test over the
replicates when both have the same ones, else Welch's t-test (``scipy.stats``). B is on the *front* when no
cheaper-or-equal configuration has a better mean, and *tied* when one has, but not significantly: both stay.

The cost axis is generic (``COSTS``): a per-cell column averaged over seeds, and optionally the column of the
suite's budget levels (the NFE budget, a step count) whose values are the budgets of the "best configuration
per budget" table; without one, the costs of the front's points are the levels. Pure pandas/scipy (no torch).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from pfbench import PfbenchError
from pfbench.report.claims import with_groups
from pfbench.report.keys import CELL_KEYS, normalize, series_label, shown_keys
from pfbench.report.stats import SMALL_N, bootstrap_ci, clip_interval, t_interval
from pfbench.report.tables import TextTable, fmt_num

ALPHA = 0.05
FRONT, TIED, DOMINATED = "front", "tied", "dominated"
# What identifies a configuration besides model (training seeds pooled) and suite; model_id is left out so that
# the per-seed checkpoints of one recipe are one configuration.
CONFIG_KEYS: tuple[str, ...] = tuple(k for k in CELL_KEYS if k != "model") + ("num_samples", "ref_id", "metric_args")


@dataclass(frozen=True)
class Cost:
    """A cost axis: ``column`` per cell (averaged over seeds), ``level`` the column of the suite's budgets."""

    column: str
    label: str
    level: str | None = None
    log: bool = True


COSTS: dict[str, Cost] = {
    "gflops": Cost("gflops", "GFLOPs per sample"),
    "nfe": Cost("nfe_used", "NFE per sample", level="nfe_budget"),
    "wall": Cost("wall_s", "wall-clock seconds per cell"),
    "steps": Cost("steps", "sampler steps", level="steps"),  # suites with a fixed-steps axis
}


def cost_axis(name: str) -> Cost:
    if name not in COSTS:
        raise PfbenchError(f"--cost {name!r}: unknown cost axis (choose from {', '.join(COSTS)})")
    return COSTS[name]


@dataclass(frozen=True)
class Front:
    """``points``: one row per configuration (``label``, ``sampler``, ``cost``, ``mean``, ``lo``, ``hi``, ``n``,
    ``status``, ``by`` and ``p``: the cheaper-or-equal better point that dominates or ties it); ``values``: label ->
    {replicate: value}; ``higher``: the metric's direction."""

    metric: str
    cost: Cost
    points: pd.DataFrame
    values: dict[str, dict[tuple[float, int], float]]
    higher: bool


def configurations(rows: pd.DataFrame, metric: str, cost: Cost) -> Front:
    """The configurations of ``rows`` (cells only) with their mean ``metric``, interval and mean cost."""
    cells = rows[(rows["kind"] == "cell") & (rows["metric"] == metric)] if "metric" in rows else rows.iloc[:0]
    if cells.empty:
        have = sorted(rows.loc[rows["kind"] == "cell", "metric"].dropna().unique()) if "metric" in rows else []
        raise PfbenchError(f"no cell rows of metric {metric!r} (metrics here: {', '.join(have) or 'none'})")
    if cost.column not in cells or cells[cost.column].isna().all():
        raise PfbenchError(f"cost {cost.column!r}: the result rows have no such column (older results, or a suite "
                           "without that axis)")
    cells = with_groups(normalize(cells)).assign(model=lambda d: d["group"])
    keys = ["suite", "model", *[k for k in CONFIG_KEYS if k in cells]]
    if cost.level is not None and cost.level not in keys and cost.level in cells:
        keys.append(cost.level)
    records, values = [], {}
    for key, g in cells.groupby(keys, dropna=False, sort=True):
        obs = {(float(ts) if np.isfinite(ts) else -1.0, int(s)): float(v)
               for ts, s, v in zip(g["train_seed"], g["seed"].fillna(-1), g["value"].astype("Float64"), strict=True)
               if not pd.isna(v)}
        x = np.array(list(obs.values()), dtype=np.float64)
        if not x.size:
            continue
        lo, hi = t_interval(x) if x.size < SMALL_N else bootstrap_ci(x)
        lo, hi = clip_interval(metric, lo, hi)
        rec = dict(zip(keys, key, strict=True))
        rec.update(cost=float(g[cost.column].astype("Float64").mean()), mean=float(x.mean()), lo=lo, hi=hi, n=x.size,
                   higher=bool(g["higher_is_better"].dropna().iloc[0]) if g["higher_is_better"].notna().any() else False)
        records.append((rec, obs))
    points = pd.DataFrame([r for r, _ in records])
    label_keys = shown_keys(points, always=("model", "sampler"))
    if points["suite"].nunique() > 1:
        label_keys = ["suite", *label_keys]
    labels = [series_label(r, label_keys) for _, r in points.iterrows()]
    if len(set(labels)) != len(labels):
        raise PfbenchError("pareto: two configurations share a label (a key column is not shown; a pfbench bug)")
    points = points.assign(label=labels)
    values = {lab: obs for lab, (_, obs) in zip(labels, records, strict=True)}
    return Front(metric, cost, points, values, bool(points["higher"].iloc[0]))


def difference(a: dict[tuple[float, int], float], b: dict[tuple[float, int], float],
               higher: bool) -> tuple[float, float, str]:
    """(how much A beats B in mean, oriented so that > 0 is better; two-sided p; the test used).

    Paired t-test over the replicates when A and B have the same ones (at least 2), else Welch's t-test; p is NaN
    when there is nothing to test (one observation a side, or no spread at all).
    """
    sign = 1.0 if higher else -1.0
    xa, xb = np.array(list(a.values())), np.array(list(b.values()))
    diff = sign * float(xa.mean() - xb.mean())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # zero spread: scipy warns and returns NaN
        if set(a) == set(b) and len(a) >= 2:
            common = sorted(a)
            p = stats.ttest_rel([a[k] for k in common], [b[k] for k in common]).pvalue
            return diff, float(p), "paired t"
        if len(a) >= 2 and len(b) >= 2:
            return diff, float(stats.ttest_ind(xa, xb, equal_var=False).pvalue), "Welch t"
    return diff, math.nan, "none"


def significant(p: float) -> bool:
    return bool(np.isfinite(p) and p < ALPHA)


def pareto(rows: pd.DataFrame, metric: str = "fd_embedded", cost: str = "nfe") -> Front:
    """The configurations of ``rows`` with their front status (see the module docstring)."""
    front = configurations(rows, metric, cost_axis(cost))
    pts = front.points
    sign = 1.0 if front.higher else -1.0
    marks: list[tuple[str, str, float]] = []  # (status, by, p) per point
    for _, b in pts.iterrows():
        better = pts[(pts["cost"] <= b["cost"] * (1 + 1e-9)) & (sign * (pts["mean"] - b["mean"]) > 0)]
        tests = [(difference(front.values[a], front.values[b["label"]], front.higher)[1], a) for a in better["label"]]
        if not tests:
            marks.append((FRONT, "", math.nan))
            continue
        p, a = min(tests, key=lambda t: t[0] if np.isfinite(t[0]) else math.inf)  # the closest call
        marks.append((DOMINATED if significant(p) else TIED, a, p))
    status, by, pvals = (list(x) for x in zip(*marks, strict=True))
    points = pts.assign(status=status, by=by, p=pvals).sort_values(["cost", "mean"], ascending=[True, not front.higher])
    points = points.reset_index(drop=True)
    kept = points["status"] != DOMINATED
    points["number"] = 0
    points.loc[kept, "number"] = range(1, int(kept.sum()) + 1)  # the figure's point labels
    return Front(front.metric, front.cost, points, front.values, front.higher)


def budget_levels(front: Front) -> list[float]:
    """The budgets of the table: the suite's budget levels, else the costs of the points not dominated."""
    pts = front.points
    if front.cost.level is not None and front.cost.level in pts and pts[front.cost.level].notna().any():
        return sorted({float(v) for v in pts[front.cost.level].dropna()})
    return sorted({float(c) for c in pts.loc[pts["status"] != DOMINATED, "cost"]})


def best_per_budget(front: Front) -> TextTable:
    """For each budget level: the best configuration costing no more, the runner-up, and whether it differs."""
    sign = 1.0 if front.higher else -1.0
    rows = []
    for level in budget_levels(front):
        fits = front.points[front.points["cost"] <= level * (1 + 1e-9)]
        if fits.empty:
            continue
        order = fits.iloc[np.argsort(-sign * fits["mean"].to_numpy(dtype=np.float64), kind="stable")]
        best = order.iloc[0]
        if len(order) > 1:
            second = order.iloc[1]
            diff, p, test = difference(front.values[best["label"]], front.values[second["label"]], front.higher)
            verdict = ("yes" if significant(p) else "no") + f" ({test}, p={fmt_num(p, '.2g')})"
            runner = (second["label"], _value(second), fmt_num(diff, ".3g"), verdict)
        else:
            runner = ("—", "—", "—", "—")
        rows.append((fmt_num(level, "g"), best["label"], _value(best), fmt_num(best["cost"], ".4g"), *runner))
    better = "higher" if front.higher else "lower"
    return TextTable(
        "Best configuration per budget",
        (f"budget ({front.cost.label})", "best", front.metric, "its cost", "runner-up", front.metric,
         "Δ (best − runner-up)", f"significant (p < {ALPHA:g})"),
        tuple(rows),
        f"{front.metric}: {better} is better; mean [95% interval] over seeds (Student t below {SMALL_N} seeds). "
        "Δ is oriented so that > 0 favours the best. Paired t-test where both have the same seeds, else Welch.")


def front_table(front: Front) -> TextTable:
    """Every configuration not dominated, cheapest first, with its status and the point that ties it."""
    pts = front.points[front.points["status"] != DOMINATED]
    rows = tuple((str(r["number"]), r["label"], fmt_num(r["cost"], ".4g"), _value(r), str(int(r["n"])), r["status"],
                  r["by"] or "—", fmt_num(r["p"], ".2g")) for _, r in pts.iterrows())
    n_dom = int((front.points["status"] == DOMINATED).sum())
    return TextTable(
        "Pareto front", ("#", "configuration", front.cost.label, front.metric, "seeds", "status", "tied with", "p"), rows,
        f"{len(pts)} of {len(front.points)} configurations are not dominated ({n_dom} are: a configuration costing "
        f"no more is significantly better, p < {ALPHA:g}). front: no cheaper-or-equal configuration has a better "
        "mean; tied: one has, but the difference is not significant.")


def _value(r: pd.Series) -> str:
    iv = "" if pd.isna(r["lo"]) else f" [{fmt_num(r['lo'])}, {fmt_num(r['hi'])}]"
    return fmt_num(r["mean"]) + iv

