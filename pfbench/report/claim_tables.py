"""Claim tables of the validity report (``claims.evaluate_claims`` output -> ``TextTable``s) and the generated
claims block that ``docs/validity.md`` includes between markers, so its numbers come from the results.

Counted bases (one NFE budget, the curve at equal steps, one model's diagnostic) carry the verdict, from the
Holm-adjusted p within the claim family (``correction.METHOD``); interpolated bases are shown, not counted;
bases without a common point are listed with the reason.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from pfbench import PfbenchError
from pfbench.io import atomic_write_text
from pfbench.report.claims import replicates, with_groups
from pfbench.report.correction import COUNTED_KINDS, FAILS, HOLDS, METHOD, SKIPPED, UNSURE
from pfbench.report.keys import variant_text
from pfbench.report.tables import TextTable
from pfbench.report.trends import trend_text

MIXED = "mixed"


def fmt(x: object, spec: str = ".3g") -> str:
    """A number for a table; ``—`` when missing or not finite."""
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "—"
    return format(v, spec) if math.isfinite(v) else "—"


def overall(verdicts: pd.Series) -> str:
    """holds = at every basis; does not hold = reversed somewhere and holding nowhere; mixed = both; else
    inconclusive."""
    holds, fails = int((verdicts == HOLDS).sum()), int((verdicts == FAILS).sum())
    return (HOLDS if len(verdicts) and holds == len(verdicts) else FAILS if fails and not holds
            else MIXED if fails else UNSURE)


def _counts(v: pd.Series) -> str:
    return "/".join(str(int((v == x).sum())) for x in (HOLDS, FAILS, UNSURE))


def claim_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (family, claim, metric): counted-basis counts, smallest Holm p, verdict after correction
    and the uncorrected verdict (raw interval, every tested basis, as reported before correction)."""
    recs = []
    for (family, claim, metric), g in table.groupby(["family", "claim", "metric"], sort=False):
        counted = g[g["basis_kind"].isin(COUNTED_KINDS)]
        interp = g[g["basis_kind"] == "interpolated"]
        tested = g[g["basis_kind"] != SKIPPED]
        recs.append({"family": family, "claim": claim, "metric": metric, "paper": str(g["paper"].iloc[0]),
                     "counted": _counts(counted["verdict"]), "n_counted": len(counted),
                     "interpolated": _counts(interp["verdict_raw"]) if len(interp) else "—",
                     "not_compared": int((g["basis_kind"] == SKIPPED).sum()),
                     "min_p": counted["p"].astype(float).min(), "min_holm": counted["p_holm"].astype(float).min(),
                     "min_bh": counted["q_bh"].astype(float).min(), "median_pct": counted["pct"].astype(float).median(),
                     "verdict": overall(counted["verdict"]), "uncorrected": overall(tested["verdict_raw"]),
                     "effect": _effect(counted)})
    return pd.DataFrame(recs)


def _effect(counted: pd.DataFrame) -> str:
    """Median effect over counted bases in % of the worse side, or a trend's slope per doubling of NFE."""
    if len(counted) and (counted["basis_kind"] == "trend").all():
        return f"{fmt(counted['diff'].astype(float).median(), '+.3g')}/doubling"
    return f"{fmt(counted['pct'].astype(float).median(), '+.1f')}%"


def _basis_order(basis: str) -> tuple[int, float, str]:
    """NFE budgets in order, then step counts in order (``steps 8``, ``steps 8 vs 16``), then the rest."""
    m = re.fullmatch(r"(NFE|steps) (\d+)( vs \d+)?", basis)
    return (0 if m[1] == "NFE" else 1, float(m[2]), basis) if m else (2, 0.0, basis)


def effects_tables(table: pd.DataFrame) -> list[TextTable]:
    """Counted bases side by side: per (claim, metric), each basis's effect in % and its raw p (Holm p); one
    table for sampling bases (NFE budgets, curves), one for per-model diagnostics."""
    sel = table[table["basis_kind"] == "primary"]
    out = []
    for diag in (False, True):
        part = sel[sel["basis"].str.startswith("model ") == diag]
        if part.empty:
            continue
        bases = sorted(dict.fromkeys(part["basis"]), key=_basis_order)
        cells: dict[tuple[str, str], dict[str, str]] = {}
        for r in part.itertuples():
            cells.setdefault((r.claim, r.metric), {})[r.basis] = (
                f"{fmt(r.pct, '+.1f')}% [{fmt(r.pct_lo, '+.1f')}, {fmt(r.pct_hi, '+.1f')}] (p {fmt(r.p, '.2g')}, "
                f"Holm {fmt(r.p_holm, '.2g')})")
        body = tuple((c, m, *[v.get(b, "") for b in bases]) for (c, m), v in cells.items())
        out.append(TextTable("", ("claim", "metric", *bases), body))
    return out


def summary_table(table: pd.DataFrame, title: str) -> TextTable:
    """One row per claim: counted bases holds / not / inconclusive after correction, smallest p (raw, Holm, BH),
    interpolated bases (raw, not counted), the verdict and the uncorrected verdict."""
    s = claim_summary(table)
    rows = tuple((r.family, r.claim, r.paper, r.counted, f"{fmt(r.min_p, '.2g')} / {fmt(r.min_holm, '.2g')} / "
                  f"{fmt(r.min_bh, '.2g')}", r.interpolated + (f"; {r.not_compared} not compared" if r.not_compared
                                                               else ""),
                  r.effect, r.verdict, r.uncorrected) for r in s.itertuples())
    return TextTable(title, ("family", "claim", "paper", "counted bases: holds / not / inconclusive",
                             "smallest p: raw / Holm / BH q", "interpolated bases (raw, not counted)",
                             "median effect", "verdict", "uncorrected verdict"), rows,
                     f"Counted basis: one NFE budget, the learning curve at equal steps, one model's diagnostic, one "
                     f"trend. {METHOD}. Interpolated bases (equal GFLOPs, training FLOPs, wall-clock) re-read the "
                     "same cells: shown with raw verdicts, never counted; bases without a common point are listed "
                     "as not compared. verdict: holds = at every counted basis; does not hold = significantly "
                     "reversed somewhere and holding nowhere; mixed = both; else inconclusive. Uncorrected verdict: "
                     "the same rule on raw 95% intervals over every tested basis (the report before correction). "
                     "Effect: difference in % of the claimed-worse side (positive = claim direction). paper: the "
                     "paper's numbers with their metric (FID-10K: ImageNet 256², B/2, read from its figures), not "
                     "this table's metric.")


def detail_table(table: pd.DataFrame, family: str) -> TextTable:
    """Every basis of one family: effect, raw p, Holm p (family), BH q (report), verdict or why not compared."""
    rows = []
    for r in table[table["family"] == family].itertuples():
        if r.basis_kind == SKIPPED:
            rows.append((r.claim, r.metric, r.basis, "—", "—", "—", "—", "—", "—", "—", f"{SKIPPED}: {r.reason}"))
            continue
        if r.basis_kind == "trend":
            effect = f"{fmt(r.diff, '+.3g')}/doubling [{fmt(r.lo, '+.3g')}, {fmt(r.hi, '+.3g')}]"
            better = worse = "—"
        else:
            effect = f"{fmt(r.pct, '+.1f')}% [{fmt(r.pct_lo, '+.1f')}, {fmt(r.pct_hi, '+.1f')}]"
            better, worse = fmt(r.better_mean, ".4g"), fmt(r.worse_mean, ".4g")
        note = f" ({r.reason})" if r.reason else ""
        rows.append((r.claim, r.metric, r.basis, f"{int(r.n)} {r.unit}s", better, worse, effect, fmt(r.p, ".2g"),
                     fmt(r.p_holm, ".2g"), fmt(r.q_bh, ".2g"), f"{r.verdict}{note}"))
    return TextTable(f"{family}: every basis", ("claim", "metric", "basis", "pairs", "better", "worse",
                                                "effect [95% CI]", "p", "Holm p", "BH q", "verdict"), tuple(rows),
                     "Paired over replicates; interval: Student t below 10 pairs, else bootstrap; p: paired t-test "
                     f"(scipy ttest_rel). {METHOD}. Trend rows: the effect's slope per doubling of NFE, per replicate, "
                     "then a t test of the slopes (in metric units, positive = toward the claim).")


def trend_lines(table: pd.DataFrame) -> list[str]:
    """One sentence per trend row (``trends.trend_text``), with the oriented effect at the smallest budget."""
    out = []
    for r in table[table["basis_kind"] == "trend"].itertuples(index=False):
        base = r.claim.removesuffix(": trend with NFE")
        first = table[(table["claim"] == base) & (table["metric"] == r.metric)
                      & table["basis"].str.match(r"NFE \d+$")]
        first = first.assign(nfe=first["basis"].str[4:].astype(int)).sort_values("nfe")
        effect = float(first["diff"].iloc[0]) if len(first) else math.nan
        better, worse = r.better, r.worse
        if better.split(" · ")[0] == worse.split(" · ")[0]:  # one model: name the samplers only
            better, worse = better.split(" · ", 1)[1], worse.split(" · ", 1)[1]
        out.append(trend_text(better, worse, r.metric, effect, pd.Series(r._asdict())))
    return out


def trend_table(table: pd.DataFrame) -> TextTable | None:
    lines = trend_lines(table)
    if not lines:
        return None
    return TextTable("Trends with budget (declared in the suite's claims.trends)", ("trend",),
                     tuple((x,) for x in lines), "Per replicate: the oriented difference regressed on log2(NFE); "
                     "one-sample t test of the slopes; counted in its claim family.")


def means_table(rows: pd.DataFrame, metric: str = "fd_embedded") -> TextTable | None:
    """Mean of ``metric`` over replicates per (model without training seed · sampler · variant) and budget
    (``NFE n``, plus ``, w = s`` under guidance) over NFE-mode cells; None without such cells."""
    nfe_mode = rows["nfe_budget"].notna() if "nfe_budget" in rows else True  # steps cells: steps.steps_table
    cells = with_groups(rows[(rows["kind"] == "cell") & (rows["metric"] == metric) & nfe_mode])
    if cells.empty:
        return None
    cfg = pd.to_numeric(cells["cfg_scale"], errors="coerce").fillna(1.0)
    col = [f"NFE {int(n)}" + ("" if w == 1.0 else f", w = {w:g}") for n, w in zip(cells["nfe_budget"], cfg, strict=True)]
    label = [f"{g} · {s}" + ("" if v in ("", None) or pd.isna(v) else f" {variant_text(v)}")
             for g, s, v in zip(cells["group"], cells["sampler"], cells["variant"], strict=True)]
    cells = cells.assign(col=col, label=label, w=cfg)
    order = cells.sort_values(["w", "nfe_budget"])["col"].drop_duplicates().tolist()
    means = {(lab, c): float(replicates(g)[0].mean()) for (lab, c), g in cells.groupby(["label", "col"])}
    labels = sorted({lab for lab, _ in means})
    body = tuple((lab, *[fmt(means.get((lab, c)), ".4g") for c in order]) for lab in labels)
    return TextTable("", (f"{metric}: mean over replicates", *order), body)


def claims_block(table: pd.DataFrame, suite: str, rows: pd.DataFrame | None = None) -> str:
    """The Markdown block ``docs/validity.md`` includes for ``suite``: the corrected claim summary per metric,
    the trend lines and (with ``rows``) the FD-embedded means per sampler and budget, every number from the
    results."""
    parts = [f"_Generated by `pfbench report {suite}` from `results/{suite}`; do not edit by hand. {METHOD}._", ""]
    s = claim_summary(table)
    body = tuple((r.claim, r.metric, r.counted, fmt(r.min_p, ".2g"), fmt(r.min_holm, ".2g"), fmt(r.min_bh, ".2g"),
                  r.effect, r.uncorrected, r.verdict) for r in s.itertuples())
    parts.append(TextTable("", ("claim", "metric", "counted bases holds / not / inc.", "smallest p", "Holm p",
                                "BH q", "median effect", "uncorrected", "verdict"), body).markdown())
    parts += [f"- {x}" for x in trend_lines(table)]
    parts += ["", "Effect at each counted basis (% of the claimed-worse side [95% CI], positive = claim direction; "
              "raw p, Holm p):", ""] + [t.markdown() for t in effects_tables(table)]
    skipped = table[table["basis_kind"] == SKIPPED].drop_duplicates(["claim", "basis", "reason"])
    if len(skipped):
        parts += ["Bases not compared (listed, not dropped):", ""]
        parts += [f"- {r.claim}, {r.basis}: {r.reason}" for r in skipped.itertuples()]
    for metric in ("fd_embedded", "class_acc") if rows is not None else ():
        means = means_table(rows, metric)
        parts += ["", means.markdown()] if means is not None else []
    return "\n".join(parts).rstrip() + "\n"


def missing_block(suite: str) -> str:
    """What a document's block for ``suite`` says while ``results/<suite>`` has no rows (``pfbench report`` then
    stops with "no result rows in …" and leaves the block as it is)."""
    return (f"_Not generated yet: `results/{suite}` has no result rows. `pfbench report {suite}` writes this block "
            f"once they exist (`pfbench run suites/{suite}.yaml` computes them)._\n")


def _markers(suite: str, kind: str = "claims") -> tuple[str, str]:
    return f"<!-- pfbench:{kind} {suite} -->", f"<!-- /pfbench:{kind} {suite} -->"


def doc_block(text: str, suite: str, kind: str = "claims") -> str | None:
    """The text between ``suite``'s markers of ``kind`` (``claims``: ``claims_block``; ``steps``:
    ``steps.steps_block``) in a document, or None without markers."""
    start, end = _markers(suite, kind)
    m = re.search(re.escape(start) + r"\n(.*?)" + re.escape(end), text, flags=re.S)
    return None if m is None else m[1]


def update_docs(docs: Path, suite: str, block: str, kind: str = "claims") -> list[Path]:
    """Writes ``block`` between ``suite``'s markers of ``kind`` in every ``docs/*.md`` that has them; returns
    those files."""
    start, end = _markers(suite, kind)
    done = []
    for path in sorted(Path(docs).glob("*.md")) if Path(docs).is_dir() else []:
        text = path.read_text()
        if doc_block(text, suite, kind) is None:
            if start in text:
                raise PfbenchError(f"{path}: {start} without its closing {end}")
            continue
        new = re.sub(re.escape(start) + r"\n.*?" + re.escape(end), lambda _: f"{start}\n{block}{end}", text,
                     flags=re.S)
        if new != text:
            atomic_write_text(path, new)
        done.append(path)
    return done
