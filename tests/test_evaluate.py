"""Evaluate stage: three sample formats agree, labels travel, reference statistics are cached, errors.

Also the metric contract over every registered metric, and the generic loop (one pass per feature network,
metrics fed from it) against the metric classes fed by hand.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor

from pfbench import PfbenchError
from pfbench.data.embedded import EmbeddedSpec, generate
from pfbench.encoders.base import FeatureContext
from pfbench.encoders.embedded import EmbeddedFeatures, load_feature_net
from pfbench.evaluate.metric_pass import evaluate
from pfbench.evaluate.sources import images_from_tensor, iter_images, open_images
from pfbench.metrics.base import NEEDS, Metric, higher_is_better, result_keys
from pfbench.metrics.clipscore import CLIPEmbedded
from pfbench.metrics.embedded import ClassAccuracy, FDEmbedded, ISEmbedded, PREmbedded
from pfbench.metrics.frechet import frechet_distance
from pfbench.metrics.refstats import Reference, RefStats, compute_ref_stats, images_key
from pfbench.metrics.stats import FeatureStats
from pfbench.registry import FEATURES, METRICS
from pfbench.sample.shards import export_adm_npz
from pfbench.types import Cond, quantize

N, REF = 60, 300
EMB = ["fd_embedded", "is_embedded", "class_acc", "pr_embedded", "clip_embedded"]


def _write_shards(out: Path, images: np.ndarray, labels: np.ndarray, sizes: list[int]) -> Path:
    """A finished pfbench shard folder (the manifest fields ``iter_shards`` checks), uneven shards."""
    out.mkdir(parents=True)
    shards, lo = [], 0
    for j, size in enumerate(sizes):
        path = out / f"shard_{j:05d}.npz"
        np.savez(path, images=images[lo : lo + size], labels=labels[lo : lo + size],
                 indices=np.arange(lo, lo + size))  # fmt: skip
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        shards.append({"index": j, "file": path.name, "start": lo, "count": size, "sha256": sha,
                       "image_shape": list(images.shape[1:])})  # fmt: skip
        lo += size
    (out / "manifest.json").write_text(
        json.dumps({"format": "pfbench-shards/1", "shards": shards, "complete": True})
    )
    return out


def _write_folder(out: Path, images: np.ndarray, labels: np.ndarray | None, ext: str = "png") -> Path:
    out.mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray(img.transpose(1, 2, 0)).save(out / f"{i:06d}.{ext}")
    if labels is not None:  # the {file name: label} form
        (out / "labels.json").write_text(json.dumps({f"{i:06d}.{ext}": int(v) for i, v in enumerate(labels)}))
    return out


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    b = generate(EmbeddedSpec(resolution=16, split="train", size=N))
    return {"images": quantize(b.images).numpy(), "labels": b.labels.numpy(), "captions": b.captions}


@pytest.fixture(scope="module")
def formats(tmp_path_factory: pytest.TempPathFactory, data: dict[str, Any]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("formats")
    shards = _write_shards(root / "shards", data["images"], data["labels"], [25, 35])
    npz = export_adm_npz(shards, root / "samples.npz")
    return {
        "shards": shards,
        "npz": npz,
        "folder": _write_folder(root / "folder", data["images"], data["labels"]),
    }


class CountingExtractor:
    """Small deterministic stand-in for Inception: pool (12-d), logits (10), spatial (6); counts rows."""

    keys = ("pool", "logits", "spatial")

    def __init__(self) -> None:
        self.rows = 0
        g = torch.Generator().manual_seed(0)
        self.w_logits, self.w_spatial = torch.randn(12, 10, generator=g), torch.randn(12, 6, generator=g)

    def fingerprint(self) -> dict[str, str]:
        return {"extractor": "counting-test"}

    def __call__(self, images: Tensor) -> dict[str, Tensor]:
        self.rows += images.shape[0]
        x = images.double() / 255.0
        pool = torch.nn.functional.avg_pool2d(x, x.shape[-1] // 2).flatten(1)  # (B, 12): 3 channels x 2x2
        pool = pool + 0.1 * pool**2  # float64 throughout: rows do not depend on the batch they came in
        logits, spatial = pool @ self.w_logits.double(), torch.tanh(pool @ self.w_spatial.double())
        return {"pool": pool.float(), "logits": logits.float(), "spatial": spatial.float()}


@pytest.fixture
def net_rows() -> Any:
    """Counts images through the (process-cached) embedded feature network."""
    net = load_feature_net(16)
    seen = {"rows": 0}
    handle = net.register_forward_hook(
        lambda m, args, out: seen.__setitem__("rows", seen["rows"] + args[0].shape[0])
    )
    yield seen
    handle.remove()


def test_three_formats_give_identical_embedded_scores(formats: dict[str, Path], tmp_path: Path) -> None:
    scores = {
        k: evaluate(p, "embedded", EMB, FeatureContext(batch_size=16), ref_size=REF, cache_dir=tmp_path)
        for k, p in formats.items()
    }
    assert scores["shards"] == scores["npz"] == scores["folder"]
    s = scores["npz"]
    assert s["num_samples"] == N and set(s) >= {"fd_embedded", "is_embedded", "is_embedded_std", "class_acc",
                                                "precision_embedded", "recall_embedded", "clip_embedded"}  # fmt: skip
    assert s["class_acc"] > 0.8 and s["clip_embedded"] > 30  # real images with their own labels


def test_agrees_with_registered_metric_classes(
    formats: dict[str, Path], data: dict[str, Any], tmp_path: Path
) -> None:
    got = evaluate(formats["npz"], "embedded", EMB, FeatureContext(batch_size=7), ref_size=REF, cache_dir=tmp_path)
    net, clip = EmbeddedFeatures(16), FEATURES.get("tiny_clip")(FeatureContext(resolution=16))
    real = quantize(generate(EmbeddedSpec(resolution=16, split="test", size=REF)).images)
    ref = Reference.of(compute_ref_stats([real], net, dataset_key=images_key(real), cache_dir=tmp_path / "by-hand"))
    by_net: list[tuple[Any, list[Any]]] = [
        (net, [FDEmbedded(ref), ISEmbedded(), ClassAccuracy(), PREmbedded(ref)]), (clip, [CLIPEmbedded(clip)])]
    x, y = torch.from_numpy(data["images"]), torch.from_numpy(data["labels"])
    for i in range(0, N, 32):
        for network, ms in by_net:
            feats = network(x[i : i + 32])
            for m in ms:
                m.update(feats, Cond(y[i : i + 32]))
    want = {k: v for _, ms in by_net for m in ms for k, v in m.compute().items()}
    # float32 features in batches of 7 vs 32: the summation order differs with the batch and the thread count
    # (OMP_NUM_THREADS=1 moved clip_embedded by 7e-9 relative), so a few float32 ulps, not float64 ones
    assert {k: got[k] for k in want} == pytest.approx(want, rel=1e-6, abs=1e-9)
    assert list(got) == ["num_samples", "fd_embedded", "is_embedded", "is_embedded_std", "class_acc",
                         "precision_embedded", "recall_embedded", "clip_embedded"]  # the order the metrics were named


def test_labels_and_captions_are_carried(
    formats: dict[str, Path], data: dict[str, Any], tmp_path: Path
) -> None:
    base = evaluate(formats["npz"], None, ["class_acc", "clip_embedded"], FeatureContext(batch_size=16))
    perm = np.random.default_rng(0).permutation(N)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, data["images"].transpose(0, 2, 3, 1), data["labels"][perm])
    bad = evaluate(wrong, None, ["class_acc", "clip_embedded"], FeatureContext(batch_size=16))
    assert bad["class_acc"] < base["class_acc"] - 0.3 and bad["clip_embedded"] < base["clip_embedded"] - 5
    # captions.json (list form) replaces the class prompts for clip_embedded
    folder = _write_folder(tmp_path / "captioned", data["images"], data["labels"])
    (folder / "captions.json").write_text(json.dumps(list(data["captions"])))
    assert open_images(folder, "samples").captions == data["captions"]
    clip = FEATURES.get("tiny_clip")(FeatureContext(resolution=16))
    direct = CLIPEmbedded(clip)
    direct.update(clip(torch.from_numpy(data["images"])), Cond(torch.from_numpy(data["labels"]), text=data["captions"]))
    got = evaluate(folder, None, ["clip_embedded"], FeatureContext(batch_size=16))["clip_embedded"]
    assert got == pytest.approx(direct.compute()["clip_embedded"], rel=1e-6) and got != base["clip_embedded"]


def test_missing_labels(tmp_path: Path, data: dict[str, Any]) -> None:
    path = tmp_path / "nolabels.npz"
    np.savez(path, data["images"].transpose(0, 2, 3, 1))  # DiT's sample_ddp layout: arr_0 only
    assert open_images(path, "samples").labels is None
    with pytest.raises(PfbenchError, match="no labels.*class_acc"):
        evaluate(path, None, ["class_acc"], FeatureContext(batch_size=16))
    assert evaluate(path, None, ["is_embedded"], FeatureContext(batch_size=16))["num_samples"] == N


def test_embedded_reference_features_computed_once(
    formats: dict[str, Path], tmp_path: Path, net_rows: Any
) -> None:
    args: dict[str, Any] = {"context": FeatureContext(batch_size=16), "ref_size": REF, "cache_dir": tmp_path}
    first = evaluate(formats["npz"], "embedded", ["fd_embedded", "pr_embedded"], **args)
    assert net_rows["rows"] == N + REF  # one pass over the samples (shared by both metrics) + the reference
    net_rows["rows"] = 0
    assert evaluate(formats["npz"], "embedded", ["fd_embedded", "pr_embedded"], **args) == first
    assert net_rows["rows"] == N  # cache hit: reference features not recomputed


def test_image_reference_features_computed_once(formats: dict[str, Path], data: dict[str, Any], tmp_path: Path,
                                                net_rows: Any) -> None:  # fmt: skip
    ref_imgs = quantize(generate(EmbeddedSpec(resolution=16, split="test", size=80)).images)
    ref = _write_folder(tmp_path / "ref", ref_imgs.numpy(), None)
    a = evaluate(formats["shards"], ref, ["fd_embedded"], FeatureContext(batch_size=16), cache_dir=tmp_path)
    assert net_rows["rows"] == N + 80
    b = evaluate(formats["shards"], ref, ["fd_embedded"], FeatureContext(batch_size=16), cache_dir=tmp_path)
    assert net_rows["rows"] == 2 * N + 80 and a == b
    net = EmbeddedFeatures(16)
    st = _stats(net(ref_imgs)["pool"])
    fd = FDEmbedded(Reference.of(RefStats(st.mean(), st.cov())))
    fd.update(net(torch.from_numpy(data["images"])), Cond(torch.from_numpy(data["labels"])))
    assert a["fd_embedded"] == pytest.approx(fd.compute()["fd_embedded"], rel=1e-9)


def _stats(feats: Tensor) -> FeatureStats:
    st = FeatureStats()
    st.update(feats)
    return st


def test_inception_metrics_share_one_pass_and_cache_reference(formats: dict[str, Path], data: dict[str, Any],
                                                              tmp_path: Path) -> None:  # fmt: skip
    ref_imgs = quantize(generate(EmbeddedSpec(resolution=16, split="test", size=80)).images).numpy()
    ref = _write_folder(tmp_path / "ref", ref_imgs, None, ext="png")
    names = ["fid", "sfid", "is", "pr"]
    ext = CountingExtractor()
    first = evaluate(formats["folder"], ref, names, FeatureContext(batch_size=16), cache_dir=tmp_path, extractor=ext)
    assert ext.rows == N + 80  # four metrics, one feature pass over the samples, one over the reference
    ext.rows = 0
    again = evaluate(formats["npz"], ref, names, FeatureContext(batch_size=16), cache_dir=tmp_path, extractor=ext)
    assert ext.rows == N and again == first  # cached reference; npz samples == folder samples
    # the same reference as an ADM reference batch (stored mu/sigma/mu_s/sigma_s + arr_0 for pr)
    feats = ext(torch.from_numpy(ref_imgs))
    st, ss = FeatureStats(), FeatureStats()
    st.update(feats["pool"])
    ss.update(feats["spatial"])
    adm = tmp_path / "VIRTUAL_test.npz"
    np.savez(
        adm,
        arr_0=ref_imgs.transpose(0, 2, 3, 1),
        mu=st.mean(),
        sigma=st.cov(),
        mu_s=ss.mean(),
        sigma_s=ss.cov(),
    )
    ext.rows = 0
    via_adm = evaluate(formats["npz"], adm, names, FeatureContext(batch_size=16), cache_dir=tmp_path, extractor=ext)
    assert via_adm == pytest.approx(first, rel=1e-9)
    assert ext.rows == N + 80  # pool features of arr_0 for precision/recall, computed once...
    ext.rows = 0
    evaluate(formats["npz"], adm, names, FeatureContext(batch_size=16), cache_dir=tmp_path, extractor=ext)
    assert ext.rows == N  # ...and cached
    samples = ext(torch.from_numpy(data["images"]))["pool"]
    s2 = FeatureStats()
    s2.update(samples)
    assert first["fid"] == pytest.approx(frechet_distance(s2.mean(), s2.cov(), st.mean(), st.cov()), rel=1e-9)


def test_errors_are_one_liners(formats: dict[str, Path], data: dict[str, Any], tmp_path: Path) -> None:
    cases: list[tuple[Any, Any, list[str], str]] = [
        (tmp_path / "nope", "embedded", ["fd_embedded"], "samples .*nope not found"),
        (formats["npz"], tmp_path / "noref.npz", ["fd_embedded"], "ref .*noref.npz not found"),
        (formats["npz"], "embedded", ["fd_embeded"], "did you mean 'fd_embedded'"),
        (formats["npz"], None, ["fid"], "fid needs a reference"),
        (formats["npz"], "embedded", [], "no metrics"),
        (formats["npz"], None, ["clip_score"], "clip-vit-l-14-openai weights file ViT-L-14.pt not found"),
    ]
    (tmp_path / "empty").mkdir()
    cases.append((tmp_path / "empty", None, ["is_embedded"], "no PNG/JPEG images"))
    np.savez(tmp_path / "junk.npz", x=np.zeros(3))
    cases.append((tmp_path / "junk.npz", None, ["is_embedded"], "no images 'arr_0'"))
    np.savez(tmp_path / "stats_only.npz", mu=np.zeros(12), sigma=np.eye(12))
    cases.append((formats["npz"], tmp_path / "stats_only.npz", ["pr"], "no images arr_0; pr needs reference images"))
    cases.append((formats["npz"], tmp_path / "stats_only.npz", ["fd_embedded"],
                  "fd_embedded needs reference images \\(an ADM stats-only .npz has none\\)"))
    cases.append((formats["npz"], tmp_path / "stats_only.npz", ["kid", "fd_embedded"], "kid needs reference images"))
    big = _write_folder(tmp_path / "big", np.zeros((3, 3, 32, 32), np.uint8), None)
    cases.append((formats["npz"], big, ["fd_embedded"], "the embedded network takes 16×16 images, got 32×32"))
    wide = _write_folder(tmp_path / "wide", np.zeros((3, 3, 16, 20), np.uint8), None)
    cases.append((wide, None, ["is_embedded"], "the embedded network takes 16×16 images, got 16×20"))
    nolabels = tmp_path / "nolabels.npz"
    np.savez(nolabels, data["images"][:4].transpose(0, 2, 3, 1))
    cases.append((nolabels, None, ["clip_embedded", "class_acc"], "no labels \\(.*class_acc needs them"))
    cases.append((nolabels, None, ["clip_embedded"], "no labels or captions .*clip_embedded needs one"))
    np.savez(tmp_path / "float.npz", np.zeros((2, 16, 16, 3), np.float32))
    cases.append((tmp_path / "float.npz", None, ["is_embedded"], "must be uint8 \\(N, H, W, 3\\)"))
    bad_labels = _write_folder(tmp_path / "badlabels", data["images"][:4], None)
    (bad_labels / "labels.json").write_text("[1, 2]")
    cases.append((bad_labels, None, ["class_acc"], "needs 4 int values"))
    mixed = _write_folder(tmp_path / "mixed", data["images"][:3], None)
    Image.new("RGB", (8, 8)).save(mixed / "000009.png")
    cases.append((mixed, None, ["is_embedded"], "000009.png: image is \\(8, 8\\)"))
    manifest = json.loads((formats["shards"] / "manifest.json").read_text())
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    cases.append((unfinished, None, ["is_embedded"], "unfinished sampling run"))
    for samples, ref, metrics, match in cases:
        with pytest.raises(PfbenchError, match=match) as info:
            evaluate(samples, ref, metrics, FeatureContext(batch_size=8), ref_size=REF, cache_dir=tmp_path,
                     extractor=CountingExtractor())  # fmt: skip
        assert "\n" not in str(info.value)


def test_in_memory_images_equal_npz(tmp_path: Path) -> None:
    """The runner scores freshly sampled images without a file; the numbers equal the .npz route."""

    batch = generate(EmbeddedSpec(resolution=16, split="train", size=120, seed=0))
    imgs = quantize(batch.images)
    npz = tmp_path / "s.npz"
    np.savez(npz, arr_0=imgs.permute(0, 2, 3, 1).numpy(), arr_1=batch.labels.numpy())
    kw = dict(context=FeatureContext(batch_size=50), ref_size=200, cache_dir=tmp_path / "cache")
    names = ["fd_embedded", "class_acc"]
    from_file = evaluate(npz, "embedded", names, **kw)  # type: ignore[arg-type]
    in_memory = evaluate(images_from_tensor(imgs, batch.labels), "embedded", names, **kw)  # type: ignore[arg-type]
    assert from_file == in_memory and from_file["fd_embedded"] > 0


# ---------------------------------------------------------------- the metric contract and the generic loop

# Result keys that were "lower is better" before metrics declared their directions (the runner's old table).
OLD_LOWER_IS_BETTER = {"fd_embedded", "fid", "sfid", "kid", "fd_dinov2", "kid_std", "is_std", "is_embedded_std"}


def test_every_registered_metric_declares_network_needs_and_directions() -> None:
    classes = [METRICS.get(n) for n in METRICS.names()]
    for cls in classes:
        assert cls.features in FEATURES, cls.name
        assert cls.needs <= NEEDS and isinstance(cls.higher_is_better, bool), cls.name
        keys = result_keys(cls)
        assert keys and all(isinstance(v, bool) for v in keys.values()), cls.name
        for key in keys:  # the directions rows record are those of the old hand-written table
            assert higher_is_better(classes, key) == (key not in OLD_LOWER_IS_BETTER), key


class MeanRed:
    """A third-party-style metric: ``features = "images"``, no needs, built from ``resolution`` alone."""

    name = "mean_red"
    higher_is_better = False
    features = "images"
    needs: frozenset[str] = frozenset()

    def __init__(self, resolution: int) -> None:
        self.resolution, self.sum, self.n = resolution, 0.0, 0

    def update(self, images: Tensor, cond: Cond) -> None:
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, self.resolution, self.resolution)
        self.sum += float(images[:, 0].double().sum())
        self.n += images[:, 0].numel()

    def compute(self) -> dict[str, float]:
        return {self.name: self.sum / self.n}


def test_a_metric_on_plain_images_runs_through_evaluate(formats: dict[str, Path], data: dict[str, Any],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    assert isinstance(MeanRed(16), Metric)
    monkeypatch.setattr(METRICS, "_objects", dict(METRICS._objects))  # undone after the test, as the next line
    monkeypatch.setitem(METRICS._targets, "mean_red", f"{__name__}:MeanRed")
    got = evaluate(formats["folder"], None, ["mean_red", "class_acc"], FeatureContext(batch_size=16))
    assert got["mean_red"] == pytest.approx(float(data["images"][:, 0].astype(np.float64).mean()), rel=1e-12)
    assert got["class_acc"] > 0.8 and not higher_is_better([MeanRed], "mean_red")


def test_grayscale_images_get_a_one_line_note(tmp_path: Path, data: dict[str, Any],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    folder = _write_folder(tmp_path / "gray", data["images"][:6], None)
    for p in sorted(folder.glob("*.png"))[:2]:
        Image.open(p).convert("L").save(p)  # two of six images saved as grayscale
    batches = list(iter_images(open_images(folder, "samples"), 4))
    assert [b.shape[0] for b in batches] == [4, 2] and all(b.shape[1] == 3 for b in batches)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 of 6 images are grayscale (mode L)" in err[0], err
    list(iter_images(open_images(_write_folder(tmp_path / "rgb", data["images"][:6], None), "samples"), 4))
    assert capsys.readouterr().err == ""  # colour images: no note
