"""Reports read at a glance: committed results rendered into a temporary folder, then checked for what a reader
sees first (no table wider than 12 columns before the breakdowns and appendices, no legend over 12 entries, no
"± NA", every HTML table in a scrolling container), plus the pooling of training-seed instances on a small frame.

Rendering all seven committed reports takes about 6 minutes on 2 CPU cores (validity alone over 2), so the
default run renders one representative report (embedded_quick: claims, results, references, figures, samples;
about 25 s) and the ``slow`` test renders the other six (t2i_smoke: breakdowns and floors; validity: pooled
training seeds, faceted figures). Pooling, breakdowns and legend chunks are also checked on small frames.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.figure
import numpy as np
import pandas as pd
import pytest

from pfbench import PfbenchError
from pfbench.report.html import report
from pfbench.report.plots import MAX_LEGEND, legend_chunks
from pfbench.report.pooling import pool_replicates
from pfbench.report.results_view import headline_metrics, results_sections

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ("embedded_quick", "thresholds", "repa_embedded", "t2i_smoke", "validity", "validity_r32",
             "validity_shipped", "validity_quick")
QUICK = ("embedded_quick",)
MAX_COLUMNS = 12
# Sections a reader meets before the breakdowns and appendices.
MAIN_END = re.compile(r"^## (Breakdowns|Appendix|Skipped|Reference values|Validity figures|Figures)", re.M)


def _render(name: str, out: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str, dict[str, int]]:
    """(index.md, index.html, {figure file: most entries in one of its legends}) of ``name`` rendered into ``out``."""
    legends: dict[str, int] = {}
    save = matplotlib.figure.Figure.savefig

    def counting(fig: matplotlib.figure.Figure, fname: object, *args: object, **kwargs: object) -> object:
        boxes = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
        legends[Path(str(fname)).name] = max((len(b.get_texts()) for b in boxes), default=0)
        return save(fig, fname, *args, **kwargs)

    from pfbench.suite.parse import load_suite  # imports torch: only where needed

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", counting)
    spec = load_suite(ROOT / "suites" / f"{name}.yaml")
    md = report(name, results_root=ROOT / "results", reports_root=out, trends=tuple(spec.claims.trends),
                headline=spec.headline())
    return md.read_text(), md.with_name("index.html").read_text(), legends


def _tables(markdown: str) -> list[int]:
    """Column counts of the Markdown tables (the header row of each)."""
    lines = markdown.splitlines()
    return [ln.count(" | ") + 1 for i, ln in enumerate(lines[:-1])
            if ln.startswith("| ") and lines[i + 1].startswith("|---")]


def _check(name: str, md: str, html: str, legends: dict[str, int]) -> None:
    first = MAIN_END.search(md)
    main = md[:first.start()] if first else md
    assert "## Results" in main, f"{name}: no results table before the breakdowns"
    wide = [n for n in _tables(main) if n > MAX_COLUMNS]
    assert not wide, f"{name}: main-section tables with {wide} columns (> {MAX_COLUMNS})"
    assert "± NA" not in md and "± NA" not in html, f"{name}: a single-seed cell printed as '± NA'"
    big = {f: n for f, n in legends.items() if n > MAX_LEGEND}
    assert legends and not big, f"{name}: legends over {MAX_LEGEND} entries: {big}"
    assert html.count("<table>") == html.count('<div class="scroll"><table>') > 0, f"{name}: a table not scrolling"
    assert re.search(r"\.scroll\{overflow-x:auto\}", html)
    if "## Claims" in md:
        assert md.index("## Claims") < md.index("## Results"), f"{name}: claims after the results"


@pytest.mark.parametrize("name", QUICK)
def test_committed_report_reads_at_a_glance(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _check(name, *_render(name, tmp_path, monkeypatch))


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in COMMITTED if n not in QUICK])
def test_every_committed_report_reads_at_a_glance(name: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _check(name, *_render(name, tmp_path, monkeypatch))


def _seeded_cells() -> pd.DataFrame:
    """pf trained with seeds 0..2 (instance pf@sK samples with seed K, two metrics) and sit without seeds."""
    rows = []
    for k, (fd, acc) in enumerate([(4.0, 0.5), (5.0, 0.6), (6.0, 0.7)]):
        for metric, v, hib in (("fd_embedded", fd, False), ("class_acc", acc, True), ("class_acc_shuffled", 0.1, True)):
            rows.append({"kind": "cell", "model": f"pf@s{k}", "model_id": f"id{k}", "sampler": "euler_pf",
                         "cfg_scale": 1.0, "nfe_budget": 8, "steps": 8, "seed": k, "metric": metric, "value": v,
                         "higher_is_better": hib, "nfe_used": 8.0, "gflops": 0.2, "wall_s": 1.0 + k})
    for s, fd in ((0, 7.0), (1, 9.0)):
        rows.append({"kind": "cell", "model": "sit", "model_id": "sit", "sampler": "euler", "cfg_scale": 1.0,
                     "nfe_budget": 8, "steps": 8, "seed": s, "metric": "fd_embedded", "value": fd,
                     "higher_is_better": False, "nfe_used": 8.0, "gflops": 0.2, "wall_s": 1.0})
    return pd.DataFrame(rows).astype({"nfe_budget": "Int64", "steps": "Int64"})


def test_training_seed_instances_pool_into_one_configuration() -> None:
    pooled, names = pool_replicates(_seeded_cells())
    assert names == {"pf": ["pf@s0", "pf@s1", "pf@s2"]}
    pf = pooled[(pooled["model"] == "pf") & (pooled["metric"] == "fd_embedded")]
    assert sorted(pf["seed"]) == [0, 1, 2] and pf["model_id"].isna().all()
    assert np.isclose(pf["value"].astype(float).mean(), 5.0) and np.isclose(pf["wall_s"].astype(float).mean(), 2.0)
    sections = dict(results_sections(_seeded_cells(), declared=("fd_embedded", "class_acc")))
    main = sections["Results"][0]
    assert main.columns[-2:] == ("fd_embedded ↓", "class_acc ↑") and "training seeds" in main.columns
    pf_row = next(r for r in main.rows if r[0] == "pf")
    assert pf_row[-2].startswith("5 ± 1\nt[") and "pf pools pf@s0, pf@s1, pf@s2" in main.note
    assert [t.title for t in sections["Breakdowns"]] == ["floors (shuffled prompts)"]
    assert sections["Breakdowns"][0].columns[-1] == "class_acc_shuffled (floor)"
    appendix = sections["Appendix: per-instance results"][0]
    assert {r[0] for r in appendix.rows} == {"pf@s0", "pf@s1", "pf@s2", "sit"}
    single = next(r for r in appendix.rows if r[0] == "pf@s0")
    assert "±" not in "".join(single) and "NA" not in single[-1]  # one seed: a plain value


def test_no_pooling_without_training_seeds() -> None:
    cells = _seeded_cells()
    plain = cells[cells["model"] == "sit"]
    assert pool_replicates(plain)[1] == {}
    assert [t for t, _ in results_sections(plain)] == ["Results", "Breakdowns"]


def test_headline_default_leaves_out_breakdowns() -> None:
    present = ["attr_acc", "attr_acc_color", "attr_acc_shuffled", "class_acc", "clip_embedded", "fd_embedded",
               "is", "is_std"]
    assert headline_metrics(present) == ["attr_acc", "class_acc", "clip_embedded", "fd_embedded", "is"]
    assert headline_metrics(present, ("fd_embedded", "class_acc", "kid")) == ["fd_embedded", "class_acc"]
    assert headline_metrics(present, ("attr_acc_color",)) == ["attr_acc", "class_acc", "clip_embedded",
                                                               "fd_embedded", "is"]  # a breakdown is no headline


def test_legend_chunks_keep_models_together_and_cap_the_size() -> None:
    labels = [f"m{i} · s{j}" for i in range(5) for j in range(5)] + [f"big · s{j}" for j in range(30)]
    chunks = legend_chunks(labels)
    assert all(len(c) <= MAX_LEGEND for c in chunks) and sum(map(len, chunks)) == len(labels)
    assert all(len({lab.split(" · ")[0] for lab in c}) == 1 for c in chunks if any("big" in lab for lab in c))
    assert legend_chunks(labels[:3]) == [labels[:3]]


def test_report_headline_is_parsed_strictly(tmp_path: Path) -> None:
    from pfbench.suite.parse import load_suite

    text = (ROOT / "suites" / "repa_embedded.yaml").read_text()  # no defaults: loads from anywhere
    good = tmp_path / "good.yaml"
    good.write_text(text + "\nreport:\n  headline: [class_acc]\n")
    assert load_suite(good).headline() == ("class_acc",)
    for bad, match in (("report:\n  headline: [kid]\n", "report.headline"), ("report:\n  headlines: [fd_embedded]\n",
                                                                               "headlines")):
        path = tmp_path / "bad.yaml"
        path.write_text(text + "\n" + bad)
        with pytest.raises(PfbenchError, match=match):
            load_suite(path)


def test_sample_grid_names_its_cell_and_prompts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pfbench.report import images
    from pfbench.suite.runner import grid_title
    from pfbench.suite.spec import RunSpec, SamplerSpec

    cell = RunSpec("s", "pf_t2i", SamplerSpec("look_ahead", {"r": 2.0}), 16, 0, 8, 4.0, cfg_interval=(0.1, 0.9))
    title = grid_title(cell)
    assert title.splitlines() == ["pf_t2i", "look_ahead r=2.0", "nfe=16, cfg 4 in [0.1, 0.9]"]
    seen: dict[str, list[str]] = {}

    def keep(fig: matplotlib.figure.Figure, path: Path, **_: object) -> Path:
        seen["titles"] = [ax.get_title() for ax in fig.axes]
        seen["rows"] = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
        return path

    monkeypatch.setattr(images, "save_figure", keep)
    imgs = np.zeros((10, 4, 4, 3), dtype=np.uint8)
    prompts = [f"a red circle number {i}" for i in range(10)]
    images.sample_grid(tmp_path / "g.png", [(title, imgs, np.arange(10)), ("sit\neuler\nnfe=8, cfg 1", imgs,
                                                                           np.arange(10))],
                       [str(i) for i in range(10)], prompts=[prompts, None])
    assert seen["rows"] == [title, "sit\neuler\nnfe=8, cfg 1"]
    assert seen["titles"][0].replace("\n", " ") == "a red circle number 0" and seen["titles"][10] == "0"
