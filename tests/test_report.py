"""Report stage: uncertainty statistics, Markdown/HTML report from synthetic Parquet, no torch, HTML in Chromium."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pfbench import PfbenchError
from pfbench.report.html import report
from pfbench.report.stats import bootstrap_ci, pooled_std, summarize
from pfbench.results import write_rows

REPO = Path(__file__).resolve().parents[1]
REPORT_PKG = REPO / "pfbench" / "report"


# ------------------------------------------------------------------ statistics
def _frame(groups: dict[str, np.ndarray]) -> pd.DataFrame:
    rows = [{"kind": "cell", "model": m, "sampler": "euler", "nfe_budget": 8, "cfg_scale": 1.0, "metric": "fd",
             "seed": i, "value": float(v), "higher_is_better": False}
            for m, vals in groups.items() for i, v in enumerate(vals)]
    return pd.DataFrame(rows).astype({"nfe_budget": "Int64", "value": "Float64"})


def test_summary_matches_numpy_and_marks_single_seed_na() -> None:
    rng = np.random.default_rng(0)
    groups = {"a": rng.normal(5, 2, 4), "b": rng.normal(1, 0.1, 7), "one": np.array([3.0])}
    s = summarize(_frame(groups)).set_index("model")
    for m in ("a", "b"):
        assert s.loc[m, "mean"] == pytest.approx(groups[m].mean())
        assert s.loc[m, "std"] == pytest.approx(np.std(groups[m], ddof=1))
        assert s.loc[m, "n"] == len(groups[m])
        assert s.loc[m, "ci_lo"] < s.loc[m, "mean"] < s.loc[m, "ci_hi"]
    assert s.loc["one", "n"] == 1 and s.loc["one", "mean"] == 3.0
    assert pd.isna(s.loc["one", "std"]) and pd.isna(s.loc["one", "ci_lo"]) and pd.isna(s.loc["one", "ci_hi"])


def test_t_interval_values_and_coverage_with_few_seeds() -> None:
    """With 3 seeds the Student-t interval covers at the nominal rate; the bootstrap one does not."""
    from pfbench.report.stats import SMALL_N, shown_interval, t_interval

    lo, hi = t_interval(np.array([1.0, 3.0]))  # mean 2, std √2, n 2: half width t_{1,.975} = 12.706
    assert (lo, hi) == pytest.approx((2 - 12.7062, 2 + 12.7062), abs=1e-3)
    assert all(np.isnan(t_interval(np.array([4.0]))))
    rng = np.random.default_rng(7)
    experiments, n, mu = 400, 3, 1.0
    s = summarize(_frame({f"e{i:03d}": rng.normal(mu, 0.5, n) for i in range(experiments)}), n_boot=400)
    t_rate = ((s["t_lo"] <= mu) & (mu <= s["t_hi"])).astype(bool).mean()
    boot_rate = ((s["ci_lo"] <= mu) & (mu <= s["ci_hi"])).astype(bool).mean()
    band = 3 * np.sqrt(0.95 * 0.05 / experiments)
    assert abs(t_rate - 0.95) <= band and boot_rate < 0.85, (t_rate, boot_rate)
    row = s.iloc[0]
    assert n < SMALL_N and shown_interval(row) == (row["t_lo"], row["t_hi"], "t")


def test_bootstrap_ci_covers_true_mean_at_nominal_rate() -> None:
    """200 synthetic experiments of 30 seeds each: the 95% interval covers the true mean ~95% of the time.

    (The percentile bootstrap under-covers with few seeds: ~0.74 at n=3, ~0.84 at n=5, ~0.89 at n=10.)
    """
    rng = np.random.default_rng(123)
    experiments, n, mu = 200, 30, 3.0
    groups = {f"e{i:03d}": rng.normal(mu, 2.0, n) for i in range(experiments)}
    s = summarize(_frame(groups))
    covered = ((s["ci_lo"] <= mu) & (mu <= s["ci_hi"])).astype(bool)
    rate = covered.mean()
    band = 3 * np.sqrt(0.95 * 0.05 / experiments)  # 3 binomial standard errors
    assert abs(rate - 0.95) <= band, f"coverage {rate:.3f} outside 0.95 ± {band:.3f}"
    # and the interval is about as wide as a normal-theory one (not e.g. the spread of single seeds)
    width = (s["ci_hi"] - s["ci_lo"]).astype(float).median()
    assert width == pytest.approx(2 * 1.96 * 2.0 / np.sqrt(n), rel=0.25)


def test_bootstrap_matches_numpy_percentile_formula() -> None:
    """The scipy.stats.bootstrap path against the percentile bootstrap written out in numpy with the same draws:
    resample indices (n_boot, n) from the generator, mean per resample, 2.5 / 97.5 % quantiles."""
    for seed, n in ((4, 25), (5, 3), (6, 12)):
        x = np.random.default_rng(seed).gamma(2.0, 1.5, n)  # skewed: the percentile interval is asymmetric
        idx = np.random.default_rng([9, seed]).integers(0, n, size=(2000, n))
        ref = np.quantile(x[idx].mean(axis=1), [0.025, 0.975])
        lo, hi = bootstrap_ci(x, n_boot=2000, rng=np.random.default_rng([9, seed]))
        assert (lo, hi) == pytest.approx(tuple(ref), rel=1e-12, abs=1e-12)
    assert bootstrap_ci(np.array([2.0, 2.0, 2.0])) == (2.0, 2.0)  # nothing to resample


def test_bootstrap_is_seeded_per_group() -> None:
    rng = np.random.default_rng(1)
    groups = {"a": rng.normal(0, 1, 5), "b": rng.normal(0, 1, 5)}
    full = summarize(_frame(groups)).set_index("model")
    alone = summarize(_frame({"a": groups["a"]})).set_index("model")
    assert full.loc["a", "ci_lo"] == alone.loc["a", "ci_lo"] and full.loc["a", "ci_hi"] == alone.loc["a", "ci_hi"]
    other = summarize(_frame(groups), seed=7).set_index("model")
    assert other.loc["a", "ci_lo"] != full.loc["a", "ci_lo"]


def test_pooled_std() -> None:
    a, b = np.array([1.0, 2.0, 4.0]), np.array([0.0, 3.0, 3.0, 7.0, 1.0])
    ref = np.sqrt((np.sum((a - a.mean()) ** 2) + np.sum((b - b.mean()) ** 2)) / (len(a) + len(b) - 2))
    assert pooled_std(a.std(ddof=1), 3, b.std(ddof=1), 5) == pytest.approx(ref)
    assert pooled_std(float("nan"), 1, 2.0, 4) == pytest.approx(2.0)  # one-seed side adds no information
    assert np.isnan(pooled_std(float("nan"), 1, float("nan"), 1))


# ------------------------------------------------------------------ report from synthetic Parquet
def _synthetic_suite(root: Path) -> None:
    res, rng = root / "results" / "syn", np.random.default_rng(0)
    for model, sampler, base, seeds in (("sit", "euler", 60.0, 3), ("pf", "euler_pf", 50.0, 3),
                                        ("pf", "look_ahead", 45.0, 1)):
        for nfe in (8, 16, 32):
            for seed in range(seeds):
                fd = base * (8 / nfe) ** 0.5 + rng.normal(0, 1.0)
                write_rows(res / f"cell-{model}-{sampler}-{nfe}-{seed}.parquet", [
                    {"suite": "syn", "kind": "cell", "model": model, "sampler": sampler, "nfe_budget": nfe,
                     "nfe_used": nfe, "forwards": nfe, "gflops": 0.8 * nfe, "wall_s": 1.0, "seed": seed,
                     "cfg_scale": 1.0, "metric": m, "value": v, "higher_is_better": h, "num_samples": 100}
                    for m, v, h in (("fd_embedded", fd, False), ("class_acc", 1 - fd / 100, True))])
    write_rows(res / "reference.parquet", [
        {"suite": "syn", "kind": "reference", "model": "real_train", "metric": "fd_embedded", "value": 2.0,
         "higher_is_better": False}])
    write_rows(res / "diag.parquet", [
        {"suite": "syn", "kind": "diagnostic", "model": "pf", "metric": "difficulty_pearson", "value": 0.4321,
         "higher_is_better": True}])
    for step in (100, 200, 400):
        write_rows(res / f"curve-{step}.parquet", [
            {"suite": "syn", "kind": "curve", "model": "pf", "train_step": step, "sampler": "euler_pf",
             "nfe_budget": 16, "seed": 0, "metric": "fd_embedded", "value": 300 / step, "higher_is_better": False}])
    from pfbench.report.images import sample_grid

    imgs = rng.integers(0, 255, (10, 8, 8, 3), dtype=np.uint8)
    sample_grid(root / "reports" / "syn" / "samples.png", [("pf", imgs, np.arange(10))], [str(i) for i in range(10)])
    shutil.copy(root / "reports" / "syn" / "samples.png", root / "reports" / "syn" / "difficulty_pf.png")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic suite's report, generated in a fresh interpreter that must not import torch."""
    root = tmp_path_factory.mktemp("rep")
    _synthetic_suite(root)
    code = ("import sys; from pathlib import Path; from pfbench.report.html import report; "
            f"p = report('syn', Path({str(root / 'results')!r}), Path({str(root / 'reports')!r})); "
            "assert 'torch' not in sys.modules, 'the report stage imported torch'; print(p)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return root / "reports" / "syn"


def test_report_writes_markdown_figures_and_tables(built: Path) -> None:
    md = (built / "index.md").read_text()
    for name in ("fig_nfe", "fig_gflops", "fig_curve"):
        assert (built / f"{name}.png").stat().st_size > 10_000 and (built / f"{name}.pdf").is_file()
        assert f"]({name}.png)" in md
    assert "Generated by `pfbench report syn`" in md and "Do not edit by hand" in md
    assert re.search(r"\*\*git_sha\*\*: [0-9a-f]{7,}", md) or "**git_sha**: unknown" in md
    one = next(ln for ln in md.splitlines() if ln.startswith("| pf | look_ahead | 1 | 8 |"))
    assert "±" not in one and "± NA" not in md  # one seed: a plain value, no "± NA"
    line = next(ln for ln in md.splitlines() if ln.startswith("| sit | euler | 1 | 16 |"))
    assert re.search(r"\d ± \d[^|]*<br>t\[-?\d", line)  # three seeds: std and the Student-t interval
    assert "difficulty_pearson ↑ | 0.4321 |" in md and "| real_train | ceiling: real training-split images |" in md
    assert md.index("## Claims") < md.index("## Results")  # claims first where the suite has them
    assert "](samples.png)" in md and "](difficulty_pf.png)" in md
    assert md.index("](samples.png)") < md.index("](difficulty_pf.png)")
    assert "](fig_pareto_fd_embedded.png)" in md and "### Best configuration per budget" in md


def test_html_is_self_contained(built: Path) -> None:
    html = (built / "index.html").read_text()
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", html)
    assert refs and all(r.startswith("data:image/png;base64,") for r in refs), [r[:40] for r in refs]
    assert "url(" not in html and "@import" not in html
    # 3 figures + samples + difficulty map + the claims section's NFE and GFLOPs figures (pf vs sit, report.validity)
    # + the Pareto front (the suite sweeps three samplers)
    assert len(re.findall(r"<img ", html)) == 8 and "<h2>Claims</h2>" in html


def test_report_without_results_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(PfbenchError, match="no result rows"):
        report("nothing", tmp_path / "results", tmp_path / "reports")


def test_report_package_imports_no_torch() -> None:
    """AST check: pfbench/report never imports torch, nor a pfbench module outside the report/results layer
    (plus ``pfbench.io``, the stdlib-only home of atomic writes)."""
    allowed = {"pfbench", "pfbench.io", "pfbench.results"}
    for path in sorted(REPORT_PKG.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for name in names:
                top = name.split(".")[0]
                assert top not in {"torch", "torchvision", "torch_fidelity", "cleanfid", "open_clip"}, (path, name)
                if top == "pfbench":
                    assert name in allowed or name.startswith("pfbench.report"), (path, name)
    results = ast.parse((REPO / "pfbench" / "results.py").read_text())
    top_level = [a.name for n in results.body if isinstance(n, ast.Import) for a in n.names]
    top_level += [n.module or "" for n in results.body if isinstance(n, ast.ImportFrom)]
    assert not any(m.split(".")[0] == "torch" for m in top_level)


# ------------------------------------------------------------------ the HTML in a real browser
CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.title = 'imgs=' + imgs.length + ' loaded=' + ok;
});
</script>"""


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_html_renders_in_headless_chromium(built: Path, tmp_path: Path) -> None:
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    page = tmp_path / "page.html"
    html = (built / "index.html").read_text()
    n_img = len(re.findall(r"<img ", html))  # every figure the report embeds (7 with the Claims section)
    assert n_img >= 5
    page.write_text(html.replace("</body>", CHECK_SCRIPT + "\n</body>"))
    flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2000", "--virtual-time-budget=10000"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    title = re.search(r"<title>(.*?)</title>", dom.stdout)
    assert title is not None, dom.stderr[-2000:]
    assert title.group(1) == f"imgs={n_img} loaded={n_img}"  # all embedded images decode in a real browser
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    from PIL import Image

    px = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert px.shape == (2000, 1200) and px.std() > 10  # something was drawn, not a blank page
