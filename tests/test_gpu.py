"""CUDA-only checks (``pytest -m gpu``; ``benchmarks/gpu_check.sh`` runs them): compiled training and sampling
compile once per shape and never between steps (``torch._dynamo`` counters), bf16 sampling stays close to fp32,
activation checkpointing cuts training memory. Skipped without a CUDA device."""

from __future__ import annotations

import pytest
import torch

from pfbench.adapters.dit import DiTAdapter
from pfbench.bench.sampling import bench_inputs, budget_sampler, perturbed_net
from pfbench.bench.training import train_throughput

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _graphs() -> int:
    import torch._dynamo.utils as dynamo_utils

    return int(dynamo_utils.counters["stats"]["unique_graphs"])


def test_compiled_training_does_not_recompile_between_steps() -> None:
    got = train_throughput(presets=("B/2",), kinds=("pf", "sit"), batch=8, steps=3, compile=True, show=False)
    for name, row in got["rows"].items():
        assert row["new_graphs_while_timed"] == 0, name


@pytest.mark.parametrize("sampler", ["euler_pf", "dual_loop", "look_ahead"])
def test_compiled_sampling_compiles_once_per_shape(sampler: str) -> None:
    """Blocks compiled in place (``DiT.compile_blocks``): a second sampling run at the same batch compiles nothing,
    however many distinct timesteps dedup finds at each call."""
    net = perturbed_net("B/2", "pf", overrides={"input_size": 32, "in_channels": 4, "num_classes": 1000}).cuda()
    net.compile_blocks()
    cfg, chosen = net.cfg, budget_sampler(sampler, 8)
    inputs = bench_inputs((cfg.in_channels, cfg.input_size, cfg.input_size), cfg.num_classes, 16, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        chosen(DiTAdapter(net), *inputs)
        before = _graphs()
        chosen(DiTAdapter(net), *bench_inputs((cfg.in_channels, cfg.input_size, cfg.input_size), cfg.num_classes,
                                              16, start=16, device="cuda"))
    assert _graphs() == before


def test_bf16_sampling_is_close_to_fp32() -> None:
    net = perturbed_net("B/2", "pf", overrides={"input_size": 32, "in_channels": 4, "num_classes": 1000}).cuda()
    cfg, chosen = net.cfg, budget_sampler("euler_pf", 8)
    inputs = bench_inputs((cfg.in_channels, cfg.input_size, cfg.input_size), cfg.num_classes, 16, device="cuda")
    with torch.no_grad():
        ref = chosen(DiTAdapter(net), *inputs).x
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fast = chosen(DiTAdapter(net), *inputs).x.float()
    assert (fast - ref).abs().mean() < 0.05 * ref.abs().mean()


def test_activation_checkpointing_cuts_training_memory() -> None:
    plain = train_throughput(presets=("B/2",), kinds=("pf",), batch=32, steps=2, compile=False, show=False)
    ckpt = train_throughput(presets=("B/2",), kinds=("pf",), batch=32, steps=2, compile=False, checkpointing=True,
                            show=False)
    assert ckpt["rows"]["B/2 pf"]["peak_mem_gib"] < 0.7 * plain["rows"]["B/2 pf"]["peak_mem_gib"]
