"""Benchmarks: smoke runs at tiny sizes checking the returned fields (never timing thresholds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from pfbench import PfbenchError
from pfbench.bench.run import parse_options, run_bench
from pfbench.bench.sampling import perturbed_net
from pfbench.metrics.frechet import frechet_distance
from pfbench.metrics.stats import FeatureStats
from pfbench.nets import forward_flops, net_config
from pfbench.registry import SAMPLERS


def test_perturbed_net_is_seeded_and_not_zero() -> None:
    a, b = perturbed_net("cpu-xs", "pf", seed=4), perturbed_net("cpu-xs", "pf", seed=4)
    c = perturbed_net("cpu-xs", "pf", seed=5)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.final.linear.weight, c.final.linear.weight)
    assert a.final.linear.weight.abs().min() > 0  # the zero-initialised output layer now does work
    _, logvar = a(torch.randn(2, 3, 16, 16), torch.rand(2, 64), torch.tensor([0, 1]))
    assert logvar is not None and logvar.std() > 0  # a varying difficulty map


def test_overhead_fields() -> None:
    out = run_bench("overhead", n=3, batch_size=2, repeats=1, nfe=4, threads=1, show=False)
    rows = out["samplers"]
    assert sorted(rows) == sorted(SAMPLERS.names())
    for name, row in rows.items():
        assert row["net"] == ("sit" if name in ("euler", "heun", "euler_maruyama") else "pf")
        assert 0.0 < row["model_s"] <= row["total_s"]
        assert 0.0 < row["model_share"] <= 1.0 and row["overhead"] == pytest.approx(1.0 - row["model_share"])
        assert 0.0 < row["model_cpu_s"] <= row["total_cpu_s"] and 0.0 <= row["overhead_cpu"] < 1.0
        sampler = SAMPLERS.get(name)(steps=row["steps"])
        assert row["nfe"] == sampler.cost(row["steps"]) <= 4
    assert out["max_overhead"] == max(r["overhead"] for r in rows.values())
    assert out["max_overhead_cpu"] == max(r["overhead_cpu"] for r in rows.values())
    assert out["threads"] == 1 and out["batch_size"] == 2


def counted_flops(net: torch.nn.Module, t: torch.Tensor, dedup: bool) -> float:
    """FLOPs of one forward, counted on the executed graph by torch's FlopCounterMode."""
    x, y = torch.randn(t.shape[0], 3, 16, 16), torch.arange(t.shape[0])
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x, t, y, dedup=dedup)
    return float(counter.get_total_flops())


def test_dedup_fields_and_flop_ratio() -> None:
    out = run_bench("dedup", preset="cpu-xs", batch=2, nfe=4, repeats=1, threads=1, show=False)
    cfg = net_config("cpu-xs", "pf")
    flops = lambda rows: forward_flops(cfg, rows)  # noqa: E731
    euler, dual = out["samplers"]["euler_pf"], out["samplers"]["dual_loop"]
    # euler_pf: one timestep per sample -> 1 modulation row instead of T
    assert euler["flop_ratio"] == pytest.approx(flops(1) / flops(cfg.tokens), rel=1e-12)
    # dual_loop (1 outer step, 4 calls): the first call at t_k, then 3 calls with easy and hard times
    assert dual["nfe"] == 4 and dual["steps"] == 1
    assert dual["flop_ratio"] == pytest.approx((flops(1) + 3 * flops(2)) / (4 * flops(cfg.tokens)), rel=1e-12)
    # the same ratio counted on the executed graph (FlopCounterMode), within its 2 % agreement
    t = torch.full((2, cfg.tokens), 0.3)
    net = perturbed_net("cpu-xs", "pf")
    counted = counted_flops(net, t, True) / counted_flops(net, t, False)
    assert abs(euler["flop_ratio"] / counted - 1) < 0.02
    for row in (euler, dual):
        assert 0.0 < row["flop_ratio"] < 1.0 and row["flop_saving"] == pytest.approx(1.0 - row["flop_ratio"])
        assert row["speedup"] == pytest.approx(row["seconds_naive"] / row["seconds_dedup"])
        assert row["speedup_cpu"] == pytest.approx(row["cpu_s_naive"] / row["cpu_s_dedup"])
        assert row["max_abs_diff"] < 1e-4  # dedup is exact
    versus = out["pf_vs_sit"]
    assert versus["nfe"] == 4 and versus["ratio"] > 0 and versus["naive_ratio"] > 0 and versus["ratio_cpu"] > 0
    assert versus["pf_img_s"] == pytest.approx(versus["ratio"] * versus["sit_img_s"])
    assert versus["gflops_pf"] == pytest.approx(euler["gflops_dedup"])


def test_gpu_bench_skips_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = run_bench("gpu-throughput", show=False)
    assert out["skipped"] and "no CUDA" in out["reason"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_throughput_fields() -> None:
    out = run_bench("gpu-throughput", presets=("S/2",), batch=8, nfe=2, repeats=1, show=False)
    row = out["presets"]["S/2"]
    assert not out["skipped"] and row["ratio"] > 0 and row["naive_ratio"] > 0
    assert row["pf_img_s"] == pytest.approx(row["ratio"] * row["sit_img_s"])


def test_entry_point_errors_and_options() -> None:
    with pytest.raises(PfbenchError, match="did you mean 'dedup'"):
        run_bench("dedupe")
    with pytest.raises(PfbenchError, match="did you mean 'batch_size'"):
        run_bench("overhead", batchsize=3)
    opts = parse_options("dedup", ["batch=3", "samplers=euler_pf,dual_loop", "threads=1", "show=false"])
    assert opts == {"batch": 3, "samplers": ("euler_pf", "dual_loop"), "threads": 1, "show": False}
    assert parse_options("overhead", ["samplers=euler"]) == {"samplers": ("euler",)}
    with pytest.raises(PfbenchError, match="expected a value like 2"):
        parse_options("dedup", ["batch=two"])
    with pytest.raises(PfbenchError, match="not key=value"):
        parse_options("dedup", ["batch"])


def test_fd_bench_fields_and_value() -> None:
    out = run_bench("fd", n=600, d=16, repeats=2, show=False)
    assert out["bench"] == "fd" and out["n"] == 600 and out["d"] == 16 and out["threads"] == 1
    assert 0 < out["stats_s"] and 0 < out["fd_s"] and out["total_s"] == pytest.approx(out["stats_s"] + out["fd_s"])
    assert out["meets_target"] == (out["total_s"] <= out["target_s"])
    assert out["stats_gflops"] == pytest.approx(600 * 16 * 16 / out["stats_s"] / 1e9)
    # the timed value is the distance of the documented inputs
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 16), dtype=np.float32) * np.geomspace(0.1, 3.0, 16, dtype=np.float32)
    st = FeatureStats()
    st.update(x)
    s = np.geomspace(1.2, 0.8, 16)
    want = frechet_distance(st.mean(), st.cov(), st.mean() + 0.05, st.cov() * np.outer(s, s) + 0.01 * np.eye(16))
    assert out["fd"] == pytest.approx(want, rel=1e-12) and out["fd"] > 0 and out["gemm"] == "float32"
    assert parse_options("fd", ["n=1000", "d=8", "gemm=float64"]) == {"n": 1000, "d": 8, "gemm": "float64"}
    exact = run_bench("fd", n=600, d=16, gemm="float64", show=False)  # the all-float64 path, for comparison
    assert exact["gemm"] == "float64" and exact["fd"] == pytest.approx(out["fd"], rel=1e-6)


def test_features_bench_measures_both_extractors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PFBENCH_WEIGHTS", str(tmp_path))  # no Inception file: random weights, flagged as such
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    out = run_bench("features", n=4, batch=2, resolution=32, show=False)
    assert out["bench"] == "features" and out["target"] == 0.8
    assert set(out["extractors"]) == {"inception", "embedded"}
    assert out["extractors"]["inception"]["weights"] == "random"
    for row in out["extractors"].values():
        assert row["pipeline_img_s"] > 0 and row["bare_img_s"] > 0
        assert row["ratio"] == pytest.approx(row["pipeline_img_s"] / row["bare_img_s"])
    with pytest.raises(PfbenchError, match="not found"):  # an explicit file that is missing is an error
        run_bench("features", n=2, batch=2, weights=str(tmp_path / "nope.pth"), show=False)


def test_train_throughput_plumbing_on_cpu() -> None:
    """The training bench's plumbing on CPU (fp32, uncompiled): a labelled check, never a speed figure."""
    from pfbench.bench.run import run_bench

    got = run_bench("train-throughput", presets=("cpu-xs",), kinds=("pf", "sit"), batch=4, steps=1, compile=False,
                    device="cpu", show=False)
    assert got["plumbing_check_only"] and got["precision"] == "fp32"
    assert set(got["rows"]) == {"cpu-xs pf", "cpu-xs sit"}
    for row in got["rows"].values():
        assert row["img_s"] > 0 and row["mfu"] is None and row["peak_mem_gib"] is None
        assert row["new_graphs_while_timed"] == 0
    with pytest.raises(PfbenchError, match="compile=true needs device=cuda"):
        run_bench("train-throughput", presets=("cpu-xs",), compile=True, device="cpu", show=False)
