"""``pfbench tune``'s report: tuned vs default per study, on the tuning seeds and on held-out seeds, and the Pareto
front of every sampler before and after tuning (held-out seeds only). Plain data in, Markdown and figures out.

The gap between a tuned configuration's score on the tuning seeds and on the held-out seeds is the optimism of
picking the best of many noisy trials (the winner's curse): only the held-out numbers are estimates.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pfbench.io import atomic_write_text
from pfbench.report.pareto import ALPHA, best_per_budget, difference, pareto, significant
from pfbench.report.pareto_report import pareto_figure
from pfbench.report.stats import clip_interval, t_interval
from pfbench.report.tables import TextTable, arrow, fmt_num


def _mean_iv(values: dict[int, float], metric: str) -> str:
    x = np.array(list(values.values()), dtype=np.float64)
    if not x.size:
        return "—"
    lo, hi = clip_interval(metric, *t_interval(x))
    return fmt_num(x.mean()) + ("" if not np.isfinite(lo) else f" [{fmt_num(lo)}, {fmt_num(hi)}]")


def _mean(values: dict[int, float]) -> float:
    return float(np.mean(list(values.values()))) if values else float("nan")


def _keyed(values: dict[int, float]) -> dict[tuple[float, int], float]:
    return {(-1.0, int(s)): v for s, v in values.items()}


def tuned_vs_default(studies: Sequence[dict[str, Any]], metric: str, higher: bool) -> TextTable:
    """One row per study: the configurations, the tuning-seed means, the held-out means with their interval, the
    held-out gain of tuning (paired over seeds) and the optimism (tuned on tuning seeds − on held-out seeds)."""
    sign = 1.0 if higher else -1.0
    rows = []
    for s in studies:
        gain, p, test = difference(_keyed(s["tuned_heldout"]), _keyed(s["default_heldout"]), higher)
        same = s["tuned"] == s["default"]
        verdict = "— (default kept)" if same else (f"{fmt_num(gain, '.3g')}, p={fmt_num(p, '.2g')} "
                                                   f"({'significant' if significant(p) else 'not significant'})")
        optimism = sign * (_mean(s["tuned_tuning"]) - _mean(s["tuned_heldout"]))
        rows.append((s["model"], s["sampler"], str(s["nfe"]), s["default"], s["tuned"], str(s["trials"]),
                     fmt_num(_mean(s["default_tuning"])), fmt_num(_mean(s["tuned_tuning"])),
                     _mean_iv(s["default_heldout"], metric), _mean_iv(s["tuned_heldout"], metric), verdict,
                     fmt_num(optimism, ".3g")))
    return TextTable(
        "Tuned vs default",
        ("model", "sampler", "NFE", "default", "tuned", "trials", f"tuning: default {arrow(higher)}", "tuning: tuned",
         "held-out: default", "held-out: tuned", "held-out gain (paired)", "optimism"),
        tuple(rows),
        f"{metric} ({arrow(higher)} better), means over seeds; held-out: mean [95% Student t interval, clipped to the metric's range]. Gain: tuned "
        f"better than default by (> 0 favours tuned), paired t-test over the held-out seeds, significant at p < "
        f"{ALPHA:g}. Optimism: how much better the tuned configuration looked on the tuning seeds it was picked on "
        "than it is on held-out seeds (the winner's curse; > 0: it looked better than it is).")


def tuning_report(studies: Sequence[dict[str, Any]], heldout: pd.DataFrame, out_dir: Path, metric: str,
                  higher: bool, header: Sequence[str]) -> Path:
    """Writes ``out_dir/tune.md`` (and the before/after Pareto figures); returns its path."""
    lines = ["# pfbench tune", "", *header, "", tuned_vs_default(studies, metric, higher).markdown()]
    for title, rows, name in (("before tuning (every sampler at its defaults)", heldout[heldout["before"]],
                               "tune_pareto_before"),
                              ("after tuning (defaults and tuned configurations)", heldout, "tune_pareto_after")):
        front = pareto(rows, metric, "nfe")
        fig = pareto_figure(front, Path(out_dir), name)
        lines += [f"## Pareto front on the held-out seeds, {title}", "", f"![{fig.title}]({fig.png.name})", "",
                  f"_{fig.caption}_", "", best_per_budget(front).markdown()]
    return atomic_write_text(Path(out_dir) / "tune.md", "\n".join(lines))
