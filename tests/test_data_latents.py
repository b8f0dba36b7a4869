"""Latent-model path (ImageNet-style): VAE loading, ADM crop, latent store, training and a suite run on latents.

A tiny AutoencoderKL (random weights, down-sampling 2) stands in for SD-VAE: the code path is the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from pfbench import PfbenchError

diffusers = pytest.importorskip("diffusers")

TINY_VAE = {
    "in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2, "block_out_channels": [8, 16], "layers_per_block": 1,
    "latent_channels": 4, "norm_num_groups": 4, "sample_size": 16, "scaling_factor": 0.5,
}  # fmt: skip


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("vae")
    diffusers.AutoencoderKL(**TINY_VAE).save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes × 4 images of assorted sizes (PNG), like ImageNet's train/<synset>/ layout."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for c, name in enumerate(["n02", "n01", "n03"]):  # unsorted creation; labels follow sorted names
        (root / name).mkdir()
        for i in range(4):
            h, w = (16 + 8 * i, 16 + 4 * c)
            arr = (rng.random((h, w, 3)) * 255).astype(np.uint8)
            Image.fromarray(arr).save(root / name / f"img{i}.png")
    return root


def test_load_vae_matches_diffusers_and_refuses_bad_files(vae_dir: Path, tmp_path: Path) -> None:
    from pfbench.data.vae import load_vae

    vae = load_vae(str(vae_dir))
    assert (vae.factor, vae.scale, vae.channels) == (2, 0.5, 4)
    ref = diffusers.AutoencoderKL.from_pretrained(vae_dir).eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    mean, std = vae.moments(x)
    with torch.no_grad():
        dist = ref.encode(x).latent_dist
        assert torch.equal(mean, dist.mean) and torch.equal(std, dist.std)
        z = torch.randn(2, 4, 8, 8)
        assert torch.equal(vae.decode(z), ref.decode(z / 0.5).sample)  # latents are scaled by scaling_factor
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(PfbenchError, match="unreadable"):
        load_vae(str(tmp_path / "bad"))
    with pytest.raises(PfbenchError, match="no file"):
        load_vae(str(tmp_path / "nowhere"))


def test_missing_known_vae_names_the_file_and_places(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pfbench.data.vae import load_vae

    monkeypatch.setenv("PFBENCH_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(PfbenchError, match=r"sd-vae-ft-ema weights file diffusion_pytorch_model.safetensors not "
                                           r"found .*sd-vae-ft-ema.*huggingface.co/stabilityai"):
        load_vae("sd-vae-ft-ema")


def test_adm_center_crop() -> None:
    from pfbench.data.imagefolder import center_crop_adm

    rng = np.random.default_rng(1)
    arr = (rng.random((16, 16, 3)) * 255).astype(np.uint8)
    assert np.array_equal(center_crop_adm(Image.fromarray(arr), 16), arr)  # already the size: unchanged
    big = np.repeat(np.repeat(arr, 2, 0), 2, 1)  # 32×32: one box-halving step gives arr back exactly
    assert np.array_equal(center_crop_adm(Image.fromarray(big), 16), arr)
    wide = (rng.random((20, 40, 3)) * 255).astype(np.uint8)
    out = center_crop_adm(Image.fromarray(wide), 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8


def test_image_folder_labels_follow_sorted_class_names(folder: Path) -> None:
    from pfbench.data.imagefolder import ImageFolder

    f = ImageFolder.scan(folder)
    assert f.classes == ("n01", "n02", "n03")
    assert f.labels == (0,) * 4 + (1,) * 4 + (2,) * 4
    assert all(p.parent.name == f.classes[lab] for p, lab in zip(f.files, f.labels, strict=True))


class _Dies:
    """Wraps a Vae and raises after ``calls`` encoder calls (a killed encode)."""

    def __init__(self, vae: Any, calls: int) -> None:
        self.vae, self.left = vae, calls

    def __getattr__(self, name: str) -> Any:
        return getattr(self.vae, name)

    def moments(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.left == 0:
            raise KeyboardInterrupt
        self.left -= 1
        return self.vae.moments(pixels)  # type: ignore[no-any-return]


def test_encode_resumes_after_a_kill_and_matches_a_straight_run(vae_dir: Path, folder: Path, tmp_path: Path) -> None:
    from pfbench.data.latents import LatentData, encode_folder
    from pfbench.data.vae import load_vae

    vae = load_vae(str(vae_dir))
    straight = encode_folder(folder, tmp_path / "a", vae, resolution=16, batch_size=5, keep_images=True)
    with pytest.raises(KeyboardInterrupt):
        encode_folder(folder, tmp_path / "b", _Dies(vae, 1), resolution=16, batch_size=5, keep_images=True)
    with pytest.raises(PfbenchError, match="interrupted: rerun"):
        LatentData.open(tmp_path / "b")
    assert json.loads((tmp_path / "b" / "progress.json").read_text())["done"] == 5
    encode_folder(folder, tmp_path / "b", vae, resolution=16, batch_size=5, keep_images=True)
    for name in ("moments.npy", "labels.npy", "images.npy", "manifest.json"):
        assert (straight / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert not (tmp_path / "b" / "progress.json").exists()
    with pytest.raises(PfbenchError, match="already holds a finished latent store of other settings"):
        encode_folder(folder, tmp_path / "b", vae, resolution=16, batch_size=5, keep_images=True, limit=6)
    with pytest.raises(KeyboardInterrupt):  # an interrupted encode is not overwritten by other settings either
        encode_folder(folder, tmp_path / "c", _Dies(vae, 1), resolution=16, batch_size=5)
    with pytest.raises(PfbenchError, match="interrupted encode with other settings \\(5 images done\\)"):
        encode_folder(folder, tmp_path / "c", vae, resolution=16, batch_size=5, limit=8)
    assert (straight / "moments.npy").read_bytes() == (tmp_path / "b" / "moments.npy").read_bytes()

    data = LatentData.open(straight)
    assert (data.size, data.num_classes, data.shape) == (12, 3, (4, 8, 8))
    idx = torch.tensor([7, 0, 11])
    x1, y = data.sample(idx, torch.zeros(3, 4, 8, 8))
    pixels = data.pixels(idx)
    assert pixels is not None and pixels.shape == (3, 3, 16, 16)
    mean, std = vae.moments(pixels)
    assert torch.allclose(x1, mean * 0.5, atol=2e-3 * float(mean.abs().max()) + 1e-3)  # float16 storage
    eps = torch.randn(3, 4, 8, 8)
    x1e, _ = data.sample(idx, eps)
    assert torch.allclose(x1e - x1, std * eps * 0.5, atol=5e-3)
    assert y.tolist() == [1, 0, 2]


def test_training_on_latents(vae_dir: Path, folder: Path, tmp_path: Path) -> None:
    from pfbench.data.latents import encode_folder
    from pfbench.data.vae import load_vae
    from pfbench.train.loop import spec_from_dict, train

    store = encode_folder(folder, tmp_path / "store", load_vae(str(vae_dir)), resolution=16, batch_size=6)
    cfg = {"kind": "pf", "model": "cpu-xs", "data": {"name": "latents", "path": str(store)}, "steps": 3,
           "batch_size": 4, "warmup": 1, "lr": 1.0e-3, "ckpt_every": 3, "log_every": 1, "ema_decay": 0.9}
    spec = spec_from_dict(cfg)
    net = spec.net_config()
    assert (net.in_channels, net.input_size, net.num_classes) == (4, 8, 3)
    res = train(spec, tmp_path / "run", progress=False)
    assert res.steps == 3 and np.isfinite(res.losses["loss"])
    again = train(spec, tmp_path / "run2", progress=False)
    assert again.losses == res.losses  # posterior noise is seeded per step too
    with pytest.raises(PfbenchError, match="data.path is for"):
        spec_from_dict({**cfg, "data": {"name": "latents"}})
    with pytest.raises(PfbenchError, match="not a finished latent store"):
        spec_from_dict({**cfg, "data": {"name": "latents", "path": str(tmp_path)}})


def test_suite_runs_a_latent_model_with_its_decoder(vae_dir: Path, folder: Path, tmp_path: Path) -> None:
    """An imagenet-style suite on CPU: latent model + VAE decoder, reference = an image folder."""
    import yaml

    from pfbench.data.latents import encode_folder
    from pfbench.data.vae import load_vae
    from pfbench.results import read_results
    from pfbench.suite.parse import load_suite
    from pfbench.suite.runner import Runner

    store = encode_folder(folder, tmp_path / "store", load_vae(str(vae_dir)), resolution=16, batch_size=6)
    suite = {
        "name": "latent", "data": {"name": "imagenet", "resolution": 16, "reference": str(folder / "n01")},
        "models": {"lat": {"train": {"kind": "pf", "model": "cpu-xs", "steps": 2, "batch_size": 4, "warmup": 1,
                                     "ckpt_every": 2, "log_every": 1,
                                     "data": {"name": "latents", "path": str(store)}},
                           "vae": str(vae_dir)}},
        "grid": [{"models": ["lat"], "samplers": ["euler_pf", {"name": "dual_loop", "params": {"n_inner": 2}}]}],
        "sweep": {"nfe": [4], "num_samples": 10},
        "metrics": ["is_embedded"],
        "eval": {"batch_size": 10, "learning_curve": False, "parallel_train": False},
    }
    path = tmp_path / "latent.yaml"
    path.write_text(yaml.safe_dump(suite))
    spec = load_suite(path)
    Runner(spec, tmp_path / "results", tmp_path / "reports", tmp_path / "runs", progress=False).run()
    df = read_results(tmp_path / "results" / "latent")
    cells = df[df["kind"] == "cell"]
    assert cells["part"].nunique() == 2 and cells["decoder"].str.startswith(str(vae_dir) + "@").all()
    assert (cells[cells["metric"] == "is_embedded"]["value"] >= 1.0).all()  # IS is at least 1
    assert (tmp_path / "reports" / "latent" / "samples.png").is_file()
    assert (tmp_path / "reports" / "latent" / "schedule_lat_dual_loop.png").is_file()
    assert not df["kind"].isin(["reference"]).any()  # embedded-only reference rows are not made here
    with pytest.raises(PfbenchError, match="data.reference"):
        path.write_text(yaml.safe_dump({**suite, "data": {"name": "imagenet", "resolution": 16}}))
        load_suite(path)
    with pytest.raises(PfbenchError, match="did you mean 'imagenet'"):
        path.write_text(yaml.safe_dump({**suite, "data": {"name": "imagenett", "reference": "x"}}))
        load_suite(path)


@pytest.mark.parametrize("recipe", ["imagenet_pf_b2", "imagenet_sit_b2", "imagenet_pf_xl2", "imagenet_sit_xl2"])
def test_imagenet_recipes_have_the_paper_defaults(recipe: str, vae_dir: Path, folder: Path, tmp_path: Path) -> None:
    from pfbench.data.latents import encode_folder
    from pfbench.data.vae import load_vae
    from pfbench.suite.parse import compose_yaml
    from pfbench.train.loop import spec_from_dict

    store = encode_folder(folder, tmp_path / "store", load_vae(str(vae_dir)), resolution=16, batch_size=12)
    path = Path(__file__).resolve().parents[1] / "suites" / "recipes" / f"{recipe}.yaml"
    spec = spec_from_dict(compose_yaml(path, [f"data.path={store}"]))
    assert (spec.model, spec.steps, spec.batch_size, spec.lr, spec.warmup, spec.ema_decay, spec.grad_clip) == (
        "XL/2" if recipe.endswith("xl2") else "B/2", 400_000, 256, 1e-4, 1000, 0.9999, 1.0)
    assert spec.timesteps is not None
    assert (spec.kind, spec.timesteps.name) == (("pf", "ltg") if "pf" in recipe else ("sit", "global_uniform"))


@pytest.mark.gpu
def test_latent_suite_on_cuda_matches_cpu(vae_dir: Path, folder: Path, tmp_path: Path) -> None:
    """eval.device=cuda moves sampling, decoding, traces and metrics to the GPU; values agree with the CPU run."""
    import yaml

    from pfbench.data.latents import encode_folder
    from pfbench.data.vae import load_vae
    from pfbench.results import read_results
    from pfbench.suite.parse import load_suite
    from pfbench.suite.runner import Runner

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    store = encode_folder(folder, tmp_path / "store", load_vae(str(vae_dir)), resolution=16, batch_size=6)
    values = {}
    for device in ("cpu", "cuda"):
        suite = {
            "name": f"latent_{device}", "data": {"name": "imagenet", "resolution": 16, "reference": str(folder / "n01")},
            "models": {"lat": {"train": {"kind": "pf", "model": "cpu-xs", "steps": 2, "batch_size": 4, "warmup": 1,
                                         "ckpt_every": 2, "log_every": 1, "device": "cpu",
                                         "data": {"name": "latents", "path": str(store)}},
                               "vae": str(vae_dir)}},
            "grid": [{"models": ["lat"], "samplers": ["euler_pf", "look_ahead"]}],
            "sweep": {"nfe": [4], "num_samples": 10},
            "metrics": ["is_embedded"],
            "eval": {"batch_size": 10, "learning_curve": False, "parallel_train": False, "device": device},
        }
        path = tmp_path / f"{device}.yaml"
        path.write_text(yaml.safe_dump(suite))
        Runner(load_suite(path), tmp_path / "results", tmp_path / "reports", tmp_path / "runs", progress=False).run()
        df = read_results(tmp_path / "results" / f"latent_{device}")
        values[device] = df[df["kind"] == "cell"].sort_values(["sampler", "metric"])["value"].to_numpy(dtype=float)
    assert np.allclose(values["cpu"], values["cuda"], rtol=0.05, atol=0.05), values


def test_cli_data_encode_and_its_one_line_errors(vae_dir: Path, folder: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PFBENCH_WEIGHTS": str(tmp_path / "w"),
               "HF_HUB_CACHE": str(tmp_path / "hub")}
        return subprocess.run([sys.executable, "-m", "pfbench.cli", "data", "encode", *args], capture_output=True,
                              text=True, env=env, timeout=300)

    ok = cli(str(folder), str(tmp_path / "store"), "--vae", str(vae_dir), "--resolution", "16", "--keep-images")
    assert ok.returncode == 0, ok.stderr
    man = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert (man["count"], man["latent_shape"], man["images"]) == (12, [4, 8, 8], True)
    missing = cli(str(folder), str(tmp_path / "s2"))  # default sd-vae-ft-ema, nowhere on this machine
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert "sd-vae-ft-ema weights file diffusion_pytorch_model.safetensors not found" in missing.stderr
    nodir = cli(str(tmp_path / "nope"), str(tmp_path / "s3"), "--vae", str(vae_dir))
    assert nodir.returncode == 1 and "image folder" in nodir.stderr and "does not exist" in nodir.stderr
