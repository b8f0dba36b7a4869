"""External DiT/SiT/PF checkpoints -> pfbench DiT: key mapping, learned sigma, wrappers, conventions."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import _release  # pytest puts tests/ on sys.path
import numpy as np
import pytest
import torch
from _release import PF_TARGET, release_params
from torch import Tensor

from pfbench import PfbenchError
from pfbench.adapters.dit import DiTAdapter
from pfbench.adapters.external import (
    convert_state_dict,
    external_adapter,
    external_config,
    load_external,
    read_state_dict,
)
from pfbench.adapters.external_config import omegaconf_globals, parse_overrides
from pfbench.nets.dit import DiT
from pfbench.nets.presets import net_config

PRESET = "cpu-xs"  # depth 4, width 64, 3×16×16, patch 2, 10 classes (as conftest's random_net)
# The conftest fixtures random_net (a cpu-xs DiT with every weight random) and to_external (its DiT/SiT keys).
RandomNet = Callable[..., DiT]
ToExternal = Callable[..., dict[str, Tensor]]
WriteRelease = Callable[..., Path]


def dit_pos_embed(width: int, grid: int) -> Tensor:
    """DiT/MAE fixed position embedding, written from the paper's recipe: column code first, then row."""
    def code(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2) / (d / 2))
        ang = pos.reshape(-1)[:, None] * omega[None]
        return np.concatenate([np.sin(ang), np.cos(ang)], axis=1)

    cols, rows = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64))
    emb = np.concatenate([code(width // 2, cols), code(width // 2, rows)], axis=1)
    return torch.from_numpy(emb).float()[None]  # (1, T, D)


def inputs(net: DiT, per_token: bool) -> tuple[Tensor, Tensor, Tensor]:
    cfg = net.cfg
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
    t = torch.rand(3, cfg.tokens, generator=g) if per_token else torch.rand(3, 1, generator=g).expand(3, cfg.tokens)
    y = torch.tensor([0, 4, cfg.num_classes])  # includes the null class
    return x, t, y


def rebuild(state: dict[str, Tensor], kind: str) -> DiT:
    net = DiT(net_config(PRESET, kind))
    state = dict(state)
    pos = state.pop("pos")
    net.load_state_dict(state, strict=True)
    net.get_buffer("pos").copy_(pos)
    return net.eval()


@pytest.mark.parametrize("layout", ["sit", "dit"])
def test_sit_roundtrip_is_bit_identical_and_drops_sigma(layout: str, random_net: RandomNet,
                                                        to_external: ToExternal) -> None:
    net = random_net("sit")
    ext = to_external(net, sigma=True)
    assert ext["final_layer.linear.weight"].shape[0] == 4 * 2 * 3
    conv = convert_state_dict(ext, layout, net.cfg)
    assert torch.equal(conv["final.linear.weight"], net.state_dict()["final.linear.weight"])
    assert torch.equal(conv["final.linear.bias"], net.state_dict()["final.linear.bias"])
    back = rebuild(conv, "sit")
    x, t, y = inputs(net, per_token=False)
    v0, lv0 = net(x, t, y)
    v1, lv1 = back(x, t, y)
    assert lv0 is None and lv1 is None
    assert torch.equal(v0, v1)


def test_sit_without_learned_sigma_loads_too(random_net: RandomNet, to_external: ToExternal) -> None:
    net = random_net("sit", seed=3)
    back = rebuild(convert_state_dict(to_external(net, sigma=False), "sit", net.cfg), "sit")
    x, t, y = inputs(net, per_token=False)
    assert torch.equal(net(x, t, y)[0], back(x, t, y)[0])


def test_pf_roundtrip_per_token_with_logvar(random_net: RandomNet, to_external: ToExternal) -> None:
    net = random_net("pf", seed=1)
    back = rebuild(convert_state_dict(to_external(net, sigma=False), "pf", net.cfg), "pf")
    x, t, y = inputs(net, per_token=True)
    for dedup in (True, False):
        v0, lv0 = net(x, t, y, dedup=dedup)
        v1, lv1 = back(x, t, y, dedup=dedup)
        assert lv0 is not None and lv1 is not None
        assert torch.equal(v0, v1) and torch.equal(lv0, lv1)


def test_unmapped_missing_and_shape_errors_list_the_keys(random_net: RandomNet,
                                                         to_external: ToExternal) -> None:
    net = random_net("sit")
    cfg = net.cfg
    ext = to_external(net, sigma=True)
    with pytest.raises(PfbenchError, match="unmapped keys.*decoder.0.weight"):
        convert_state_dict({**ext, "decoder.0.weight": torch.zeros(2)}, "sit", cfg)
    repa = convert_state_dict({**ext, "projectors.0.0.weight": torch.zeros(2)}, "sit", cfg)  # REPA's heads
    plain = convert_state_dict(ext, "sit", cfg)
    assert repa.keys() == plain.keys() and all(torch.equal(repa[k], plain[k]) for k in plain)
    short = {k: v for k, v in ext.items() if k != "blocks.2.mlp.fc2.bias"}
    with pytest.raises(PfbenchError, match=r"missing keys.*blocks\.2\.mlp\.2\.bias"):
        convert_state_dict(short, "sit", cfg)
    deeper = {**ext, "blocks.9.attn.qkv.weight": ext["blocks.0.attn.qkv.weight"]}  # more blocks than depth
    with pytest.raises(PfbenchError, match=r"unmapped keys.*blocks\.9\.attn\.qkv\.weight"):
        convert_state_dict(deeper, "sit", cfg)
    wide = net_config(PRESET, "sit", width=128, heads=4)
    with pytest.raises(PfbenchError, match="shape mismatches.*patch_embed.weight"):
        convert_state_dict(ext, "sit", wide)


def test_layout_config_and_label_table_errors(random_net: RandomNet, to_external: ToExternal) -> None:
    sit, pf = random_net("sit"), random_net("pf")
    with pytest.raises(PfbenchError, match="per_token_t=True"):
        convert_state_dict(to_external(pf, sigma=False), "pf", sit.cfg)
    with pytest.raises(PfbenchError, match="unknown checkpoint layout"):
        convert_state_dict(to_external(sit, sigma=False), "sd3", sit.cfg)
    ext = to_external(sit, sigma=False)
    ext["y_embedder.embedding_table.weight"] = ext["y_embedder.embedding_table.weight"][:-1]  # no null row
    with pytest.raises(PfbenchError, match="no null class"):
        convert_state_dict(ext, "sit", sit.cfg)


def test_prefixes_are_stripped(random_net: RandomNet, to_external: ToExternal) -> None:
    net = random_net("sit")
    ext = {f"module._orig_mod.{k}": v for k, v in to_external(net, sigma=True).items()}
    conv = convert_state_dict(ext, "sit", net.cfg)
    assert torch.equal(conv["blocks.3.ada.1.weight"], net.state_dict()["blocks.3.ada.1.weight"])


def test_wrappers_prefer_ema(tmp_path: Path, random_net: RandomNet, to_external: ToExternal) -> None:
    model, ema = random_net("pf", seed=5), random_net("pf", seed=6)
    sd_model, sd_ema = to_external(model, sigma=False), to_external(ema, sigma=False)
    x, t, y = inputs(ema, per_token=True)
    want = ema(x, t, y)[0]
    files = {
        "raw.pt": sd_ema,
        "dit_train.pt": {"model": sd_model, "ema": sd_ema, "opt": {"step": torch.tensor(3)}},
        "convert_ckpt.pt": {"state_dict": sd_ema},
        "lightning.pt": {"state_dict": {**{f"model.{k}": v for k, v in sd_model.items()},
                                        **{f"ema_model.{k}": v for k, v in sd_ema.items()}}},
    }
    for name, obj in files.items():
        torch.save(obj, tmp_path / name)
        net = load_external(tmp_path / name, "pf", PRESET)
        assert torch.equal(net(x, t, y)[0], want), name
    torch.save({"model": sd_model}, tmp_path / "model_only.pt")
    assert torch.equal(load_external(tmp_path / "model_only.pt", "pf", PRESET)(x, t, y)[0], model(x, t, y)[0])


def test_unsafe_or_missing_files_are_user_errors(tmp_path: Path, random_net: RandomNet,
                                                 to_external: ToExternal) -> None:
    net = random_net("sit")
    torch.save({"ema": to_external(net, sigma=True), "args": argparse.Namespace(lr=1e-4)}, tmp_path / "train.pt")
    with pytest.raises(PfbenchError, match="cannot be read safely"):
        read_state_dict(tmp_path / "train.pt")
    with pytest.raises(PfbenchError, match="not found"):
        read_state_dict(tmp_path / "nope.pt")
    torch.save({"step": 3}, tmp_path / "empty.pt")
    with pytest.raises(PfbenchError, match="no tensors"):
        read_state_dict(tmp_path / "empty.pt")


def test_checkpoint_position_embedding_is_installed(tmp_path: Path, random_net: RandomNet,
                                                    to_external: ToExternal) -> None:
    net = random_net("sit")
    cfg = net.cfg
    theirs = dit_pos_embed(cfg.width, cfg.grid)  # (1, T, D), column code first
    half = cfg.width // 2
    # pfbench codes the row first: the two conventions are the same codes with the halves swapped.
    assert not torch.allclose(net.get_buffer("pos"), theirs)
    assert torch.allclose(net.get_buffer("pos"), torch.cat([theirs[..., half:], theirs[..., :half]], dim=-1), atol=1e-6)
    torch.save(to_external(net, sigma=True, pos=theirs), tmp_path / "sit.pt")
    loaded = load_external(tmp_path / "sit.pt", "sit", PRESET)
    assert torch.equal(loaded.get_buffer("pos"), theirs)
    with torch.no_grad():
        net.get_buffer("pos").copy_(theirs)
    x, t, y = inputs(net, per_token=False)
    assert torch.equal(loaded(x, t, y)[0], net(x, t, y)[0])


def test_external_adapter(tmp_path: Path, random_net: RandomNet, to_external: ToExternal) -> None:
    net = random_net("sit")
    torch.save({"ema": to_external(net, sigma=True)}, tmp_path / "sit.pt")
    adapter = external_adapter(tmp_path / "sit.pt", "sit", PRESET)
    assert isinstance(adapter, DiTAdapter) and not adapter.per_token and not adapter.has_difficulty
    with pytest.raises(PfbenchError, match="ε-prediction"):
        external_adapter(tmp_path / "sit.pt", "dit", PRESET)


# ---- release files as downloaded (the reference's convert_ckpt.py format) ----------------------------------

@pytest.fixture
def write_release() -> WriteRelease:
    """``write_release(path, net, target=PF_TARGET, config=None)``: a released-format file (``_release``)."""
    return _release.write_release


def test_release_file_loads_with_exactly_the_omegaconf_globals(tmp_path: Path, random_net: RandomNet,
                                                               write_release: WriteRelease) -> None:
    from omegaconf import DictConfig

    net = random_net("pf", seed=7)
    path = write_release(tmp_path / "pft-xs_step400k_ema.ckpt", net)
    names = {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in omegaconf_globals()}
    assert set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path))) == names
    with pytest.raises(Exception, match="GLOBAL omegaconf"):  # plain weights-only loading refuses the file
        torch.load(path, weights_only=True)
    loaded = load_external(path, "pf")  # no preset: the size comes from the embedded config
    assert loaded.cfg == net.cfg
    x, t, y = inputs(net, per_token=True)
    assert torch.equal(loaded(x, t, y)[0], net(x, t, y)[0])
    assert DictConfig not in torch.serialization.get_safe_globals()  # allowed for that one load only
    assert load_external(path, "pf", PRESET, num_classes=10).cfg == net.cfg  # agreeing preset/override: fine
    plain = write_release(tmp_path / "plain.ckpt", net, config={"target": PF_TARGET, "params": release_params(net)})
    assert external_config(plain, "pf") == net.cfg  # hyper-parameters saved as plain dicts (train.py's path)


def test_release_file_contradictions_and_unknown_configs(tmp_path: Path, random_net: RandomNet,
                                                         write_release: WriteRelease) -> None:
    net = random_net("pf")
    path = write_release(tmp_path / "pft.ckpt", net)
    with pytest.raises(PfbenchError, match=r"--preset B/2 contradicts .*embedded config: .*depth 12 vs 4"):
        load_external(path, "pf", "B/2")
    with pytest.raises(PfbenchError, match="num_classes=7 contradicts"):
        load_external(path, "pf", num_classes=7)
    with pytest.raises(PfbenchError, match="use --layout pf, not sit"):
        load_external(path, "sit")
    other = write_release(tmp_path / "t2i.ckpt", net, target="patch_flow.models.pf_transformer_t2i.PFT2I")
    with pytest.raises(PfbenchError, match="model target .*PFT2I.* is not supported"):
        load_external(other, "pf")
    weird = write_release(tmp_path / "weird.ckpt", net, config={"target": PF_TARGET, "params": {"depth": "${x}"}})
    with pytest.raises(PfbenchError, match="depth='\\$\\{x\\}' is not a number"):
        load_external(weird, "pf")
    text = write_release(tmp_path / "text.ckpt", net, config="pft-b")
    with pytest.raises(PfbenchError, match="'config' holds a str, not the reference's model config"):
        load_external(text, "pf")


class _MakesDirOnLoad:
    """Unpickling this would call os.mkdir(marker): proves a refused file runs nothing."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.mkdir, (str(self.marker),)


def test_other_pickled_config_is_refused_and_runs_nothing(tmp_path: Path, random_net: RandomNet,
                                                          write_release: WriteRelease) -> None:
    import os

    net = random_net("pf")
    marker = tmp_path / "was_run"
    for name, config in (("obj", _MakesDirOnLoad(marker)), ("fn", os.system), ("ns", argparse.Namespace(a=1))):
        path = write_release(tmp_path / f"{name}.ckpt", net, config=config)
        with pytest.raises(PfbenchError, match="cannot be read safely; nothing was run") as err:
            load_external(path, "pf")
        assert "\n" not in str(err.value)
    assert not marker.exists()
    for name, data in (("bytes.pt", bytes(range(256)) * 8), ("zip.pt", b"PK\x03\x04garbage")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(PfbenchError, match="is not a readable"):
            load_external(tmp_path / name, "pf")


def test_plain_sit_state_dict_needs_no_preset(tmp_path: Path, random_net: RandomNet,
                                              to_external: ToExternal) -> None:
    net = random_net("sit", seed=2)
    path = tmp_path / "SiT-XS-2.pt"
    torch.save(to_external(net, sigma=True), path)  # SiT/DiT release: a bare state dict
    loaded = load_external(path, "sit")
    assert loaded.cfg == net.cfg  # depth, width, patch, channels, size, classes, mlp ratio from shapes
    x, t, y = inputs(net, per_token=False)
    assert torch.equal(loaded(x, t, y)[0], net(x, t, y)[0])
    with pytest.raises(PfbenchError, match=r"--preset cpu-s contradicts .*weights: depth 6 vs 4, width 128 vs 64"):
        load_external(path, "sit", "cpu-s")
    odd = DiT(net_config(PRESET, "sit", width=32, heads=2)).eval()  # width 32: no preset says its heads
    torch.save(to_external(odd, sigma=False), tmp_path / "odd.pt")
    with pytest.raises(PfbenchError, match="heads=N"):
        load_external(tmp_path / "odd.pt", "sit")
    assert load_external(tmp_path / "odd.pt", "sit", heads=2).cfg == odd.cfg


def test_parse_overrides_is_typed_like_a_suite() -> None:
    assert parse_overrides(["num_classes=10", "mlp_ratio=4", "repa_depth=none", "per_token_t=false"]) == {
        "num_classes": 10, "mlp_ratio": 4.0, "repa_depth": None, "per_token_t": False}
    with pytest.raises(PfbenchError, match="depth takes int"):
        parse_overrides(["depth=abc"])
    with pytest.raises(PfbenchError, match="did you mean 'depth'"):
        parse_overrides(["dept=3"])
    with pytest.raises(PfbenchError, match="expected KEY=VALUE"):
        parse_overrides(["depth"])


def test_cli_samples_a_release_file_without_preset(tmp_path: Path, random_net: RandomNet,
                                                   write_release: WriteRelease) -> None:
    from typer.testing import CliRunner

    from pfbench.cli import app
    from pfbench.registry import SAMPLERS
    from pfbench.sample.generate import generate
    from pfbench.sample.shards import load_shards

    net = random_net("pf", seed=4)
    path = write_release(tmp_path / "pft-xs_step400k_ema.ckpt", net)
    out = tmp_path / "shards"
    args = ["sample", str(path), str(out), "--layout", "pf", "--sampler", "euler", "--nfe", "4",
            "--num-samples", "6", "--batch-size", "6", "--shard-size", "3", "--override", "num_classes=10"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert len(list(out.glob("shard_*.npz"))) == 2
    want = generate(external_adapter(path, "pf"), SAMPLERS.get("euler")(steps=1).with_budget(4), n=6, seed=0,
                    batch_size=6)
    assert torch.equal(torch.as_tensor(load_shards(out)[0]), want.images)


def test_cli_refusals_are_one_line_and_write_nothing(tmp_path: Path, random_net: RandomNet,
                                                     write_release: WriteRelease) -> None:
    import os
    import subprocess
    import sys

    net = random_net("pf")
    good = write_release(tmp_path / "pft.ckpt", net)
    marker = tmp_path / "was_run"
    evil = write_release(tmp_path / "evil.ckpt", net, config=_MakesDirOnLoad(marker))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for i, (ckpt, extra, needle) in enumerate([
        (evil, [], "holds a pickled posix.mkdir"),
        (good, ["--preset", "B/2"], "--preset B/2 contradicts"),
        (good, ["--override", "num_classes=7"], "num_classes=7 contradicts"),
    ]):
        out = tmp_path / f"out-{i}"
        proc = subprocess.run([sys.executable, "-m", "pfbench.cli", "sample", str(ckpt), str(out), "--layout", "pf",
                               *extra], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 1, proc.stderr
        assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert not out.exists()
    assert not marker.exists()


def test_suite_model_with_layout_needs_no_preset(tmp_path: Path, random_net: RandomNet,
                                                 write_release: WriteRelease) -> None:
    """A suite names a release file with ``layout: pf`` only; plan reads its size from the embedded config."""
    from pfbench.suite.models import SuiteModels
    from pfbench.suite.parse import load_suite

    net = random_net("pf", seed=5)
    path = write_release(tmp_path / "pft-xs_step400k_ema.ckpt", net)
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: ext\ndata: {name: embedded, resolution: 16, seed: 0, test_size: 100}\n"
        f"models:\n  pf: {{checkpoint: '{path}', layout: pf}}\n"
        "grid:\n  - models: [pf]\n    samplers: [euler_pf]\n"
        "sweep: {nfe: [4], seeds: [0], num_samples: 10, cfg_scale: [1.0]}\nmetrics: [fd_embedded]\n"
    )
    spec = load_suite(suite)
    assert spec.models["pf"].preset is None
    assert SuiteModels(spec, tmp_path / "runs", False, None).net_config("pf") == net.cfg  # type: ignore[arg-type]


def test_wrong_shape_safetensors_say_what_is_wrong(tmp_path: Path, random_net: RandomNet,
                                                   to_external: ToExternal) -> None:
    from safetensors.torch import save_file

    ext = {k: v.contiguous() for k, v in to_external(random_net("sit"), sigma=False).items()}
    flat = {**ext, "x_embedder.proj.weight": ext["x_embedder.proj.weight"].flatten(1)}  # 2-D: not a patch embedding
    save_file(flat, tmp_path / "flat.safetensors")
    with pytest.raises(PfbenchError, match=r"flat\.safetensors: x_embedder\.proj\.weight has shape \(64, 12\); a "
                                           r"patch embedding is \(width, channels, patch, patch\)"):
        load_external(tmp_path / "flat.safetensors", "sit")
    save_file({k: v for k, v in ext.items() if not k.startswith("x_embedder")}, tmp_path / "headless.safetensors")
    with pytest.raises(PfbenchError, match=r"headless\.safetensors: no network width: .*no patch embedding"):
        load_external(tmp_path / "headless.safetensors", "sit")
