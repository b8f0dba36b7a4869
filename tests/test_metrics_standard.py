"""Standard ImageNet metrics: agreement with torch-fidelity and clean-fid, sFID features, caching.

No pretrained weights exist offline, so agreement is tested on features that really differ:
a small deterministic CNN plugged into torch-fidelity (``register_feature_extractor``), clean-fid
(``custom_feat_extractor``) and pfbench alike, and torch-fidelity's Inception with seeded random
weights (non-degenerate: Kaiming-normal convolutions).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from pfbench import PfbenchError
from pfbench.data.embedded import EmbeddedSpec, generate
from pfbench.encoders.inception import InceptionV3, clean_resize
from pfbench.evaluate.parity import adm_parity
from pfbench.metrics.frechet import frechet_distance
from pfbench.metrics.refstats import (
    Reference,
    RefStats,
    compute_ref_stats,
    images_key,
    iter_npz_images,
    load_adm_npz,
    save_ref_stats,
)
from pfbench.metrics.standard import FID, KID, SFID, InceptionScore, PrecisionRecall
from pfbench.types import Cond, quantize

os.environ.setdefault("HF_HUB_OFFLINE", "1")
N = 200  # images per side in the fast agreement tests


# ------------------------------------------------------------------ data and a tiny feature net


@pytest.fixture(scope="module")
def images() -> tuple[Tensor, Tensor]:
    """(real, fake): 200 embedded train images vs 200 blurred, faded, tinted test images, uint8 32×32."""
    real = quantize(generate(EmbeddedSpec(resolution=32, split="train", size=N)).images)
    x = generate(EmbeddedSpec(resolution=32, split="test", size=N)).images
    x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)  # blur
    fake = quantize(x * 0.6 + torch.tensor([0.3, -0.2, 0.0])[None, :, None, None])  # lower contrast, tinted
    return real, fake


class _TinyCore(nn.Module):
    """Seeded random CNN: float [0, 255] images (B, 3, S, S) → pool (B, 64), logits (B, 16), spatial (B, 128)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1234)
        self.convs = nn.ModuleList(
            [nn.Conv2d(3, 32, 3, 2, 1), nn.Conv2d(32, 64, 3, 2, 1), nn.Conv2d(64, 64, 3, 1, 1)]
        )
        self.fc = nn.Linear(64, 16)
        for m in [*self.convs, self.fc]:
            fan_in = m.weight[0].numel()
            m.weight.data = torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5
            m.bias.data = torch.randn(m.bias.shape, generator=g) * 0.1
        self.fc.weight.data *= 12.0  # peaked softmax: IS clearly above 1
        self.eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = (x.float() - 128) / 128
        if h.shape[-1] > 64:  # clean mode input (299²): shrink first, keeps the test fast
            h = F.adaptive_avg_pool2d(h, 64)
        for conv in self.convs:
            h = F.relu(conv(h))  # (B, 64, S/4, S/4) at the end
        pool = h.mean((2, 3))  # (B, 64)
        spatial = F.adaptive_avg_pool2d(h[:, :8], 4).flatten(1)  # (B, 128)
        return {"pool": pool, "logits": self.fc(pool), "spatial": spatial}


_CORE = _TinyCore()


def _tf1x_up(images: Tensor) -> Tensor:
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    return interpolate_bilinear_2d_like_tensorflow1x(images.float(), size=(48, 48), align_corners=False)


class TinyExtractor:
    """pfbench ``FeatureExtractor`` over ``_CORE``; "tf1x" upsamples to 48 like torch-fidelity would."""

    keys = ("pool", "logits", "spatial")

    def __init__(self, resize: str = "tf1x") -> None:
        self.resize = resize
        self.calls = 0

    def fingerprint(self) -> dict[str, str]:
        return {"net": "tiny-test", "resize": self.resize}

    def __call__(self, images: Tensor) -> dict[str, Tensor]:
        self.calls += 1
        x = clean_resize(images) if self.resize == "clean" else _tf1x_up(images)
        return _CORE(x)


def _register_in_torch_fidelity() -> str:
    from torch_fidelity import register_feature_extractor
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    class _FidelityTiny(FeatureExtractorBase):
        def __init__(self, name: str, features_list: list[str], **kwargs: object) -> None:
            super().__init__(name, features_list)

        def forward(self, x: Tensor) -> tuple[Tensor, ...]:
            feats = _CORE(_tf1x_up(x))
            return tuple(feats[k] for k in self.features_list)

        @staticmethod
        def get_provided_features_list() -> tuple[str, ...]:
            return ("pool", "logits", "spatial")

        @staticmethod
        def get_default_feature_layer_for_metric(metric: str) -> str:
            return {"isc": "logits", "fid": "pool", "kid": "pool", "prc": "pool"}[metric]

        @staticmethod
        def can_be_compiled() -> bool:
            return False

        @staticmethod
        def get_dummy_input_for_compile() -> Tensor:
            return torch.zeros(1, 3, 4, 4, dtype=torch.uint8)

    name = "pfbench-test-tiny"
    if name not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(name, _FidelityTiny)
    return name


class _Images(torch.utils.data.Dataset):
    def __init__(self, x: Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> Tensor:
        return self.x[i]


def _run(metrics: list, fake: Tensor, batch: int, extractor) -> dict[str, float]:
    """What evaluate does: one extractor call per batch, its features fed to every metric."""
    for i in range(0, len(fake), batch):
        feats = extractor(fake[i : i + batch])
        for m in metrics:
            m.update(feats, Cond(torch.zeros(len(fake[i : i + batch]), dtype=torch.long)))
    return {k: v for m in metrics for k, v in m.compute().items()}


def _ref(real: Tensor, extractor, tmp: Path, batch: int = 64) -> RefStats:
    batches = (real[i : i + batch] for i in range(0, len(real), batch))
    return compute_ref_stats(batches, extractor, dataset_key=images_key(real), cache_dir=tmp)


# ------------------------------------------------------------------ agreement (fast)


def test_fid_kid_is_prc_agree_with_torch_fidelity(images: tuple[Tensor, Tensor], tmp_path: Path) -> None:
    from torch_fidelity import calculate_metrics

    real, fake = images
    name = _register_in_torch_fidelity()
    ref = _ref(real, TinyExtractor(), tmp_path)
    r = Reference.of(ref)
    ours = _run([FID(r), InceptionScore(), KID(r, subsets=20, kid_subset_size=100), PrecisionRecall(r)], fake,
                batch=50, extractor=TinyExtractor())  # fmt: skip
    theirs = calculate_metrics(
        input1=_Images(fake), input2=_Images(real), cuda=False, fid=True, isc=True, kid=True, prc=True,
        feature_extractor=name, kid_subsets=20, kid_subset_size=100, samples_shuffle=False, verbose=False,
        cache=False, batch_size=64, save_cpu_ram=True,
    )  # fmt: skip
    print("agreement with torch-fidelity (relative deltas): " + ", ".join(
        f"{k} {abs(ours[k] - theirs[t]) / abs(theirs[t]):.1e}" for k, t in (
            ("fid", "frechet_inception_distance"), ("is", "inception_score_mean"),
            ("kid", "kernel_inception_distance_mean"), ("precision", "precision"), ("recall", "recall"))))
    assert ours["fid"] > 0.2 * np.trace(
        ref.sigma
    )  # the two sets really differ (same-distribution FID ≈ 0.02·tr)
    assert ours["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-3)
    assert ours["is"] == pytest.approx(theirs["inception_score_mean"], rel=1e-6)
    assert ours["is"] > 1.5
    assert ours["is_std"] == pytest.approx(theirs["inception_score_std"], rel=1e-5)
    assert ours["kid"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-6)
    assert ours["precision"] == pytest.approx(theirs["precision"], abs=1e-6)
    assert ours["recall"] == pytest.approx(theirs["recall"], abs=1e-6)


def test_is_orders_match_adm_and_torch_fidelity_conventions(images: tuple[Tensor, Tensor]) -> None:
    """order="file" keeps sample order (ADM evaluator); order="shuffle" equals torch-fidelity's defaults."""
    from torch_fidelity import calculate_metrics

    _, fake = images
    name = _register_in_torch_fidelity()
    in_order, shuffled = InceptionScore(), InceptionScore(is_order="shuffle")
    _run([in_order, shuffled], fake, batch=50, extractor=TinyExtractor())
    file_is, shuffle_is = in_order.compute(), shuffled.compute()
    kw = dict(input1=_Images(fake), cuda=False, isc=True, feature_extractor=name, verbose=False, cache=False,
              batch_size=64, save_cpu_ram=True)  # fmt: skip
    theirs = calculate_metrics(**kw)  # torch-fidelity's defaults: samples_shuffle=True, rng_seed=2020
    theirs_in_order = calculate_metrics(**kw, samples_shuffle=False)
    assert shuffle_is["is"] == pytest.approx(theirs["inception_score_mean"], rel=1e-6)
    assert shuffle_is["is_std"] == pytest.approx(theirs["inception_score_std"], rel=1e-5)
    assert file_is["is"] == pytest.approx(theirs_in_order["inception_score_mean"], rel=1e-6)
    assert abs(file_is["is"] - shuffle_is["is"]) > 1e-4 * file_is["is"]  # the orders give different numbers
    with pytest.raises(PfbenchError, match="is_order: 'adm' is not one of file, shuffle"):
        InceptionScore(is_order="adm")


@pytest.mark.filterwarnings("ignore:Matrix is singular")  # clean-fid's sqrtm on an ill-conditioned product
def test_fid_agrees_with_clean_fid_clean_mode(images: tuple[Tensor, Tensor], tmp_path: Path) -> None:
    from cleanfid import fid as cfid

    real, fake = (x[:120] for x in images)
    dirs = []
    for name, x in (("real", real), ("fake", fake)):
        d = tmp_path / name
        d.mkdir()
        for i, img in enumerate(x.permute(0, 2, 3, 1).numpy()):
            Image.fromarray(img).save(d / f"{i:04d}.png")
        dirs.append(str(d))
    theirs = cfid.compute_fid(dirs[1], dirs[0], mode="clean", custom_feat_extractor=lambda x: _CORE(x)["pool"],
                              device=torch.device("cpu"), num_workers=0, batch_size=40, verbose=False)  # fmt: skip
    ref = _ref(real, TinyExtractor("clean"), tmp_path)
    ours = _run([FID(Reference.of(ref))], fake, batch=40, extractor=TinyExtractor("clean"))["fid"]
    print(f"agreement with clean-fid: FID {ours:.6g} vs {float(theirs):.6g}, rel {abs(ours / theirs - 1):.1e}")
    assert ours > 0.2 * np.trace(ref.sigma)
    assert ours == pytest.approx(float(theirs), rel=1e-3)


def test_identical_sets_streaming_and_batch_size(images: tuple[Tensor, Tensor], tmp_path: Path) -> None:
    real, fake = images
    ext = TinyExtractor()
    ref = _ref(real, ext, tmp_path)
    assert _run([FID(Reference.of(ref))], real, batch=64, extractor=ext)["fid"] == pytest.approx(0.0, abs=1e-6)
    runs = [_run([FID(Reference.of(ref)), SFID(Reference.of(ref))], fake, b, ext) for b in (7, 200)]
    assert runs[0]["fid"] == pytest.approx(runs[1]["fid"], rel=1e-9)
    assert runs[0]["sfid"] == pytest.approx(runs[1]["sfid"], rel=1e-9)
    # one-shot float64 numpy statistics give the same FID as the streaming statistics (float32 Gram products of
    # centred chunks, merged in float64: within 1e-6 relative, issue 11.5)
    f = _CORE(_tf1x_up(fake))["pool"].double().numpy()
    one_shot = frechet_distance(f.mean(0), np.cov(f, rowvar=False), ref.mu, ref.sigma)
    assert runs[0]["fid"] == pytest.approx(one_shot, rel=1e-6)


def test_refstats_cache_hit_and_key(images: tuple[Tensor, Tensor], tmp_path: Path) -> None:
    real, _ = images
    ext = TinyExtractor()
    a = _ref(real, ext, tmp_path)
    calls = ext.calls
    b = _ref(real, ext, tmp_path)
    assert ext.calls == calls and np.array_equal(a.sigma, b.sigma)  # cache hit: no feature pass
    assert a.provenance["dataset_key"] == images_key(real)
    _ref(real[1:], ext, tmp_path)  # other images -> other key -> recomputed
    assert ext.calls > calls
    files = sorted(p.name for p in (tmp_path / "refstats").iterdir())
    assert len(files) == 2 and all(f.endswith(".npz") for f in files)  # no temp files left
    (tmp_path / "refstats" / f"{a.provenance['cache_key'][:24]}.npz").write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        c = _ref(real, ext, tmp_path)
    assert np.array_equal(c.sigma, a.sigma)


def test_adm_npz_roundtrip_and_adm_parity(images: tuple[Tensor, Tensor], tmp_path: Path) -> None:
    real, fake = (x[:60] for x in images)
    ext = TinyExtractor()
    ref = _ref(real, ext, tmp_path)
    path = tmp_path / "ref.npz"
    save_ref_stats(ref, path)
    with np.load(path) as z:  # ADM layout + the reference images
        np.savez(
            path,
            arr_0=real.permute(0, 2, 3, 1).numpy(),
            **{k: z[k] for k in ("mu", "sigma", "mu_s", "sigma_s")},
        )
    loaded = load_adm_npz(path, ext, batch_size=25, cache_dir=tmp_path)
    assert (
        loaded.pool is not None
        and ref.pool is not None
        and loaded.sigma_s is not None
        and ref.sigma_s is not None
    )
    assert np.array_equal(loaded.mu, ref.mu) and np.array_equal(loaded.sigma_s, ref.sigma_s)
    np.testing.assert_allclose(loaded.pool, ref.pool, rtol=1e-6)
    streamed = torch.cat(list(iter_npz_images(path, batch_size=7)))
    assert torch.equal(streamed, real)
    sample = tmp_path / "sample.npz"
    np.savez(sample, arr_0=fake.permute(0, 2, 3, 1).numpy())
    out = adm_parity(sample, path, extractor=ext, batch_size=16, cache_dir=tmp_path)
    direct = _run([FID(Reference.of(ref)), SFID(Reference.of(ref))], fake, 60, ext)
    assert out["num_samples"] == 60 and out["fid"] == pytest.approx(direct["fid"], rel=1e-9)
    assert out["sfid"] == pytest.approx(direct["sfid"], rel=1e-9) and out["sfid"] > 0
    np.savez(tmp_path / "bad.npz", arr_0=np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(PfbenchError, match="missing 'mu'/'sigma'"):
        load_adm_npz(tmp_path / "bad.npz")


# ------------------------------------------------------------------ Inception (random weights)


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pfbench.bench.metrics import random_inception

    return random_inception(tmp_path_factory.mktemp("w") / "random-inception.pth")


def test_inception_features_pool_logits_spatial(
    inception_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch_fidelity.feature_extractor_inceptionv3 as fi

    def no_download(*a: object, **k: object) -> None:
        raise AssertionError("torch-fidelity tried to download")

    monkeypatch.setattr(fi, "load_state_dict_from_url", no_download)
    net = InceptionV3(inception_file, verify=False)
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    feats = net(x)
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "pool": (2, 2048),
        "logits": (2, 1008),
        "spatial": (2, 2023),
    }
    # logits are the *unbiased* ones (pool · Wᵀ, as the ADM evaluator and torch-fidelity's IS use)
    w = torch.load(inception_file)["fc.weight"]
    torch.testing.assert_close(feats["logits"], feats["pool"] @ w.T, rtol=1e-4, atol=1e-4)
    assert feats["pool"].std() > 0.05 and feats["logits"].std() > 1.0  # non-degenerate features
    # spatial: Mixed_6d.branch1x1 (TF mixed_6/conv) on Mixed_6c's output, 7 channels, NHWC order
    tf = net.net
    with torch.no_grad():
        from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

        h = (
            interpolate_bilinear_2d_like_tensorflow1x(x.float(), size=(299, 299), align_corners=False) - 128
        ) / 128
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1",
                     "Conv2d_4a_3x3", "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
                     "Mixed_6c"):  # fmt: skip
            h = getattr(tf, name)(h)
        s = tf.Mixed_6d.branch1x1(h)  # (2, 192, 17, 17)
    torch.testing.assert_close(feats["spatial"].reshape(2, 17, 17, 7), s[:, :7].permute(0, 2, 3, 1))


def test_inception_clean_mode_equals_tf1x_at_299(inception_file: Path) -> None:
    # At 299² both resizes are the identity, so the float-input path must reproduce the uint8 path.
    x = torch.randint(0, 256, (1, 3, 299, 299), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    a = InceptionV3(inception_file, verify=False)(x)
    b = InceptionV3(inception_file, verify=False, resize="clean")(x)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-5)
    with pytest.raises(PfbenchError, match="resize="):
        InceptionV3(inception_file, verify=False, resize="bicubic")


@pytest.mark.slow
def test_random_inception_agrees_with_torch_fidelity(inception_file: Path, tmp_path: Path) -> None:
    from torch_fidelity import calculate_metrics

    n = 20
    real = quantize(generate(EmbeddedSpec(resolution=32, split="train", size=n)).images)
    fake = quantize(generate(EmbeddedSpec(resolution=32, split="test", size=n)).images.flip(-1) * 0.7)
    t0 = time.perf_counter()
    net = InceptionV3(inception_file, verify=False, max_batch=n)
    ref = _ref(real, net, tmp_path, batch=n)
    print(f"Inception CPU throughput: {n / (time.perf_counter() - t0):.2f} img/s")
    r = Reference.of(ref)
    ours = _run([FID(r), InceptionScore(splits=2), KID(r, subsets=10, kid_subset_size=n)], fake, batch=10,
                extractor=net)  # fmt: skip
    theirs = calculate_metrics(
        input1=_Images(fake), input2=_Images(real), cuda=False, fid=True, isc=True, kid=True, isc_splits=2,
        feature_extractor="inception-v3-compat", feature_extractor_weights_path=str(inception_file),
        kid_subsets=10, kid_subset_size=n, samples_shuffle=False, verbose=False, cache=False, batch_size=n,
    )  # fmt: skip
    print(f"random Inception vs torch-fidelity: FID {ours['fid']:.6g} vs {theirs['frechet_inception_distance']:.6g}"
          f", KID rel {abs(ours['kid'] / theirs['kernel_inception_distance_mean'] - 1):.1e}")
    assert ours["fid"] > 1.0
    assert ours["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-3)
    assert ours["is"] == pytest.approx(
        theirs["inception_score_mean"], rel=1e-5
    )  # IS ≈ 1.01 here; the tiny-net test covers IS ≫ 1
    assert ours["kid"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-5)


def test_missing_inception_weights_fail_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("PFBENCH_WEIGHTS", raising=False)
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(PfbenchError, match="weights-inception-2015-12-05-6726825d.pth"):
        InceptionV3()
    assert time.perf_counter() - t0 < 5.0
    assert list(tmp_path.iterdir()) == []  # nothing downloaded or created in the working directory


def test_registered_and_follow_metric_protocol(images: tuple[Tensor, Tensor], tmp_path: Path) -> None:
    from pfbench.metrics.base import Metric
    from pfbench.registry import METRICS

    ref = Reference.of(_ref(images[0][:50], TinyExtractor(), tmp_path))
    for name in ("fid", "sfid", "is", "pr", "kid"):
        cls = METRICS.get(name)
        m = cls(reference=ref) if "reference" in cls.needs else cls()
        assert isinstance(m, Metric) and cls.name == name and isinstance(cls.higher_is_better, bool)
        assert cls.features == "inception"
    assert not FID.higher_is_better and InceptionScore.higher_is_better and METRICS.get("clip_score").higher_is_better


def test_reference_refuses_statistics_without_images_for_raw_features() -> None:
    stats_only = Reference.of(RefStats(np.zeros(3), np.eye(3)))
    with pytest.raises(PfbenchError, match="no images arr_0; pr needs reference images"):
        PrecisionRecall(stats_only)
    with pytest.raises(PfbenchError, match="no images arr_0; kid needs reference images"):
        KID(stats_only)
    sfid = SFID(stats_only)
    sfid.update({"spatial": torch.randn(4, 3)}, Cond(torch.zeros(4, dtype=torch.long)))
    with pytest.raises(PfbenchError, match="sfid: reference given statistics has no spatial statistics"):
        sfid.compute()
