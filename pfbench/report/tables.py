"""Result tables as plain text cells, rendered to Markdown, HTML or a rich console table.

Tables are built from ``stats.summarize`` output (one row per group of seeds); a value is shown as
``mean ± std`` with the bootstrap interval of the mean below it; ``NA`` where a statistic needs two seeds.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from pfbench import PfbenchError
from pfbench.report.keys import (
    CELL_KEYS,
    CONTEXT_KEYS,
    HEADERS,
    assert_distinct,
    is_na,
    key_text,
    normalize,
    series_label,
    shown_keys,
)
from pfbench.report.stats import SMALL_N, shown_interval, summarize

NA = "NA"


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
    """``mean ± std``; the plain mean when there is no spread to show (one seed)."""
    return fmt_num(mean) if is_na(std) else f"{fmt_num(mean)} ± {fmt_num(std, '.2g')}"


def ci_text(lo: Any, hi: Any, kind: str = "bootstrap") -> str:
    """``[lo, hi]`` (bootstrap) or ``t[lo, hi]`` (Student t); ``NA`` when missing."""
    prefix = "t" if kind == "t" else ""
    return NA if is_na(lo) or is_na(hi) else f"{prefix}[{fmt_num(lo)}, {fmt_num(hi)}]"


def is_spread(metric: str) -> bool:
    """``*_std`` rows (IS/KID spread over splits) describe a metric's noise; they have no better direction."""
    return str(metric).endswith("_std")


NONSTANDARD = " †"
NONSTANDARD_NOTE = (" †: computed with an Inception file that is not the official one (its sha256 is in metric_args): "
                    "not comparable with published numbers.")


def nonstandard_mark(row: Any) -> str:
    """``NONSTANDARD`` when the row's ``metric_args`` lists its metric as ``nonstandard`` (else "")."""
    try:
        listed = json.loads(str(row.get("metric_args"))).get("nonstandard", [])
    except (ValueError, AttributeError):  # NA, plain text or a JSON non-object: nothing marked
        return ""
    return NONSTANDARD if row.get("metric") in listed else ""


FLOOR_SUFFIX = "_shuffled"  # a metric scored against shuffled prompts: the chance level, no better direction
FLOOR = "(floor)"


def is_floor(metric: str) -> bool:
    """``*_shuffled`` rows (scored against shuffled prompts) are the chance level of their metric, not a goal."""
    return str(metric).endswith(FLOOR_SUFFIX)


def arrow(higher_is_better: Any, metric: str = "") -> str:
    """``↑`` / ``↓`` for the better direction; ``(floor)`` for a chance-level twin; empty when unknown or for a
    spread."""
    if is_floor(metric):
        return FLOOR
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


def _seed_count(g: pd.DataFrame) -> str:
    seed_ids = {x for ids in g["seeds"].dropna() for x in str(ids).split(",") if x}
    return str(len(seed_ids)) if seed_ids else fmt_key(g["n"].max())


def _cell_groups(s: pd.DataFrame, keys: list[str], what: str) -> list[tuple[tuple[str, ...], pd.DataFrame]]:
    """Summary rows grouped by every cell key (seeds are already aggregated), with the display texts of ``keys``.

    Raises when two groups would show the same texts: every distinguishing key must be among ``keys``.
    """
    by = [k for k in (*CELL_KEYS, *CONTEXT_KEYS) if k in s]
    groups = [(tuple(key_text(k, g.iloc[0][k]) for k in keys), g)
              for _, g in _sorted(s, by).groupby(by, dropna=False, sort=False)]
    assert_distinct([lab for lab, _ in groups], what)
    return groups


def metric_header(metric: str, hib: pd.Series) -> str:
    """``fd_embedded ↓``, ``clip_embedded_shuffled (floor)``: a metric column's header."""
    return f"{metric} {arrow(hib.iloc[0] if len(hib) else pd.NA, metric)}".rstrip()


def results_table(summary: pd.DataFrame, kind: str = "cell", title: str = "Results",
                  metrics: Sequence[str] | None = None, costs: bool = True, replicates: str = "seeds",
                  note: str = "", omit: Sequence[str] = ()) -> TextTable:
    """Wide table: one row per cell (every key of ``keys.CELL_KEYS``; seeds aggregated), one column per metric.

    The model, sampler, cfg and NFE budget columns are always there; any other key that varies (variant, CFG
    interval, training timestep sampler, decoder, train step, ...) gets a labelled column of its own.

    Args:
        summary: ``stats.summarize`` output over ``GROUP_KEYS``.
        kind: which rows to show (``"cell"``).
        metrics: the metric columns, in this order (default: every metric of the rows, sorted).
        costs: show the NFE used, GFLOPs and wall-clock columns.
        replicates: header of the replicate-count column (``seeds``, ``training seeds``).
        note: prepended to the table's note.
        omit: key columns left out (keys the model determines, named in ``note``).
    """
    s = summary[summary["kind"] == kind] if "kind" in summary else summary
    metrics = sorted(s["metric"].dropna().unique().tolist()) if metrics is None else list(metrics)
    metric_cols = [metric_header(m, s.loc[s["metric"] == m, "higher_is_better"].dropna()) for m in metrics]
    keys = shown_keys(s, omit=omit)
    cost_cols = ("NFE used", "GFLOPs/sample", "wall s") if costs else ()
    columns = (*[HEADERS[k] for k in keys], *cost_cols, replicates, *metric_cols)
    rows = []
    for labels, g in _cell_groups(s, keys, f"results table ({kind})"):
        cells = []
        for m in metrics:
            hit = g[g["metric"] == m]
            if hit.empty:
                cells.append("")
                continue
            r = hit.iloc[0]  # one row per metric: the group holds every key
            ci = ci_text(*shown_interval(r))
            cells.append(mean_std(r["mean"], r["std"]) + nonstandard_mark(r) + ("" if ci == NA else f"\n{ci}"))
        cost = g.iloc[0]
        spent = (fmt_num(cost.get("nfe_used"), ".3g"), fmt_num(cost.get("gflops"), ".4g"),
                 fmt_num(cost.get("wall_s"), ".3g")) if costs else ()
        rows.append((*labels, *spent, _seed_count(g), *cells))
    text = (f"mean ± std over {replicates} (ddof=1); below it the 95% interval of the mean: Student t (t[…]) with "
            f"fewer than {SMALL_N}, else the percentile bootstrap (2000 resamples), clipped to the metric's valid "
            "range (accuracy, precision, recall in [0, 1]; distances ≥ 0); a plain value: one seed. ↑/↓: better "
            f"direction; {FLOOR}: the metric against shuffled prompts (chance level, no better direction)."
            + (NONSTANDARD_NOTE if any(NONSTANDARD in c for row in rows for c in row) else ""))
    return TextTable(title, columns, tuple(rows), f"{note} {text}".strip())


def long_table(summary: pd.DataFrame, kind: str, title: str, note: str = "",
               roles: dict[str, str] | None = None) -> TextTable:
    """One row per (model, metric) of ``kind`` rows (diagnostics, reference values).

    ``roles``: model -> what the row is (``"ceiling: real images"``), shown in a ``role`` column after the model.
    """
    s = _sorted(summary[summary["kind"] == kind], ["model", "metric"])
    keys = shown_keys(s, always=("model",))  # e.g. two checkpoints of one model: a model id column
    texts = [tuple(key_text(k, r[k]) for k in keys) for _, r in s.iterrows()]
    if roles:
        texts = [(t[0], roles.get(t[0], ""), *t[1:]) for t in texts]
    assert_distinct([(*t, str(m)) for t, m in zip(texts, s["metric"], strict=True)], f"{kind} table")
    rows = tuple(
        (*t, f"{r['metric']} {arrow(r['higher_is_better'], r['metric'])}".rstrip(),
         mean_std(r["mean"], r["std"]) + nonstandard_mark(r), ci_text(*shown_interval(r)), fmt_key(r["n"]))
        for t, (_, r) in zip(texts, s.iterrows(), strict=True)
    )
    note = (note + NONSTANDARD_NOTE).strip() if any(NONSTANDARD in row[-3] for row in rows) else note
    heads = [HEADERS[k] for k in keys]
    heads = [heads[0], "role", *heads[1:]] if roles else heads
    return TextTable(title, (*heads, "metric", "value (mean ± std)", "95% CI", "n"), rows, note)


def print_run_summary(df: pd.DataFrame, title: str, console: Console) -> None:
    """What ``pfbench run`` prints at the end: one row per cell (every key of ``keys.CELL_KEYS``, the varying ones
    as labelled columns) × metric (mean ±std over seeds), then references, diagnostics and learning curves, then
    each model's best FD as a share of the trivial class-mean baseline (embedded suites).

    A summary that cannot be built (two result files for one seed of one cell) is reported on one line; the
    results themselves are on disk already.
    """
    try:
        summary = summarize(df[df["kind"] == "cell"], n_boot=200)  # intervals are not shown here
    except PfbenchError as err:
        console.print(f"[yellow]no summary table: {err}[/]")
        return
    metrics = sorted(summary["metric"].dropna().unique())
    keys = shown_keys(summary)
    table = Table(title=title)
    heads = [HEADERS[k] if k != "nfe_budget" else "NFE" for k in keys]
    for col in (*heads, "GFLOPs/img", "s", *metrics):
        table.add_column(col, justify="right" if col in ("NFE", "cfg", "GFLOPs/img", "s", *metrics) else "left")
    for labels, g in _cell_groups(summary, keys, "run summary"):
        by_metric = {str(r["metric"]): r for _, r in g.iterrows()}
        shown = [f"{float(r['mean']):.4g}" + ("" if is_na(r["std"]) else f" ±{float(r['std']):.2g}")
                 if (r := by_metric.get(m)) is not None else "" for m in metrics]
        cost = g.iloc[0]
        if "nfe_budget" in keys:  # NFE used/budget
            i = keys.index("nfe_budget")
            labels = (*labels[:i], f"{fmt_num(cost.get('nfe_used'), '.0f')}/{labels[i]}", *labels[i + 1:])
        table.add_row(*labels, fmt_num(cost.get("gflops"), ".3f"), fmt_num(cost.get("wall_s"), ".1f"), *shown)
    console.print(table)
    side = Table(title="references and diagnostics")
    for col in ("kind", "model", "metric", "value"):
        side.add_column(col)
    other = df[df["kind"].isin(["reference", "diagnostic"])].sort_values(["kind", "model", "metric"])
    for _, r in other.iterrows():
        side.add_row(str(r["kind"]), str(r["model"]), str(r["metric"]), f"{float(r['value']):.4g}")
    curve = normalize(df[df["kind"] == "curve"]).sort_values("train_step")
    ckeys = shown_keys(curve, always=("model",), omit=("train_step",))  # one line per curve, never two interleaved
    cby = [k for k in (*CELL_KEYS, *CONTEXT_KEYS) if k != "train_step"]
    for _, g in curve.groupby([*cby, "metric", "seed"], dropna=False, sort=True):
        points = " → ".join(f"{float(v):.3g}@{int(s)}" for s, v in zip(g["train_step"], g["value"], strict=True))
        side.add_row("curve", series_label(g.iloc[0], ckeys), str(g["metric"].iloc[0]), points)
    if other.shape[0] or curve.shape[0]:
        console.print(side)
    trivial = df[(df["kind"] == "reference") & (df["model"] == "trivial_class_mean") & (df["metric"] == "fd_embedded")]
    got = summary[summary["metric"] == "fd_embedded"]
    for model, g in got.groupby("model"):
        best = g.loc[g["mean"].astype(float).idxmin()]  # the best cell's mean over seeds
        # the baseline scored as this cell was (same reference set and metric settings), never another's
        same = trivial[(trivial["metric_args"].astype(str) == str(best["metric_args"]))
                       & (trivial["ref_id"].astype(str) == str(best["ref_id"]))]["value"]
        if not same.empty:
            console.print(f"{model}: best fd_embedded {float(best['mean']):.4g} = "
                          f"{100 * float(best['mean']) / float(same.iloc[-1]):.1f}% of the trivial class-mean "
                          f"baseline ({float(same.iloc[-1]):.4g})")
