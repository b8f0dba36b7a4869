"""The report's results tables: headline metrics of pooled configurations first, breakdowns and per-instance rows
after.

* Main table: one row per configuration (training-seed instances ``pf@s0``, ``pf@s1``, … pooled, ``pooling``),
  one column per headline metric (the suite's ``report.headline``, else its metrics that are no breakdown).
* Breakdowns: every other metric (``attr_acc_color`` under ``attr_acc``; ``*_shuffled`` chance-level twins, the
  floors of the prompt-following metrics), one table per parent metric, without the cost columns.
* Appendix: the per-instance rows (only when instances were pooled).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from pfbench.report.keys import HEADERS, key_text
from pfbench.report.pooling import pool_replicates
from pfbench.report.stats import summarize
from pfbench.report.tables import TextTable, is_floor, is_spread, results_table

FLOORS = "floors (shuffled prompts)"
APPENDIX = "Appendix: "  # title prefix of the sections the report puts last


def is_breakdown(metric: str, metrics: Sequence[str]) -> bool:
    """A metric that refines or bounds another one of ``metrics`` (``attr_acc_color`` of ``attr_acc``,
    ``class_acc_shuffled`` of ``class_acc``, ``is_std`` of ``is``), or a floor or spread on its own."""
    return is_floor(metric) or is_spread(metric) or any(metric.startswith(f"{m}_") for m in metrics if m != metric)


def headline_metrics(present: Sequence[str], declared: Sequence[str] = ()) -> list[str]:
    """The main table's metrics: ``declared`` (the suite's ``report.headline`` or ``metrics:``) in their order, those
    present and no breakdown of another one present; without any, every present metric that is no breakdown."""
    chosen = [m for m in dict.fromkeys(declared) if m in present and not is_breakdown(m, present)]
    return chosen or [m for m in sorted(present) if not is_breakdown(m, present)]


def _parent(metric: str, headline: Sequence[str]) -> str:
    if is_floor(metric):
        return FLOORS
    hits = [m for m in headline if metric.startswith(f"{m}_")]
    return max(hits, key=len) if hits else "other metrics"


# Recipe keys the model name usually determines: folded into the main table's note instead of a column each.
MODEL_KEYS: tuple[str, ...] = ("train_timesteps", "decoder")


def model_determined(summary: pd.DataFrame) -> tuple[list[str], str]:
    """The ``MODEL_KEYS`` that vary but take one value per model, and a note naming each model's value."""
    keys, texts = [], []
    for k in MODEL_KEYS:
        if k not in summary or summary[k].astype("string").fillna("").nunique() < 2:
            continue
        per = summary.groupby("model")[k].agg(lambda v: tuple(v.astype("string").fillna("").unique()))
        if all(len(v) == 1 for v in per):
            keys.append(k)
            values = summary.groupby("model")[k].first()
            texts.append(f"{HEADERS[k]}: " + ", ".join(f"{m} {key_text(k, v)}" for m, v in values.items()))
    return keys, "; ".join(texts) + "." if texts else ""


def results_sections(cells: pd.DataFrame, declared: Sequence[str] = ()) -> list[tuple[str, list[TextTable]]]:
    """("Results", …), ("Breakdowns", …) and ("Appendix: per-instance results", …) sections from cell rows.

    Args:
        cells: result rows of kind ``cell``.
        declared: the suite's headline metrics (``report.headline``; else its ``metrics:``); may be empty.
    """
    if cells.empty:
        return []
    pooled_rows, pooled = pool_replicates(cells)
    summary = summarize(pooled_rows)
    present = sorted(summary["metric"].dropna().unique().tolist())
    headline = headline_metrics(present, declared)
    unit = "training seeds" if pooled else "seeds"
    note = ("One row per configuration: " + "; ".join(f"{b} pools {', '.join(ms)}" for b, ms in pooled.items())
            + " (each training seed averaged over its sampling seeds first; per-instance rows in the appendix)."
            if pooled else "")
    folded, per_model = model_determined(summary)
    main = results_table(summary, title="", metrics=headline, replicates=unit, note=f"{per_model} {note}".strip(),
                         omit=folded)
    out: list[tuple[str, list[TextTable]]] = [("Results", [main])]
    rest = [m for m in present if m not in headline]
    groups: dict[str, list[str]] = {}
    for m in rest:
        groups.setdefault(_parent(m, headline), []).append(m)
    out.append(("Breakdowns", [results_table(summary, title=parent, metrics=ms, costs=False, replicates=unit,
                                             note=per_model, omit=folded) for parent, ms in groups.items()]))
    if pooled:
        out.append((f"{APPENDIX}per-instance results", [results_table(summarize(cells), title="")]))
    return out
