"""``pfbench pareto`` and the suite report's Pareto section: the front's figure and its Markdown tables.

The computation (configurations, uncertainty-aware dominance, best configuration per budget) is
``report.pareto``; this module draws it (seaborn/matplotlib, like every report figure) and writes it out.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import seaborn as sns

from pfbench import PfbenchError
from pfbench.io import atomic_write_text
from pfbench.report.pareto import DOMINATED, FRONT, TIED, Front, best_per_budget, front_table, pareto
from pfbench.report.plots import Figure, panels, save_panels
from pfbench.report.tables import TextTable, arrow
from pfbench.results import read_results

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p", "8", "d")
NFE_NOTE = ("NFE counts model calls: a guided (CFG) call is two network forwards, so compare guided and unguided "
            "configurations with `--cost gflops`.")


# Legend entries at most (a longer legend is not read): models then go unnamed in the figure, named in the tables.
LEGEND_MAX = 12


def pareto_figure(front: Front, out_dir: Path, name: str) -> Figure:
    """Every configuration (interval over seeds as error bars), samplers coloured, models as markers; the front
    (by means) as a step line, tied points hollow, dominated ones faded; front and tied points labelled."""
    pts = front.points
    samplers = sorted(pts["sampler"].astype(str).unique())
    colours = dict(zip(samplers, sns.color_palette("tab10", len(samplers)), strict=True))
    pairs = sorted(set(zip(pts["suite"].astype(str), pts["model"].astype(str), strict=True)))
    suites = sorted({s for s, _ in pairs})
    shapes = {pair: MARKERS[i % len(MARKERS)] for i, pair in enumerate(pairs)}
    fig, axes = panels(1, width=8.0, height=5.2)
    ax = next(iter(axes))
    for _, r in pts.iterrows():
        colour = colours[str(r["sampler"])]
        dominated = r["status"] == DOMINATED
        err = None if pd.isna(r["lo"]) else [[r["mean"] - r["lo"]], [r["hi"] - r["mean"]]]
        ax.errorbar(r["cost"], r["mean"], yerr=err, fmt="none", ecolor=colour, alpha=0.25 if dominated else 0.8, lw=1)
        ax.scatter(r["cost"], r["mean"], marker=shapes[(str(r["suite"]), str(r["model"]))], s=18 if dominated else 40,
                   facecolors="none" if r["status"] == TIED else colour, edgecolors=colour,
                   alpha=0.3 if dominated else 1.0, zorder=3)
        if not dominated:  # numbered as in the front table (full labels would overlap)
            ax.annotate(str(r["number"]), (r["cost"], r["mean"]), fontsize=7, xytext=(4, 2), textcoords="offset points")
    line = pts[pts["status"] == FRONT].sort_values("cost")
    ax.step(line["cost"], line["mean"], where="post", color="0.2", lw=1.2, label="front (by means)")
    for s in samplers:
        ax.scatter([], [], color=colours[s], label=s)
    named = 1 < len(shapes) and len(shapes) + len(samplers) + 2 <= LEGEND_MAX  # else the front table names them
    if named:
        for (suite, model), m in shapes.items():
            ax.scatter([], [], marker=m, color="0.4", label=(f"{suite} · " if len(suites) > 1 else "") + model)
    ax.scatter([], [], facecolors="none", edgecolors="0.4", label="tied (not significantly worse)")
    if front.cost.log:
        ax.set_xscale("log")
    means = pts["mean"].to_numpy(dtype=float)
    if (means > 0).all() and means.max() > 8 * means.min():  # a few poor configurations would flatten the front
        ax.set_yscale("log")
    ax.set_xlabel(front.cost.label)
    ax.set_ylabel(f"{front.metric} ({arrow(front.higher)} better)")
    caption = (f"{front.metric} against {front.cost.label}: mean over seeds with its 95% interval (Student t). "
               "Numbers: the rows of the front table. Solid line: the front by means; hollow: tied with a cheaper-or-equal better point (difference not "
               "significant); faded: dominated (a configuration costing no more is significantly better).")
    if len(shapes) > 1 and not named:
        caption += f" Marker shape tells the {len(shapes)} models apart; the tables below name them."
    if front.cost.column == "nfe_used":
        caption += " " + NFE_NOTE
    return save_panels(fig, out_dir, name, f"Pareto front: {front.metric} vs {front.cost.label}", caption)


def pareto_tables(front: Front) -> list[TextTable]:
    """The best configuration per budget, then the front."""
    return [best_per_budget(front), front_table(front)]


def write_pareto(results: Sequence[Path], out: Path, metric: str = "fd_embedded", cost: str = "nfe") -> Path:
    """``pfbench pareto``: reads result folders (rows pooled), writes ``pareto_<metric>_<cost>.md`` and its figure
    (PNG + PDF) into ``out``; returns the Markdown file."""
    frames = [read_results(Path(p)) for p in results]
    rows = pd.concat([f for f in frames if not f.empty], ignore_index=True) if any(not f.empty for f in frames) \
        else pd.DataFrame()
    if rows.empty:
        raise PfbenchError(f"no result rows in {', '.join(map(str, results))}")
    front = pareto(rows, metric, cost)
    name = f"pareto_{metric}_{cost}"
    fig = pareto_figure(front, Path(out), name)
    counts = front.points["status"].value_counts()
    lines = [f"# Pareto front: {metric} vs {front.cost.label}", "",
             f"Results: {', '.join(f'`{p}`' for p in results)}; {len(front.points)} configurations "
             f"({counts.get(FRONT, 0)} on the front, {counts.get(TIED, 0)} tied, {counts.get(DOMINATED, 0)} "
             "dominated).", "", f"![{fig.title}]({fig.png.name})", "", f"_{fig.caption}_", ""]
    lines += [t.markdown() for t in pareto_tables(front)]
    return atomic_write_text(Path(out) / f"{name}.md", "\n".join(lines))


def pareto_section(rows: pd.DataFrame, out_dir: Path) -> list[TextTable | Figure]:
    """The suite report's Pareto section when the suite sweeps more than one sampler (else nothing): the first
    metric of the suite that is not a spread, cost NFE."""
    cells = rows[rows["kind"] == "cell"]
    if cells.empty or cells["sampler"].nunique() < 2:
        return []
    metrics = [m for m in dict.fromkeys(cells["metric"].dropna().astype(str)) if not m.endswith("_std")]
    metric = "fd_embedded" if "fd_embedded" in metrics else metrics[0]
    front = pareto(rows, metric, "nfe")
    return [pareto_figure(front, out_dir, f"fig_pareto_{metric}"), *pareto_tables(front)]
