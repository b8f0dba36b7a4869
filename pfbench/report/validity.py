"""The validity study's report section (issue 10): claim tables (``claims``) and figures aggregated over
training seeds. ``validity_sections`` returns nothing for suites without the data, so every report can call it.

Figures (PNG + PDF, ``fig_validity_*``): metric vs NFE and vs GFLOPs per sampler with seed bands; training-sampler
bars; difficulty correlation vs t; the context-helps curve; learning curves vs training FLOPs and wall-clock.
Bands and error bars: Student-t 95% interval of the mean over replicates (training seeds where models were
trained per seed, else sampling seeds).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pfbench.report.claim_tables import detail_table, summary_table, trend_table
from pfbench.report.claims import evaluate_claims, replicates, with_groups
from pfbench.report.figures import Figure
from pfbench.report.images import save_figure
from pfbench.report.mpl import plt
from pfbench.report.power import power_table
from pfbench.report.stats import clip_interval, t_interval
from pfbench.report.steps import steps_table

METRICS = ("fd_embedded", "class_acc")
# Training-sampler bars in the paper's order (best first), with the paper's FID-10K (B/2) where it gives one.
TRAIN_BARS = (("pf", "LTG", "31.4"), ("pf_tgauss", "trunc. Gaussian", "34.7"), ("pf_srm10", "SRM s=10", "39.0"),
              ("sit", "SiT", "41.1"), ("pf_srm1", "SRM s=1", "42.0"), ("pf_patch", "patch uniform", ""),
              ("sit_flops", "SiT, PF's FLOPs", ""))
PAPER_R = {0.2: 0.11, 0.6: 0.52}  # paper: corr(predicted variance, error) at t


def _mean_band(values: np.ndarray, metric: str = "") -> tuple[float, float, float]:
    """Mean and Student-t 95% interval of the mean (NaN interval below 2 values), clipped to the metric's range
    (an interval over 3 seeds of an accuracy may reach past 1)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, math.nan
    if v.size < 2:
        return float(v.mean()), math.nan, math.nan
    lo, hi = clip_interval(metric, *t_interval(v))
    return float(v.mean()), float(lo), float(hi)


def _save(fig: Any, out: Path, name: str, title: str, caption: str) -> Figure:
    """Writes ``name``.png and .pdf atomically (temp file + rename) and closes the figure."""
    out.mkdir(parents=True, exist_ok=True)
    fig.suptitle(title)
    fig.tight_layout()
    png, pdf = (save_figure(fig, out / f"{name}.{ext}", dpi=130, tight=False) for ext in ("png", "pdf"))
    plt.close(fig)
    return Figure(name, title, caption, png, pdf)


def _series(cells: pd.DataFrame, metric: str, x: str) -> dict[str, pd.DataFrame]:
    """(group · sampler) -> per budget: x, mean and band over replicates (default-variant cells only)."""
    out = {}
    sel = cells[(cells["metric"] == metric) & (cells["variant"] == "")]
    for (group, sampler), g in sel.groupby(["group", "sampler"]):
        if g["nfe_budget"].nunique() < 2:
            continue
        pts = []
        for _nfe, gn in g.groupby("nfe_budget"):
            vals, _ = replicates(gn)
            pts.append((float(gn[x].astype(float).mean()), *_mean_band(vals.to_numpy(), metric)))
        out[f"{group} · {sampler}"] = pd.DataFrame(pts, columns=["x", "mean", "lo", "hi"]).sort_values("x")
    return out


def _lines(cells: pd.DataFrame, out: Path, x: str, name: str, xlabel: str, title: str) -> Figure | None:
    metrics = [m for m in METRICS if (cells["metric"] == m).any()]
    series = {m: _series(cells, m, x) for m in metrics}
    if not any(series.values()):
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.0), squeeze=False)
    for ax, m in zip(axes[0], metrics, strict=True):
        for label, s in series[m].items():
            ax.plot(s["x"], s["mean"], marker="o", ms=3, label=label, ls="--" if label.startswith("sit") else "-")
            if s["lo"].notna().any():
                ax.fill_between(s["x"], s["lo"], s["hi"], alpha=0.15)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.set_title(f"{m} ({'lower' if m.startswith('fd') else 'higher'} is better)")
    axes[0][0].legend(fontsize=6)
    return _save(fig, out, name, title, "Mean over replicates (training seeds where trained per seed); band: "
                 "Student-t 95% interval of the mean.")


def training_bars(cells: pd.DataFrame, out: Path) -> Figure | None:
    """Bars per training sampler at the one budget every ablation model ran (euler_pf / euler)."""
    sel = cells[cells["sampler"].isin(["euler_pf", "euler"]) & (cells["variant"] == "")]
    groups = [g for g, _, _ in TRAIN_BARS if (sel["group"] == g).any()]
    if len(groups) < 3:
        return None
    common = set.intersection(*(set(sel[sel["group"] == g]["nfe_budget"].dropna()) for g in groups))
    if not common:
        return None
    nfe = max(common)
    metrics = [m for m in METRICS if (sel["metric"] == m).any()]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4.0), squeeze=False)
    labels = {g: f"{lab}\n(paper FID-10K {p})" if p else lab for g, lab, p in TRAIN_BARS}
    for ax, m in zip(axes[0], metrics, strict=True):
        stats = [_mean_band(replicates(sel[(sel["group"] == g) & (sel["nfe_budget"] == nfe)
                                           & (sel["metric"] == m)])[0].to_numpy(), m) for g in groups]
        mean = np.array([s[0] for s in stats])
        err = np.array([[s[0] - s[1], s[2] - s[0]] for s in stats]).T
        ax.bar(range(len(groups)), mean, yerr=np.nan_to_num(err), capsize=3,
               color=["C1" if g.startswith("sit") else "C0" for g in groups])
        ax.set_xticks(range(len(groups)), [labels[g] for g in groups], fontsize=6, rotation=30, ha="right")
        ax.set_title(f"{m} at NFE {int(nfe)}")
    return _save(fig, out, "fig_validity_train", "Training-sampler ablation (paper order, best first)",
                 "PF models sampled with euler_pf, SiT with euler; error bars: t 95% interval over training seeds.")


def _diag_curve(diags: pd.DataFrame, pattern: str) -> dict[str, pd.DataFrame]:
    """group -> (x parsed from the metric name, mean, band over training seeds)."""
    rx = re.compile(pattern)
    d = diags.assign(x=[float(mm[1]) if (mm := rx.fullmatch(str(m))) else math.nan for m in diags["metric"]])
    d = d.dropna(subset=["x"])
    out = {}
    for group, g in d.groupby("group"):
        pts = [(x, *_mean_band(gx["value"].astype(float).to_numpy(), str(gx["metric"].iloc[0])))
               for x, gx in g.groupby("x")]
        out[str(group)] = pd.DataFrame(pts, columns=["x", "mean", "lo", "hi"])
    return out


def diagnostic_figures(diags: pd.DataFrame, out: Path) -> list[Figure]:
    figs = []
    corr = {k: _diag_curve(diags, rf"difficulty_{k}_patch_t([\d.]+)") for k in ("pearson", "spearman")}
    if any(corr.values()):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), squeeze=False)
        for ax, (k, series) in zip(axes[0], corr.items(), strict=True):
            for group, s in series.items():
                ax.plot(s["x"], s["mean"], marker="o", ms=3, label=group)
                ax.fill_between(s["x"], s["lo"], s["hi"], alpha=0.15)
            if k == "pearson":
                ax.scatter(list(PAPER_R), list(PAPER_R.values()), marker="x", color="k", label="paper (ImageNet)")
            ax.set_xlabel("t (all tokens)")
            ax.set_title(f"{k} corr(predicted variance, squared error), per patch")
        axes[0][0].legend(fontsize=6)
        figs.append(_save(fig, out, "fig_validity_difficulty", "Difficulty head vs realised error",
                          "Held-out images, every token at t; band: t 95% interval over training seeds."))
    ctx = _diag_curve(diags, r"context_loss_hard_t[\d.]+_ctx([\d.]+)")
    if ctx:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), squeeze=False)
        for group, s in ctx.items():
            axes[0][0].plot(s["x"], s["mean"], marker="o", ms=3, label=group)
            axes[0][0].fill_between(s["x"], s["lo"], s["hi"], alpha=0.15)
            rel = s["mean"] / s["mean"].iloc[0]
            axes[0][1].plot(s["x"], rel, marker="o", ms=3, label=group)
        axes[0][0].set_title("loss on hard patches")
        axes[0][1].set_title("relative to no context (t_ctx = t_hard)")
        for ax in axes[0]:
            ax.set_xlabel("t of the easy context")
        axes[0][0].legend(fontsize=6)
        figs.append(_save(fig, out, "fig_validity_context", "Context helps: hard patches at t_hard, easy context later",
                          "Flow-matching loss on generator-hard patches; band: t 95% interval over training seeds."))
    return figs


def compute_curves(curves: pd.DataFrame, out: Path) -> Figure | None:
    """Learning curves (metric at the curve NFE) against training GFLOPs and training seconds."""
    xs = [x for x in ("train_gflops", "train_wall_s") if x in curves and curves[x].notna().any()]
    metrics = [m for m in METRICS if (curves["metric"] == m).any()]
    if curves.empty or not xs or not metrics:
        return None
    fig, axes = plt.subplots(len(metrics), len(xs), figsize=(5.2 * len(xs), 3.6 * len(metrics)), squeeze=False)
    for i, m in enumerate(metrics):
        for j, x in enumerate(xs):
            ax = axes[i][j]
            for group, g in curves[curves["metric"] == m].groupby("group"):
                pts = [(float(gs[x].astype(float).mean()), *_mean_band(gs["value"].astype(float).to_numpy(), m))
                       for _, gs in g.groupby("train_step")]
                s = pd.DataFrame(pts, columns=["x", "mean", "lo", "hi"]).sort_values("x")
                ax.plot(s["x"], s["mean"], marker="o", ms=3, label=str(group))
                ax.fill_between(s["x"], s["lo"], s["hi"], alpha=0.15)
            ax.set_xlabel({"train_gflops": "training GFLOPs", "train_wall_s": "training seconds"}[x])
            ax.set_title(m)
    axes[0][0].legend(fontsize=6)
    return _save(fig, out, "fig_validity_compute", "Learning curves at equal training compute",
                 "Kept checkpoints (EMA) at the curve NFE; x: analytic training FLOPs (3 x forward, per-token "
                 "modulation as executed) and logged training seconds; band over training seeds.")


def validity_sections(rows: pd.DataFrame, out: Path, table: pd.DataFrame | None = None) -> list[tuple[str, list[Any]]]:
    """Report sections ("Claims" with the headline comparisons' power, "Equal steps" where the suite has
    steps-mode cells, "Validity figures", "Appendix: claims, every basis") for a suite with the study's data; []
    otherwise.

    ``table``: the suite's claim table (``evaluate_claims``, with its declared trends); computed when omitted.
    """
    table = evaluate_claims(rows) if table is None else table
    if table.empty:
        return []
    g = with_groups(rows)
    cells, curves = g[(g["kind"] == "cell")], g[g["kind"] == "curve"]
    diags = g[g["kind"] == "diagnostic"]
    figs = [_lines(cells, out, "nfe_budget", "fig_validity_nfe", "NFE budget", "Quality vs NFE (paired replicates)"),
            _lines(cells, out, "gflops", "fig_validity_gflops", "GFLOPs per sample", "Quality vs compute"),
            training_bars(cells, out), *diagnostic_figures(diags, out), compute_curves(curves, out)]
    diag = table["family"] == "difficulty"
    tables: list[Any] = [summary_table(table[~diag & (table["metric"] == m)], f"Claims ({m})")
                         for m in METRICS if (~diag & (table["metric"] == m)).any()]
    if diag.any():
        tables.append(summary_table(table[diag], "Claims (difficulty diagnostics, per model)"))
    trends, power = trend_table(table), power_table(table)
    tables += [t for t in (trends, power) if t is not None]
    steps = [t for m in METRICS if (t := steps_table(table, rows, m)) is not None]
    details = [detail_table(table, f) for f in table["family"].unique()]
    return [("Claims", tables), ("Equal steps", steps), ("Validity figures", [f for f in figs if f is not None]),
            ("Appendix: claims, every basis", details)]
