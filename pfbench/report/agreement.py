"""Agreement of a quick study with its full study (issue 20): the same claims, verdicts side by side.

A quick suite (``validity_quick``) tests the headline claims of a full study (``validity``)
with the same recipe, budgets and sample count. For every (claim, metric) evaluated in both, each study's verdict
is taken over the counted bases both ran (e.g. NFE 8/16/32 when only the full study has NFE 64), by the rule of
the claim summary (``claim_tables.overall``), and the two are set side by side. The suite declares its full study
(``claims: {agree_with: validity}``); ``pfbench report`` reads the sibling folder ``<results>/validity``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from pfbench.report.claim_set import TREND_BASIS
from pfbench.report.claim_tables import fmt, overall
from pfbench.report.correction import COUNTED_KINDS, FAILS, HOLDS
from pfbench.report.tables import TextTable

COLUMNS = ("family", "claim", "metric", "bases", "quick", "full", "quick_effect", "full_effect", "effect_unit", "agree",
           "opposed")


@dataclass(frozen=True)
class FullStudy:
    """The study a quick suite's verdicts are checked against: its suite name (a folder beside the quick
    suite's results) and its declared trend claims (``claims.trends`` of its YAML)."""

    suite: str
    trends: tuple[str, ...] = ()


def _counted(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["basis_kind"].isin(COUNTED_KINDS)] if len(table) else table


def _one_trend(claim_rows: pd.DataFrame) -> bool:
    """Whether a claim's counted rows are one trend line (its basis names the study's own budget range)."""
    return len(claim_rows) == 1 and str(claim_rows["basis"].iloc[0]).startswith(TREND_BASIS)


def agreement(quick: pd.DataFrame, full: pd.DataFrame) -> pd.DataFrame:
    """One row per (claim, metric) with counted bases in both claim tables (``evaluate_claims`` output): the
    bases both ran, each study's verdict and median effect (% of the worse side) over them, ``agree`` (the same
    verdict) and ``opposed`` (one holds where the other does not hold: a contradiction, not a difference in
    evidence such as holds vs inconclusive)."""
    q, f = _counted(quick), _counted(full)
    out = []
    for (family, claim, metric), gq in q.groupby(["family", "claim", "metric"], sort=False):
        gf = f[(f["claim"] == claim) & (f["metric"] == metric)]
        bases = [b for b in dict.fromkeys(gq["basis"]) if b in set(gf["basis"])]
        trend = _one_trend(gq) and _one_trend(gf)
        if not bases and not trend:
            continue
        if bases:
            sq, sf, shown = gq[gq["basis"].isin(bases)], gf[gf["basis"].isin(bases)], ", ".join(bases)
        else:  # one trend line each, over each study's own budget range: the same question, said so
            sq, sf, shown = gq, gf, f"{gq['basis'].iloc[0]} vs {gf['basis'].iloc[0]}"
        vq, vf = overall(sq["verdict"]), overall(sf["verdict"])
        col, unit = ("diff", "/doubling") if trend and not bases else ("pct", "%")
        out.append({"family": family, "claim": claim, "metric": metric, "bases": shown, "quick": vq,
                    "full": vf, "quick_effect": sq[col].astype(float).median(),
                    "full_effect": sf[col].astype(float).median(), "effect_unit": unit, "agree": vq == vf,
                    "opposed": {vq, vf} == {HOLDS, FAILS}})
    return pd.DataFrame(out, columns=list(COLUMNS))


def agreement_table(quick: pd.DataFrame, full: pd.DataFrame | None, full_name: str, quick_name: str) -> TextTable:
    """The report's "Agreement with the full study" table; a one-line table saying why when the full study's
    results are missing (``full`` None or empty) or share no claim with the quick one."""
    where = f"results/{full_name}"
    if full is None or full.empty:
        return TextTable("", ("agreement",), ((f"{where} has no result rows next to {quick_name}'s: nothing to "
                                                f"compare (run `pfbench run suites/{full_name}.yaml`, or pass "
                                                "--results to the root that holds both)",),))
    a = agreement(quick, full)
    if a.empty:
        return TextTable("", ("agreement",), ((f"no claim is evaluated in both {quick_name} and {full_name}",),))
    def effect(x: float, unit: str) -> str:
        return fmt(x, "+.3g" if unit != "%" else "+.1f") + unit

    body = tuple((r.family, r.claim, r.metric, r.bases, f"{r.quick} ({effect(r.quick_effect, r.effect_unit)})",
                  f"{r.full} ({effect(r.full_effect, r.effect_unit)})",
                  "yes" if r.agree else "OPPOSED" if r.opposed else "no") for r in a.itertuples())
    agree, opposed = int(a["agree"].sum()), int(a["opposed"].sum())
    only = [f"{name} only: " + (", ".join(sorted(set(own["claim"]) - set(a["claim"]))) or "none")
            for name, own in ((quick_name, _counted(quick)), (full_name, _counted(full)))]
    return TextTable(f"{quick_name} vs {full_name}: {agree} of {len(a)} verdicts agree, {opposed} opposed",
                     ("family", "claim", "metric", "bases in both", f"{quick_name} (median effect)",
                      f"{full_name} (median effect)", "agree"), body,
                     "agree: the same verdict; OPPOSED: one holds where the other does not hold; no: otherwise "
                     "(e.g. holds vs inconclusive: more or less evidence, no contradiction). "
                     "Verdict of each study over the counted bases both ran (holds = at every such basis; does not "
                     "hold = reversed somewhere, holding nowhere; mixed = both; else inconclusive), after Holm within "
                     "each study's own claim families: the families differ in size between the two studies, so an "
                     "adjusted verdict can differ at equal raw evidence. Effect: median over those bases, % of the "
                     "claimed-worse side, positive = claim direction; a trend line (each study's own budget range) "
                     "shows its slope per doubling of NFE. Claims evaluated (both sides with rows) in "
                     f"{'; in '.join(only)}.")
