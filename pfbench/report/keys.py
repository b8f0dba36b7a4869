"""What tells one cell of a suite from another: the one list every table, figure and comparison groups by.

Seeds are repeated observations of one cell and are aggregated; every other column that can differ between cells
is a key. Reports group by all keys and show as labelled columns those that vary, so no cell is dropped or
silently pooled with another (``pfbench report thresholds`` once showed 2 rows for 8 p-sweep variants).

Two tiers:
    * ``CELL_KEYS``: settings of a cell (model, training timestep sampler, train step, decoder, sampler,
      variant, CFG scale and interval, NFE budget or fixed step count); shown whenever they take more than one
      value. A cell runs either at an NFE budget (``nfe_budget`` set; its ``steps`` follow from the budget and are
      no key) or at a fixed outer step count (``nfe_budget`` missing; its ``steps`` are the key ``fixed_steps``),
      so the two kinds of cell are never pooled, and each is labelled by its own axis.
    * ``CONTEXT_KEYS``: identity columns that normally follow from the model or the suite (checkpoint hash,
      sample count, reference set, metric settings); grouped by, shown only when they split otherwise equal cells
      (a retrained checkpoint next to the old one, a rerun with more samples).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pfbench import PfbenchError

CELL_KEYS: tuple[str, ...] = ("model", "train_timesteps", "train_step", "decoder", "sampler", "variant",
                              "cfg_scale", "cfg_interval", "nfe_budget", "fixed_steps")
CONTEXT_KEYS: tuple[str, ...] = ("model_id", "num_samples", "ref_id", "metric_args")
# One group of result rows = the observations (seeds) of one metric of one cell (or one diagnostic/reference).
GROUP_KEYS: tuple[str, ...] = ("kind", *CELL_KEYS, *CONTEXT_KEYS, "metric")
# Shown in every wide table even when constant (the familiar first columns).
CORE_KEYS: tuple[str, ...] = ("model", "sampler", "cfg_scale", "nfe_budget")
HEADERS: dict[str, str] = {
    "model": "model", "train_timesteps": "train t-sampler", "train_step": "train step", "decoder": "decoder",
    "sampler": "sampler", "variant": "variant", "cfg_scale": "cfg", "cfg_interval": "CFG interval",
    "nfe_budget": "NFE budget", "fixed_steps": "steps", "model_id": "model id", "num_samples": "samples", "ref_id": "reference",
    "metric_args": "metric args",
}
# sampler_args entries that follow from the NFE budget rather than being a setting of the sampler.
BUDGET_ARGS = frozenset({"steps"})
MISSING = "—"


def is_na(x: Any) -> bool:
    """True for None, pd.NA, NaN (any missing scalar)."""
    try:
        return bool(pd.isna(x))
    except (TypeError, ValueError):
        return False


def _json(text: Any) -> Any:
    """Parsed JSON, or None when missing or unparsable."""
    if is_na(text):
        return None
    try:
        return json.loads(str(text))
    except ValueError:
        return None


def _canonical(text: Any) -> Any:
    """JSON text re-dumped with sorted keys (``[0.1,0.9]`` and ``[0.1, 0.9]`` are one key); NA stays NA."""
    parsed = _json(text)
    return text if parsed is None else json.dumps(parsed, sort_keys=True)


def normalize(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows with their key columns made comparable: absent keys as NA, JSON canonical, ``variant`` filled.

    ``fixed_steps`` (a derived key, not a column): ``steps`` of the cells run at a fixed step count (cell rows
    without an NFE budget), missing for every other row.

    ``variant`` (the suite-level sampler parameters and CFG interval, written by the runner) is derived from
    ``sampler_args`` where missing (rows written before it existed, hand-made frames): the entries, budget-derived
    ``steps`` aside, whose value differs between rows of one sampler. ``cfg_interval`` is taken from the variant
    where only the variant records it.
    """
    out = rows.copy()
    for k in (*GROUP_KEYS, "steps"):
        if k not in out:
            out[k] = pd.NA
    fixed = (out["kind"] == "cell").fillna(False) & out["nfe_budget"].isna()
    out["fixed_steps"] = out["steps"].astype("Int64").where(fixed.astype(bool), pd.NA)
    for k in ("variant", "cfg_interval"):
        out[k] = pd.Series([_canonical(v) for v in out[k]], index=out.index, dtype="string")
    if "sampler_args" in out and (out["variant"].isna() & out["sampler_args"].notna()).any():
        out["variant"] = _variant_from_args(out)
    fill = [json.dumps(p["cfg_interval"]) if isinstance(p := _json(v), dict) and p.get("cfg_interval") else pd.NA
            for v in out["variant"]]
    out["cfg_interval"] = out["cfg_interval"].fillna(pd.Series(fill, index=out.index, dtype="string"))
    return out


def _variant_from_args(rows: pd.DataFrame) -> pd.Series:
    """``variant`` where missing: the ``sampler_args`` entries that differ between the rows of each sampler."""
    parsed = [p if isinstance(p := _json(t), dict) else {} for t in rows["sampler_args"]]
    samplers = [str(s) for s in rows["sampler"].astype("string").fillna("")]
    varying: dict[str, list[str]] = {}
    for sampler in set(samplers):
        idx = [i for i, s in enumerate(samplers) if s == sampler and parsed[i]]
        names = sorted({k for i in idx for k in parsed[i]} - BUDGET_ARGS)
        varying[sampler] = [k for k in names if len({json.dumps(parsed[i].get(k), sort_keys=True) for i in idx}) > 1]
    derived = [json.dumps({k: parsed[i].get(k) for k in varying[s]}, sort_keys=True) if varying[s] else ""
               for i, s in enumerate(samplers)]
    keep = rows["variant"].notna() | rows["sampler_args"].isna()
    return rows["variant"].where(keep, pd.Series(derived, index=rows.index, dtype="string"))


def _distinct(frame: pd.DataFrame, keys: Sequence[str]) -> int:
    return len(frame[list(keys)].astype("string").fillna("\x00").drop_duplicates()) if keys else min(len(frame), 1)


def shown_keys(frame: pd.DataFrame, always: Iterable[str] = CORE_KEYS, omit: Iterable[str] = ()) -> list[str]:
    """The key columns a table of ``frame`` (rows or summary rows) must show, in ``CELL_KEYS`` order.

    ``always`` keys, ``fixed_steps`` wherever a cell has one, every ``CELL_KEYS`` column with more than one value
    (NA counts as a value), and every
    ``CONTEXT_KEYS`` column that splits rows equal in all other keys; ``omit`` keys are left out (a figure's x).
    """
    omit = set(omit)
    always = set(always)
    cols = [k for k in (*CELL_KEYS, *CONTEXT_KEYS) if k in frame]
    total = _distinct(frame, cols)
    shown = []
    for k in cols:
        if k in omit:
            continue
        values = frame[k].astype("string").fillna("\x00").nunique()
        needed = _distinct(frame, [c for c in cols if c != k]) < total
        fixed = k == "fixed_steps" and bool(frame[k].notna().any())  # as the NFE budget: shown once present
        if k in always or fixed or (k in CELL_KEYS and values > 1) or (k in CONTEXT_KEYS and needed):
            shown.append(k)
    return shown


def variant_text(variant: Any, omit: Iterable[str] = ()) -> str:
    """Compact label of a variant JSON: ``p=0.2, n_inner=4`` (its CFG interval has a column of its own)."""
    parsed = _json(variant)
    if not isinstance(parsed, dict):
        return MISSING if is_na(variant) or variant == "" else str(variant)
    drop = {"cfg_interval", *omit}
    items = [f"{k}={_value_text(v)}" for k, v in sorted(parsed.items()) if k not in drop]
    return ", ".join(items) if items else MISSING


def _value_text(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v).lower()
    if isinstance(v, (int, float, np.integer, np.floating)):
        return format(float(v), "g")
    if isinstance(v, list):
        return "[" + ", ".join(_value_text(x) for x in v) + "]"
    return str(v)


def key_text(key: str, value: Any) -> str:
    """One key value for display: ``—`` when missing, numbers without trailing zeros, JSON compact."""
    if is_na(value):
        return MISSING
    if key == "variant":
        return variant_text(value)
    if key == "cfg_interval":
        parsed = _json(value)
        return _value_text(parsed) if parsed is not None else str(value)
    if key == "model_id":
        return str(value)[:12]
    if isinstance(value, (float, np.floating)):
        return format(float(value), "g")
    return str(value)


# Prefixes that make a key readable inside a one-line series label (figures, the paper's row labels).
_LABEL_PREFIX = {"train_timesteps": "train ", "train_step": "step ", "cfg_scale": "cfg ", "cfg_interval": "cfg in ",
                 "nfe_budget": "NFE ", "fixed_steps": "steps ", "model_id": "ckpt ", "num_samples": "n=", "ref_id": "ref ", "decoder": "vae "}


def series_label(row: pd.Series, keys: Sequence[str], omit_args: Iterable[str] = ()) -> str:
    """``pf · train ltg · dual_loop · p=0.2 · cfg 4`` from a row's ``keys``; ``omit_args`` leaves variant entries
    out (the swept parameter of a sweep figure)."""
    parts = []
    for k in keys:
        text = variant_text(row[k], omit_args) if k == "variant" else key_text(k, row[k])
        if k in ("variant", "nfe_budget", "fixed_steps") and text == MISSING:
            continue  # defaults; a fixed-step cell has no budget and a budget cell no fixed steps
        parts.append(_LABEL_PREFIX.get(k, "") + text)
    return " · ".join(parts)


def assert_distinct(labels: Sequence[tuple[str, ...]], what: str) -> None:
    """Raises when two groups would be shown as one row/point: a key left out of a table is a bug, not a merge."""
    seen: dict[tuple[str, ...], int] = {}
    for i, lab in enumerate(labels):
        if lab in seen:
            raise PfbenchError(f"{what}: two result groups would both be shown as {' | '.join(lab)!r}; "
                               "a distinguishing key column is not shown (a pfbench report bug, please report it)")
        seen[lab] = i


# A model's recipe: its name and training config as the rows record them; its instances are its model ids (weights).
RECIPE_KEYS: tuple[str, ...] = ("model", "train_timesteps", "decoder")


def recipe_ids(rows: pd.DataFrame) -> dict[tuple[str, ...], list[str]]:
    """Recipe (``RECIPE_KEYS`` values as text, ``""`` for missing) -> its model ids, sorted; rows without an id are
    left out."""
    if "model_id" not in rows or rows.empty:
        return {}
    known = rows.dropna(subset=["model_id"])
    cols = [known[k].astype("string").fillna("") if k in known else pd.Series("", index=known.index)
            for k in RECIPE_KEYS]
    keys = list(zip(*cols, strict=True))
    frame = pd.DataFrame({"recipe": keys, "id": known["model_id"].astype(str).to_numpy()}, index=known.index)
    return {tuple(r): sorted(g["id"].unique()) for r, g in frame.groupby("recipe")}


def instances(rows: pd.DataFrame) -> dict[str, list[str]]:
    """Model name -> its model ids (sorted), for the models with several ids for one recipe in ``rows``: two
    instances of one model (a rerun that trained other weights bits, written into the folder of the first run)."""
    out: dict[str, list[str]] = {}
    for recipe, ids in recipe_ids(rows).items():
        if len(ids) > 1:
            out[recipe[0]] = sorted({*out.get(recipe[0], []), *ids})
    return out


def instance_warning(rows: pd.DataFrame, where: str) -> str | None:
    """One line saying which models ``where`` holds several instances of, and how reports show them; None if none."""
    multi = instances(rows)
    if not multi:
        return None
    what = "; ".join(f"{m}: {', '.join(i[:12] for i in ids)}" for m, ids in sorted(multi.items()))
    return (f"{where} holds several instances (model ids) of {len(multi)} model(s) ({what}): they are shown as "
            "separate labelled instances (model id column; claims per instance), never pooled")
