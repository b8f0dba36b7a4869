"""Claims and the table at equal outer steps (issue 20): steps-mode cells (a fixed outer step count N, no NFE
budget) of euler_pf(N), dual_loop(N), look_ahead(N) and euler_pf(2N).

At an NFE budget look_ahead gets about half the outer steps of euler_pf (two calls per step), so the claims at
equal NFE mix "what a step's extra context buys" with "half the steps". At equal steps the two are apart:
look_ahead(N) vs euler_pf(N) and dual_loop(N) vs euler_pf(N) is context per step, look_ahead(N) vs euler_pf(2N)
(about 2N calls each) is half the steps at equal NFE. Each claim is paired over replicates at each N like the
claims at equal NFE (``claim_rows``); its rows form the ``equal steps`` family (Holm within it, BH over the
report, ``correction``).
"""

from __future__ import annotations

import math

import pandas as pd

from pfbench.report.claim_rows import higher_is_better, replicates, result_row, side_cells, with_groups
from pfbench.report.claim_set import DL, LA, PF, STEPS, Claim
from pfbench.report.correction import METHOD
from pfbench.report.figures import sampler_arg
from pfbench.report.tables import TextTable

# What makes two cells the same computation once the step count is known (the NFE budget aside); the keys a
# frame lacks are left out.
_SAME_RUN = ("model", "model_id", "decoder", "sampler", "variant", "seed", "metric", "metric_args", "ref_id",
             "cfg_scale", "cfg_interval", "num_samples", "train_step")


def steps_view(cells: pd.DataFrame) -> pd.DataFrame:
    """Cell rows on the equal-steps axis: steps-mode cells (no NFE budget, ``steps`` set) plus every NFE-mode cell
    recast as the steps-mode cell of its sampler's step count where no such cell was run.

    A budget only picks the step count (``Sampler.from_budget(params, B)`` is ``Sampler.from_steps(params, N)``
    with N its largest affordable count, recorded as ``steps`` in ``sampler_args``), and a sample depends on the
    sampler, the seed and the sample index only: so look_ahead at NFE 16 (8 steps, 15 calls) *is* look_ahead(8).
    A recast row keeps its calls (``nfe_used``) and GFLOPs and gets ``nfe_budget`` empty. Where both were run,
    the steps-mode row is kept (they agree to float noise: ``tests/test_claims_steps.py``).
    """
    if cells.empty or "nfe_budget" not in cells:
        return cells.iloc[0:0]
    fixed = cells[cells["nfe_budget"].isna() & cells["steps"].notna()]
    budget = cells[cells["nfe_budget"].notna()]
    if budget.empty:
        return fixed
    run = budget["steps"].astype("Float64")
    run = sampler_arg(budget, "steps").fillna(run) if "sampler_args" in budget else run
    recast = budget[run.notna()].assign(steps=run[run.notna()].astype("int64"), nfe_budget=pd.NA)
    keys = [k for k in (*_SAME_RUN, "steps") if k in cells]

    def key(frame: pd.DataFrame) -> pd.Series:
        return frame[keys].astype("string").fillna("").agg("\x1f".join, axis=1)

    if len(fixed):
        recast = recast[~key(recast).isin(set(key(fixed)))]
    recast = recast[~key(recast).duplicated()]
    return pd.concat([fixed, recast]) if len(recast) else fixed


# The table's columns: (label, (model, sampler), steps multiple of N).
SIDES = (("euler_pf(N)", PF, 1), ("dual_loop(N)", DL, 1), ("look_ahead(N)", LA, 1), ("euler_pf(2N)", PF, 2))


def basis_of(n: int, x: int) -> str:
    """``steps 8`` (both sides at 8 outer steps) or ``steps 8 vs 16`` (the worse side at ``x`` times N)."""
    return f"steps {n}" if x == 1 else f"steps {n} vs {n * x}"


def steps_claims(claim: Claim, cells: pd.DataFrame, metric: str) -> list[dict]:
    """One row per N where the better side ran N outer steps and the worse side ``worse.steps_x`` x N.

    Args:
        claim: a ``steps`` claim.
        cells: steps-mode cells of one metric (``nfe_budget`` empty, ``steps`` set), with ``group``/``train_seed``.
        metric: the metric's name (for the row).
    """
    a, b = side_cells(cells, claim.better), side_cells(cells, claim.worse)
    if a.empty or b.empty:
        return []
    hib, x = higher_is_better(a), claim.worse.steps_x
    out = []
    for n in sorted(int(s) for s in set(a["steps"].dropna()) if int(s) * x in set(b["steps"].dropna())):
        (va, unit), (vb, _) = replicates(a[a["steps"] == n]), replicates(b[b["steps"] == n * x])
        out.append(result_row(claim, metric, basis_of(n, x), va, vb, unit, hib))
    return out


def _fmt(x: float, spec: str) -> str:
    return format(x, spec) if math.isfinite(x) else "—"


def _mean_cell(cells: pd.DataFrame, side: tuple[str, str], steps: int) -> str:
    """Mean over replicates of one side at ``steps``, with its model calls per image: ``1.234 (16 calls)``."""
    g = cells[(cells["group"] == side[0]) & (cells["sampler"] == side[1]) & (cells["variant"] == "")
              & (cells["steps"] == steps)]
    if g.empty:
        return ""
    calls = pd.to_numeric(g["nfe_used"], errors="coerce").mean() if "nfe_used" in g else math.nan
    mean = float(replicates(g)[0].mean())
    return _fmt(mean, ".4g") + (f" ({calls:.3g} calls)" if math.isfinite(calls) else "")


def _delta_cell(row: pd.Series | None, hib: bool) -> str:
    """A claim row as ``first − second`` in metric units [95% CI] with its Holm p (``""`` without the row)."""
    if row is None:
        return ""
    d, lo, hi = (float(row[k]) for k in ("diff", "lo", "hi"))
    d, lo, hi = (d, lo, hi) if hib else (-d, -hi, -lo)  # the claim's orientation back to metric units
    return f"{_fmt(d, '+.3g')} [{_fmt(lo, '+.3g')}, {_fmt(hi, '+.3g')}], Holm p {_fmt(float(row['p_holm']), '.2g')}"


def steps_table(table: pd.DataFrame, rows: pd.DataFrame, metric: str = "fd_embedded") -> TextTable | None:
    """Rows N; the mean of euler_pf(N), dual_loop(N), look_ahead(N), euler_pf(2N) with calls per image, and the
    equal-steps claims' paired differences; None without steps-mode cells of ``metric``."""
    sel = rows[(rows["kind"] == "cell") & (rows["metric"] == metric)]
    if "steps" not in sel or "nfe_budget" not in sel:
        return None
    cfg = pd.to_numeric(sel["cfg_scale"], errors="coerce").fillna(1.0) if "cfg_scale" in sel else 1.0
    cells = with_groups(steps_view(sel[cfg == 1.0]))
    if cells.empty:
        return None
    hib = higher_is_better(cells)
    adaptive = cells[cells["sampler"].isin([LA[1], DL[1]]) & (cells["group"] == PF[0]) & (cells["variant"] == "")]
    ns = sorted({int(s) for s in adaptive["steps"]})
    claims = table[(table["family"] == STEPS) & (table["metric"] == metric)] if len(table) else table
    names = list(dict.fromkeys(claims["claim"])) if len(claims) else []
    body = []
    for n in ns:
        means = [_mean_cell(cells, side, n * x) for _, side, x in SIDES]
        if sum(bool(m) for m in means) < 2:  # e.g. look_ahead's 33 steps at NFE 64: nothing to set it beside
            continue
        deltas = []
        for name in names:
            hit = claims[(claims["claim"] == name) & claims["basis"].isin([basis_of(n, 1), basis_of(n, 2)])]
            deltas.append(_delta_cell(hit.iloc[0] if len(hit) else None, hib))
        body.append((str(n), *means, *deltas))
    heads = [f"Δ {name.split(' (')[0].replace(' < ', ' − ')}" for name in names]
    return TextTable(f"Equal steps ({metric})", ("N", *[lab for lab, _, _ in SIDES], *heads), tuple(body),
                     f"Cells of pf at N outer steps whatever they cost: steps-mode cells, and NFE cells read at "
                     f"their sampler's step count (`steps_view`; calls: model calls per image). "
                     f"Mean over replicates (training seeds where trained per seed, else sampling seeds). Δ: first "
                     f"minus second in {metric} units ({'higher' if hib else 'lower'} is better), paired over "
                     f"replicates, 95% CI, Holm p within the '{STEPS}' family ({METHOD}). look_ahead(N) vs "
                     "euler_pf(N) and dual_loop(N) vs euler_pf(N): context per step; look_ahead(N) vs euler_pf(2N): "
                     "half the steps at about equal NFE.")


def steps_block(table: pd.DataFrame, rows: pd.DataFrame, suite: str) -> str:
    """The Markdown block ``docs/validity.md`` includes for ``suite``'s equal-steps tables (FD and class
    accuracy); says so when the results have no cells on the equal-steps axis."""
    head = f"_Generated by `pfbench report {suite}` from `results/{suite}`; do not edit by hand._"
    tables = [t for m in ("fd_embedded", "class_acc") if (t := steps_table(table, rows, m)) is not None]
    if not tables:
        return f"{head}\n\n`results/{suite}` has no cells on the equal-steps axis yet.\n"
    return "\n".join([head, "", *[t.markdown() for t in tables]]).rstrip() + "\n"
