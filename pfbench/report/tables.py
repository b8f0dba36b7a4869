"""Result tables as plain text cells, rendered to Markdown, HTML or a rich console table.

Tables are built from ``stats.summarize`` output (one row per group of seeds); a value is shown as
``mean ± std`` with the bootstrap interval of the mean below it; ``NA`` where a statistic needs two seeds.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from pfbench.report.stats import SMALL_N, shown_interval

NA = "NA"


def is_na(x: Any) -> bool:
    """True for None, pd.NA, NaN (any missing scalar)."""
    try:
        return bool(pd.isna(x))
    except (TypeError, ValueError):
        return False


def fmt_num(x: Any, spec: str = ".4g") -> str:
    """Number with ``spec``; ``NA`` when missing."""
    return NA if is_na(x) else format(float(x), spec)


def fmt_key(x: Any) -> str:
    """A grouping key for display: ``—`` when missing, integers without a decimal point."""
    if is_na(x):
        return "—"
    if isinstance(x, (float, np.floating)):
        return format(float(x), "g")
    return str(x)


def mean_std(mean: Any, std: Any) -> str:
    return f"{fmt_num(mean)} ± {fmt_num(std, '.2g')}"


def ci_text(lo: Any, hi: Any, kind: str = "bootstrap") -> str:
    """``[lo, hi]`` (bootstrap) or ``t[lo, hi]`` (Student t); ``NA`` when missing."""
    prefix = "t" if kind == "t" else ""
    return NA if is_na(lo) or is_na(hi) else f"{prefix}[{fmt_num(lo)}, {fmt_num(hi)}]"


def is_spread(metric: str) -> bool:
    """``*_std`` rows (IS/KID spread over splits) describe a metric's noise; they have no better direction."""
    return str(metric).endswith("_std")


def arrow(higher_is_better: Any, metric: str = "") -> str:
    """``↑`` / ``↓`` for the better direction; empty when unknown or for a spread."""
    if is_na(higher_is_better) or is_spread(metric):
        return ""
    return "↑" if bool(higher_is_better) else "↓"


@dataclass(frozen=True)
class TextTable:
    """A table of display strings; a newline inside a cell is a line break in every rendering."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""

    def markdown(self) -> str:
        def cell(s: str) -> str:
            return s.replace("|", "\\|").replace("\n", "<br>")

        lines = [f"### {self.title}", ""] if self.title else []
        lines.append("| " + " | ".join(cell(c) for c in self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in self.rows]
        if self.note:
            lines += ["", f"_{self.note}_"]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        def cell(s: str) -> str:
            return html.escape(s).replace("\n", "<br>")

        def td(s: str) -> str:
            num = s[:1].isdigit() or s[:1] in "+-−." or s.startswith(NA)
            return f'<td class="num">{cell(s)}</td>' if num else f"<td>{cell(s)}</td>"

        head = "".join(f"<th>{cell(c)}</th>" for c in self.columns)
        body = "\n".join("<tr>" + "".join(td(c) for c in row) + "</tr>" for row in self.rows)
        title = f"<h3>{cell(self.title)}</h3>\n" if self.title else ""
        note = f'<p class="note">{cell(self.note)}</p>\n' if self.note else ""
        return (f'{title}<div class="scroll"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n'
                f"</table></div>\n{note}")

    def rich(self) -> Table:
        table = Table(title=self.title or None, caption=self.note or None)
        for c in self.columns:
            table.add_column(c)
        for row in self.rows:
            table.add_row(*row)
        return table


def _sorted(df: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    by = [c for c in by if c in df]
    return df.sort_values(by, na_position="first", kind="stable") if by else df


def results_table(summary: pd.DataFrame, kind: str = "cell", title: str = "Results") -> TextTable:
    """Wide table: one row per (model, sampler, cfg, NFE budget), one column per metric.

    Args:
        summary: ``stats.summarize`` output over ``GROUP_KEYS``.
        kind: which rows to show (``"cell"``).
    """
    s = summary[summary["kind"] == kind] if "kind" in summary else summary
    metrics = sorted(s["metric"].dropna().unique().tolist())
    hib = {m: s.loc[s["metric"] == m, "higher_is_better"].dropna() for m in metrics}
    metric_cols = [f"{m} {arrow(h.iloc[0], m) if len(h) else ''}".rstrip() for m, h in hib.items()]
    row_keys = ["model", "sampler", "cfg_scale", "nfe_budget"]
    columns = ("model", "sampler", "cfg", "NFE budget", "NFE used", "GFLOPs/sample", "wall s", "seeds", *metric_cols)
    rows = []
    for key, g in _sorted(s, row_keys).groupby(row_keys, dropna=False, sort=False):
        seed_ids = {x for ids in g["seeds"].dropna() for x in str(ids).split(",") if x}
        seeds = str(len(seed_ids)) if seed_ids else fmt_key(g["n"].max())
        cells = []
        for m in metrics:
            hit = g[g["metric"] == m]
            if hit.empty:
                cells.append("")
                continue
            r = hit.iloc[0]
            ci = ci_text(*shown_interval(r))
            cells.append(mean_std(r["mean"], r["std"]) + ("" if ci == NA else f"\n{ci}"))
        cost = g.iloc[0]
        rows.append((
            fmt_key(key[0]), fmt_key(key[1]), fmt_key(key[2]), fmt_key(key[3]),
            fmt_num(cost.get("nfe_used"), ".3g"), fmt_num(cost.get("gflops"), ".4g"), fmt_num(cost.get("wall_s"), ".3g"),
            seeds, *cells,
        ))
    note = (f"mean ± std over seeds (ddof=1); below it the 95% interval of the mean: Student t (t[…]) with fewer "
            f"than {SMALL_N} seeds, else the percentile bootstrap (2000 resamples); NA: one seed. "
            "↑/↓: better direction.")
    return TextTable(title, columns, tuple(rows), note)


def long_table(summary: pd.DataFrame, kind: str, title: str, note: str = "") -> TextTable:
    """One row per (model, metric) of ``kind`` rows (diagnostics, reference values)."""
    s = _sorted(summary[summary["kind"] == kind], ["model", "metric"])
    rows = tuple(
        (fmt_key(r["model"]), f"{r['metric']} {arrow(r['higher_is_better'], r['metric'])}".rstrip(), mean_std(r["mean"], r["std"]),
         ci_text(*shown_interval(r)), fmt_key(r["n"]))
        for _, r in s.iterrows()
    )
    return TextTable(title, ("model", "metric", "value (mean ± std)", "95% CI", "n"), rows, note)


def print_run_summary(df: pd.DataFrame, title: str, console: Console) -> None:
    """What ``pfbench run`` prints at the end: cells as (model, sampler, NFE, CFG) × metric (mean ±std over
    seeds), then references, diagnostics and learning curves, then each model's best FD as a share of the
    trivial class-mean baseline (embedded suites)."""
    cells = df[df["kind"] == "cell"]
    metrics = sorted(cells["metric"].dropna().unique())
    table = Table(title=title)
    for col in ("model", "sampler", "NFE", "cfg", "GFLOPs/img", "s", *metrics):
        table.add_column(col, justify="left" if col in ("model", "sampler") else "right")
    keys = ["model", "sampler", "variant", "nfe_budget", "cfg_scale"]
    for key, g in cells.fillna({"variant": ""}).groupby(keys, dropna=False, sort=True):
        vals = g.groupby("metric")["value"].agg(["mean", "std", "count"])
        shown = [f"{vals.loc[m, 'mean']:.4g}" + (f" ±{vals.loc[m, 'std']:.2g}" if vals.loc[m, "count"] > 1 else "")
                 if m in vals.index else "" for m in metrics]
        label = f"{key[1]} {key[2]}" if key[2] else str(key[1])
        table.add_row(str(key[0]), label, f"{int(g['nfe_used'].max())}/{int(key[3])}", f"{key[4]:g}",
                      f"{float(g['gflops'].mean()):.3f}", f"{float(g['wall_s'].mean()):.1f}", *shown)
    console.print(table)
    side = Table(title="references and diagnostics")
    for col in ("kind", "model", "metric", "value"):
        side.add_column(col)
    other = df[df["kind"].isin(["reference", "diagnostic"])].sort_values(["kind", "model", "metric"])
    for _, r in other.iterrows():
        side.add_row(str(r["kind"]), str(r["model"]), str(r["metric"]), f"{float(r['value']):.4g}")
    curve = df[df["kind"] == "curve"].sort_values("train_step")
    for (model, metric), g in curve.groupby(["model", "metric"]):
        points = " → ".join(f"{float(v):.3g}@{int(s)}" for s, v in zip(g["train_step"], g["value"], strict=True))
        side.add_row("curve", str(model), str(metric), points)
    if other.shape[0] or curve.shape[0]:
        console.print(side)
    trivial = df[(df["kind"] == "reference") & (df["model"] == "trivial_class_mean")]
    base = trivial[trivial["metric"] == "fd_embedded"]["value"]
    got = cells[cells["metric"] == "fd_embedded"]
    if base.empty or got.empty:
        return
    for model, g in got.fillna({"variant": ""}).groupby("model"):
        best = float(g.groupby(["sampler", "variant", "nfe_budget", "cfg_scale"])["value"].mean().min())
        console.print(f"{model}: best fd_embedded {best:.4g} = {100 * best / float(base.iloc[0]):.1f}% of the "
                      f"trivial class-mean baseline ({float(base.iloc[0]):.4g})")
