"""``pfbench report SUITE``: ``reports/<suite>/index.md`` and a self-contained ``index.html`` from Parquet only.

The report is generated, never hand-edited: tables (mean ± std, 95% interval of the mean), the figures of
``figures.FIGURES`` (PNG + PDF next to index.md), and every other PNG already in the report folder (sample grids,
difficulty maps written by the runner). The HTML embeds all images as base64 data URIs: no external assets.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pfbench import PfbenchError
from pfbench.io import atomic_write_text
from pfbench.report.agreement import FullStudy, agreement_table
from pfbench.report.claim_tables import claims_block, update_docs
from pfbench.report.claims import evaluate_claims
from pfbench.report.correction import METHOD
from pfbench.report.figures import PREFIX, Figure, make_figures
from pfbench.report.keys import instance_warning
from pfbench.report.paper import published_table, read_expected
from pfbench.report.pareto_report import pareto_section
from pfbench.report.pooling import pool_replicates
from pfbench.report.results_view import APPENDIX, results_sections
from pfbench.report.stats import summarize
from pfbench.report.steps import steps_block
from pfbench.report.tables import TextTable, long_table
from pfbench.report.validity import validity_sections
from pfbench.results import read_results

SKIPPED_FILE = "skipped.json"  # in the results folder: optional models a run skipped and why (pfbench.suite.runner)
PROVENANCE = ("git_sha", "pfbench_version", "torch_version", "hardware")
# Runner images listed first, in this order (by file-name prefix); the rest follow alphabetically.
IMAGE_ORDER = ("samples", "difficulty_")
# What the reference rows are (pfbench.suite.units: real images of the embedded train split, a trivial baseline).
REFERENCE_ROLES = {"real_train": "ceiling: real training-split images",
                   "trivial_class_mean": "floor: per-class mean image"}
REFERENCE_NOTE = ("The same metrics on real images of the embedded dataset's train split (the best a generator can "
                  "reach; not held out) and on a trivial baseline (the per-class mean image): the scale of the numbers "
                  "above.")
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1150px;color:#222;
padding:0 1rem;line-height:1.4}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
h3{font-size:1rem} .meta{color:#555;font-size:.85rem} .note{color:#666;font-size:.8rem;font-style:italic}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.82rem;margin:.5rem 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top;white-space:nowrap}
th{background:#f4f4f4} td.num{text-align:right}
figure{margin:1rem 0} figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.85rem}
"""


@dataclass(frozen=True)
class Image:
    title: str
    caption: str
    path: Path


def _provenance(rows: pd.DataFrame) -> list[tuple[str, str]]:
    """(field, "value (k rows), ...") for each provenance column, so mixed versions are visible."""
    out = []
    for col in PROVENANCE:
        counts = rows[col].dropna().astype(str).value_counts()
        if len(counts) == 0:
            out.append((col, "unknown"))
        elif len(counts) == 1:
            out.append((col, str(counts.index[0])))
        else:
            out.append((col, "MIXED: " + ", ".join(f"{v} ({n} rows)" for v, n in counts.items())))
    return out


def _runner_images(folder: Path, figures: list[Figure]) -> list[Image]:
    """PNGs already in the report folder that are not generated figures (samples, difficulty maps, ...)."""
    own = {f.png.name for f in figures}
    pngs = [p for p in sorted(folder.glob("*.png")) if not p.name.startswith((".", PREFIX)) and p.name not in own]

    def rank(p: Path) -> tuple[int, str]:
        hits = [i for i, pre in enumerate(IMAGE_ORDER) if p.name.startswith(pre)]
        return (hits[0] if hits else len(IMAGE_ORDER), p.name)

    return [Image(p.stem.replace("_", " "), p.name, p) for p in sorted(pngs, key=rank)]


def _skipped(results: Path) -> list[TextTable | Figure | Image]:
    """The table of optional models the last run skipped (``SKIPPED_FILE``), or nothing."""
    path = results / SKIPPED_FILE
    if not path.is_file():
        return []
    try:
        notes = json.loads(path.read_text())["skipped"]
        rows = tuple((str(n["model"]), str(n["cells"]), f"skipped: {n['reason']}") for n in notes)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise PfbenchError(f"{path}: unreadable ({err}); rerun `pfbench run` to rewrite it") from None
    return [TextTable("", ("model", "cells", "why"), rows,
                      "Optional models (optional: true) whose files were missing: their cells were not run.")]


@dataclass(frozen=True)
class _Doc:
    suite: str
    generated: str
    provenance: list[tuple[str, str]]
    n_rows: int
    sections: list[tuple[str, list[TextTable | Figure | Image]]]


def _markdown(doc: _Doc) -> str:
    lines = [f"# pfbench report: {doc.suite}", "",
             f"> Generated by `pfbench report {doc.suite}` at {doc.generated} from {doc.n_rows} result rows. "
             "Do not edit by hand: regenerate it.", ""]
    lines += [f"- **{k}**: {v}" for k, v in doc.provenance] + [""]
    for title, items in doc.sections:
        lines += [f"## {title}", ""]
        for item in items:
            if isinstance(item, TextTable):
                lines.append(item.markdown())
            else:
                path = item.png if isinstance(item, Figure) else item.path
                lines += [f"![{item.title}]({path.name})", "", f"_{item.caption}_", ""]
    return "\n".join(lines).rstrip() + "\n"


def _img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _html(doc: _Doc) -> str:
    esc = html.escape
    parts = [f"<h1>pfbench report: {esc(doc.suite)}</h1>",
             f'<p class="meta">Generated by <code>pfbench report {esc(doc.suite)}</code> at {esc(doc.generated)} '
             f"from {doc.n_rows} result rows. Do not edit by hand: regenerate it.</p>",
             '<ul class="meta">' + "".join(f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in doc.provenance) + "</ul>"]
    for title, items in doc.sections:
        parts.append(f"<h2>{esc(title)}</h2>")
        for item in items:
            if isinstance(item, TextTable):
                parts.append(item.html())
            else:
                path = item.png if isinstance(item, Figure) else item.path
                parts.append(f"<figure>{_img_tag(path, item.title)}<figcaption>{esc(item.caption)}</figcaption>"
                             "</figure>")
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="generator" content="pfbench report">\n<title>pfbench report: {esc(doc.suite)}</title>\n'
            f"<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


AGREEMENT = "Agreement with the full study"
FIRST = ("Claims", "Equal steps", AGREEMENT)  # sections of the claims, before the result tables


def _agreement(table: pd.DataFrame, results_root: Path, full: FullStudy, suite_name: str) -> TextTable:
    """The quick suite's claim table beside the full study's (its sibling results folder; said when missing)."""
    src = Path(results_root) / full.suite
    rows = read_results(src, full.suite) if src.is_dir() else pd.DataFrame()
    other = evaluate_claims(rows, trends=full.trends) if not rows.empty else None
    return agreement_table(table, other, full.suite, suite_name)


def report(suite_name: str, results_root: Path = Path("results"), reports_root: Path = Path("reports"),
           trends: tuple[str, ...] = (), docs: Path | None = None, headline: tuple[str, ...] = (),
           agree_with: FullStudy | None = None) -> Path:
    """Writes ``<reports_root>/<suite>/index.md`` and ``index.html`` (+ figure PNG/PDF) from the suite's Parquet.

    Args:
        suite_name: the suite's ``name`` (folder under ``results_root``).
        results_root: root of ``<suite>/*.parquet`` result files.
        reports_root: root of report folders.
        trends: claims whose trend with NFE is tested (the suite's ``claims.trends``).
        headline: the main table's metrics (the suite's ``report.headline``, else its ``metrics:``); empty: every
            metric that is no breakdown of another (``results_view.headline_metrics``).
        docs: a folder of Markdown documents: the claims block between ``<!-- pfbench:claims SUITE -->``
            markers (and the equal-steps block between ``<!-- pfbench:steps SUITE -->`` markers) in any of them
            is rewritten from the results (``claim_tables.update_docs``).
        agree_with: the full study a quick suite's verdicts are set beside (the suite's ``claims.agree_with``;
            its results are the folder of that name under ``results_root``): section "Agreement with the full
            study" (``agreement``).

    Returns:
        Path of ``index.md``; ``index.html`` is written next to it.
    """
    src = Path(results_root) / suite_name
    rows = read_results(src, suite_name) if src.is_dir() else pd.DataFrame()
    if rows.empty:
        raise PfbenchError(f"no result rows in {src}: run `pfbench run suites/{suite_name}.yaml` first "
                           f"(or pass --results to where the results are)")
    out = Path(reports_root) / suite_name
    warning = instance_warning(rows, str(src))
    if warning:
        sys.stderr.write(f"warning: {warning}\n")
    summary = summarize(rows[~rows["kind"].isin(["curve", "cell"])])  # curves are per step: figure only
    replicated = rows["kind"].isin(["cell", "curve"])
    figures = make_figures(pd.concat([rows[~replicated], pool_replicates(rows[replicated])[0]]), out)  # pooled
    table = evaluate_claims(rows, trends=trends)
    claims = validity_sections(rows, out, table)  # the paper's claims, paired over seeds (none without their models)
    if docs is not None and not table.empty:
        update_docs(docs, suite_name, claims_block(table, suite_name, rows))
        update_docs(docs, suite_name, steps_block(table, rows, suite_name), kind="steps")
    if agree_with is not None:
        claims.append((AGREEMENT, [_agreement(table, results_root, agree_with, suite_name)]))
    results = results_sections(rows[rows["kind"] == "cell"], headline)
    appendix = [s for s in (*claims, *results) if s[0].startswith(APPENDIX)]
    sections: list[tuple[str, list[TextTable | Figure | Image]]] = []
    if warning:
        sections.append(("Warning", [TextTable("", ("warning",), ((warning,),))]))
    expected = read_expected(src)  # the suite's published numbers (``expected:``), stored by ``pfbench run``
    if expected:
        sections.append(("Published vs measured", [published_table(rows, expected)]))
    sections += [s for s in claims if s[0] in FIRST]  # claims first, where the suite has them
    sections += [s for s in results if not s[0].startswith(APPENDIX)]
    if (rows["kind"] == "cell").any():
        sections.append(("Which configuration at which budget (Pareto front)", pareto_section(rows, out)))
    sections.append(("Skipped cells", _skipped(src)))
    if (summary["kind"] == "reference").any():
        sections.append(("Reference values", [long_table(
            summary, "reference", "", REFERENCE_NOTE, roles=REFERENCE_ROLES)]))
    sections += [s for s in claims if s[0] not in (*FIRST, *(t for t, _ in appendix))]
    sections.append(("Figures", list(figures)))
    if (summary["kind"] == "diagnostic").any():
        sections.append(("Diagnostics", [long_table(summary, "diagnostic", "")]))
    images = _runner_images(out, figures)
    if images:
        sections.append(("Samples and difficulty maps", list(images)))
    sections += appendix
    sections = [(t, items) for t, items in sections if items]
    header = _provenance(rows) + ([("claims: multiple comparisons", METHOD)] if not table.empty else [])
    doc = _Doc(suite_name, dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), header, len(rows), sections)
    atomic_write_text(out / "index.html", _html(doc))
    return atomic_write_text(out / "index.md", _markdown(doc))
