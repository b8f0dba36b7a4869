"""Report figures from result rows (seaborn/matplotlib; no torch). Each figure is saved as PNG and PDF.

To add a figure, write ``def my_figure(rows, out_dir) -> Figure | None`` (return None when the rows hold no
data for it) and add it to ``FIGURES``; ``make_figures`` and the report pick it up. Drawing lives in ``plots``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pfbench.report.keys import normalize, series_label
from pfbench.report.plots import Figure, labelled, line_panels
from pfbench.report.stats import GROUP_KEYS, summarize
from pfbench.report.tables import is_na

__all__ = ["FIGURES", "PREFIX", "Figure", "FigureFn", "make_figures", "sampler_arg"]

PREFIX = "fig_"  # file names of generated figures; other PNGs in a report folder are the runner's own
FigureFn = Callable[[pd.DataFrame, Path], "Figure | None"]


def _cells(rows: pd.DataFrame) -> pd.DataFrame:
    """Per-cell statistics with one series ``label`` per cell setting (every varying key but the cell's length:
    its NFE budget or fixed step count) and ``nfe``: the budget, or the calls a fixed-step cell made (``nfe_used``).

    Where a suite has both kinds of cell, each label says which it is ("NFE budget" or "fixed steps"), so a sampler
    at equal NFE and the same sampler at the reference's step counts are two lines.
    """
    cells = normalize(rows[rows["kind"] == "cell"])
    if cells.empty:
        return cells.assign(label=pd.Series(dtype="string"), nfe=pd.Series(dtype="Float64"))
    s = labelled(summarize(cells, GROUP_KEYS), omit=("nfe_budget", "fixed_steps"))
    fixed = s["fixed_steps"].notna()
    if fixed.any() and not fixed.all():
        s["label"] = [f"{lab} · {'fixed steps' if f else 'NFE budget'}" for lab, f in zip(s["label"], fixed, strict=True)]
    used = s["nfe_used"] if "nfe_used" in s else pd.Series(pd.NA, index=s.index)
    return s.assign(nfe=s["nfe_budget"].astype("Float64").fillna(used.astype("Float64")))


def metric_vs_nfe(rows: pd.DataFrame, out_dir: Path) -> Figure | None:
    """Metric against the NFE budget, one line per cell setting: the equal-NFE comparison. Cells run at a fixed
    step count are drawn at the calls they made."""
    s = _cells(rows)
    if not s["fixed_steps"].notna().any():
        return line_panels(rows, s, "nfe", "NFE budget", out_dir, f"{PREFIX}nfe", "Quality vs NFE budget",
                           "Each sampler runs the largest step count whose cost fits the budget; dashed: reference "
                           "rows.", logx=True, references=True)
    return line_panels(rows, s, "nfe", "NFE (budget, or calls made at fixed steps)", out_dir, f"{PREFIX}nfe",
                       "Quality vs NFE", "NFE-budget cells run the largest step count whose cost fits the budget; "
                       "fixed-step cells are drawn at the model calls they made; dashed: reference rows.",
                       logx=True, references=True)


def metric_vs_steps(rows: pd.DataFrame, out_dir: Path) -> Figure | None:
    """Metric against the outer step count of the cells run at fixed steps (None when there are none)."""
    s = _cells(rows)
    s = s[s["fixed_steps"].notna()]
    if s.empty:
        return None
    return line_panels(rows, s, "fixed_steps", "outer steps", out_dir, f"{PREFIX}steps", "Quality vs outer steps",
                       "Cells run at a fixed outer step count N (t_k = k/N, the reference scripts' convention): "
                       "dual-loop makes N·n_inner model calls, look-ahead about 2N; dashed: reference rows.",
                       logx=True, references=True)


def metric_vs_gflops(rows: pd.DataFrame, out_dir: Path) -> Figure | None:
    """Metric against analytic GFLOPs per sample: the equal-compute comparison."""
    return line_panels(rows, _cells(rows), "gflops", "GFLOPs per sample", out_dir,
                        f"{PREFIX}gflops", "Quality vs compute",
                        "Analytic forward GFLOPs per sample summed over calls (CFG pairs count twice).", logx=True,
                        references=True)


def learning_curve(rows: pd.DataFrame, out_dir: Path) -> Figure | None:
    """Rows of kind ``curve``: metric against training step, one line per model."""
    curve = rows[rows["kind"] == "curve"]
    if curve.empty or curve["train_step"].isna().all():
        return None
    s = labelled(summarize(curve, GROUP_KEYS), always=("model", "sampler", "nfe_budget"), omit=("train_step",))
    return line_panels(rows, s, "train_step", "training step", out_dir, f"{PREFIX}curve",
                        "Learning curve", "Kept checkpoints (EMA weights) sampled at a fixed NFE.", logx=False,
                        references=True)


# Sampler parameters worth a sweep figure (docs/protocol.md §6): the easy fraction, inner steps, look-ahead ratio, warm-up.
SWEEP_ARGS: tuple[str, ...] = ("p", "n_inner", "r", "t_warm")


def sampler_arg(rows: pd.DataFrame, key: str) -> pd.Series:
    """The numeric value of ``key`` in each row's ``sampler_args`` JSON; NA where absent, non-numeric or unparsable."""

    def one(text: Any) -> float:
        if is_na(text):
            return np.nan
        try:
            v = json.loads(str(text)).get(key)
        except (ValueError, AttributeError):
            return np.nan
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan

    return pd.Series([one(t) for t in rows["sampler_args"]], index=rows.index, dtype="Float64")


def metric_vs_sampler_arg(rows: pd.DataFrame, out_dir: Path, key: str) -> Figure | None:
    """Metric against one sampler parameter (e.g. the threshold ``p``), one line per (model, sampler, NFE budget).

    Only series in which ``key`` takes at least two values are drawn; None when no series sweeps it.
    """
    cells = normalize(rows[rows["kind"] == "cell"])
    if cells.empty:
        return None
    arg = f"arg_{key}"
    cells = cells.assign(**{arg: sampler_arg(cells, key)}).dropna(subset=[arg])
    # a series: every key, the variant without the swept parameter (p=0.2 and p=0.4 lie on one line)
    series = pd.Series([series_label(r, GROUP_KEYS, omit_args=(key,)) for _, r in cells.iterrows()],
                       index=cells.index, dtype="object")
    cells = cells[cells.groupby(series)[arg].transform("nunique") > 1]
    if cells.empty:
        return None
    s = labelled(summarize(cells, (*GROUP_KEYS, arg)), always=("model", "sampler", "nfe_budget"), omit_args=(key,))
    return line_panels(rows, s, arg, f"sampler parameter {key}", out_dir, f"{PREFIX}{arg}",
                        f"Quality vs sampler parameter {key}",
                        f"Each line sweeps `{key}` with every other setting fixed.", logx=False, references=False)


def _arg_figure(key: str) -> FigureFn:
    def fn(rows: pd.DataFrame, out_dir: Path) -> Figure | None:
        return metric_vs_sampler_arg(rows, out_dir, key)

    fn.__name__ = f"metric_vs_{key}"
    fn.__doc__ = f"Metric against the sampler parameter ``{key}`` (None when no sampler sweeps it)."
    return fn


FIGURES: dict[str, FigureFn] = {
    "nfe": metric_vs_nfe,
    "steps": metric_vs_steps,
    "gflops": metric_vs_gflops,
    "curve": learning_curve,
    **{f"arg_{k}": _arg_figure(k) for k in SWEEP_ARGS},
}

def make_figures(rows: pd.DataFrame, out_dir: Path, names: Sequence[str] | None = None) -> list[Figure]:
    """Draws every figure in ``FIGURES`` (or ``names``) that has data; returns those written."""
    out: list[Figure] = []
    for name in names or list(FIGURES):
        fig = FIGURES[name](rows, Path(out_dir))
        if fig is not None:
            out.append(fig)
    return out
