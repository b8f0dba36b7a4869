"""Sampler-parameter sweep figures and ``paper_figures`` from synthetic Parquet (no torch in the report stage)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pfbench import PfbenchError
from pfbench.report.figures import FIGURES, make_figures
from pfbench.results import read_results, write_rows

PNG_MAGIC, PDF_MAGIC = b"\x89PNG\r\n\x1a\n", b"%PDF-"


def _cell(model: str, sampler: str, nfe: int, seed: int, fd: float, **args: object) -> list[dict[str, object]]:
    sargs = json.dumps({"steps": nfe // max(1, int(args.get("n_inner", 1))), **args}, sort_keys=True)
    return [{"suite": "syn", "kind": "cell", "model": model, "sampler": sampler, "sampler_args": sargs,
             "nfe_budget": nfe, "nfe_used": nfe, "forwards": nfe, "gflops": 0.5 * nfe, "seed": seed,
             "cfg_scale": 1.0, "metric": m, "value": v, "higher_is_better": h}
            for m, v, h in (("fd_embedded", fd, False), ("class_acc", 1 - fd / 100, True))]


def _write(folder: Path, rows: list[dict[str, object]], name: str) -> None:
    write_rows(folder / f"{name}.parquet", rows)


def _suite(folder: Path, sweep: bool, train: bool = False) -> Path:
    """sit/euler, pf/euler_pf, pf/dual_loop (+ a p sweep at NFE 16), pf/look_ahead_random; 3 seeds, NFE 8/16."""
    rng = np.random.default_rng(0)
    for seed in range(3):
        for nfe in (8, 16):
            for model, sampler, base, args in (("sit", "euler", 60.0, {}), ("pf", "euler_pf", 50.0, {}),
                                               ("pf", "dual_loop", 40.0, {"p": 0.4, "n_inner": 4}),
                                               ("pf", "look_ahead_random", 48.0, {"p": 0.4, "r": 1.4})):
                rows = _cell(model, sampler, nfe, seed, base * 8 / nfe + rng.normal(0, 0.5), **args)
                if train:
                    for r in rows:
                        r["train_timesteps"] = "global_uniform" if model == "sit" else "ltg"
                _write(folder, rows, f"{model}-{sampler}-{nfe}-{seed}")
        if sweep:
            for p in (0.2, 0.6, 0.8):
                _write(folder, _cell("pf", "dual_loop", 16, seed, 20 + 30 * p + rng.normal(0, 0.5), p=p, n_inner=4),
                       f"sweep-{p}-{seed}")
    _write(folder, [{"suite": "syn", "kind": "reference", "model": "real_train", "metric": "fd_embedded",
                     "value": 2.0, "higher_is_better": False}], "reference")
    return folder


def _valid(path: Path) -> None:
    head = path.read_bytes()[:8]
    assert head.startswith(PNG_MAGIC if path.suffix == ".png" else PDF_MAGIC), path
    assert path.stat().st_size > 1000, path


def test_sweep_figure_drawn_only_when_p_varies(tmp_path: Path) -> None:
    assert {"arg_p", "arg_n_inner", "arg_r"} <= set(FIGURES)
    swept = read_results(_suite(tmp_path / "a", sweep=True))
    figs = {f.name: f for f in make_figures(swept, tmp_path / "out_a")}
    assert "fig_arg_p" in figs
    assert "fig_arg_n_inner" not in figs and "fig_arg_r" not in figs  # n_inner and r never vary within a cell
    _valid(figs["fig_arg_p"].png)
    _valid(figs["fig_arg_p"].pdf)
    flat = read_results(_suite(tmp_path / "b", sweep=False))
    assert FIGURES["arg_p"](flat, tmp_path / "out_b") is None
    assert not (tmp_path / "out_b" / "fig_arg_p.png").exists()


def test_sweep_averages_seeds_per_p(tmp_path: Path) -> None:
    from pfbench.report.figures import sampler_arg
    from pfbench.report.stats import summarize

    rows = read_results(_suite(tmp_path / "r", sweep=True))
    cells = rows[(rows["kind"] == "cell") & (rows["sampler"] == "dual_loop") & (rows["nfe_budget"] == 16)]
    p = sampler_arg(cells, "p")
    assert sorted(p.dropna().unique().tolist()) == [0.2, 0.4, 0.6, 0.8]
    assert sampler_arg(cells.assign(sampler_args="not json"), "p").isna().all()
    s = summarize(cells.assign(arg_p=p), ("metric", "arg_p"))
    fd = s[s["metric"] == "fd_embedded"].set_index("arg_p")
    assert (fd["n"] == 3).all()
    assert float(fd.loc[0.8, "mean"]) == pytest.approx(20 + 30 * 0.8, abs=1.5)


def _paper(results: list[Path], out: Path) -> list[Path]:
    """Runs paper_figures in a fresh interpreter that must not import torch; returns the paths it wrote."""
    code = ("import sys, json; from pathlib import Path; from pfbench.report.paper import paper_figures; "
            f"p = paper_figures([Path(x) for x in {[str(r) for r in results]!r}], Path({str(out)!r})); "
            "assert 'torch' not in sys.modules, 'paper_figures imported torch'; print(json.dumps([str(x) for x in p]))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return [Path(x) for x in json.loads(run.stdout.strip().splitlines()[-1])]


def test_paper_figures_tables_and_files(tmp_path: Path) -> None:
    res = _suite(tmp_path / "res", sweep=True)
    written = _paper([res], tmp_path / "paper")
    names = {p.name for p in written}
    assert {"table_main.md", "table_main.tex", "paper_nfe.png", "paper_nfe.pdf", "paper_samplers.png",
            "paper_samplers.pdf"} <= names
    assert "paper_train_timesteps.png" not in names  # no training-sampler column: skipped
    for p in written:
        assert p.is_file()
        if p.suffix in (".png", ".pdf"):
            _valid(p)
    tex = (tmp_path / "paper" / "table_main.tex").read_text()
    assert "\\begin{tabular}" in tex and "\\end{tabular}" in tex
    assert r"euler\_pf" in tex and r"pf & dual\_loop & p=0.2 &" in tex  # the sweep is split, not pooled
    rows = read_results(res)
    want = rows[(rows["model"] == "sit") & (rows["nfe_budget"] == 8) & (rows["metric"] == "fd_embedded")]["value"]
    mean, std = float(want.astype(float).mean()), float(want.astype(float).std(ddof=1))
    assert f"{mean:.4g} $\\pm$ {std:.2g}" in tex
    md = (tmp_path / "paper" / "table_main.md").read_text()
    assert f"| sit | euler | — | {mean:.4g} ± {std:.2g} |" in md  # labelled columns: model, sampler, variant


def test_paper_training_sampler_ablation_when_present(tmp_path: Path) -> None:
    written = _paper([_suite(tmp_path / "res", sweep=False, train=True)], tmp_path / "paper")
    names = {p.name for p in written}
    assert {"paper_train_timesteps.png", "paper_train_timesteps.pdf"} <= names
    _valid(tmp_path / "paper" / "paper_train_timesteps.pdf")


def test_paper_skips_sampler_ablation_with_one_sampler(tmp_path: Path) -> None:
    from pfbench.report.paper import paper_figures

    res = tmp_path / "one"
    for seed in range(2):
        _write(res, _cell("pf", "euler_pf", 8, seed, 10.0 + seed), f"c{seed}")
    names = {p.name for p in paper_figures([res], tmp_path / "paper")}
    assert "table_main.tex" in names and "paper_samplers.png" not in names


def test_paper_without_cells_is_a_user_error(tmp_path: Path) -> None:
    from pfbench.report.paper import paper_figures

    (tmp_path / "empty").mkdir()
    with pytest.raises(PfbenchError, match="no cell rows"):
        paper_figures([tmp_path / "empty"], tmp_path / "out")


# ------------------------------------------------------------------ every cell reaches the figures
def test_paper_main_table_shows_every_cell(tmp_path: Path, cell_grid: Any) -> None:
    from pfbench.report.paper import paper_figures

    paper_figures([cell_grid.write(tmp_path / "res")], tmp_path / "paper")
    md = (tmp_path / "paper" / "table_main.md").read_text()
    section = md.split("## fd_embedded", 1)[1]
    lines = [ln.strip("|").split(" | ") for ln in section.splitlines() if ln.startswith("| pf ")]
    head = next(ln for ln in section.splitlines() if ln.startswith("| model")).strip("| ").split(" | ")
    assert head == ["model", "train t-sampler", "sampler", "variant", "CFG interval", "NFE 16"]
    got = {(r[1].strip(), r[3].strip(), r[4].strip()): r[5].strip() for r in lines}
    assert len(lines) == 8 and set(got) == set(cell_grid.cells)
    for i, key in enumerate(cell_grid.cells):
        assert got[key].startswith(f"{cell_grid.fd_mean(i):.4g} ± ")


class _Spy:
    """Records what ``plots.save_panels`` is handed (title, caption, per-axes ticks) before saving it."""

    def __init__(self, save: object) -> None:
        self.save = save
        self.calls: list[dict[str, object]] = []

    def __call__(self, fig: object, out_dir: Path, name: str, title: str, caption: str) -> object:
        axes = [ax for ax in fig.axes if ax.get_visible()]  # type: ignore[attr-defined]
        self.calls.append({"name": name, "title": title, "caption": caption,
                           "xticks": [list(ax.get_xticks()) for ax in axes],
                           "ylabels": [[t.get_text() for t in ax.get_yticklabels()] for ax in axes]})
        return self.save(fig, out_dir, name, title, caption)  # type: ignore[operator]


def test_single_nfe_figure_is_a_dot_plot_with_every_cell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         cell_grid: Any) -> None:
    from pfbench.report import figures, plots

    spy = _Spy(plots.save_panels)
    monkeypatch.setattr(plots, "save_panels", spy)
    rows = read_results(cell_grid.write(tmp_path / "res"))
    assert figures.metric_vs_nfe(rows, tmp_path / "out") is not None
    call = spy.calls[-1]
    assert call["title"] == "Quality vs NFE budget (NFE budget 16)"
    assert "One NFE budget only (16)" in str(call["caption"]) and "Whiskers: 95% interval" in str(call["caption"])
    labels = call["ylabels"][0]  # type: ignore[index]
    assert len(labels) == 8 and len(set(labels)) == 8  # one row per cell, none merged
    assert "pf · train srm · dual_loop · p=0.6 · cfg in [0.1, 0.9]" in labels
    one_seed = read_results(cell_grid.write(tmp_path / "one", seeds=1))
    figures.metric_vs_nfe(one_seed, tmp_path / "out1")
    assert "One seed per point: no interval drawn" in str(spy.calls[-1]["caption"])  # no band promised


def test_nfe_axis_has_integer_ticks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pfbench.report import figures, plots

    spy = _Spy(plots.save_panels)
    monkeypatch.setattr(plots, "save_panels", spy)
    res = tmp_path / "res"
    for seed in range(2):
        for nfe in (12, 16):  # less than 2x apart: a linear axis
            _write(res, _cell("pf", "euler_pf", nfe, seed, 10.0 + seed + 8 / nfe), f"c{nfe}-{seed}")
    figures.metric_vs_nfe(read_results(res), tmp_path / "out")
    call = spy.calls[-1]
    assert call["xticks"] == [[12.0, 16.0], [12.0, 16.0]]  # not 12.5, 13.0, ...
    assert "Band: 95% interval" in str(call["caption"])
