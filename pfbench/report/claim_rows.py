"""Rows of a claim table (``claims.evaluate_claims``): replicates, paired statistics, one row per basis.

Shared by the claim kinds tested at equal NFE (``claims``) and at equal outer steps (``steps``). A row's
difference is oriented so that a positive value supports the claim; "by how much" is the difference in % of the
claimed-worse side's mean; ``sd`` is the standard deviation of the oriented paired differences (``power``).
"""

from __future__ import annotations

import math
import re

import pandas as pd

from pfbench.report.claim_set import Claim, Side
from pfbench.report.correction import FAILS, HOLDS, SHOWN, SKIPPED, UNSURE
from pfbench.report.keys import instances
from pfbench.report.stats import paired as compare

# "pf@s1": suite model "pf" trained with seed 1 (pfbench.suite.parse.SEED_SEP; duplicated: reports import no suite code).
_SEED = re.compile(r"^(?P<base>.+)@s(?P<seed>\d+)$")
PRIMARY, INTERPOLATED, TREND, NONE = "primary", "interpolated", "trend", "not compared"  # basis_kind values

COLUMNS = ("family", "claim", "paper", "metric", "basis", "basis_kind", "reason", "better", "worse", "unit", "n",
           "better_mean", "worse_mean", "diff", "lo", "hi", "p", "p_holm", "q_bh", "pct", "pct_lo", "pct_hi", "sd",
           "verdict_raw", "verdict")


def split_model(name: object) -> tuple[str, float]:
    """``"pf@s1"`` -> ``("pf", 1.0)``; other names -> ``(name, nan)`` (no training seed)."""
    m = _SEED.match(str(name))
    return (m["base"], float(m["seed"])) if m else (str(name), math.nan)


def with_groups(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows plus ``group`` (suite model without training seed; with ``[model id]`` when the rows hold several
    instances of the model) and ``train_seed`` (NaN when none)."""
    parts = [split_model(m) for m in rows["model"]]
    variant = rows["variant"].astype("string").fillna("") if "variant" in rows else ""
    multi = instances(rows)  # several instances of a model: each its own labelled group, never pooled
    ids = rows["model_id"] if multi else pd.Series("", index=rows.index)
    group = [p[0] + (f" [{i[:8]}]" if m in multi else "") for p, m, i in zip(parts, rows["model"], ids, strict=True)]
    return rows.assign(group=group, train_seed=[p[1] for p in parts], variant=variant)


def verdict(lo: float, hi: float) -> str:
    """``holds`` (interval above 0), ``does not hold`` (below 0) or ``inconclusive`` (contains 0 or missing)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return UNSURE
    return HOLDS if lo > 0 else FAILS if hi < 0 else UNSURE


def replicates(frame: pd.DataFrame) -> tuple[pd.Series, str]:
    """Values per replicate: mean over sampling seeds per training seed when there are training seeds
    (unit ``training seed``), else per sampling seed (unit ``sampling seed``)."""
    if frame["train_seed"].notna().any():
        return frame.groupby("train_seed")["value"].mean(), "training seed"
    return frame.groupby("seed")["value"].mean(), "sampling seed"


def higher_is_better(frame: pd.DataFrame, default: bool = False) -> bool:
    """The metric's direction as the rows record it (``default`` when they do not)."""
    known = frame["higher_is_better"].dropna()
    return bool(known.iloc[0]) if len(known) else default


def side_cells(cells: pd.DataFrame, side: Side) -> pd.DataFrame:
    """The cells of one side of a claim (model group, sampler, variant)."""
    return cells[(cells["group"] == side.model) & (cells["sampler"] == side.sampler)
                 & (cells["variant"] == side.variant)]


def result_row(claim: Claim, metric: str, basis: str, a: pd.Series, b: pd.Series, unit: str, hib: bool,
               kind: str = PRIMARY) -> dict:
    """One claim-table row from per-replicate values of the better (a) and worse (b) sides, index = replicate;
    ``kind``: the basis kind (``PRIMARY`` or ``INTERPOLATED``)."""
    a, b = a.align(b, join="inner")
    sign = 1.0 if hib else -1.0
    da, db = sign * a.to_numpy(float), sign * b.to_numpy(float)
    stats = compare(da, db)
    d = (da - db)[~(pd.isna(da) | pd.isna(db))]
    worse = float(b.mean()) if len(b) else math.nan
    scale = 100.0 / abs(worse) if worse and math.isfinite(worse) else math.nan
    raw = verdict(stats["lo"], stats["hi"])
    return {"family": claim.family, "claim": claim.name, "paper": claim.paper, "metric": metric, "basis": basis,
            "basis_kind": kind, "reason": "", "better": claim.better.text(), "worse": claim.worse.text(),
            "unit": unit, "better_mean": float(a.mean()) if len(a) else math.nan, "worse_mean": worse, **stats,
            "pct": stats["diff"] * scale, "pct_lo": stats["lo"] * scale, "pct_hi": stats["hi"] * scale,
            "sd": float(d.std(ddof=1)) if d.size > 1 else math.nan,
            "verdict_raw": raw, "verdict": raw if kind == PRIMARY else SHOWN}


def skipped_row(claim: Claim, metric: str, basis: str, reason: str) -> dict:
    """A basis that could not be compared, listed with why (never dropped silently)."""
    return {"family": claim.family, "claim": claim.name, "paper": claim.paper, "metric": metric, "basis": basis,
            "basis_kind": NONE, "reason": reason, "better": claim.better.text(), "worse": claim.worse.text(),
            "n": 0.0, "verdict_raw": SKIPPED, "verdict": SKIPPED}
