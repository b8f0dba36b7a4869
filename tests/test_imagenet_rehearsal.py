"""Real-shape rehearsal of the main job: ``suites/imagenet.yaml`` itself, run through the CLI on CPU.

Stand-in files in the released formats, at real shapes, random weights: a B/2 Patch Forcing checkpoint as the
authors release it (``{"state_dict", "config"}``, the reference's key names and OmegaConf model config), the
SD-VAE architecture (diffusers ``AutoencoderKL`` with sd-vae-ft-ema's config) where pfbench resolves
``sd-vae-ft-ema``, an ADM-format reference batch (``arr_0`` images, ``mu``/``sigma``/``mu_s``/``sigma_s``) and
torch-fidelity's Inception architecture, accepted with ``eval.verify_weights=false``. The overrides only shrink
the run (few samples and steps, CPU, fp32, B/2 only): the path is the one a GPU run of the suite takes,
released checkpoint → 32×32×4 latents → SD-VAE decode at 256 px → Inception → FID/sFID/IS/P/R → report with
the paper's numbers beside the measured ones. Plus one XL/2 forward at real shape with its FLOP accounting.

The suite uses the step axis (``steps:`` in a grid block) and optional models: the SiT baselines are not released,
so their files are absent here and their cells are skipped (named in plan and report), as on a fresh machine.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from pfbench.cli import app
from pfbench.nets.dit import DiT
from pfbench.nets.presets import net_config
from pfbench.results import read_results

# Minutes on 2 CPU cores: ~50 SD-VAE decodes at 256 px (cells at 10 samples, plus the runner's trace figures)
# and ~20 B/2 calls at batch 10. Measured: 761 s of CPU time (47 min wall on a machine shared by 8 processes).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "suites" / "imagenet.yaml"
SAMPLES = 10  # IS needs 10 (its 10 splits), precision/recall more than k = 3
STEPS, NFE = 2, 4  # the steps block at 2 outer steps, the equal-NFE block at 4 calls
PF = ("euler_pf", "dual_loop", "look_ahead")


def _random_(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter random and small (the default init zeroes adaLN and the output layer)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for prm in net.parameters():
            prm.copy_(torch.randn(prm.shape, generator=g) * 0.02)
    return net.eval()


def make_stand_ins(root: Path) -> dict[str, Path]:
    """$PFBENCH_CHECKPOINTS, $PFBENCH_DATA, $PFBENCH_WEIGHTS and $PFBENCH_CACHE folders under ``root`` holding the
    stand-in files (also used by benchmarks/rehearsal.py, the same rehearsal on a GPU)."""
    import diffusers
    from _release import write_release  # pytest puts tests/ on sys.path

    from pfbench.bench.metrics import random_inception
    from pfbench.data.vae import SD_VAE_CONFIG
    from pfbench.weights import KNOWN_WEIGHTS

    dirs = {k: root / k for k in ("checkpoints", "data", "weights", "cache")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    write_release(dirs["checkpoints"] / "pft-b_step400k_ema.ckpt", _random_(DiT(net_config("B/2", "pf")), 0))
    vae = diffusers.AutoencoderKL(**SD_VAE_CONFIG)  # sd-vae-ft-ema's config, random weights
    vae.save_pretrained(dirs["weights"] / KNOWN_WEIGHTS["sd-vae-ft-ema"].subdir, safe_serialization=True)
    random_inception(dirs["weights"] / KNOWN_WEIGHTS["inception-v3-compat"].filename)
    rng = np.random.default_rng(0)
    pool, spatial = 2048, 7 * 17 * 17  # ADM's pool3 and mixed_6/conv[..., :7] statistics
    np.savez(dirs["data"] / "VIRTUAL_imagenet256_labeled.npz",
             arr_0=rng.integers(0, 256, (12, 256, 256, 3), dtype=np.uint8),
             mu=rng.normal(size=pool), sigma=np.diag(rng.uniform(0.5, 2.0, pool)),
             mu_s=rng.normal(size=spatial), sigma_s=np.diag(rng.uniform(0.5, 2.0, spatial)))
    return dirs


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_stand_ins(tmp_path_factory.mktemp("imagenet"))


def _steps_of(sampler: str, steps: int = STEPS, nfe: int = NFE) -> int:
    """Outer steps of a steps-block cell."""
    return steps


def overrides(samples: int = SAMPLES, batch: int = SAMPLES, device: str = "cpu", precision: str = "fp32",
              steps: int = STEPS, nfe: int = NFE) -> list[str]:
    """The suite as shipped, shrunk: ``samples`` per cell, B/2 only, the steps block at ``steps`` and the
    equal-NFE block at ``nfe``, the random Inception accepted, the paper's B/2 rows compared at the steps run."""
    out = [f"sweep.num_samples={samples}", f"eval.device={device}", f"eval.precision={precision}",
           f"eval.batch_size={batch}", "eval.verify_weights=false", "~models.pf_xl2", "grid.1.models=[pf_b2]",
           "grid.2.models=[pf_b2]", f"grid.2.nfe=[{nfe}]"]
    entries = yaml.safe_load(SUITE.read_text())["expected"]
    out += [f"expected.{i}.steps={_steps_of(e['sampler'], steps, nfe)}" for i, e in enumerate(entries)
            if e["model"] == "pf_b2"]
    return out + [f"grid.0.steps=[{steps}]", f"grid.1.steps=[{steps}]"]


def test_imagenet_suite_runs_end_to_end_at_real_shapes(stand_ins: dict[str, Path], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("checkpoints", "data", "weights", "cache"):
        monkeypatch.setenv(f"PFBENCH_{key.upper()}", str(stand_ins[key]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = ["--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports"),
           "--runs", str(tmp_path / "runs")]
    cli = CliRunner()
    plan = cli.invoke(app, ["plan", str(SUITE), *overrides(), *out[:2], *out[4:]], env={"COLUMNS": "300"})
    assert plan.exit_code == 0, (plan.output, plan.exception)
    assert "sit-b2_step400k.pt" in plan.output and "skipped" in plan.output, plan.output
    res = cli.invoke(app, ["run", str(SUITE), *overrides(), *out, "--quiet"], env={"COLUMNS": "300"})
    assert res.exit_code == 0, (res.output, res.exception)

    rows = read_results(tmp_path / "results" / "imagenet")
    cells = rows[rows["kind"] == "cell"]
    assert set(cells["model"]) == {"pf_b2"} and set(cells["sampler"]) == set(PF)
    assert set(cells["num_samples"]) == {SAMPLES} and cells["decoder"].str.startswith("sd-vae-ft-ema@").all()
    for part, g in cells.groupby("part"):
        values = dict(zip(g["metric"], g["value"].astype(float), strict=True))
        assert {"fid", "sfid", "is", "precision", "recall"} <= set(values), (part, values)
        assert all(math.isfinite(v) for v in values.values()) and values["fid"] > 0 and values["is"] >= 1.0
        assert g["metric_args"].str.contains("nonstandard").all()  # a random Inception: marked, not comparable
    args = cells.drop_duplicates("part")
    for _, r in args.iterrows():  # calls per image from the outer steps, as the reference makes them
        steps = int(yaml.safe_load(r["sampler_args"])["steps"])
        calls = {"euler_pf": steps, "dual_loop": 4 * steps, "look_ahead": 2 * steps - 1}[r["sampler"]]  # t0 warm
        assert int(r["forwards"]) == calls and int(r["nfe_used"]) == calls, r.to_dict()
        assert float(r["gflops"]) > calls * 40  # B/2 at 256 tokens: ~46 GFLOPs a call
    budgets = set(args["nfe_budget"].dropna().astype(int))
    assert NFE in budgets  # the equal-NFE block
    assert "steps" in cells and set(cells[cells["sampler"] == "euler_pf"]["steps"].astype(int)) == {STEPS}
    assert len(args[args["sampler"] == "dual_loop"]) == 2  # 2 steps (8 calls) and NFE 4 (1 step)

    index = (tmp_path / "reports" / "imagenet" / "index.md").read_text()
    table = index.split("## Published vs measured")[1].split("\n## ")[0]
    for sampler, paper in (("euler_pf", "27.9"), ("dual_loop", "26"), ("look_ahead", "24.2")):
        line = next(ln for ln in table.splitlines() if ln.startswith(f"| pf_b2 | {sampler} |"))
        cols = [c.strip() for c in line.strip("|").split("|")]
        measured = float(cols[5].rstrip(" †"))
        fid = cells[(cells["sampler"] == sampler) & (cells["metric"] == "fid")]
        fid = fid[[int(yaml.safe_load(a)["steps"]) == _steps_of(sampler) for a in fid["sampler_args"]]]
        assert cols[4] == paper and cols[5].endswith("†") and measured == pytest.approx(fid["value"].mean(), rel=1e-3)
        assert float(cols[6]) == pytest.approx(fid["value"].mean() - float(paper), rel=1e-3, abs=0.01)  # 4 digits
    assert table.count("not measured") == 5  # SiT B/2 and every XL/2 row
    assert "sit_b2" in index and "skipped" in index


def test_xl2_forward_at_real_shape_and_its_accounting() -> None:
    """One XL/2 call (1152 wide, 28 deep, 256 tokens, batch 1): output shapes, and the FLOPs pfbench books for
    it against torch's own count of the matmuls and attention it ran."""
    from torch.utils.flop_counter import FlopCounterMode

    from pfbench.adapters.dit import DiTAdapter
    from pfbench.types import Cond

    cfg = net_config("XL/2", "pf")
    assert (cfg.width, cfg.depth, cfg.heads, cfg.tokens, cfg.input_size, cfg.in_channels) == (
        1152, 28, 16, 256, 32, 4)
    torch.manual_seed(0)
    adapter = DiTAdapter(_random_(DiT(cfg), 1))
    assert 670e6 < sum(p.numel() for p in adapter.net.parameters()) < 680e6  # the paper's 675M
    x = torch.randn(1, 4, 32, 32)
    t = torch.full((1, 256), 0.3)
    t[:, :64] = 0.7  # two distinct timesteps, as a PF step makes them
    with FlopCounterMode(display=False) as counter:
        out = adapter(x, t, Cond(y=torch.tensor([207])))
    assert out.v.shape == (1, 4, 32, 32) and out.logvar is not None and out.logvar.shape[-2:] == (32, 32)
    assert torch.isfinite(out.v).all() and torch.isfinite(out.logvar).all()
    assert adapter.forwards_per_call(t) == 1
    booked, counted = adapter.gflops(t), counter.get_total_flops() / 1e9
    ops = {str(op) for op in counter.get_flop_counts().get("Global", {})}
    if not any("scaled_dot_product" in op for op in ops):  # torch has no FLOP formula for CPU's fused attention
        counted += 2 * 2 * cfg.tokens**2 * cfg.width * cfg.depth / 1e9  # QK^T and attention·V of every block
    print(f"XL/2 call: booked {booked:.3f} GFLOPs, counted {counted:.3f} (torch's matmuls + attention)")
    assert booked == pytest.approx(counted, rel=0.002)  # elementwise work is in neither count
