"""``pfbench hetero``: views across several suites' results (one study spread over suites)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pfbench.cli.common import console


def hetero(
    suites: Annotated[list[str] | None, typer.Argument(help="suite names (results/<suite>), one per heterogeneity "
                                                            "level; default: validity_hetero_low, _mid, _high")] = None,
    results: Annotated[Path, typer.Option(help="results root")] = Path("results"),
    reports: Annotated[Path, typer.Option(help="reports root (writes REPORTS/hetero)")] = Path("reports"),
    metric: Annotated[str, typer.Option(help="metric whose gain is compared")] = "fd_embedded",
    docs: Annotated[Path, typer.Option(help="docs folder: the block between <!-- pfbench:hetero validity_hetero --> "
                                            "markers in any of its Markdown files is rewritten (default suites and metric "
                                            "only)")] = Path("docs"),
) -> None:
    """Write reports/hetero/index.md: does the adaptive samplers' gain over euler_pf grow with heterogeneity?

    Per level: the per-patch difficulty spread (data and model side), the paired gains of dual_loop and
    look_ahead over euler_pf at equal NFE and equal steps, and the trend of the gain over the levels.
    """
    from pfbench import PfbenchError
    from pfbench.report.claim_tables import update_docs
    from pfbench.report.hetero import HETERO_BLOCK, HETERO_SUITES, hetero_block, hetero_report
    from pfbench.results import read_results

    levels = []
    for name in suites or HETERO_SUITES:
        folder = results / name
        if not folder.is_dir():
            raise PfbenchError(f"hetero: no results folder {folder}; run `pfbench run suites/{name}.yaml` first")
        levels.append((name, read_results(folder, suite=name)))
    md = hetero_report(levels, reports / "hetero", metric)
    console.print(f"wrote {md}")
    if suites is None and metric == "fd_embedded":  # the documented study: the three levels, FD
        for path in update_docs(docs, HETERO_BLOCK, hetero_block(levels, metric), kind="hetero"):
            console.print(f"updated {path}")
