"""Report figures from result rows (seaborn/matplotlib; no torch). Each figure is saved as PNG and PDF.

To add a figure, write ``def my_figure(rows, out_dir) -> Figure | None`` (return None when the rows hold no
data for it) and add it to ``FIGURES``; ``make_figures`` and the report pick it up.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pfbench.report.images import _atomic_savefig
from pfbench.report.stats import GROUP_KEYS, shown_interval, summarize
from pfbench.report.tables import arrow, fmt_key, is_na

BAND = "band: 95% interval of the mean over seeds (Student t below 10 seeds, else bootstrap)"
PREFIX = "fig_"  # file names of generated figures; other PNGs in a report folder are the runner's own


@dataclass(frozen=True)
class Figure:
    name: str  # file stem, e.g. "fig_nfe"
    title: str
    caption: str
    png: Path
    pdf: Path


FigureFn = Callable[[pd.DataFrame, Path], "Figure | None"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper", font_scale=0.9)
    return plt


def _metrics(df: pd.DataFrame) -> list[str]:
    """Metrics worth a panel (the ``*_std`` spreads are in the tables only)."""
    return sorted(m for m in df["metric"].dropna().unique() if not str(m).endswith("_std"))


def _panels(n: int, width: float = 3.6, height: float = 2.8) -> tuple[Any, np.ndarray]:
    plt = _plt()
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows + 0.6), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


def _save(fig: Any, out_dir: Path, name: str, title: str, caption: str) -> Figure:
    plt = _plt()
    handles, labels = [], []
    for ax in fig.axes:  # one legend for the figure, merged over panels
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), frameon=False,
                   bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06 + 0.03 * ((len(labels) - 1) // 4), 1, 1))
    png = _atomic_savefig(fig, out_dir / f"{name}.png")
    pdf = _atomic_savefig(fig, out_dir / f"{name}.pdf")
    plt.close(fig)
    for path in (png, pdf):
        os.chmod(path, 0o644)  # mkstemp makes 0600; figures are meant to be shared
    return Figure(name, title, caption, png, pdf)


def _series_label(r: pd.Series, cfg_varies: bool) -> str:
    label = f"{fmt_key(r['model'])} · {fmt_key(r['sampler'])}"
    return label + (f" · cfg {fmt_key(r['cfg_scale'])}" if cfg_varies else "")


def _reference_lines(ax: Any, rows: pd.DataFrame, metric: str) -> str:
    """Dashed lines for reference rows (real data, trivial baseline): the scale of the metric.

    A reference far outside the plotted values would squash the lines being compared, so it is returned as
    text (for the panel title) instead of drawn.
    """
    ref = rows[(rows["kind"] == "reference") & (rows["metric"] == metric)]
    lo, hi = ax.get_ylim()
    span = hi - lo
    off: list[str] = []
    for name, g in ref.groupby("model", dropna=True):
        v = float(g["value"].astype(float).mean())
        if lo - 0.5 * span <= v <= hi + 0.5 * span:
            ax.axhline(v, color="0.5", lw=0.8, ls="--")
            ax.annotate(str(name), (0.01, v), xycoords=("axes fraction", "data"), fontsize=6, color="0.35",
                        va="bottom")
        else:
            off.append(f"{name}: {v:.4g}")
    return f"off axis: {'; '.join(off)}" if off else ""


def _line_panels(
    rows: pd.DataFrame, summary: pd.DataFrame, x: str, xlabel: str, out_dir: Path,
    name: str, title: str, caption: str, logx: bool, references: bool,
) -> Figure | None:
    """One panel per metric; one line per series with its 95% interval band where there are several seeds."""
    s = summary.dropna(subset=[x])
    metrics = _metrics(s)
    if s.empty or not metrics:
        return None
    import seaborn as sns

    labels = sorted(s["label"].unique())
    colors = dict(zip(labels, sns.color_palette("colorblind", len(labels)), strict=True))
    fig, axes = _panels(len(metrics))
    for ax, metric in zip(axes, metrics, strict=False):
        sm = s[s["metric"] == metric]
        for label, g in sm.groupby("label", sort=True):
            g = g.sort_values(x)
            xs, ys = g[x].astype(float).to_numpy(), g["mean"].astype(float).to_numpy()
            ax.plot(xs, ys, marker="o", ms=3.5, lw=1.4, color=colors[label], label=label)
            bands = pd.DataFrame([shown_interval(r)[:2] for _, r in g.iterrows()])  # t below SMALL_N seeds
            lo, hi = (bands[i].astype("Float64").astype(float).to_numpy() for i in (0, 1))
            if np.isfinite(lo).any():
                ax.fill_between(xs, lo, hi, color=colors[label], alpha=0.18, lw=0)
        off = _reference_lines(ax, rows, metric) if references else ""
        hib = sm["higher_is_better"].dropna()
        ax.set_title(f"{metric} ({arrow(hib.iloc[0])} better)" if len(hib) else metric, pad=11 if off else 6)
        if off:  # a small second line under the panel title
            ax.text(1.0, 1.01, off, transform=ax.transAxes, fontsize=6, color="0.35", ha="right", va="bottom")
        ax.set_xlabel(xlabel)
        if logx and sm[x].astype(float).max() > 2 * sm[x].astype(float).min() > 0:
            _log_axis(ax, sorted(sm[x].astype(int).unique()) if x == "nfe_budget" else None)
    return _save(fig, out_dir, name, title, caption)


def _log_axis(ax: Any, ticks: list[int] | None) -> None:
    """Log-scaled x with plain-number labels: the given ticks (NFE budgets), else 1-2-5 steps per decade."""
    from matplotlib import ticker

    ax.set_xscale("log", base=2 if ticks else 10)
    plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
    if ticks:
        ax.xaxis.set_major_locator(ticker.FixedLocator(ticks))
    else:
        ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def _cells(rows: pd.DataFrame) -> pd.DataFrame:
    cells = rows[rows["kind"] == "cell"]
    if cells.empty:
        return cells.assign(label=pd.Series(dtype="string"))
    s = summarize(cells, GROUP_KEYS)
    cfg_varies = s["cfg_scale"].dropna().nunique() > 1
    return s.assign(label=[_series_label(r, cfg_varies) for _, r in s.iterrows()])


def metric_vs_nfe(rows: pd.DataFrame, out_dir: Path) -> Figure | None:
    """Metric against the NFE budget, one line per (model, sampler): the equal-NFE comparison."""
    return _line_panels(rows, _cells(rows), "nfe_budget", "NFE budget", out_dir, f"{PREFIX}nfe",
                        "Quality vs NFE budget",
                        f"Each sampler runs the largest step count whose cost fits the budget; {BAND}; dashed: "
                        "reference rows.", logx=True, references=True)


def metric_vs_gflops(rows: pd.DataFrame, out_dir: Path) -> Figure | None:
    """Metric against analytic GFLOPs per sample: the equal-compute comparison."""
    return _line_panels(rows, _cells(rows), "gflops", "GFLOPs per sample", out_dir,
                        f"{PREFIX}gflops", "Quality vs compute",
                        "Analytic forward GFLOPs per sample summed over calls (CFG pairs count twice).", logx=True,
                        references=True)


def learning_curve(rows: pd.DataFrame, out_dir: Path) -> Figure | None:
    """Rows of kind ``curve``: metric against training step, one line per model."""
    curve = rows[rows["kind"] == "curve"]
    if curve.empty or curve["train_step"].isna().all():
        return None
    s = summarize(curve, (*GROUP_KEYS, "train_step"))
    s = s.assign(label=[f"{fmt_key(r['model'])} · {fmt_key(r['sampler'])} @ NFE {fmt_key(r['nfe_budget'])}"
                        for _, r in s.iterrows()])
    return _line_panels(rows, s, "train_step", "training step", out_dir, f"{PREFIX}curve",
                        "Learning curve", "Kept checkpoints (EMA weights) sampled at a fixed NFE.", logx=False,
                        references=True)


# Sampler parameters worth a sweep figure (SPEC §5): the easy fraction, inner steps, look-ahead ratio, warm-up.
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
    cells = rows[rows["kind"] == "cell"]
    if cells.empty:
        return None
    cells = cells.assign(**{f"arg_{key}": sampler_arg(cells, key)}).dropna(subset=[f"arg_{key}"])
    series = ["model", "sampler", "nfe_budget", "cfg_scale"]
    varies = cells.groupby(series, dropna=False)[f"arg_{key}"].transform("nunique") > 1
    cells = cells[varies]
    if cells.empty:
        return None
    s = summarize(cells, (*GROUP_KEYS, f"arg_{key}"))
    cfg_varies = s["cfg_scale"].dropna().nunique() > 1
    s = s.assign(label=[f"{_series_label(r, cfg_varies)} @ NFE {fmt_key(r['nfe_budget'])}" for _, r in s.iterrows()])
    return _line_panels(rows, s, f"arg_{key}", f"sampler parameter {key}", out_dir, f"{PREFIX}arg_{key}",
                        f"Quality vs sampler parameter {key}",
                        f"Each line sweeps `{key}` at a fixed model, sampler and NFE budget; {BAND}.", logx=False,
                        references=False)


def _arg_figure(key: str) -> FigureFn:
    def fn(rows: pd.DataFrame, out_dir: Path) -> Figure | None:
        return metric_vs_sampler_arg(rows, out_dir, key)

    fn.__name__ = f"metric_vs_{key}"
    fn.__doc__ = f"Metric against the sampler parameter ``{key}`` (None when no sampler sweeps it)."
    return fn


FIGURES: dict[str, FigureFn] = {
    "nfe": metric_vs_nfe,
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
