"""The report's main view: training-seed instances of one recipe pooled into one configuration.

A suite that trains a model per seed (``train_seeds``) writes rows for ``pf@s0``, ``pf@s1``, … with a model id
each. They are replicates of one configuration, not different models: the main results table shows one row for
``pf`` with the mean and interval over training seeds (each seed first averaged over its sampling seeds), and the
per-instance rows go to an appendix. Models without a training-seed suffix are left as they are (their
replicates are sampling seeds).
"""

from __future__ import annotations

import pandas as pd

from pfbench.report.claims import split_model
from pfbench.report.keys import GROUP_KEYS, normalize
from pfbench.report.stats import COST_COLUMNS

# Written into ``seed`` of pooled rows, so ``stats.summarize`` treats each training seed as one observation.
TRAIN_SEED = "train_seed"


def pool_replicates(rows: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Cell rows with training-seed instances pooled: ``pf@sK`` rows become ``pf`` rows whose ``seed`` is K.

    Args:
        rows: result rows of one kind (e.g. ``cell``); rows of other kinds pass through unchanged.

    Returns:
        The pooled rows (one per metric, cell and training seed for pooled models: the mean over that seed's
        sampling seeds; ``model_id`` missing, as the instances have one each) and ``{recipe: [instance, …]}`` for
        the pooled models (empty when nothing was pooled, and then the rows are returned as given).
    """
    if rows.empty or "model" not in rows:
        return rows, {}
    parts = [split_model(m) for m in rows["model"]]
    seeded = pd.Series([not pd.isna(p[1]) for p in parts], index=rows.index)
    if not seeded.any():
        return rows, {}
    r = normalize(rows[seeded]).drop(columns=["fixed_steps"])  # summarize derives it again from steps
    names = {}
    for (base, _), model in zip((p for p, s in zip(parts, seeded, strict=True) if s), r["model"], strict=True):
        names.setdefault(base, set()).add(str(model))
    r = r.assign(model=[p[0] for p, s in zip(parts, seeded, strict=True) if s], model_id=pd.NA,
                 **{TRAIN_SEED: [int(p[1]) for p, s in zip(parts, seeded, strict=True) if s]})
    keys = [k for k in (*GROUP_KEYS, "steps") if k in r and k != "fixed_steps"]
    agg: dict[str, tuple[str, str]] = {"value": ("value", "mean")}
    agg |= {c: (c, "mean") for c in COST_COLUMNS if c in r}
    skip = {*keys, "value", *COST_COLUMNS, "seed", TRAIN_SEED, "part"}
    agg |= {c: (c, "first") for c in r.columns if c not in skip}  # higher_is_better, sampler_args, provenance, ...
    for c in ("value", *COST_COLUMNS):
        if c in r:
            r[c] = r[c].astype("Float64")
    pooled = r.groupby([*keys, TRAIN_SEED], dropna=False, sort=True).agg(**agg).reset_index()
    pooled["seed"] = pooled.pop(TRAIN_SEED)
    out = pd.concat([rows[~seeded], pooled], ignore_index=True)
    return out, {base: sorted(ms) for base, ms in sorted(names.items())}

