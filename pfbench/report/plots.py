"""Drawing primitives of the report figures (matplotlib/seaborn; no torch): panels, series lines with interval
bands, dot plots for one point per series, reference lines, integer and log axes, atomic PNG + PDF saving.

Series are identified by a ``label`` column (``keys.series_label``); a label with two points at one x value is
an error, never an average, and every caption says what the drawn intervals are or why none is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns

from pfbench.report.images import save_figure
from pfbench.report.keys import assert_distinct, series_label, shown_keys
from pfbench.report.mpl import plt, ticker
from pfbench.report.stats import shown_interval
from pfbench.report.tables import arrow, is_na

BAND = ("95% interval of the mean over seeds (Student t below 10 seeds, else bootstrap), clipped to the metric's "
        "valid range")
MAX_LEGEND = 12  # series per legend; more are faceted into rows of panels (``legend_chunks``)
# Integer-valued x axes: ticks at the values themselves, never 15.2, 15.4, ...
INTEGER_X = ("nfe_budget", "nfe", "fixed_steps", "train_step")


@dataclass(frozen=True)
class Figure:
    name: str  # file stem, e.g. "fig_nfe"
    title: str
    caption: str
    png: Path
    pdf: Path


def _theme() -> None:
    """The report's seaborn theme; set when a figure is made, not on import (it changes global rcParams)."""
    sns.set_theme(style="whitegrid", context="paper", font_scale=0.9)


def panel_metrics(df: pd.DataFrame) -> list[str]:
    """Metrics worth a panel (the ``*_std`` spreads are in the tables only)."""
    return sorted(m for m in df["metric"].dropna().unique() if not str(m).endswith("_std"))


def panels(n: int, width: float = 3.6, height: float = 2.8) -> tuple[Any, Any]:
    """A figure with ``n`` visible axes, three per row; returns (figure, flat iterator over the axes)."""
    _theme()
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows + 0.6), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


def save_panels(fig: Any, out_dir: Path, name: str, title: str, caption: str) -> Figure:
    """One legend for the whole figure, the title, then ``name``.png and .pdf written atomically; closes ``fig``."""
    if any(ax.get_legend() is not None for ax in fig.axes) and fig.get_layout_engine() is not None:
        fig.suptitle(title)  # faceted (``_facets``): a legend per row of panels, laid out already
        png, pdf = (save_figure(fig, out_dir / f"{name}.{ext}") for ext in ("png", "pdf"))
        plt.close(fig)
        return Figure(name, title, caption, png, pdf)
    handles, labels = [], []
    for ax in fig.axes:  # one legend for the figure, merged over panels
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    # long series labels (many varying keys) in fewer legend columns, so the legend is not wider than the panels
    ncol = max(1, min(len(labels), 4 if max(map(len, labels), default=0) <= 30 else 2))
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06 + 0.03 * ((len(labels) - 1) // ncol), 1, 1))
    png = save_figure(fig, out_dir / f"{name}.png")
    pdf = save_figure(fig, out_dir / f"{name}.pdf")
    plt.close(fig)
    return Figure(name, title, caption, png, pdf)


def labelled(summary: pd.DataFrame, always: Sequence[str] = ("model", "sampler"), omit: Sequence[str] = (),
              omit_args: Sequence[str] = ()) -> pd.DataFrame:
    """``summary`` with a ``label`` per series: every key that varies (``keys.shown_keys``) except ``omit``."""
    keys = shown_keys(summary, always=always, omit=omit)
    return summary.assign(label=pd.Series([series_label(r, keys, omit_args) for _, r in summary.iterrows()],
                                          index=summary.index, dtype="object"))


def interval_note(s: pd.DataFrame, shape: str = "band") -> str:
    """What the drawn intervals are, or why none is drawn (a caption must never promise a missing band)."""
    lo, hi = _interval(s)
    drawn = np.isfinite(lo) & np.isfinite(hi)
    if s.empty or not drawn.any():
        return "one seed per point: no interval drawn"
    note = f"{shape}: {BAND}"
    return note + ("; points with one seed have none" if not drawn.all() else "")


def _reference_lines(ax: Any, rows: pd.DataFrame, metric: str, vertical: bool = False) -> str:
    """Dashed lines for reference rows (real data, trivial baseline): the scale of the metric.

    A reference far outside the plotted values would squash the lines being compared, so it is returned as
    text (for the panel title) instead of drawn. ``vertical``: the metric is on the x axis (a dot plot).
    """
    ref = rows[(rows["kind"] == "reference") & (rows["metric"] == metric)]
    lo, hi = ax.get_xlim() if vertical else ax.get_ylim()
    span = hi - lo
    off: list[str] = []
    for name, g in ref.groupby("model", dropna=True):
        v = float(g["value"].astype(float).mean())
        if lo - 0.5 * span <= v <= hi + 0.5 * span:
            if vertical:
                ax.axvline(v, color="0.5", lw=0.8, ls="--")
                ax.annotate(str(name), (v, 1.0), xycoords=("data", "axes fraction"), fontsize=6, color="0.35",
                            ha="left", va="top", rotation=90)
            else:
                ax.axhline(v, color="0.5", lw=0.8, ls="--")
                ax.annotate(str(name), (0.01, v), xycoords=("axes fraction", "data"), fontsize=6, color="0.35",
                            va="bottom")
        else:
            off.append(f"{name}: {v:.4g}")
    return f"off axis: {'; '.join(off)}" if off else ""


def _panel_title(ax: Any, sm: pd.DataFrame, metric: str, off: str) -> None:
    hib = sm["higher_is_better"].dropna()
    ax.set_title(f"{metric} ({arrow(hib.iloc[0])} better)" if len(hib) else metric, pad=11 if off else 6)
    if off:  # a small second line under the panel title
        ax.text(1.0, 1.01, off, transform=ax.transAxes, fontsize=6, color="0.35", ha="right", va="bottom")


def _interval(g: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) per row of ``g``: the shown interval (t below SMALL_N seeds), clipped to the metric's range."""
    iv = [shown_interval(r)[:2] for _, r in g.iterrows()]
    lo = np.array([np.nan if is_na(a) else float(a) for a, _ in iv], dtype=np.float64)
    hi = np.array([np.nan if is_na(b) else float(b) for _, b in iv], dtype=np.float64)
    return lo, hi


def line_panels(
    rows: pd.DataFrame, summary: pd.DataFrame, x: str, xlabel: str, out_dir: Path,
    name: str, title: str, caption: str, logx: bool, references: bool,
) -> Figure | None:
    """One panel per metric; one line per series (``label``) with its 95% interval as a band, or as a whisker
    where a series has one point. With one point per series (e.g. a single NFE budget), a dot plot instead.

    ``caption`` is completed with what the intervals are, or why there are none. Raises when two summary rows of
    one series share an x value (a key missing from the label would merge them).
    """
    s = summary.dropna(subset=[x])
    metrics = panel_metrics(s)
    if s.empty or not metrics:
        return None
    assert_distinct([(str(lab), str(m), str(v)) for lab, m, v in zip(s["label"], s["metric"], s[x], strict=True)],
                    f"figure {name}")
    if s.groupby("label")[x].nunique().max() == 1:  # nothing to join into a line
        return _dot_panels(rows, s, x, xlabel, out_dir, name, title, caption, references)
    labels = list(dict.fromkeys(s["label"]))  # summary order: numeric keys sort as numbers
    chunks = legend_chunks(labels)
    if len(chunks) > 1:
        fig = _facets(rows, s, chunks, metrics, x, xlabel, logx, references)
    else:
        fig, axes = panels(len(metrics))
        for ax, metric in zip(axes, metrics, strict=False):
            _lines(ax, rows, s, labels, metric, x, xlabel, logx, references)
    single = s.groupby("label")[x].nunique().eq(1).any()
    note = interval_note(s) + ("; a whisker where a series has one point" if single else "")
    facet = f" One row of panels per group of models ({len(labels)} series, at most {MAX_LEGEND} per legend)." \
        if len(chunks) > 1 else ""
    return save_panels(fig, out_dir, name, title, f"{caption}{facet} {note[0].upper()}{note[1:]}.")


def palette(n: int) -> list[Any]:
    """``n`` distinct colours: seaborn's colorblind palette (10 colours, it repeats beyond), else husl."""
    return list(sns.color_palette("colorblind" if n <= 10 else "husl", n))


def legend_chunks(labels: Sequence[str], most: int | None = None) -> list[list[str]]:
    """``labels`` in groups of at most ``most`` (``MAX_LEGEND``), a model's series kept together where they fit
    (the model is a label's first part, before `` · ``)."""
    most = MAX_LEGEND if most is None else most
    by_model: dict[str, list[str]] = {}
    for lab in labels:
        by_model.setdefault(str(lab).split(" · ")[0], []).append(lab)
    chunks: list[list[str]] = []
    for group in by_model.values():
        for i in range(0, len(group), most):
            part = group[i:i + most]
            if chunks and len(chunks[-1]) + len(part) <= most:
                chunks[-1].extend(part)
            else:
                chunks.append(list(part))
    return chunks


def _lines(ax: Any, rows: pd.DataFrame, s: pd.DataFrame, labels: Sequence[str], metric: str, x: str, xlabel: str,
           logx: bool, references: bool) -> None:
    """One panel: a line (band, or whisker for one point) per label of ``labels`` for ``metric``."""
    colors = dict(zip(labels, palette(len(labels)), strict=True))
    sm = s[(s["metric"] == metric) & s["label"].isin(labels)]
    for label in labels:
        g = sm[sm["label"] == label].sort_values(x)
        if g.empty:
            continue
        xs, ys = g[x].astype(float).to_numpy(), g["mean"].astype(float).to_numpy()
        lo, hi = _interval(g)
        ax.plot(xs, ys, marker="o", ms=3.5, lw=1.4, color=colors[label], label=label)
        if len(xs) > 1 and np.isfinite(lo).any():
            ax.fill_between(xs, lo, hi, color=colors[label], alpha=0.18, lw=0)
        elif np.isfinite(lo).any():  # one point: a band has no width, so a whisker
            ax.errorbar(xs, ys, yerr=[ys - lo, hi - ys], fmt="none", ecolor=colors[label], capsize=3, lw=1)
    off = _reference_lines(ax, rows, metric) if references else ""
    _panel_title(ax, sm, metric, off)
    ax.set_xlabel(xlabel)
    values = sorted(s[s["metric"] == metric][x].astype(float).unique())
    if logx and values and values[-1] > 2 * values[0] > 0:
        _log_axis(ax, [int(v) for v in values] if x in INTEGER_X else None)
    elif x in INTEGER_X:
        _integer_axis(ax, values)


def _facets(rows: pd.DataFrame, s: pd.DataFrame, chunks: list[list[str]], metrics: Sequence[str], x: str,
            xlabel: str, logx: bool, references: bool) -> Any:
    """A row of panels (one per metric) per chunk of series, each row with its own legend on the right."""
    _theme()
    fig, axes = plt.subplots(len(chunks), len(metrics), figsize=(4.2 * len(metrics) + 3.2, 3.0 * len(chunks)),
                             squeeze=False)
    for i, chunk in enumerate(chunks):
        for j, metric in enumerate(metrics):
            _lines(axes[i][j], rows, s, chunk, metric, x, xlabel, logx, references)
        axes[i][-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.set_layout_engine("constrained")
    return fig


def _dot_panels(
    rows: pd.DataFrame, s: pd.DataFrame, x: str, xlabel: str, out_dir: Path,
    name: str, title: str, caption: str, references: bool,
) -> Figure:
    """One point per series (e.g. a single NFE budget): a line plot would have nothing to join, so one row per
    series, the metric on the x axis, a whisker for the interval (asymmetric where clipped). The series' x value
    is in the title when all share it, else after ``@`` in each label."""
    def text(v: Any) -> str:
        return f"{int(v)}" if x in INTEGER_X else f"{float(v):.4g}"

    one = s[x].nunique() == 1
    if not one:
        s = s.assign(label=[f"{lab} @ {text(v)}" for lab, v in zip(s["label"], s[x], strict=True)])
    metrics = panel_metrics(s)
    labels = list(dict.fromkeys(s["label"]))  # summary order: numeric keys sort as numbers
    colors = dict(zip(labels, sns.color_palette("colorblind", len(labels)), strict=True))
    fig, axes = panels(len(metrics), width=4.2, height=0.8 + 0.28 * len(labels))
    for i, (ax, metric) in enumerate(zip(axes, metrics, strict=False)):
        sm = s[s["metric"] == metric].set_index("label")
        for y, label in enumerate(labels):
            if label not in sm.index:
                continue
            g = sm.loc[[label]]
            m = float(g["mean"].astype(float).iloc[0])
            lo, hi = _interval(g)
            if np.isfinite(lo[0]):
                ax.errorbar([m], [y], xerr=[[m - lo[0]], [hi[0] - m]], fmt="none", ecolor=colors[label], capsize=3,
                            lw=1)
            ax.plot([m], [y], "o", ms=4.5, color=colors[label])
        ax.set_yticks(range(len(labels)), labels if i % 3 == 0 else [""] * len(labels), fontsize=7)
        ax.set_ylim(len(labels) - 0.5, -0.5)  # first label on top
        off = _reference_lines(ax, rows, metric, vertical=True) if references else ""
        _panel_title(ax, sm, metric, off)
        ax.set_xlabel(metric)
    note = interval_note(s, "whiskers")
    where = f"One {xlabel} only ({text(s[x].iloc[0])})" if one else f"One {xlabel} per series (after @)"
    cap = f"{caption} {where}: one point per series, no line or band to draw. {note[0].upper()}{note[1:]}."
    return save_panels(fig, out_dir, name, f"{title} ({xlabel} {text(s[x].iloc[0])})" if one else title, cap)


def _integer_axis(ax: Any, values: list[float]) -> None:
    """Ticks at the integer x values themselves (at most 12, else integer steps); no fractional ticks."""
    if len(values) <= 12:
        ax.xaxis.set_major_locator(ticker.FixedLocator(values))
    else:
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))


def _log_axis(ax: Any, ticks: list[int] | None) -> None:
    """Log-scaled x with plain-number labels: the given ticks (NFE budgets), else 1-2-5 steps per decade."""
    ax.set_xscale("log", base=2 if ticks else 10)
    plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
    if ticks:
        ax.xaxis.set_major_locator(ticker.FixedLocator(ticks))
    else:
        ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
