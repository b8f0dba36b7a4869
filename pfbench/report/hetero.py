"""Does the adaptive samplers' gain grow with heterogeneity? (issue 20, item 5; suites/validity_hetero_*.yaml)

Reads the result rows of the heterogeneity suites (one per level of the embedded generator's ``heterogeneity``
knob, read back from the cells' ``ref_id``) and writes ``reports/hetero/index.md`` with one figure:

1. per level, the per-patch difficulty spread: the held-out split's hard-pixel share per 2x2 patch (reference
   rows of model ``data_hard``) and the models' per-patch error spread and difficulty diagnostics (mean over
   the training seeds);
2. per level, axis (equal NFE, equal outer steps) and budget, the metric of euler_pf, dual_loop and look_ahead
   and the paired gain of each adaptive sampler over euler_pf (oriented: positive = the adaptive sampler is
   better), absolute and relative to euler_pf (levels differ in FD scale), with ``stats.paired``'s 95% interval;
3. the trend: per replicate (training seed k = sampling seed k, the same index at every level) the relative
   gain is regressed on the heterogeneity level and the slopes are tested against 0 (``trends.slope_test``),
   pooled over the budgets of an axis (mean gain per replicate) and per budget. A positive slope means the
   adaptive sampler's gain grows with heterogeneity. Every level present is reported.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pfbench import PfbenchError
from pfbench.io import atomic_path
from pfbench.report.mpl import plt
from pfbench.report.stats import paired, t_interval
from pfbench.report.steps import steps_view
from pfbench.report.tables import TextTable, fmt_num
from pfbench.report.trends import slope_test

BASE = "euler_pf"
ADAPTIVE = ("dual_loop", "look_ahead")
# pfbench.data.heterogeneity.DEFAULT_HETEROGENEITY (reports read Parquet only; a test checks they agree): cells
# at the default level carry no ``:h`` in their ref_id.
DEFAULT_LEVEL = 0.5
DATA_METRICS = ("hard_share_mean", "hard_share_spread", "hard_share_easy")
MODEL_METRICS = ("patch_err_cv_t0.6", "patch_err_hard_easy_t0.6", "difficulty_hard_easy_ratio",
                 "difficulty_pearson_patch_t0.6")
AXES = {"nfe": "equal NFE", "steps": "equal outer steps"}


def level_of(rows: pd.DataFrame) -> float:
    """The heterogeneity level of one suite's rows, from its cells' ``ref_id`` (``...:h<level>``, else the
    default).

    Raises:
        PfbenchError: no cell rows, or cells at more than one level.
    """
    refs = set(rows.loc[rows["kind"] == "cell", "ref_id"].dropna().astype(str))
    if not refs:
        raise PfbenchError("hetero report: a suite has no cell rows with a reference id; run it first")
    levels = {float(m.group(1)) if (m := re.search(r":h([0-9.eE+-]+)$", r)) else DEFAULT_LEVEL for r in refs}
    if len(levels) != 1:
        raise PfbenchError(f"hetero report: one suite's cells are at several heterogeneity levels {sorted(levels)}")
    return levels.pop()


def replicates(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Default-variant cells of euler_pf and the adaptive samplers: columns axis, budget, sampler, seed, value,
    higher_is_better (one row per replicate).

    The steps axis is ``steps_view``: each NFE cell also stands for the cell of its step count where that was not
    run (euler_pf at NFE N is euler_pf(N), look_ahead at NFE 16 is look_ahead(8)).

    Raises:
        PfbenchError: two rows for one seed of one cell (two instances of a model in one results folder).
    """
    c = rows[(rows["kind"] == "cell") & (rows["metric"] == metric) & rows["sampler"].isin((BASE, *ADAPTIVE))
             & (rows["variant"].fillna("") == "")]
    c = pd.concat([c[c["nfe_budget"].notna()].assign(axis="nfe"), steps_view(c).assign(axis="steps")])
    out = pd.DataFrame({
        "axis": c["axis"].to_numpy(),
        "budget": c["nfe_budget"].fillna(c["steps"]).astype("int64").to_numpy(),
        "sampler": c["sampler"].astype(str).to_numpy(), "seed": c["seed"].astype("int64").to_numpy(),
        "value": c["value"].astype("float64").to_numpy(), "higher_is_better": c["higher_is_better"].astype(bool).to_numpy(),
    })  # fmt: skip
    dup = out.duplicated(["axis", "budget", "sampler", "seed"])
    if dup.any():
        r = out[dup].iloc[0]
        raise PfbenchError(f"hetero report: 2 result rows for seed {r['seed']} of {r['sampler']} at {r['axis']} "
                           f"{r['budget']} ({metric}); keep one model instance per results folder")
    return out


def gains(levels: Sequence[tuple[str, pd.DataFrame]], metric: str = "fd_embedded") -> pd.DataFrame:
    """Per-replicate gains: level, suite, axis, budget, sampler, seed, base, value, gain (oriented, positive =
    the adaptive sampler better), rel_gain (gain / |base|)."""
    parts = []
    for suite, rows in levels:
        rep = replicates(rows, metric)
        base = rep[rep["sampler"] == BASE].set_index(["axis", "budget", "seed"])["value"].rename("base")
        ad = rep[rep["sampler"].isin(ADAPTIVE)].join(base, on=["axis", "budget", "seed"], how="inner")
        sign = np.where(ad["higher_is_better"], 1.0, -1.0)
        ad = ad.assign(level=level_of(rows), suite=suite, gain=sign * (ad["value"] - ad["base"]))
        parts.append(ad.assign(rel_gain=ad["gain"] / ad["base"].abs()))
    if not parts or all(p.empty for p in parts):
        raise PfbenchError(f"hetero report: no {BASE} / {', '.join(ADAPTIVE)} cells with {metric} rows to compare")
    return pd.concat(parts, ignore_index=True).sort_values(["level", "axis", "sampler", "budget", "seed"])


def gain_table(g: pd.DataFrame) -> pd.DataFrame:
    """Per level, axis, budget and adaptive sampler: mean metric of both sides and the paired gain statistics
    (``gain``, ``lo``, ``hi``, ``p``, ``n``) and relative gain (``rel``, ``rel_lo``, ``rel_hi``)."""
    out = []
    for (level, suite, axis, budget, sampler), s in g.groupby(["level", "suite", "axis", "budget", "sampler"], sort=True):
        sign = np.where(s["higher_is_better"], 1.0, -1.0)
        st = paired(sign * s["value"].to_numpy(), sign * s["base"].to_numpy())
        rel = paired(s["rel_gain"].to_numpy(), np.zeros(len(s)))
        out.append({"level": level, "suite": suite, "axis": axis, "budget": budget, "sampler": sampler,
                    "base": s["base"].mean(), "value": s["value"].mean(), "gain": st["diff"], "lo": st["lo"],
                    "hi": st["hi"], "p": st["p"], "n": int(st["n"]), "rel": rel["diff"], "rel_lo": rel["lo"],
                    "rel_hi": rel["hi"]})
    return pd.DataFrame(out)


def trend_table(g: pd.DataFrame) -> pd.DataFrame:
    """Slope of the relative gain on the heterogeneity level, per axis and adaptive sampler: pooled over the
    axis's budgets (``budget`` "all": a replicate's mean gain) and per budget; ``slope_test`` statistics."""
    out = []
    for (axis, sampler), s in g.groupby(["axis", "sampler"], sort=True):
        pooled = s.groupby(["seed", "level"])["rel_gain"].mean().unstack("level")
        per = [("all", pooled)] + [(str(b), sb.pivot(index="seed", columns="level", values="rel_gain"))
                                   for b, sb in s.groupby("budget", sort=True)]
        for budget, wide in per:
            # slope_test regresses on log2 of the column labels: labels 2**level regress on the level itself
            st = slope_test(wide.rename(columns=lambda h: 2.0 ** float(h))) if wide.shape[1] > 1 else \
                {"n": 0.0, "diff": math.nan, "lo": math.nan, "hi": math.nan, "p": math.nan}
            out.append({"axis": axis, "sampler": sampler, "budget": budget, "levels": wide.shape[1], **st})
    return pd.DataFrame(out)


def spread_table(levels: Sequence[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """Per level: the data-side hard-share statistics and the mean (over models) of the model-side spread and
    difficulty diagnostics; NaN where a suite has no such rows."""
    out = []
    for suite, rows in levels:
        row: dict[str, object] = {"suite": suite, "level": level_of(rows)}
        data = rows[(rows["kind"] == "reference") & (rows["model"] == "data_hard")]
        diag = rows[rows["kind"] == "diagnostic"]
        for m in DATA_METRICS:
            row[m] = float(data.loc[data["metric"] == m, "value"].mean())
        for m in MODEL_METRICS:
            v = diag.loc[diag["metric"] == m, "value"].astype("float64")
            row[m], row[m + "_sd"] = float(v.mean()), float(v.std()) if len(v) > 1 else math.nan
        out.append(row)
    return pd.DataFrame(out).sort_values("level")


def gain_figure(g: pd.DataFrame, out: Path, metric: str) -> Path:
    """gain_vs_level.png: relative gain over euler_pf (mean over budgets per replicate; mean and t interval over
    replicates) against the heterogeneity level, one panel per axis, one line per adaptive sampler."""
    axes_present = [a for a in AXES if a in set(g["axis"])]
    fig, axs = plt.subplots(1, len(axes_present), figsize=(4.6 * len(axes_present), 3.6), squeeze=False)
    for ax, axis in zip(axs[0], axes_present, strict=True):
        for sampler in ADAPTIVE:
            s = g[(g["axis"] == axis) & (g["sampler"] == sampler)]
            per = s.groupby(["level", "seed"])["rel_gain"].mean() * 100  # % per replicate, pooled over budgets
            xs, ms, err = [], [], []
            for level, v in per.groupby(level=0):
                lo, hi = t_interval(v.to_numpy())
                xs.append(float(level))
                ms.append(float(v.mean()))
                err.append((ms[-1] - lo, hi - ms[-1]) if math.isfinite(lo) else (0.0, 0.0))
            if xs:
                ax.errorbar(xs, ms, yerr=np.array(err).T, marker="o", capsize=3, label=sampler)
        ax.axhline(0.0, color="gray", lw=0.8, ls="--")
        ax.set(xlabel="heterogeneity level", ylabel=f"{metric} gain over {BASE} (%)", title=AXES[axis])
        ax.legend(fontsize=8)
    fig.suptitle("Adaptive samplers' gain vs heterogeneity (mean over budgets; 95% t interval over replicates)",
                 fontsize=9)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "gain_vs_level.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)
    return path


def _tables(spread: pd.DataFrame, gt: pd.DataFrame, tt: pd.DataFrame, metric: str) -> list[TextTable]:
    def pm(r: pd.Series, m: str) -> str:
        sd = r.get(m + "_sd")
        return fmt_num(r[m], ".3g") + ("" if sd is None or not math.isfinite(float(sd)) else f" ± {float(sd):.2g}")

    def ci(lo: float, hi: float, spec: str = "+.3g") -> str:
        return "NA" if not (math.isfinite(lo) and math.isfinite(hi)) else f"[{lo:{spec}}, {hi:{spec}}]"

    t1 = TextTable("Per-patch difficulty spread per level", ("suite", "level", *DATA_METRICS, *MODEL_METRICS),
                   tuple((str(r["suite"]), f"{r['level']:g}", *(fmt_num(r[m], ".3g") for m in DATA_METRICS),
                          *(pm(r, m) for m in MODEL_METRICS)) for _, r in spread.iterrows()),
                   "data: held-out split, hard-pixel share per 2x2 patch (spread: mean over images of the std across "
                   "an image's patches); model: mean ± sd over training seeds, t = 0.6")
    t2 = TextTable(f"{metric}: gain of the adaptive samplers over {BASE} (positive = better than {BASE})",
                   ("level", "axis", "budget", "sampler", BASE, "adaptive", "gain [95% CI]", "p",
                    "relative gain [95% CI]"),
                   tuple((f"{r['level']:g}", AXES[r["axis"]], str(r["budget"]), str(r["sampler"]),
                          fmt_num(r["base"]), fmt_num(r["value"]), f"{r['gain']:+.3g} {ci(r['lo'], r['hi'])}",
                          fmt_num(r["p"], ".2g"), f"{100 * r['rel']:+.2f}% {ci(100 * r['rel_lo'], 100 * r['rel_hi'], '+.2f')}")
                         for _, r in gt.iterrows()),
                   f"paired over replicates (n per row: {', '.join(sorted({str(n) for n in gt['n']}))}); "
                   "Student-t intervals below 10 pairs")
    t3 = TextTable("Trend: slope of the relative gain per unit of heterogeneity (positive = gain grows)",
                   ("axis", "sampler", "budget", "levels", "slope [95% CI]", "p", "replicates"),
                   tuple((AXES[r["axis"]], str(r["sampler"]), str(r["budget"]), str(r["levels"]),
                          f"{100 * r['diff']:+.3g} pp {ci(100 * r['lo'], 100 * r['hi'])}", fmt_num(r["p"], ".2g"),
                          str(int(r["n"]))) for _, r in tt.iterrows()),
                   "per replicate (seed k at every level) the relative gain is regressed on the level; slopes "
                   "tested against 0 (one-sample t); 'all' = a replicate's mean gain over the axis's budgets; "
                   "raw p, no multiple-comparison correction")
    return [t1, t2, t3]


# The three levels' suites (suites/validity_hetero_*.yaml) and the name of their block in docs/validity.md.
HETERO_SUITES = ("validity_hetero_low", "validity_hetero_mid", "validity_hetero_high")
HETERO_BLOCK = "validity_hetero"


def hetero_block(levels: Sequence[tuple[str, pd.DataFrame]], metric: str = "fd_embedded") -> str:
    """The Markdown block ``docs/validity.md`` includes (between ``<!-- pfbench:hetero validity_hetero -->``
    markers): the report's tables, generated from the suites' rows, never written by hand."""
    g = gains(levels, metric)
    tables = _tables(spread_table(levels), gain_table(g), trend_table(g), metric)
    head = (f"_Generated by `pfbench hetero` from `results/{{{', '.join(s for s, _ in levels)}}}`; "
            "do not edit by hand._")
    return "\n".join([head, "", *(t.markdown() for t in tables)]).rstrip() + "\n"


def hetero_report(levels: Sequence[tuple[str, pd.DataFrame]], out: Path, metric: str = "fd_embedded") -> Path:
    """Writes ``out/index.md`` and ``out/gain_vs_level.png`` from the suites' rows ``(suite name, rows)``.

    Raises:
        PfbenchError: fewer than 2 levels, a suite without comparable cells, duplicated replicates.
    """
    if len({level_of(rows) for _, rows in levels}) < 2:
        raise PfbenchError("hetero report: needs suites at 2 or more heterogeneity levels "
                           "(e.g. validity_hetero_low, _mid, _high)")
    g = gains(levels, metric)
    fig = gain_figure(g, out, metric)
    tables = _tables(spread_table(levels), gain_table(g), trend_table(g), metric)
    text = ["# Heterogeneity study: does the adaptive samplers' gain grow with heterogeneity?", "",
            f"Suites: {', '.join(s for s, _ in levels)}. Generated by `pfbench hetero` from their result rows "
            "(pfbench/report/hetero.py); every level present is reported.", "",
            f"![gain vs level]({fig.name})", "", *(t.markdown() for t in tables)]
    md = out / "index.md"
    with atomic_path(md) as tmp:
        Path(tmp).write_text("\n".join(text))
    return md


__all__ = ["ADAPTIVE", "BASE", "DEFAULT_LEVEL", "HETERO_BLOCK", "HETERO_SUITES", "gain_figure", "gain_table", "gains",
           "hetero_block", "hetero_report", "level_of", "replicates", "spread_table", "trend_table"]
