"""The paper's claims tested on a suite's results: paired comparisons over seeds (issue 10, validity study).

A claim says that one side beats another: a (model, sampler) pair of cells, a model's learning curve, or one
diagnostic of a model against another. Both sides are matched replicate by replicate and the difference is
oriented so that a positive value supports the claim (lower Fréchet distance, higher accuracy, ...).

Replicates and their unit:
    * Models trained per seed (``pf@s0``, ``pf@s1`` … from ``train_seeds``): the unit is the training seed.
      Sampling seeds are averaged within a training seed first, then differences are paired over training
      seeds; this is the correct interval when training and sampling noise both vary (a two-level design).
    * Otherwise the unit is the sampling seed (one model, several noise seeds).
Statistics: mean difference, Student-t 95% interval below ``SMALL_N`` pairs (percentile bootstrap from there),
two-sided paired t-test p-value (``scipy.stats.ttest_rel``; no interval when all differences are equal: nothing to
test). "By how much" is the difference in % of the claimed-worse side's mean. Verdicts are corrected for multiple
comparisons (``pfbench.report.correction``): Holm within each claim family decides, Benjamini–Hochberg over the
report is shown; ``verdict_raw`` keeps the uncorrected verdict (interval above / below 0).

Bases of comparison (``basis_kind``):
    * ``NFE n`` (``primary``): both sides at the same NFE budget; a diagnostic claim's one basis per model.
    * ``GFLOPs g`` (``interpolated``): the claimed-better side's metric interpolated (linear in log GFLOPs, per
      replicate, never extrapolated) at the GFLOPs per sample the claimed-worse side spent at each of its budgets.
    * curves: the better side's last checkpoint against the worse side's learning curve interpolated (linearly)
      at the same training steps (``primary``: the curve claim's one test), training FLOPs or training seconds
      (``interpolated``).
    Interpolated bases re-read the same cells, so they are shown but not counted as evidence (no verdict, no
    correction); a basis that has no common point is listed (``not compared``, with the reason), never dropped.
    * trends (``trend``, declared per suite): the oriented difference regressed on log2(NFE) per replicate, then
      a paired test of the slopes (``trends.trend_claims``).
    * ``steps N`` (``primary``, the ``equal steps`` family, ``steps.steps_claims``): steps-mode cells (a fixed
      outer step count, no NFE budget) matched on ``steps``; they never enter an NFE or GFLOPs basis.

Model names are those of ``suites/validity.yaml`` (``pf`` = LTG, ``sit`` = the global-t baseline, …); a claim
whose sides have no rows is skipped, so the table also works on suites with only ``pf`` and ``sit``.
Pure numpy/pandas/scipy: reports never import torch.
"""

from __future__ import annotations

import difflib
import math

import numpy as np
import pandas as pd

from pfbench import PfbenchError
from pfbench.report.claim_rows import (
    COLUMNS,
    INTERPOLATED,
    NONE,
    PRIMARY,
    TREND,
    compare,
    higher_is_better,
    replicates,
    result_row,
    side_cells,
    skipped_row,
    split_model,
    verdict,
    with_groups,
)
from pfbench.report.claim_set import (
    DIAG,
    INFER,
    PAPER_CLAIMS,
    PF,
    PF_SIT,
    SIT,
    STEPS,
    TRAIN,
    TREND_BASIS,
    Claim,
    Side,
)
from pfbench.report.correction import FAILS, HOLDS, SHOWN, SKIPPED, UNSURE, correct
from pfbench.report.keys import instances
from pfbench.report.steps import steps_claims, steps_view
from pfbench.report.trends import slope_test

# claim_set's declarations are re-exported: callers import every claim name from here.
__all__ = ["COLUMNS", "DIAG", "FAILS", "HOLDS", "INFER", "INTERPOLATED", "NONE", "PAPER_CLAIMS", "PF", "PF_SIT",
           "PRIMARY", "SHOWN", "SIT", "SKIPPED", "STEPS", "TRAIN", "TREND", "UNSURE", "Claim", "Side", "compare",
           "evaluate_claims", "replicates", "split_model", "verdict", "with_groups"]
CURVE_X = {"train_step": "train steps", "train_gflops": "train GFLOPs", "train_wall_s": "train wall-clock"}


def _apart(x: float, y: float) -> tuple[str, str]:
    """Two numbers with the fewest significant digits (at least 4) that tell them apart."""
    for digits in range(4, 10):
        if f"{x:.{digits}g}" != f"{y:.{digits}g}":
            break
    return f"{x:.{digits}g}", f"{y:.{digits}g}"


def _interp_at(frame: pd.DataFrame, x: str, at: float, log: bool) -> pd.Series:
    """Per replicate (train_seed, seed): the value interpolated at ``x = at``; NaN outside a replicate's range."""
    out = {}
    for key, g in frame.groupby(["train_seed", "seed"], dropna=False):
        g = g.dropna(subset=[x]).sort_values(x)
        xs = g[x].to_numpy(float)
        xs, target = (np.log(xs), math.log(at)) if log else (xs, at)
        if len(xs) and xs[0] - 1e-9 <= target <= xs[-1] + 1e-9:
            out[key] = float(np.interp(target, xs, g["value"].to_numpy(float)))
    idx = pd.MultiIndex.from_tuples(list(out), names=["train_seed", "seed"]) if out else None
    return pd.Series(list(out.values()), index=idx, dtype=float)


def _per_unit(s: pd.Series) -> tuple[pd.Series, str]:
    """(train_seed, seed)-indexed values -> per replicate, as ``replicates`` does for frames."""
    frame = s.rename("value").reset_index()
    return replicates(frame)


def cell_claims(claim: Claim, cells: pd.DataFrame, metric: str) -> list[dict]:
    """Rows at every shared NFE budget, then at the worse side's GFLOPs of each of its budgets."""
    a, b = side_cells(cells, claim.better), side_cells(cells, claim.worse)
    if a.empty or b.empty:
        return []
    hib = higher_is_better(a)
    out = []
    for nfe in sorted(set(a["nfe_budget"].dropna()) & set(b["nfe_budget"].dropna())):
        (va, unit), (vb, _) = replicates(a[a["nfe_budget"] == nfe]), replicates(b[b["nfe_budget"] == nfe])
        out.append(result_row(claim, metric, f"NFE {int(nfe)}", va, vb, unit, hib))
    if a["nfe_budget"].nunique() < 2:
        return out  # a single budget: nothing to interpolate over
    for nfe, g in b.groupby("nfe_budget"):
        at = float(g["gflops"].astype(float).mean())
        va = _interp_at(a, "gflops", at, log=True)
        vb = g.set_index(["train_seed", "seed"])["value"].astype(float)
        basis = f"GFLOPs {at:.3g} (worse at NFE {int(nfe)})"
        if va.empty:
            span = a["gflops"].astype(float)
            edge = span.max() if at > span.max() else span.min()
            e, w = _apart(edge, at)
            out.append(skipped_row(claim, metric, basis, f"{claim.better.sampler} {e} vs {claim.worse.sampler} {w} "
                                "GFLOPs: no common point"))
            continue
        (ua, unit), (ub, _) = _per_unit(va), _per_unit(vb)
        row = result_row(claim, metric, basis, ua, ub, unit, hib, INTERPOLATED)
        if len(va) < len(vb):
            row["reason"] = f"{len(vb) - len(va)} of {len(vb)} replicates outside {claim.better.sampler}'s range: left out"
        out.append(row)
    return out


def trend_claims(claim: Claim, cells: pd.DataFrame, metric: str) -> list[dict]:
    """The claim's effect regressed on log2(NFE) per replicate, slopes tested (``trends.slope_test``): one row,
    basis ``trend``, ``diff`` = mean slope per doubling; none with fewer than 2 shared budgets."""
    a, b = side_cells(cells, claim.better), side_cells(cells, claim.worse)
    budgets = sorted(set(a["nfe_budget"].dropna()) & set(b["nfe_budget"].dropna()))
    if len(budgets) < 2:
        return []
    hib = higher_is_better(a)
    per, unit = {}, ""
    for nfe in budgets:
        (va, unit), (vb, _) = replicates(a[a["nfe_budget"] == nfe]), replicates(b[b["nfe_budget"] == nfe])
        va, vb = va.align(vb, join="inner")
        per[int(nfe)] = (1.0 if hib else -1.0) * (va - vb)
    stats = slope_test(pd.DataFrame(per))
    return [{"family": claim.family, "claim": f"{claim.name}: trend with NFE", "paper": claim.paper,
             "metric": metric, "basis": f"{TREND_BASIS} (NFE {budgets[0]:.0f}–{budgets[-1]:.0f})",
             "basis_kind": TREND, "reason": "", "better": claim.better.text(), "worse": claim.worse.text(),
             "unit": unit, **stats, "verdict_raw": verdict(stats["lo"], stats["hi"]), "verdict": UNSURE}]


def curve_claims(claim: Claim, curves: pd.DataFrame, metric: str) -> list[dict]:
    """The better side's last checkpoint vs the worse side's curve at the same steps, training FLOPs, seconds."""
    a, b = curves[curves["group"] == claim.better.model], curves[curves["group"] == claim.worse.model]
    if a.empty or b.empty:
        return []
    hib = higher_is_better(a)
    last = a[a["train_step"] == a.groupby("train_seed", dropna=False)["train_step"].transform("max")]
    out = []
    for x, label in CURVE_X.items():
        if x not in curves or last[x].isna().all() or b[x].isna().all():
            continue
        va, vb = {}, {}
        keys = list(last.groupby(["train_seed", "seed"], dropna=False).groups)
        for key, g in last.groupby(["train_seed", "seed"], dropna=False):
            at = float(g[x].astype(float).mean())
            same = b["train_seed"].fillna(-1.0) == (-1.0 if pd.isna(key[0]) else key[0])  # pair by training seed
            interp = _interp_at(b[same].assign(seed=key[1]), x, at, log=False)
            if len(interp):
                va[key], vb[key] = float(g["value"].astype(float).mean()), float(interp.iloc[0])
        basis = f"{label} (curve, NFE {int(a['nfe_budget'].dropna().iloc[0])})"
        if not va:
            at, span = last[x].astype(float), b[x].astype(float)
            out.append(skipped_row(claim, metric, basis, f"{claim.better.model} at {at.min():.4g}–{at.max():.4g} vs "
                                f"{claim.worse.model}'s curve {span.min():.4g}–{span.max():.4g} {label}: no common "
                                "point"))
            continue
        idx = pd.MultiIndex.from_tuples(list(va), names=["train_seed", "seed"])
        (ua, unit), (ub, _) = _per_unit(pd.Series(list(va.values()), idx)), _per_unit(pd.Series(list(vb.values()), idx))
        row = result_row(claim, metric, basis, ua, ub, unit, hib, PRIMARY if x == "train_step" else INTERPOLATED)
        if len(va) < len(keys):
            row["reason"] = f"{len(keys) - len(va)} of {len(keys)} replicates outside the curve's range: left out"
        out.append(row)
    return out


def diagnostic_claims(claim: Claim, diags: pd.DataFrame) -> list[dict]:
    """Per PF model group: diagnostic ``better.sampler`` against ``worse.sampler`` (metric names), paired."""
    out = []
    for group, g in diags.groupby("group"):
        a, b = g[g["metric"] == claim.better.sampler], g[g["metric"] == claim.worse.sampler]
        if a.empty or b.empty:
            continue
        hib = higher_is_better(a, default=True)
        (va, unit), (vb, _) = replicates(a.assign(seed=0)), replicates(b.assign(seed=0))
        row = result_row(claim, claim.better.sampler, f"model {group}", va, vb, unit, hib)
        out.append(row | {"better": f"{group} · {claim.better.sampler}", "worse": f"{group} · {claim.worse.sampler}"})
    return out


def evaluate_claims(rows: pd.DataFrame, claims: tuple[Claim, ...] = PAPER_CLAIMS,
                    metrics: tuple[str, ...] = ("fd_embedded", "class_acc"), trends: tuple[str, ...] = ()) -> pd.DataFrame:
    """The claim table: one row per (claim, metric, basis) with data, corrected for multiple comparisons
    (``correction.correct``); empty (with ``COLUMNS``) when none.

    Args:
        rows: result rows of one suite.
        claims: the declared claims (default: the paper's, ``PAPER_CLAIMS``).
        metrics: metrics the cell and curve claims are tested on.
        trends: names of cell claims whose effect is also tested for a trend with log2(NFE) (a suite's
            ``claims.trends``); a name that is not a cell claim of ``claims`` is an error.
    """
    by_name = {c.name: c for c in claims if c.kind == "cell"}
    unknown = [t for t in trends if t not in by_name]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(by_name), n=1)
        raise PfbenchError(f"claims.trends: {unknown[0]!r} is not a cell claim"
                           + (f"; did you mean {close[0]!r}?" if close else f" (claims: {', '.join(by_name)})"))
    if rows.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    multi = instances(rows)
    if not multi:
        return correct(_evaluate(rows, claims, metrics, trends))
    # Several instances (model ids) of a model: claims per instance, labelled, never pooled (keys.instance_warning).
    bases = {split_model(m)[0] for m in multi}
    parts = []
    for k in range(max(len(ids) for ids in multi.values())):
        chosen = {m: ids[min(k, len(ids) - 1)] for m, ids in multi.items()}
        keep = [m not in chosen or i == chosen[m] for m, i in zip(rows["model"], rows["model_id"], strict=True)]
        t = _evaluate(rows[keep], claims, metrics, trends)
        hit = [b.split(" · ")[0] in bases or w.split(" · ")[0] in bases for b, w in zip(t["better"], t["worse"],
                                                                                        strict=True)]
        tag = " [instance " + ", ".join(f"{m} {i[:8]}" for m, i in sorted(chosen.items())) + "]"
        t.loc[hit, "claim"] = t.loc[hit, "claim"] + tag
        parts.append(t if k == 0 else t[hit])
    return correct(pd.concat(parts, ignore_index=True))


def _evaluate(rows: pd.DataFrame, claims: tuple[Claim, ...], metrics: tuple[str, ...],
              trends: tuple[str, ...]) -> pd.DataFrame:
    """The uncorrected claim table of ``rows`` (one instance per model)."""
    needed = ("sampler", "variant", "nfe_budget", "steps", "gflops", "seed", "train_step", "cfg_scale",
              "higher_is_better")
    rows = with_groups(rows.assign(**{c: pd.NA for c in needed if c not in rows}))  # hand-made frames
    cfg = pd.to_numeric(rows["cfg_scale"], errors="coerce").fillna(1.0)
    unguided = rows[(rows["kind"] == "cell") & (cfg == 1.0)]  # claims are about unguided sampling
    # NFE-mode cells (a budget) for every claim at equal NFE; steps-mode cells (no budget, a fixed step count,
    # plus each NFE cell read as the cell of its step count: ``steps_view``) only for the equal-steps family: a
    # steps cell never enters an NFE basis or its GFLOPs interpolation.
    cells, steps_cells = unguided[unguided["nfe_budget"].notna()], steps_view(unguided)
    curves, diags = rows[rows["kind"] == "curve"], rows[rows["kind"] == "diagnostic"]
    out: list[dict] = []
    for claim in claims:
        if claim.kind == "diagnostic":
            out += diagnostic_claims(claim, diags)
            continue
        for metric in metrics:
            if claim.kind == "steps":
                out += steps_claims(claim, steps_cells[steps_cells["metric"] == metric], metric)
            elif claim.kind == "cell":
                out += cell_claims(claim, cells[cells["metric"] == metric], metric)
                if claim.name in trends:
                    out += trend_claims(claim, cells[cells["metric"] == metric], metric)
            else:
                out += curve_claims(claim, curves[curves["metric"] == metric], metric)
    return pd.DataFrame(out, columns=list(COLUMNS))
