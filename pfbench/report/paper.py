"""``pfbench figures RESULTS... --out DIR``: paper-style tables and figures regenerated from Parquet only (no torch).

Writes into ``out_dir``:
    * ``table_main.md`` / ``table_main.tex``: metric per model × sampler at each NFE budget (mean ± std over seeds);
    * ``paper_nfe.{png,pdf}``: metric against NFE budget, one line per model/sampler, log-x;
    * ``paper_samplers.{png,pdf}``: sampler ablation bars at the largest NFE budget every sampler ran;
    * ``paper_train_timesteps.{png,pdf}``: training timestep-sampler ablation, only when rows carry that
      information in a ``train_timesteps`` column (skipped otherwise).

A sampler whose ``sampler_args`` differ between rows of one cell (a ``p`` sweep, say) is split into one
series per setting, labelled with the parameters that differ (``dual_loop (p=0.2)``): seeds of different
settings are never pooled.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pfbench import PfbenchError
from pfbench.report.figures import BAND, _line_panels, _metrics, _panels, _save
from pfbench.report.html import _atomic_write_text
from pfbench.report.stats import GROUP_KEYS, summarize
from pfbench.report.tables import arrow, fmt_key, fmt_num, is_na
from pfbench.results import read_path

# Bar order of the sampler ablation: PF samplers, their random-mask ablations, then global-t (SiT) samplers.
SAMPLER_ORDER: tuple[str, ...] = ("euler_pf", "dual_loop", "look_ahead", "dual_loop_random", "look_ahead_random",
                                  "euler", "heun", "euler_maruyama")
# Optional extra column naming the training timestep sampler of a row's model (SPEC §3 names: "ltg", "srm", ...).
TRAIN_COLUMN = "train_timesteps"
# sampler_args keys that follow from the NFE budget rather than being a setting of the sampler.
_BUDGET_ARGS = frozenset({"steps"})


def _args(text: Any) -> dict[str, Any]:
    if is_na(text):
        return {}
    try:
        out = json.loads(str(text))
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


def _variant_labels(cells: pd.DataFrame) -> pd.Series:
    """``sampler`` plus the ``sampler_args`` that differ within the sampler's cells (``dual_loop (p=0.2)``)."""
    parsed = [_args(t) for t in cells["sampler_args"]]
    samplers = [fmt_key(x) for x in cells["sampler"]]
    varying: dict[str, list[str]] = {}
    for sampler in set(samplers):
        idx = [i for i, x in enumerate(samplers) if x == sampler]
        keys = sorted({k for i in idx for k in parsed[i]} - _BUDGET_ARGS)
        varying[sampler] = [k for k in keys
                            if len({json.dumps(parsed[i].get(k), sort_keys=True) for i in idx}) > 1]
    labels = []
    for i, sampler in enumerate(samplers):
        extra = ", ".join(f"{k}={fmt_key(parsed[i].get(k))}" for k in varying[sampler])
        labels.append(f"{sampler} ({extra})" if extra else sampler)
    return pd.Series(labels, index=cells.index, dtype="string")


def _load(results_folders: Sequence[Path]) -> pd.DataFrame:
    frames = [read_path(Path(f)) for f in results_folders]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    cells = rows[rows["kind"] == "cell"] if not rows.empty else rows
    if cells.empty:
        raise PfbenchError(f"no cell rows under {', '.join(map(str, results_folders)) or '(no folders)'}: "
                           "run a suite first (`pfbench run SUITE`) and pass its results folder")
    return rows


def _summary(rows: pd.DataFrame, extra: Sequence[str] = ()) -> pd.DataFrame:
    """Per-cell statistics with ``sampler`` replaced by its variant label and ``label`` = model · sampler[· cfg]."""
    cells = rows[rows["kind"] == "cell"].reset_index(drop=True)
    cells = cells.assign(sampler=_variant_labels(cells))
    s = summarize(cells, (*GROUP_KEYS, *extra))
    cfg_varies = s["cfg_scale"].dropna().nunique() > 1
    return s.assign(label=[f"{fmt_key(r['model'])} · {fmt_key(r['sampler'])}"
                           + (f" · cfg {fmt_key(r['cfg_scale'])}" if cfg_varies else "") for _, r in s.iterrows()])


# ------------------------------------------------------------------ (a) main table
def _latex_escape(text: str) -> str:
    out = text.replace("\\", "\0")  # placeholder, so the braces of \textbackslash{} are not escaped below
    for a in "_%&#${}":
        out = out.replace(a, "\\" + a)
    return out.replace("\0", r"\textbackslash{}")


def _cell_text(mean: Any, std: Any, latex: bool) -> str:
    if is_na(mean):
        return "NA"
    if is_na(std):
        return fmt_num(mean)
    return f"{fmt_num(mean)} $\\pm$ {fmt_num(std, '.2g')}" if latex else f"{fmt_num(mean)} ± {fmt_num(std, '.2g')}"


def main_tables(summary: pd.DataFrame) -> tuple[str, str]:
    """Markdown and LaTeX: one table per metric, rows model × sampler (label), columns NFE budgets."""
    md: list[str] = ["# Main results", "", "mean ± std over seeds (NA: one seed)", ""]
    tex: list[str] = ["% generated by `pfbench figures`; mean $\\pm$ std over seeds"]
    for metric in _metrics(summary):
        sm = summary[summary["metric"] == metric]
        budgets = sorted(int(b) for b in sm["nfe_budget"].dropna().unique())
        hib = sm["higher_is_better"].dropna()
        head = f"{metric} ({arrow(hib.iloc[0], metric)} better)" if len(hib) else metric
        labels = sorted(sm["label"].unique())
        grid = {(r["label"], int(r["nfe_budget"])): r for _, r in sm.dropna(subset=["nfe_budget"]).iterrows()}
        cols = ["model · sampler", *[f"NFE {b}" for b in budgets]]
        md += [f"## {head}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        tex += ["", f"% {metric}", "\\begin{tabular}{l" + "r" * len(budgets) + "}", "\\toprule",
                " & ".join(["model / sampler", *[f"NFE {b}" for b in budgets]]) + " \\\\", "\\midrule"]
        for label in labels:
            cells = [grid.get((label, b)) for b in budgets]
            md.append("| " + " | ".join([label, *[_cell_text(c["mean"], c["std"], False) if c is not None else "—"
                                                   for c in cells]]) + " |")
            tex.append(" & ".join([_latex_escape(label.replace(" · ", " / ")),
                                   *[_cell_text(c["mean"], c["std"], True) if c is not None else "--"
                                     for c in cells]]) + " \\\\")
        md.append("")
        tex += ["\\bottomrule", "\\end{tabular}", f"% caption: {_latex_escape(head)}"]
    return "\n".join(md) + "\n", "\n".join(tex) + "\n"


# ------------------------------------------------------------------ (c), (d) bar charts
def largest_common_nfe(summary: pd.DataFrame) -> int | None:
    """Largest NFE budget that every sampler variant ran; the largest budget overall when there is none."""
    budgets = summary.dropna(subset=["nfe_budget"])
    if budgets.empty:
        return None
    per = [set(g["nfe_budget"].astype(int)) for _, g in budgets.groupby("sampler")]
    common = set.intersection(*per)
    return int(max(common)) if common else int(budgets["nfe_budget"].max())


def _order(names: Sequence[str]) -> list[str]:
    def rank(name: str) -> tuple[int, str]:
        base = name.split(" (")[0]
        return (SAMPLER_ORDER.index(base) if base in SAMPLER_ORDER else len(SAMPLER_ORDER), name)

    return sorted(names, key=rank)


def _bars(summary: pd.DataFrame, x: str, hue: str, xlabel: str, out_dir: Path, name: str, title: str,
          caption: str) -> Path | None:
    """One panel per metric: bars of the mean per ``x`` (one colour per ``hue``), error bars ± std over seeds."""
    import seaborn as sns

    metrics = _metrics(summary)
    if summary.empty or not metrics:
        return None
    xs = _order(list(summary[x].astype(str).unique())) if x == "sampler" else sorted(summary[x].astype(str).unique())
    hues = sorted(summary[hue].astype(str).unique())
    colors = sns.color_palette("colorblind", len(hues))
    width = 0.8 / len(hues)
    fig, axes = _panels(len(metrics), width=max(3.6, 0.55 * len(xs) * max(1, len(hues)) ** 0.5))
    for ax, metric in zip(axes, metrics, strict=False):
        sm = summary[summary["metric"] == metric]
        for j, h in enumerate(hues):
            g = sm[sm[hue].astype(str) == h]
            # several rows per bar (e.g. two models trained with one timestep sampler): their average
            g = g.assign(key=g[x].astype(str)).groupby("key")[["mean", "std"]].agg(
                lambda c: c.astype(float).mean())
            pos = [i + (j - (len(hues) - 1) / 2) * width for i in range(len(xs))]
            mean = [float(g.loc[v, "mean"]) if v in g.index else np.nan for v in xs]
            std = [float(g.loc[v, "std"]) if v in g.index and np.isfinite(g.loc[v, "std"]) else 0.0 for v in xs]
            ax.bar(pos, mean, width=width, yerr=std, capsize=2, color=colors[j], label=h, error_kw={"lw": 0.8})
        ax.set_xticks(range(len(xs)), xs, rotation=30, ha="right", fontsize=7)
        hib = sm["higher_is_better"].dropna()
        ax.set_title(f"{metric} ({arrow(hib.iloc[0], metric)} better)" if len(hib) else metric)
        ax.set_xlabel(xlabel)
    return _save(fig, out_dir, name, title, caption).png


def sampler_ablation(summary: pd.DataFrame, out_dir: Path) -> Path | None:
    """(c) Bars per sampler variant at the largest common NFE budget, one colour per model; None with < 2 samplers."""
    nfe = largest_common_nfe(summary)
    s = summary[summary["nfe_budget"] == nfe] if nfe is not None else summary.iloc[0:0]
    if s["sampler"].nunique() < 2:
        return None
    cfg_varies = s["cfg_scale"].dropna().nunique() > 1
    s = s.assign(series=[fmt_key(r["model"]) + (f" · cfg {fmt_key(r['cfg_scale'])}" if cfg_varies else "")
                         for _, r in s.iterrows()])
    return _bars(s, "sampler", "series", "sampler", out_dir, "paper_samplers", f"Sampler ablation at NFE {nfe}",
                 "Mean over seeds, error bars ± std; PF samplers, their random-mask ablations, then global-t samplers.")


def train_ablation(rows: pd.DataFrame, out_dir: Path) -> Path | None:
    """(d) Bars per training timestep sampler (column ``train_timesteps``); None when absent or constant."""
    if TRAIN_COLUMN not in rows:
        return None
    cells = rows[(rows["kind"] == "cell") & rows[TRAIN_COLUMN].notna()]
    if cells[TRAIN_COLUMN].astype(str).nunique() < 2:
        return None
    s = _summary(cells.assign(**{TRAIN_COLUMN: cells[TRAIN_COLUMN].astype(str)}), (TRAIN_COLUMN,))
    nfe = largest_common_nfe(s)
    s = s[s["nfe_budget"] == nfe]
    return _bars(s, TRAIN_COLUMN, "sampler", "training timestep sampler", out_dir, "paper_train_timesteps",
                 f"Training timestep-sampler ablation at NFE {nfe}",
                 "Models differing in the training timestep sampler, each sampled with the listed samplers.")


# ------------------------------------------------------------------ entry point
def paper_figures(results_folders: list[Path], out_dir: Path) -> list[Path]:
    """Regenerates the paper tables and figures from Parquet results.

    Args:
        results_folders: results folders (searched recursively) or single Parquet files; rows are pooled.
        out_dir: destination folder (created); files are replaced atomically.

    Returns:
        The paths written: tables (``.md``, ``.tex``) then each figure's PNG and PDF; figures without data
        (one sampler only, no training-sampler column) are skipped.

    Raises:
        PfbenchError: when the folders hold no cell rows.
    """
    out_dir = Path(out_dir)
    rows = _load(results_folders)
    summary = _summary(rows)
    md, tex = main_tables(summary)
    written = [_atomic_write_text(out_dir / "table_main.md", md), _atomic_write_text(out_dir / "table_main.tex", tex)]
    nfe = _line_panels(rows, summary, "nfe_budget", "NFE budget", out_dir, "paper_nfe", "Quality vs NFE",
                       f"One line per model/sampler; {BAND}.", logx=True, references=True)
    pngs = [nfe.png if nfe is not None else None, sampler_ablation(summary, out_dir), train_ablation(rows, out_dir)]
    for png in pngs:
        if png is not None:
            written += [png, png.with_suffix(".pdf")]
    return written
