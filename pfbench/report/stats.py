"""Uncertainty over seeds: mean, std (ddof=1), n and a bootstrap confidence interval of the mean per group.

numpy/pandas/scipy (reports never import torch). The bootstrap is seeded per group from the group's key, so a
group's interval does not change when other groups are added to or removed from the results.
"""

from __future__ import annotations

import fnmatch
import math
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import bootstrap, sem, ttest_rel
from scipy.stats import t as student

from pfbench import PfbenchError
from pfbench.report.keys import GROUP_KEYS, normalize

__all__ = ["GROUP_KEYS", "METRIC_RANGES", "bootstrap_ci", "clip_interval", "metric_range", "paired", "pooled_std",
           "shown_interval", "summarize", "t_interval"]
# Compute columns averaged over the seeds of a group (shown next to the metric, never tested for uncertainty).
COST_COLUMNS: tuple[str, ...] = ("nfe_used", "forwards", "gflops", "wall_s")

N_BOOT = 2000
LEVEL = 0.95
SMALL_N = 10  # below this many seeds tables and figures show the Student-t interval, not the bootstrap one
INF = math.inf
# Valid range of each metric (exact name or fnmatch pattern, first match wins): intervals of the mean are clipped
# to it, since a t interval over 2 seeds of an accuracy of 0.98 reaches past 1 and one of a small FD below 0.
METRIC_RANGES: dict[str, tuple[float, float]] = {
    "*_std": (0.0, INF),  # spread over splits (is_std, kid_std)
    "class_acc*": (0.0, 1.0),
    "precision*": (0.0, 1.0),
    "recall*": (0.0, 1.0),
    "fid": (0.0, INF),
    "sfid": (0.0, INF),
    "fd_*": (0.0, INF),
    "kid": (0.0, INF),  # the estimator can dip below 0, the distance cannot
    "is": (1.0, INF),  # exp(mean KL) >= 1
    "is_*": (1.0, INF),
    "clip_*": (0.0, 100.0),  # 100 · max(cos, 0)
    "difficulty_pearson*": (-1.0, 1.0),
    "difficulty_spearman*": (-1.0, 1.0),
    "difficulty_hard_easy_ratio": (0.0, INF),
    "train_img_per_s": (0.0, INF),
}


def bootstrap_ci(
    values: np.ndarray, n_boot: int = N_BOOT, level: float = LEVEL, rng: np.random.Generator | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (1-D, ``scipy.stats.bootstrap``); ``(nan, nan)``
    with fewer than 2 values, ``(v, v)`` when every value is ``v`` (nothing to resample).

    Note: with very few seeds (n < 10) the percentile interval is known to be too narrow (its width scales
    like ``sqrt((n-1)/n)`` times a normal quantile instead of a t quantile); it is reported as measured.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return float("nan"), float("nan")
    if np.ptp(x) == 0:
        return float(x[0]), float(x[0])
    res = bootstrap((x,), np.mean, n_resamples=n_boot, confidence_level=level, method="percentile",
                    rng=rng if rng is not None else np.random.default_rng(0))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def t_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Student-t interval of the mean, ``mean ± t_{n−1} · std / √n``; ``(nan, nan)`` with fewer than 2 values.

    Honest with 2–9 seeds, where the percentile bootstrap is too narrow (with 2 seeds it cannot be wider than
    the two values, while t_1 widens the interval by 12.7 standard errors).
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return float("nan"), float("nan")
    if np.ptp(x) == 0:  # no spread: the interval is the value (scipy's t.interval gives NaN at scale 0)
        return float(x[0]), float(x[0])
    lo, hi = student.interval(level, x.size - 1, loc=x.mean(), scale=sem(x))
    return float(lo), float(hi)


def paired(better: np.ndarray, worse: np.ndarray) -> dict[str, float]:
    """Paired comparison of per-replicate values oriented so that ``better - worse > 0`` supports the claim.

    Returns the mean difference, its 95% interval (``ttest_rel``'s Student-t interval below ``SMALL_N`` pairs,
    percentile bootstrap from there) and the two-sided ``scipy.stats.ttest_rel`` p; no interval and no p below 2
    pairs or when every difference is equal (nothing to test).
    """
    a, b = np.asarray(better, dtype=np.float64), np.asarray(worse, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    d = a - b
    n = int(d.size)
    out = {"n": float(n), "diff": float(d.mean()) if n else math.nan, "lo": math.nan, "hi": math.nan, "p": math.nan}
    if n < 2 or np.ptp(d) == 0:  # e.g. a class accuracy over few samples moving by the same step twice: no spread
        return out  # to test, so no interval (inconclusive), rather than a zero-width "significant" one
    res = ttest_rel(a, b)
    ci = res.confidence_interval(LEVEL)
    out["lo"], out["hi"] = (float(ci.low), float(ci.high)) if n < SMALL_N else bootstrap_ci(d, rng=np.random.default_rng(0))
    out["p"] = float(res.pvalue)
    return out


def metric_range(metric: object) -> tuple[float, float]:
    """(lo, hi) a metric's value can take (``METRIC_RANGES``); unbounded for an unknown metric."""
    name = "" if pd.isna(metric) else str(metric)
    for pattern, bounds in METRIC_RANGES.items():
        if fnmatch.fnmatchcase(name, pattern):
            return bounds
    return (-INF, INF)


def clip_interval(metric: object, lo: Any, hi: Any) -> tuple[Any, Any]:
    """``[lo, hi]`` intersected with the metric's valid range; missing bounds stay missing."""
    a, b = metric_range(metric)
    lo = lo if pd.isna(lo) else min(max(float(lo), a), b)
    hi = hi if pd.isna(hi) else max(min(float(hi), b), a)
    return lo, hi


def shown_interval(row: pd.Series) -> tuple[Any, Any, str]:
    """(lo, hi, kind) of the interval reports show for a summary row: ``t`` below ``SMALL_N`` seeds, else
    ``bootstrap``; clipped to the metric's valid range (``METRIC_RANGES``), so it may be asymmetric."""
    n = row.get("n")
    small = not pd.isna(n) and int(n) < SMALL_N
    lo, hi, kind = (row["t_lo"], row["t_hi"], "t") if small else (row["ci_lo"], row["ci_hi"], "bootstrap")
    return (*clip_interval(row.get("metric"), lo, hi), kind)


def _group_seed(seed: int, key: tuple[object, ...]) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(repr(key).encode())])


def _first(s: pd.Series) -> object:
    s = s.dropna()
    return s.iloc[0] if len(s) else pd.NA


def summarize(
    df: pd.DataFrame, keys: Sequence[str] = GROUP_KEYS, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0,
) -> pd.DataFrame:
    """Per-group statistics of ``value`` over the rows (seeds) of each group.

    Args:
        df: result rows (``pfbench.results`` columns; at least ``keys`` and ``value``).
        keys: grouping columns; missing key values (e.g. no sampler for a diagnostic) form their own group.
        n_boot: bootstrap resamples; level: confidence level of the interval; seed: bootstrap seed.

    Returns:
        One row per group: ``keys``, ``higher_is_better``, ``mean``, ``std`` (ddof=1), ``n``, ``ci_lo``,
        ``ci_hi`` (percentile bootstrap), ``t_lo``, ``t_hi`` (Student t) (``std`` and the intervals are NA when
        n < 2), the mean of each cost column present, and the sorted unique seeds as ``seeds``.
    """
    keys = list(dict.fromkeys(keys))  # a key passed twice groups once
    df = normalize(df)  # absent key columns as NA (rows written before they existed), variant filled
    missing = [k for k in keys if k not in df]
    if missing:
        df = df.assign(**{k: pd.NA for k in missing})
    out_cols = [*keys, "higher_is_better", "mean", "std", "n", "ci_lo", "ci_hi", "t_lo", "t_hi", "seeds",
                *[c for c in COST_COLUMNS if c in df]]
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in out_cols})
    records = []
    for key, g in df.groupby(keys, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        _check_seeds(g, keys, key)
        vals = g["value"].astype("Float64").dropna().to_numpy(dtype=np.float64)
        n = int(vals.size)
        rec: dict[str, object] = dict(zip(keys, key, strict=True))
        rec["higher_is_better"] = _first(g["higher_is_better"]) if "higher_is_better" in g else pd.NA
        rec["mean"] = float(vals.mean()) if n else np.nan
        # identical values: exactly 0 (numpy's two-pass std leaves rounding noise such as 1.7e-17)
        rec["std"] = (0.0 if np.ptp(vals) == 0 else float(vals.std(ddof=1))) if n >= 2 else np.nan
        rec["n"] = n
        rec["ci_lo"], rec["ci_hi"] = bootstrap_ci(vals, n_boot, level, _group_seed(seed, key))
        rec["t_lo"], rec["t_hi"] = t_interval(vals, level)
        seeds = g["seed"].dropna().astype(int).unique().tolist() if "seed" in g else []
        rec["seeds"] = ",".join(str(s) for s in sorted(seeds))
        for c in COST_COLUMNS:
            if c in g:
                cost = g[c].astype("Float64").dropna()
                rec[c] = float(cost.mean()) if len(cost) else np.nan
        records.append(rec)
    out = pd.DataFrame.from_records(records, columns=out_cols)
    for c in keys:  # keep the key dtypes of the input (Int64 nfe, string model, ...)
        out[c] = out[c].astype(df[c].dtype)
    for c in ("mean", "std", "ci_lo", "ci_hi", "t_lo", "t_hi", *[c for c in COST_COLUMNS if c in df]):
        out[c] = out[c].astype("Float64")
        out.loc[out[c].isna(), c] = pd.NA  # NaN -> NA: "not available", shown as NA
    out["n"] = out["n"].astype("Int64")
    out["higher_is_better"] = out["higher_is_better"].astype("boolean")
    return out


def _check_seeds(g: pd.DataFrame, keys: Sequence[str], key: tuple[object, ...]) -> None:
    """A seed is one observation of a group: two rows with one seed are different cells sharing every key (or one
    result file copied twice), and pooling them would be wrong. Raises, naming what differs and the files."""
    if "seed" not in g:
        return
    dup = g[g["seed"].notna() & g["seed"].duplicated(keep=False)]
    if dup.empty:
        return
    seed = dup["seed"].iloc[0]
    same = dup[dup["seed"] == seed]
    skip = {"value", "part", "wall_s", "git_sha", "pfbench_version", "torch_version", "hardware", "schema_version"}
    differ = [c for c in same.columns
              if c not in skip and same[c].astype("string").fillna("\x00").nunique() > 1]
    where = ", ".join(sorted(set(same["part"].dropna().astype(str)))) if "part" in same else ""
    what = ", ".join(f"{k}={v}" for k, v in zip(keys, key, strict=True) if not pd.isna(v))
    raise PfbenchError(
        f"{len(same)} result rows for seed {seed} of one cell ({what})"
        + (f" differ only in {', '.join(differ)}" if differ else " are identical")
        + (f" (files {where})" if where else "")
        + ": delete the stale file(s) or keep the runs in separate results folders")


def pooled_std(std_a: float, n_a: int, std_b: float, n_b: int) -> float:
    """Pooled standard deviation of two samples; a side with n < 2 (no std) contributes no degrees of freedom.

    Returns NaN when neither side has at least two values.
    """
    num, dof = 0.0, 0
    for s, n in ((std_a, n_a), (std_b, n_b)):
        if n >= 2 and np.isfinite(s):
            num += (n - 1) * s * s
            dof += n - 1
    return float(np.sqrt(num / dof)) if dof else float("nan")
