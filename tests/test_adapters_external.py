"""External DiT/SiT/PF checkpoints -> pfbench DiT: key mapping, learned sigma, wrappers, conventions."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from pfbench import PfbenchError
from pfbench.adapters.dit import DiTAdapter
from pfbench.adapters.external import convert_state_dict, external_adapter, load_external, read_state_dict
from pfbench.nets.dit import DiT
from pfbench.nets.presets import net_config

PRESET = "cpu-xs"  # depth 4, width 64, 3×16×16, patch 2, 10 classes


def random_net(kind: str, seed: int = 0) -> DiT:
    """A tiny pfbench net with every parameter random (the default init zeroes adaLN and the output)."""
    torch.manual_seed(seed)
    net = DiT(net_config(PRESET, kind))
    with torch.no_grad():
        for prm in net.parameters():
            prm.copy_(torch.randn_like(prm) * 0.1)
    return net.eval()


def dit_pos_embed(width: int, grid: int) -> Tensor:
    """DiT/MAE fixed position embedding, written from the paper's recipe: column code first, then row."""
    def code(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2) / (d / 2))
        ang = pos.reshape(-1)[:, None] * omega[None]
        return np.concatenate([np.sin(ang), np.cos(ang)], axis=1)

    cols, rows = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64))
    emb = np.concatenate([code(width // 2, cols), code(width // 2, rows)], axis=1)
    return torch.from_numpy(emb).float()[None]  # (1, T, D)


def to_external(net: DiT, sigma: bool, pos: Tensor | None = None) -> dict[str, Tensor]:
    """Inverse of the adapter, written independently from the DiT/SiT/PatchForcingDiT key names."""
    cfg = net.cfg
    sd = net.state_dict()
    ext: dict[str, Tensor] = {
        "x_embedder.proj.weight": sd["patch_embed.weight"],
        "x_embedder.proj.bias": sd["patch_embed.bias"],
        "pos_embed": net.get_buffer("pos").clone() if pos is None else pos,
        "y_embedder.embedding_table.weight": sd["cond.y_table.weight"],
    }
    for i in (0, 2):
        for leaf in ("weight", "bias"):
            ext[f"t_embedder.mlp.{i}.{leaf}"] = sd[f"cond.t_mlp.{i}.{leaf}"]
    names = {"qkv": "attn.qkv", "proj": "attn.proj", "mlp.0": "mlp.fc1", "mlp.2": "mlp.fc2", "ada.1": "adaLN_modulation.1"}
    for b in range(cfg.depth):
        for ours, theirs in names.items():
            for leaf in ("weight", "bias"):
                ext[f"blocks.{b}.{theirs}.{leaf}"] = sd[f"blocks.{b}.{ours}.{leaf}"]
    for leaf in ("weight", "bias"):
        ext[f"final_layer.adaLN_modulation.1.{leaf}"] = sd[f"final.ada.1.{leaf}"]
        w = sd[f"final.linear.{leaf}"]
        if sigma:  # learn_sigma: per patch position, C mean channels then C sigma channels
            pp, c = cfg.patch**2, cfg.in_channels
            rest = w.shape[1:]
            both = torch.cat([w.reshape(pp, c, *rest), torch.randn(pp, c, *rest)], dim=1)
            w = both.reshape(pp * 2 * c, *rest)
        ext[f"final_layer.linear.{leaf}"] = w
    return ext


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
def test_sit_roundtrip_is_bit_identical_and_drops_sigma(layout: str) -> None:
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


def test_sit_without_learned_sigma_loads_too() -> None:
    net = random_net("sit", seed=3)
    back = rebuild(convert_state_dict(to_external(net, sigma=False), "sit", net.cfg), "sit")
    x, t, y = inputs(net, per_token=False)
    assert torch.equal(net(x, t, y)[0], back(x, t, y)[0])


def test_pf_roundtrip_per_token_with_logvar() -> None:
    net = random_net("pf", seed=1)
    back = rebuild(convert_state_dict(to_external(net, sigma=False), "pf", net.cfg), "pf")
    x, t, y = inputs(net, per_token=True)
    for dedup in (True, False):
        v0, lv0 = net(x, t, y, dedup=dedup)
        v1, lv1 = back(x, t, y, dedup=dedup)
        assert lv0 is not None and lv1 is not None
        assert torch.equal(v0, v1) and torch.equal(lv0, lv1)


def test_unmapped_missing_and_shape_errors_list_the_keys() -> None:
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


def test_layout_config_and_label_table_errors() -> None:
    sit, pf = random_net("sit"), random_net("pf")
    with pytest.raises(PfbenchError, match="per_token_t=True"):
        convert_state_dict(to_external(pf, sigma=False), "pf", sit.cfg)
    with pytest.raises(PfbenchError, match="unknown checkpoint layout"):
        convert_state_dict(to_external(sit, sigma=False), "sd3", sit.cfg)
    ext = to_external(sit, sigma=False)
    ext["y_embedder.embedding_table.weight"] = ext["y_embedder.embedding_table.weight"][:-1]  # no null row
    with pytest.raises(PfbenchError, match="no null class"):
        convert_state_dict(ext, "sit", sit.cfg)


def test_prefixes_are_stripped() -> None:
    net = random_net("sit")
    ext = {f"module._orig_mod.{k}": v for k, v in to_external(net, sigma=True).items()}
    conv = convert_state_dict(ext, "sit", net.cfg)
    assert torch.equal(conv["blocks.3.ada.1.weight"], net.state_dict()["blocks.3.ada.1.weight"])


def test_wrappers_prefer_ema(tmp_path: Path) -> None:
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


def test_unsafe_or_missing_files_are_user_errors(tmp_path: Path) -> None:
    net = random_net("sit")
    torch.save({"ema": to_external(net, sigma=True), "args": argparse.Namespace(lr=1e-4)}, tmp_path / "train.pt")
    with pytest.raises(PfbenchError, match="cannot be read safely"):
        read_state_dict(tmp_path / "train.pt")
    with pytest.raises(PfbenchError, match="not found"):
        read_state_dict(tmp_path / "nope.pt")
    torch.save({"step": 3}, tmp_path / "empty.pt")
    with pytest.raises(PfbenchError, match="no tensors"):
        read_state_dict(tmp_path / "empty.pt")


def test_checkpoint_position_embedding_is_installed(tmp_path: Path) -> None:
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


def test_external_adapter(tmp_path: Path) -> None:
    net = random_net("sit")
    torch.save({"ema": to_external(net, sigma=True)}, tmp_path / "sit.pt")
    adapter = external_adapter(tmp_path / "sit.pt", "sit", PRESET)
    assert isinstance(adapter, DiTAdapter) and not adapter.per_token and not adapter.has_difficulty
    with pytest.raises(PfbenchError, match="ε-prediction"):
        external_adapter(tmp_path / "sit.pt", "dit", PRESET)
