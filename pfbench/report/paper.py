"""``pfbench figures RESULTS... --out DIR``: paper-style tables and figures regenerated from Parquet only (no torch).

Writes into ``out_dir``:
    * ``table_main.md`` / ``table_main.tex``: metric per model × sampler at each NFE budget (mean ± std over seeds);
    * ``paper_nfe.{png,pdf}``: metric against NFE budget, one line per model/sampler, log-x;
    * ``paper_samplers.{png,pdf}``: sampler ablation bars at the largest NFE budget every sampler ran;
    * ``paper_train_timesteps.{png,pdf}``: training timestep-sampler ablation, only when rows carry that
      information in a ``train_timesteps`` column (skipped otherwise).

Rows are grouped by every key of ``keys.GROUP_KEYS`` (seeds aggregated): a ``p`` sweep, two CFG intervals or two
training timestep samplers of one model are separate rows and series, labelled with the keys that vary
(``dual_loop · p=0.2``); seeds of different settings are never pooled, and two settings that would be shown as
one raise an error.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns

from pfbench import PfbenchError
from pfbench.io import atomic_write_text
from pfbench.report.figures import sampler_arg
from pfbench.report.keys import (
    HEADERS,
    assert_distinct,
    key_text,
    normalize,
    series_label,
    shown_keys,
    variant_text,
)
from pfbench.report.plots import labelled, line_panels, panel_metrics, panels, save_panels
from pfbench.report.stats import GROUP_KEYS, clip_interval, summarize
from pfbench.report.tables import TextTable, arrow, fmt_num, is_na, nonstandard_mark
from pfbench.results import read_path

# Bar order of the sampler ablation: PF samplers, their random-mask ablations, then global-t (SiT) samplers.
SAMPLER_ORDER: tuple[str, ...] = ("euler_pf", "dual_loop", "look_ahead", "dual_loop_random", "look_ahead_random",
                                  "euler", "heun", "euler_maruyama")
# Optional extra column naming the training timestep sampler of a row's model (docs/protocol.md §4 names: "ltg", "srm", ...).
TRAIN_COLUMN = "train_timesteps"
def _load(results_folders: Sequence[Path]) -> pd.DataFrame:
    frames = [read_path(Path(f)) for f in results_folders]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    cells = rows[rows["kind"] == "cell"] if not rows.empty else rows
    if cells.empty:
        raise PfbenchError(f"no cell rows under {', '.join(map(str, results_folders)) or '(no folders)'}: "
                           "run a suite first (`pfbench run SUITE`) and pass its results folder")
    return rows


def _summary(rows: pd.DataFrame, extra: Sequence[str] = ()) -> pd.DataFrame:
    """Per-cell statistics (every key, seeds aggregated) with ``label``: the varying keys but the NFE budget."""
    cells = normalize(rows[rows["kind"] == "cell"].reset_index(drop=True))
    return labelled(summarize(cells, (*GROUP_KEYS, *extra)), omit=("nfe_budget",))


# ------------------------------------------------------------------ published numbers vs measured
EXPECTED_FILE = "expected.json"  # results/<suite>/expected.json: the suite's ``expected:`` entries, for the report
EXPECTED_FIELDS = ("model", "sampler", "metric", "value", "source", "steps", "nfe", "cfg_scale")


def write_expected(results: Path, entries: Sequence[dict[str, Any]]) -> Path | None:
    """Stores a suite's published numbers next to its Parquet parts (``pfbench run`` does, before the report);
    with none, removes a stale file. Returns the file written, or None."""
    path = Path(results) / EXPECTED_FILE
    if not entries:
        path.unlink(missing_ok=True)
        return None
    return atomic_write_text(path, json.dumps([{k: e.get(k) for k in EXPECTED_FIELDS} for e in entries], indent=1))


def read_expected(results: Path) -> list[dict[str, Any]]:
    """The published numbers stored by ``write_expected`` in a results folder ([] when there are none)."""
    path = Path(results) / EXPECTED_FILE
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text())
    except ValueError as err:
        raise PfbenchError(f"{path}: not valid JSON ({err}); rerun `pfbench run` to rewrite it") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and {"model", "sampler", "metric", "value"}
                                                <= set(e) for e in entries):
        raise PfbenchError(f"{path}: expected a list of {{model, sampler, metric, value, ...}} entries")
    return entries


def _matches(cells: pd.DataFrame, e: dict[str, Any]) -> pd.DataFrame:
    """The cell rows of published entry ``e``: same model, sampler, metric and guidance scale, and the same outer
    step count (the ``steps`` column, else the ``steps`` of ``sampler_args``) or NFE budget."""
    m = cells[(cells["model"] == e["model"]) & (cells["sampler"] == e["sampler"]) & (cells["metric"] == e["metric"])]
    def equal(col: pd.Series, value: float) -> pd.Series:  # missing values match nothing
        return (col.astype("Float64") == value).fillna(False).astype(bool)

    m = m[equal(m["cfg_scale"], float(e.get("cfg_scale") or 1.0))]
    if e.get("steps") is not None:
        steps = m["steps"].astype("Float64") if "steps" in m else pd.Series(pd.NA, index=m.index, dtype="Float64")
        steps = steps.fillna(sampler_arg(m, "steps")) if len(m) else steps
        return m[equal(steps, float(e["steps"]))]
    return m[equal(m["nfe_budget"], float(e["nfe"]))]


def published_table(rows: pd.DataFrame, entries: Sequence[dict[str, Any]]) -> TextTable:
    """Published vs measured, one row per ``expected:`` entry: the paper's value, the mean measured over the
    matching cells (seeds), their difference (measured − published), and the sample count behind the measurement
    (the paper's numbers are FID-50K: fewer samples bias FID upwards)."""
    cells = rows[rows["kind"] == "cell"] if "kind" in rows else rows.iloc[0:0]
    out = []
    for e in entries:
        m = _matches(cells, e)
        vals = m["value"].astype("Float64").dropna()
        at = f"{e['steps']} steps" if e.get("steps") is not None else f"NFE {e['nfe']}"
        if vals.empty:
            measured, diff, n = "not measured", "—", "—"
        else:
            mark = nonstandard_mark(m.iloc[0])
            measured, diff = fmt_num(vals.mean()) + mark, f"{vals.mean() - float(e['value']):+.4g}"
            counts = sorted({int(x) for x in m["num_samples"].dropna()})
            n = f"{'/'.join(map(str, counts)) or '?'} × {len(vals)} cell{'s' if len(vals) > 1 else ''}"
        out.append((key_text("model", e["model"]), key_text("sampler", e["sampler"]), at, str(e["metric"]),
                    fmt_num(e["value"]), measured, diff, n, str(e.get("source") or "")))
    note = ("Δ = measured − published. A measurement from fewer samples than the publication's (FID-50K) is not "
            "comparable; † marks values computed with a non-official Inception file.")
    return TextTable("", ("model", "sampler", "at", "metric", "published", "measured", "Δ", "samples × cells",
                          "source"), tuple(out), note)


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
    """Markdown and LaTeX: one table per metric, one row per cell setting (a labelled column for each key that
    varies: model, sampler, variant, ...), one column per NFE budget."""
    md: list[str] = ["# Main results", "", "mean ± std over seeds (NA: one seed)", ""]
    tex: list[str] = ["% generated by `pfbench figures`; mean $\\pm$ std over seeds"]
    keys = shown_keys(summary, always=("model", "sampler"), omit=("nfe_budget",))
    for metric in panel_metrics(summary):
        sm = summary[summary["metric"] == metric].dropna(subset=["nfe_budget"])
        budgets = sorted(int(b) for b in sm["nfe_budget"].unique())
        hib = sm["higher_is_better"].dropna()
        head = f"{metric} ({arrow(hib.iloc[0], metric)} better)" if len(hib) else metric
        texts = [tuple(key_text(k, r[k]) for k in keys) for _, r in sm.iterrows()]
        assert_distinct([(*t, str(int(b))) for t, b in zip(texts, sm["nfe_budget"], strict=True)],
                        f"main table ({metric})")
        grid = {(t, int(r["nfe_budget"])): r for t, (_, r) in zip(texts, sm.iterrows(), strict=True)}
        heads = [HEADERS[k] for k in keys]
        cols = [*heads, *[f"NFE {b}" for b in budgets]]
        md += [f"## {head}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        tex += ["", f"% {metric}", "\\begin{tabular}{" + "l" * len(keys) + "r" * len(budgets) + "}", "\\toprule",
                " & ".join([_latex_escape(h) for h in heads] + [f"NFE {b}" for b in budgets]) + " \\\\",
                "\\midrule"]
        for t in dict.fromkeys(texts):  # summary order: model, training, sampler, variant, cfg
            cells = [grid.get((t, b)) for b in budgets]
            md.append("| " + " | ".join([*t, *[_cell_text(c["mean"], c["std"], False) if c is not None else "—"
                                              for c in cells]]) + " |")
            tex.append(" & ".join([*[_latex_escape(x) if x != "—" else "--" for x in t],
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
    per = [set(g["nfe_budget"].astype(int)) for _, g in budgets.groupby(["sampler", "variant"], dropna=False)]
    common = set.intersection(*per)
    return int(max(common)) if common else int(budgets["nfe_budget"].max())


def _order(names: Sequence[str]) -> list[str]:
    def rank(name: str) -> tuple[int, str]:
        base = name.split(" (")[0]
        return (SAMPLER_ORDER.index(base) if base in SAMPLER_ORDER else len(SAMPLER_ORDER), name)

    return sorted(names, key=rank)


def _bars(summary: pd.DataFrame, x: str, hue: str, xlabel: str, out_dir: Path, name: str, title: str,
          caption: str) -> Path | None:
    """One panel per metric: bars of the mean per ``x`` (one colour per ``hue``), error bars ± std over seeds
    (clipped to the metric's valid range, so asymmetric there). Each (x, hue) must be one summary row: bars are
    never averaged over cells."""
    metrics = panel_metrics(summary)
    if summary.empty or not metrics:
        return None
    assert_distinct([(str(a), str(b), str(m)) for a, b, m in zip(summary[x], summary[hue], summary["metric"],
                                                                  strict=True)], f"figure {name}")
    xs = _order(list(summary[x].astype(str).unique())) if x == "sampler" else sorted(summary[x].astype(str).unique())
    hues = sorted(summary[hue].astype(str).unique())
    colors = sns.color_palette("colorblind", len(hues))
    width = 0.8 / len(hues)
    fig, axes = panels(len(metrics), width=max(3.6, 0.55 * len(xs) * max(1, len(hues)) ** 0.5))
    for ax, metric in zip(axes, metrics, strict=False):
        sm = summary[summary["metric"] == metric]
        for j, h in enumerate(hues):
            g = sm[sm[hue].astype(str) == h]
            g = g.set_index(g[x].astype(str).rename("key"))
            pos = [i + (j - (len(hues) - 1) / 2) * width for i in range(len(xs))]
            mean = np.array([float(g.loc[v, "mean"]) if v in g.index else np.nan for v in xs])
            std = np.array([float(g.loc[v, "std"]) if v in g.index and not is_na(g.loc[v, "std"]) else 0.0
                            for v in xs])
            ends = np.array([clip_interval(metric, mu - sd, mu + sd) for mu, sd in zip(mean, std, strict=True)],
                            dtype=float).reshape(-1, 2)  # (len(xs), 2): mean ± std clipped to the metric's range
            yerr = np.nan_to_num(np.stack([mean - ends[:, 0], ends[:, 1] - mean]))  # (2, len(xs)), asymmetric
            ax.bar(pos, mean, width=width, yerr=yerr, capsize=2, color=colors[j], label=h, error_kw={"lw": 0.8})
        ax.set_xticks(range(len(xs)), xs, rotation=30, ha="right", fontsize=7)
        hib = sm["higher_is_better"].dropna()
        ax.set_title(f"{metric} ({arrow(hib.iloc[0], metric)} better)" if len(hib) else metric)
        ax.set_xlabel(xlabel)
    return save_panels(fig, out_dir, name, title, caption).png


def _sampler_text(r: pd.Series) -> str:
    """``dual_loop (p=0.2)``: a bar's sampler with its variant (the CFG interval is part of the colour)."""
    v = variant_text(r["variant"])
    return f"{key_text('sampler', r['sampler'])} ({v})" if v != "—" else key_text("sampler", r["sampler"])


def sampler_ablation(summary: pd.DataFrame, out_dir: Path) -> Path | None:
    """(c) Bars per sampler variant at the largest common NFE budget, one colour per remaining setting (model,
    cfg, ...); None with < 2 sampler variants."""
    nfe = largest_common_nfe(summary)
    s = summary[summary["nfe_budget"] == nfe] if nfe is not None else summary.iloc[0:0]
    if s.empty:
        return None
    keys = shown_keys(s, always=("model",), omit=("sampler", "variant", "nfe_budget"))
    s = s.assign(series=[series_label(r, keys) for _, r in s.iterrows()],
                 sampler=[_sampler_text(r) for _, r in s.iterrows()])  # the bar: sampler with its variant
    if s["sampler"].nunique() < 2:
        return None
    return _bars(s, "sampler", "series", "sampler", out_dir, "paper_samplers", f"Sampler ablation at NFE {nfe}",
                 "Mean over seeds, error bars ± std (clipped to the metric's range); PF samplers, their random-mask "
                 "ablations, then global-t samplers.")


def train_ablation(rows: pd.DataFrame, out_dir: Path) -> Path | None:
    """(d) Bars per training timestep sampler (column ``train_timesteps``); None when absent or constant."""
    if TRAIN_COLUMN not in rows:
        return None
    cells = rows[(rows["kind"] == "cell") & rows[TRAIN_COLUMN].notna()]
    if cells[TRAIN_COLUMN].astype(str).nunique() < 2:
        return None
    s = _summary(cells)
    nfe = largest_common_nfe(s)
    s = s[s["nfe_budget"] == nfe]
    keys = shown_keys(s, always=("sampler",), omit=("model", TRAIN_COLUMN, "nfe_budget"))
    s = s.assign(series=[series_label(r, keys) for _, r in s.iterrows()], bar=s[TRAIN_COLUMN].astype(str))
    if s.duplicated(["bar", "series", "metric"]).any():  # two models share a training sampler: name the model
        s = s.assign(bar=[f"{r[TRAIN_COLUMN]} · {key_text('model', r['model'])}" for _, r in s.iterrows()])
    return _bars(s, "bar", "series", "training timestep sampler", out_dir, "paper_train_timesteps",
                 f"Training timestep-sampler ablation at NFE {nfe}",
                 "Models differing in the training timestep sampler, each sampled with the listed samplers; error "
                 "bars ± std over seeds (clipped to the metric's range).")


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
    written = [atomic_write_text(out_dir / "table_main.md", md), atomic_write_text(out_dir / "table_main.tex", tex)]
    nfe = line_panels(rows, summary, "nfe_budget", "NFE budget", out_dir, "paper_nfe", "Quality vs NFE",
                       "One line per cell setting (model, sampler, variant, ...).", logx=True, references=True)
    pngs = [nfe.png if nfe is not None else None, sampler_ablation(summary, out_dir), train_ablation(rows, out_dir)]
    for png in pngs:
        if png is not None:
            written += [png, png.with_suffix(".pdf")]
    return written
