"""The quality-vs-cost Pareto front: uncertainty-aware dominance, best configuration per budget, outputs."""

from __future__ import annotations

import pandas as pd
import pytest
from scipy import stats

from pfbench import PfbenchError
from pfbench.report.pareto import DOMINATED, FRONT, TIED, best_per_budget, difference, pareto
from pfbench.report.pareto_report import write_pareto
from pfbench.results import write_rows


def _rows(configs: dict[str, tuple[int, dict[int, float]]], model: str = "pf") -> pd.DataFrame:
    """One cell row per (sampler, seed): ``configs`` maps sampler -> (NFE, {seed: fd})."""
    out = []
    for sampler, (nfe, values) in configs.items():
        for seed, v in values.items():
            out.append({"suite": "s", "part": f"cell-{sampler}-{seed}", "kind": "cell", "model": model,
                        "sampler": sampler, "variant": "", "nfe_budget": nfe, "nfe_used": nfe, "gflops": nfe * 2.0,
                        "wall_s": 1.0, "seed": seed, "num_samples": 100, "cfg_scale": 1.0, "metric": "fd_embedded",
                        "value": v, "higher_is_better": False})
    return pd.DataFrame(out)


CONFIGS = {
    "cheap": (8, {0: 1.0, 1: 1.1, 2: 0.9}),
    "worse": (16, {0: 2.0, 1: 2.15, 2: 1.9}),  # costs more and is clearly worse than cheap: dominated
    "better": (16, {0: 0.95, 1: 1.2, 2: 0.8}),  # better mean than cheap: on the front
    "noisy": (16, {0: 1.0, 1: 3.0, 2: 0.6}),  # worse mean than cheap, but not significantly: tied
}


def test_dominance_needs_a_significant_paired_difference() -> None:
    front = pareto(_rows(CONFIGS), "fd_embedded", "nfe")
    status = dict(zip(front.points["sampler"], front.points["status"], strict=True))
    assert status == {"cheap": FRONT, "worse": DOMINATED, "better": FRONT, "noisy": TIED}
    by = dict(zip(front.points["sampler"], front.points["by"], strict=True))
    assert "cheap" in by["worse"] and by["noisy"] != ""
    label = dict(zip(front.points["sampler"], front.points["label"], strict=True))
    _, p, test = difference(front.values[label["cheap"]], front.values[label["worse"]], higher=False)
    assert test == "paired t" and p < 0.05


def test_difference_pairs_by_seed_and_falls_back_to_welch() -> None:
    a = {(-1.0, 0): 1.0, (-1.0, 1): 1.2, (-1.0, 2): 0.9}
    b = {(-1.0, 0): 1.5, (-1.0, 1): 1.6, (-1.0, 2): 1.45}
    diff, p, test = difference(a, b, higher=False)
    assert test == "paired t" and diff == pytest.approx(1.5167 - 1.0333, abs=1e-3)
    assert p == pytest.approx(stats.ttest_rel([1.0, 1.2, 0.9], [1.5, 1.6, 1.45]).pvalue)
    c = {(-1.0, 5): 1.5, (-1.0, 6): 1.6, (-1.0, 7): 1.45}  # other seeds: unpaired
    _, p, test = difference(a, c, higher=False)
    assert test == "Welch t"
    assert p == pytest.approx(stats.ttest_ind([1.0, 1.2, 0.9], [1.5, 1.6, 1.45], equal_var=False).pvalue)
    _, p, test = difference({(-1.0, 0): 1.0}, b, higher=False)
    assert test == "none" and p != p  # one observation: nothing to test


def test_best_per_budget_names_best_and_runner_up() -> None:
    front = pareto(_rows(CONFIGS), "fd_embedded", "nfe")
    table = best_per_budget(front)
    by_budget = {r[0]: r for r in table.rows}
    assert set(by_budget) == {"8", "16"}
    assert "cheap" in by_budget["8"][1] and by_budget["8"][4] == "—"  # alone at 8
    assert "better" in by_budget["16"][1] and "cheap" in by_budget["16"][4]
    assert by_budget["16"][7].startswith("no")  # 0.983 vs 1.0 over 3 noisy seeds


def test_training_seeds_pool_into_one_configuration() -> None:
    rows = pd.concat([_rows({"euler_pf": (8, {s: 1.0 + 0.1 * s})}, model=f"pf@s{s}") for s in range(3)])
    front = pareto(rows, "fd_embedded", "nfe")
    assert len(front.points) == 1 and int(front.points["n"].iloc[0]) == 3


def test_unknown_cost_or_metric_is_a_user_error() -> None:
    with pytest.raises(PfbenchError, match="cost"):
        pareto(_rows(CONFIGS), "fd_embedded", "joules")
    with pytest.raises(PfbenchError, match="metric"):
        pareto(_rows(CONFIGS), "fid", "nfe")
    with pytest.raises(PfbenchError, match="steps"):  # no fixed-steps axis in these rows
        pareto(_rows(CONFIGS), "fd_embedded", "steps")


def test_write_pareto_reads_result_folders(tmp_path) -> None:
    folder = tmp_path / "results" / "s"
    for part, rows in _rows(CONFIGS).groupby("part"):  # one file per unit: a part's rows name their file
        write_rows(folder / f"{part}.parquet", rows.to_dict("records"))
    md = write_pareto([folder], tmp_path / "out", cost="gflops")
    text = md.read_text()
    assert "Best configuration per budget" in text and "Pareto front" in text
    assert (tmp_path / "out" / "pareto_fd_embedded_gflops.png").stat().st_size > 0
