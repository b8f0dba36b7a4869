"""Trend claims: does a paired effect change with the sampling budget? (a sampler x log2(NFE) interaction)

For each replicate (training seed, else sampling seed) the oriented difference between the two sides
(positive = the claim's direction) is regressed on log2(NFE) over the budgets both sides ran (least squares,
``scipy.stats.linregress``); the slopes, one per replicate, are tested against 0 with a one-sample t test
(``stats.paired`` against zeros, i.e. ``ttest_rel``). A positive slope means the effect moves toward the claim
by that much per doubling of the budget. "look_ahead < dual_loop" at 16x16: look_ahead's deficit shrinks as
the budget grows, which a per-budget verdict ("mixed") cannot say.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import linregress

from pfbench.report.stats import paired


def slope_test(diffs: pd.DataFrame) -> dict[str, float]:
    """Per-row (replicate) slope of the values on log2 of the column labels (NFE budgets), tested against 0.

    Args:
        diffs: oriented differences, index = replicate, columns = NFE budgets (at least 2); rows with a
            missing budget are left out (a slope over other budgets would not be comparable).

    Returns:
        ``paired``'s statistics of the slopes (``n``, ``diff`` = mean slope per doubling, ``lo``, ``hi``, ``p``).
    """
    full = diffs.dropna()
    x = np.log2(np.asarray(full.columns, dtype=np.float64))
    slopes = np.array([linregress(x, row).slope for row in full.to_numpy(dtype=np.float64)]) if len(x) > 1 \
        else np.array([])
    return paired(slopes, np.zeros_like(slopes))


def trend_text(better: str, worse: str, metric: str, first: float, row: pd.Series) -> str:
    """One line: ``look_ahead's deficit to dual_loop shrinks with budget (fd_embedded): slope +0.81 per NFE
    doubling [95% CI …], p …, Holm p …`` from a trend row and the oriented effect at the smallest budget."""
    slope = float(row["diff"])
    if not math.isfinite(slope) or not math.isfinite(first):
        return f"{better} vs {worse} ({metric}): no trend test (too few replicates or budgets)"
    what = "advantage over" if first > 0 else "deficit to"
    moves = "grows" if (slope > 0) == (first > 0) else "shrinks"
    return (f"{better}'s {what} {worse} {moves} with budget ({metric}): slope {slope:+.3g}/doubling of NFE "
            f"(positive = toward the claim) [95% CI {row['lo']:+.3g}, {row['hi']:+.3g}], p = {row['p']:.2g}, "
            f"Holm p = {row['p_holm']:.2g}, BH q = {row['q_bh']:.2g}, {int(row['n'])} {row['unit']}s; "
            f"effect at the smallest budget {first:+.3g}")
