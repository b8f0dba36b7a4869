"""Power of the headline comparisons: the smallest effect each paired test could detect at its n (issue 20).

For a paired two-sided t test at level ``ALPHA`` with ``n`` pairs, the standardized effect d_z (mean paired
difference / SD of the paired differences) that is detected with probability ``POWER`` solves

    P(|T| > t_{1-α/2, n-1}) = power,   T ~ noncentral t(df = n − 1, noncentrality = d_z · √n),

(``statsmodels.stats.power.TTestPower``). The minimum detectable effect in the metric's units is d_z times the
observed SD of the paired differences: MDE = d_z(n) · SD. It is a property of the design (n, spread), not of the
observed effect; an observed effect well below the MDE that is "inconclusive" says little either way.
Documented in docs/validity.md ("Power").
"""

from __future__ import annotations

import functools
import math

import pandas as pd
from statsmodels.stats.power import TTestPower

from pfbench.report.claim_set import HEADLINE
from pfbench.report.tables import TextTable

ALPHA, POWER = 0.05, 0.8


@functools.lru_cache(maxsize=64)
def detectable_dz(n: int) -> float:
    """d_z detected with power ``POWER`` by a two-sided paired t test at ``ALPHA`` with ``n`` pairs (NaN below
    2 pairs: no test)."""
    if n < 2:
        return math.nan
    return float(TTestPower().solve_power(effect_size=None, nobs=n, alpha=ALPHA, power=POWER,
                                          alternative="two-sided"))


def mde_rows(table: pd.DataFrame, claims: tuple[str, ...] = HEADLINE) -> pd.DataFrame:
    """Counted (``primary``) rows of ``claims`` with ``mde`` (metric units), ``mde_pct`` (% of the claimed-worse
    side) and ``detectable`` (|observed effect| >= MDE); empty when none has 2 pairs and a spread."""
    sel = table[table["claim"].isin(claims) & (table["basis_kind"] == "primary")] if len(table) else table
    out = []
    for r in sel.itertuples(index=False):
        n, sd, worse = int(r.n), float(r.sd), float(r.worse_mean)
        mde = detectable_dz(n) * sd
        if not math.isfinite(mde):
            continue
        out.append({"claim": r.claim, "metric": r.metric, "basis": r.basis, "n": n, "unit": r.unit, "sd": sd,
                    "diff": float(r.diff), "mde": mde,
                    "mde_pct": 100.0 * mde / abs(worse) if worse and math.isfinite(worse) else math.nan,
                    "detectable": abs(float(r.diff)) >= mde})
    return pd.DataFrame(out, columns=["claim", "metric", "basis", "n", "unit", "sd", "diff", "mde", "mde_pct",
                                      "detectable"])


def power_table(table: pd.DataFrame) -> TextTable | None:
    """The headline comparisons' minimum detectable effect per counted basis; None without any."""
    rows = mde_rows(table)
    if rows.empty:
        return None
    body = tuple((r.claim, r.metric, r.basis, f"{r.n} {r.unit}s", f"{r.sd:.3g}", f"{r.diff:+.3g}",
                  f"{r.mde:.3g} ({r.mde_pct:.1f}%)" if math.isfinite(r.mde_pct) else f"{r.mde:.3g}",
                  "yes" if r.detectable else "no") for r in rows.itertuples())
    return TextTable("Power of the headline comparisons (minimum detectable effect)",
                     ("claim", "metric", "basis", "pairs", "SD of paired differences", "observed effect",
                      "MDE (% of worse side)", "|effect| >= MDE"), body,
                     f"MDE: the effect a two-sided paired t test at alpha {ALPHA:g} detects with power {POWER:g} at "
                     "the observed n, d_z(n) x SD of the paired differences (statsmodels TTestPower; "
                     "docs/validity.md, Power). Effects in metric units, positive = claim direction. The MDE is for "
                     "one test: after Holm within the family the detectable effect is larger.")
