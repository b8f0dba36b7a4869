"""Multiple-comparison correction of a claim table (``pfbench.report.claims``): verdicts from adjusted p-values.

A validity report runs many paired tests (claims x metrics x bases); labelling each at p < 0.05 would let about
one in twenty true nulls pass as a finding. Every counted test (``basis_kind`` ``primary`` or ``trend``: one
NFE budget, the curve at equal training steps, one model's diagnostic, one trend) gets

    * ``p_holm``: Holm's step-down adjusted p within its claim family (training sampler, inference sampler,
      PF vs SiT, difficulty): controls the family-wise error rate of each family. **The verdict uses it.**
    * ``q_bh``: the Benjamini–Hochberg q over every counted test of the report (false-discovery rate), shown.

Both come from ``statsmodels.stats.multitest.multipletests``. Interpolated bases (equal GFLOPs, training FLOPs,
wall-clock) re-read the same cells as a counted basis: they are shown with their raw p but neither adjusted
nor counted (``SHOWN``); bases without a common point are listed as ``SKIPPED`` with the reason.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests

ALPHA = 0.05
HOLDS, FAILS, UNSURE = "holds", "does not hold", "inconclusive"
SHOWN, SKIPPED = "shown, not counted", "not compared"  # verdicts of interpolated and incomparable bases
COUNTED_KINDS = ("primary", "trend")
METHOD = (f"verdict: Holm-adjusted p < {ALPHA:g} within the claim family (family-wise error rate); "
          "BH q: Benjamini–Hochberg over every counted test of the report (false-discovery rate), shown")


def holm(p: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (``multipletests(method="holm")``); empty in, empty out."""
    p = np.asarray(p, dtype=np.float64)
    return multipletests(p, alpha=ALPHA, method="holm")[1] if p.size else p


def bh(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg q-values (``multipletests(method="fdr_bh")``); empty in, empty out."""
    p = np.asarray(p, dtype=np.float64)
    return multipletests(p, alpha=ALPHA, method="fdr_bh")[1] if p.size else p


def adjusted_verdict(diff: float, p_adj: float) -> str:
    """``holds`` / ``does not hold`` when the adjusted p is below ``ALPHA`` (by the sign of the oriented
    difference), else ``inconclusive`` (also when there is no p: too few pairs or no spread)."""
    if not (math.isfinite(p_adj) and math.isfinite(diff)) or p_adj >= ALPHA:
        return UNSURE
    return HOLDS if diff > 0 else FAILS


def correct(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with ``p_holm`` (per family) and ``q_bh`` (over the table) on counted rows with a p, and
    ``verdict`` set from ``p_holm``; other rows keep their verdict (``SHOWN`` / ``SKIPPED``) and NaN adjusted p."""
    out = table.copy()
    out["p_holm"], out["q_bh"] = math.nan, math.nan
    p = pd.to_numeric(out["p"], errors="coerce").astype(float)
    counted = out["basis_kind"].isin(COUNTED_KINDS)
    tested = counted & p.notna()
    for _, idx in out[tested].groupby("family", sort=False).groups.items():
        out.loc[idx, "p_holm"] = holm(p[idx].to_numpy())
    out.loc[tested, "q_bh"] = bh(p[tested].to_numpy())
    diff = pd.to_numeric(out["diff"], errors="coerce").astype(float)
    out.loc[counted, "verdict"] = [adjusted_verdict(d, q) for d, q in
                                   zip(diff[counted], out.loc[counted, "p_holm"].astype(float), strict=True)]
    return out
