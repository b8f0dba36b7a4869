"""FD-DINOv2: original-layout weights -> timm, preprocessing, features, the metric (offline, tiny net).

The real ViT-L/14 weights are not needed: a 2-block ViT-S/14 with random weights is written in the
original facebookresearch key layout and loaded through the same path (``ARCHS`` patched).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pfbench import PfbenchError
from pfbench.encoders import dinov2
from pfbench.encoders.dinov2 import DINOv2, to_input
from pfbench.metrics.dinov2 import FDDINOv2
from pfbench.metrics.refstats import Reference, RefStats, compute_ref_stats
from pfbench.registry import FEATURES, METRICS
from pfbench.types import Cond

timm = pytest.importorskip("timm")

TINY = dinov2.Arch("vit_small_patch14_dinov2", 384, depth=2)
# Key names of the original DINOv2 checkpoints (block_chunks=0), e.g. dinov2_vitl14_pretrain.pth.
ORIGINAL_KEY = re.compile(
    r"(cls_token|pos_embed|mask_token|patch_embed\.proj\.(weight|bias)|norm\.(weight|bias)"
    r"|blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)|blocks\.\d+\.ls[12]\.gamma)"
)


@pytest.fixture(autouse=True)
def tiny_arch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(dinov2.ARCHS, "dinov2-vitl14", TINY)


def reference_net(seed: int = 0) -> torch.nn.Module:
    """The tiny net in timm's layout at 224 px with seeded random weights (LayerScale made non-trivial)."""
    torch.manual_seed(seed)
    net = timm.create_model(TINY.timm_name, pretrained=False, num_classes=0, img_size=224, depth=TINY.depth)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("gamma"):
                p.uniform_(0.5, 1.5)
    return net.eval()


def write_original(path: Path, net: torch.nn.Module, grid: int) -> dict[str, torch.Tensor]:
    """Saves ``net`` in the original DINOv2 layout: mask_token added, pos_embed on a grid×grid patch grid."""
    state = {k: v.clone() for k, v in net.state_dict().items()}
    dim = state["cls_token"].shape[-1]
    if grid != 16:
        state["pos_embed"] = torch.randn(1, 1 + grid * grid, dim, generator=torch.Generator().manual_seed(1))
    state["mask_token"] = torch.zeros(1, dim)
    assert all(ORIGINAL_KEY.fullmatch(k) for k in state), [k for k in state if not ORIGINAL_KEY.fullmatch(k)]
    torch.save(state, path)
    return state


def images(n: int, seed: int, size: int = 32, smooth: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    if smooth:  # a different distribution: low-frequency, brighter images
        x = (F.avg_pool2d(x.float(), 5, 1, 2) * 0.5 + 120).round().to(torch.uint8)
    return x


def test_loads_original_layout_into_timm(tmp_path: Path) -> None:
    net = reference_net()
    write_original(tmp_path / "w.pth", net, grid=16)  # native grid: the features must match exactly
    ext = DINOv2(tmp_path / "w.pth")
    x = images(3, 0)
    got = ext(x)["pool"]
    assert got.shape == (3, 384) and got.dtype == torch.float32
    with torch.no_grad():
        want = net(to_input(x, "pil"))  # (3, 384) CLS token after the final norm
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert ext.fingerprint()["weights_sha256"] != ""


def test_pos_embed_resampled_like_the_hub_model(tmp_path: Path) -> None:
    state = write_original(tmp_path / "w.pth", reference_net(), grid=37)  # 518 px grid, as released
    ext = DINOv2(tmp_path / "w.pth")
    pos = state["pos_embed"]  # (1, 1 + 37², 384)
    # DINOv2 hub's interpolate_pos_encoding for a 224 px input: scale (16 + 0.1)/37, no antialias.
    patch = pos[:, 1:].reshape(1, 37, 37, -1).permute(0, 3, 1, 2)
    s = (16 + 0.1) / math.sqrt(37 * 37)
    patch = F.interpolate(patch, scale_factor=(s, s), mode="bicubic").permute(0, 2, 3, 1).reshape(1, 256, -1)
    want = torch.cat([pos[:, :1], patch], dim=1)
    got = ext.net.pos_embed.detach()
    assert got.shape == (1, 257, 384)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    # timm's own resampling (antialiased, exact size) is a different function: the choice matters.
    from timm.layers import resample_abs_pos_embed

    assert not torch.allclose(resample_abs_pos_embed(pos, [16, 16], num_prefix_tokens=1), want, atol=1e-3)


def test_preprocessing_pil_bicubic_and_imagenet_norm() -> None:
    from PIL import Image

    x = images(2, 3, size=40, smooth=True)
    got = to_input(x, "pil")
    assert got.shape == (2, 3, 224, 224)
    pil = np.array(
        Image.fromarray(x[1].permute(1, 2, 0).numpy()).resize((224, 224), Image.Resampling.BICUBIC)
    )
    want = (
        torch.from_numpy(pil).permute(2, 0, 1).float() / 255
        - torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    ) / (torch.tensor([0.229, 0.224, 0.225])[:, None, None])
    torch.testing.assert_close(got[1], want)
    clean = to_input(x, "clean")
    # clean-fid's float resize: the same bicubic without uint8 rounding (1/255 = 0.017 after /std)
    assert clean.shape == got.shape and 0 < (clean - got).abs().max() < 0.05


def test_fd_zero_on_itself_positive_on_other_sets_and_batch_independent(tmp_path: Path) -> None:
    write_original(tmp_path / "w.pth", reference_net(), grid=37)
    ext_a = DINOv2(tmp_path / "w.pth", max_batch=2)
    ext_b = DINOv2(tmp_path / "w.pth", max_batch=5)
    real, same, other = images(6, 1), images(6, 1), images(6, 2, smooth=True)
    ref = compute_ref_stats([real[:4], real[4:]], ext_a, dataset_key="test-real", keep_pool=False, cache_dir=tmp_path)
    assert ref.mu.shape == (384,) and ref.sigma.shape == (384, 384) and ref.pool is None

    def fd(ext: DINOv2, x: torch.Tensor, batch: int) -> float:
        metric = FDDINOv2(Reference.of(ref))
        for i in range(0, x.shape[0], batch):
            metric.update(ext(x[i : i + batch]), Cond(torch.zeros(min(batch, x.shape[0] - i), dtype=torch.long)))
        return metric.compute()["fd_dinov2"]

    assert fd(ext_a, same, 3) < 1e-6 * float(np.trace(ref.sigma))
    far = fd(ext_a, other, 3)
    assert far > 0.1 * float(np.trace(ref.sigma))
    # batch size (network batches and update batches) changes nothing beyond float rounding
    torch.testing.assert_close(ext_a(other[:3])["pool"], ext_b(other[:3])["pool"], rtol=0, atol=1e-5)
    assert fd(ext_b, other, 4) == pytest.approx(far, rel=1e-5)


def test_missing_weights_is_one_line_listing_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PFBENCH_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    with pytest.raises(PfbenchError) as err:
        DINOv2()
    msg = str(err.value)
    assert "\n" not in msg and "dinov2_vitl14_pretrain.pth" in msg
    assert str(tmp_path / "weights") in msg and str(tmp_path / "hub") in msg and "curl" in msg


def test_bad_files_give_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(PfbenchError, match="cannot read") as err:
        DINOv2(tmp_path / "junk.pth")
    assert "\n" not in str(err.value)
    state = write_original(tmp_path / "w.pth", reference_net(), grid=16)
    state["blocks.5.attn.qkv.weight"] = state["blocks.0.attn.qkv.weight"]  # a deeper net's weights
    torch.save(state, tmp_path / "deep.pth")
    with pytest.raises(PfbenchError, match="does not fit") as err:
        DINOv2(tmp_path / "deep.pth")
    assert "\n" not in str(err.value)


def test_registered_and_refuses_statistics_of_another_network(tmp_path: Path) -> None:
    assert METRICS.get("fd_dinov2") is FDDINOv2 and FDDINOv2.features == "dinov2" and FDDINOv2.needs == {"reference"}
    assert FEATURES.get("dinov2") is dinov2.from_context
    write_original(tmp_path / "w.pth", reference_net(), grid=16)
    metric = FDDINOv2(Reference.of(RefStats(np.zeros(2048), np.eye(2048))))  # Inception-sized statistics
    metric.update(DINOv2(tmp_path / "w.pth")(images(3, 0)), Cond(torch.zeros(3, dtype=torch.long)))
    with pytest.raises(PfbenchError, match="reference has 2048-d statistics, the dinov2 network gives 384-d"):
        metric.compute()
