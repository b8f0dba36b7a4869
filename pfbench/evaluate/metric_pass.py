"""Evaluate stage (SPEC §6): score generated images from any codebase against a reference.

Example::

    evaluate("samples/run1", "VIRTUAL_imagenet256_labeled.npz", ["fid", "sfid", "is", "pr"])
    evaluate("samples.npz", "embedded", ["fd_embedded", "is_embedded", "class_acc", "clip_embedded"])

``samples`` is a pfbench shard folder, an image folder (optional ``labels.json`` / ``captions.json``),
an ADM-style ``.npz`` (``arr_0`` images, optional ``arr_1`` labels), or images already in memory; see
``pfbench.evaluate.sources`` for the formats.

``ref`` is an ADM reference batch ``.npz`` (``mu``/``sigma``, optional ``mu_s``/``sigma_s``/``arr_0``),
any image collection above (its statistics are computed once and cached by content hash), the
string ``"embedded"`` (the embedded test split), or ``None`` when no metric needs one.

One pass over the samples: each batch goes once through Inception (a ``FeatureBank`` shared by
fid/sfid/is/pr/kid), once through the embedded network (fd_embedded/is_embedded/class_acc/
pr_embedded), once through the tiny CLIP (clip_embedded), and to any other registered metric.
Images stream in batches; an ``.npz`` member is read incrementally, never loaded whole.
"""

from __future__ import annotations

import copy
import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pfbench import PfbenchError
from pfbench.evaluate.sources import Images, content_id, images_from_tensor, iter_images, open_images
from pfbench.metrics.base import check_labels, content_key, metric_cache_dir
from pfbench.metrics.embedded import FeatureNet, load_feature_net, reference_features, to_input
from pfbench.encoders.inception import FeatureExtractor
from pfbench.metrics.options import check_options, metric_args
from pfbench.metrics.refstats import RefStats, compute_ref_stats
from pfbench.metrics.stats import FeatureStats, frechet_distance, inception_score, precision_recall
from pfbench.registry import METRICS
from pfbench.types import Cond

# open_images / images_from_tensor live in pfbench.evaluate.sources; re-exported for existing callers.
__all__ = [
    "EMBEDDED", "INCEPTION", "embedded_ref", "evaluate", "images_from_tensor", "inception_ref", "metric_args",
    "open_images",
]  # fmt: skip

INCEPTION = ("fid", "sfid", "is", "pr", "kid")
EMBEDDED = ("fd_embedded", "is_embedded", "class_acc", "pr_embedded")
_NEEDS_REF = {"fid", "sfid", "pr", "kid", "fd_embedded", "pr_embedded", "fd_dinov2"}


# ---------------------------------------------------------------- reference statistics


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]  # stubs type **kwds as allow_pickle
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def embedded_ref(ref: Images, net: FeatureNet, batch_size: int, cache_dir: str | Path | None) -> tuple[FeatureStats, np.ndarray]:  # fmt: skip
    """Embedded-network (stats, features) of the reference, computed once per content and cached."""
    if ref.kind == "embedded":
        return reference_features(ref.shape[0], size=ref.n, cache_dir=cache_dir)
    key = content_key("evaluate-embedded-ref-v1", net.asset_sha256, content_id(ref))
    path = metric_cache_dir("embedded_ref", cache_dir) / f"{key[:32]}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                state = {k[6:]: z[k] for k in z.files if k.startswith("stats_")}
                return FeatureStats.from_state(state), z["feats"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, PfbenchError):
            path.unlink(missing_ok=True)  # damaged cache entry: recompute
    stats, feats = FeatureStats(), []
    for images in iter_images(ref, batch_size):
        f = _embed(net, images)[0]
        stats.update(f)
        feats.append(f)
    arr = torch.cat(feats).numpy()
    _save_npz(path, {"feats": arr, **{f"stats_{k}": v for k, v in stats.state().items()}})
    return stats, arr


def inception_ref(ref: Images, names: Sequence[str], extractor: FeatureExtractor, batch_size: int,
                  cache_dir: str | Path | None) -> RefStats:  # fmt: skip
    """Inception reference: an ADM batch's stored statistics, or statistics computed once and cached."""
    from pfbench.metrics.refstats import load_adm_npz

    need_pool = bool({"pr", "kid"} & set(names))
    if ref.adm_stats:
        if need_pool and ref.n == 0:
            raise PfbenchError(
                f"ref {ref.where} has statistics but no images arr_0; pr/kid need reference images"
            )
        return load_adm_npz(ref.files[0], extractor if need_pool else None, batch_size=batch_size,
                            cache_dir=cache_dir)  # fmt: skip
    return compute_ref_stats(iter_images(ref, batch_size), extractor, dataset_key=content_id(ref),
                             preprocessing=f"pfbench.evaluate.metric_pass {ref.kind}", cache_dir=cache_dir)  # fmt: skip


# ---------------------------------------------------------------- one pass of the embedded network


@torch.inference_mode()
def _embed(net: FeatureNet, images: Tensor) -> tuple[Tensor, Tensor]:
    dev = next(net.parameters()).device
    feats, logits = net(to_input(images.to(dev)))  # (B, D), (B, K)
    return feats.float().cpu(), logits.float().cpu()


class _EmbeddedPass:
    """fd_embedded / is_embedded / class_acc / pr_embedded from one network pass per batch."""

    def __init__(
        self, names: Sequence[str], net: FeatureNet, ref: tuple[FeatureStats, np.ndarray] | None
    ) -> None:
        self.names, self.net, self.ref = set(names), net, ref
        self.stats, self.feats, self.probs = FeatureStats(), list[Tensor](), list[Tensor]()
        self.correct = self.total = 0

    def update(self, images: Tensor, cond: Cond) -> None:
        feats, logits = _embed(self.net, images)
        if "fd_embedded" in self.names:
            self.stats.update(feats)
        if "pr_embedded" in self.names:
            self.feats.append(feats)
        if "is_embedded" in self.names:
            self.probs.append(torch.softmax(logits.double(), dim=1))  # (B, K) float64
        if "class_acc" in self.names:
            y = check_labels(cond, images.shape[0], logits.shape[1], "class_acc")
            self.correct += int((logits.argmax(1) == y.cpu()).sum())
            self.total += images.shape[0]

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if "fd_embedded" in self.names:
            assert self.ref is not None
            mu, sigma = self.ref[0].mean(), self.ref[0].cov()
            out["fd_embedded"] = frechet_distance(self.stats.mean(), self.stats.cov(), mu, sigma)
        if "is_embedded" in self.names:
            out["is_embedded"], out["is_embedded_std"] = inception_score(torch.cat(self.probs), 10)
        if "class_acc" in self.names:
            out["class_acc"] = self.correct / self.total
        if "pr_embedded" in self.names:
            assert self.ref is not None
            out["precision_embedded"], out["recall_embedded"] = precision_recall(
                self.ref[1], torch.cat(self.feats), k=3
            )
        return out


# ---------------------------------------------------------------- entry point


def _other_metric(name: str, resolution: int, device: str | torch.device) -> Any:
    import inspect

    cls = METRICS.get(name)
    ctx = {"resolution": resolution, "device": device}
    try:
        return cls(**{k: v for k, v in ctx.items() if k in inspect.signature(cls).parameters})
    except TypeError as err:
        raise PfbenchError(
            f"metric {name!r} needs arguments evaluate cannot give ({err}); use it from Python"
        ) from None


def evaluate(
    samples: str | os.PathLike[str] | Images,
    ref: str | os.PathLike[str] | None,
    metrics: Sequence[str],
    *,
    batch_size: int = 250,
    device: str | torch.device = "cpu",
    weights: str | os.PathLike[str] | None = None,
    ref_size: int = 10_000,
    cache_dir: str | Path | None = None,
    extractor: FeatureExtractor | None = None,
    resize: str = "tf1x",
    dinov2_weights: str | os.PathLike[str] | None = None,
    clip_weights: str | os.PathLike[str] | None = None,
    class_names: Sequence[str] | None = None,
    verify_weights: bool = True,
    kid_subset_size: int = 1000,
    is_order: str = "file",
) -> dict[str, float]:
    """Scores ``samples`` against ``ref`` with the named metrics in one pass (see the module docstring).

    Args:
        samples: shard folder, image folder, ADM ``.npz``, or images in memory (``images_from_tensor``).
        ref: ADM reference ``.npz``, shard/image folder, ``.npz`` of images, ``"embedded"``, or ``None``.
        metrics: registered metric names (``pfbench.registry.METRICS``).
        batch_size: images per forward pass (does not change the statistics).
        device: where the networks run.
        weights: Inception weights file or folder (offline resolution, ``pfbench.weights``).
        ref_size: embedded test-split images for ``ref="embedded"``.
        cache_dir: cache root for reference statistics (default ``$PFBENCH_CACHE`` or ``~/.cache/pfbench``).
        extractor: replaces the Inception network (tests, other feature extractors).
        dinov2_weights: DINOv2 ViT-L/14 weights file or folder for ``fd_dinov2`` (offline resolution).
        clip_weights: OpenAI CLIP ViT-L/14 file for ``clip_score`` (offline resolution).
        class_names: label → name, for ``clip_score``'s prompts when samples carry labels but no captions.
        resize: Inception input resize, ``"tf1x"`` (torch-fidelity, TF-compatible; SPEC) or ``"clean"`` (clean-fid).
        verify_weights: refuse an Inception file whose sha256 is not the official one. ``False`` accepts it
            (a re-export, a fine-tuned or test network); record ``metric_args(...)`` with such numbers
            (``pfbench.metrics.options``, re-exported here).
        kid_subset_size: images per KID subset; checked against both sides before any feature pass.
        is_order: ``"file"`` (ADM evaluator, default) or ``"shuffle"`` (torch-fidelity); see ``InceptionScore``.

    Returns:
        ``{metric key: value}`` plus ``num_samples``.

    Raises:
        PfbenchError: unknown metric, missing or malformed input, missing labels or reference.
    """
    names = list(dict.fromkeys(metrics))
    if not names:
        raise PfbenchError("evaluate: no metrics given; pass e.g. fd_embedded,is_embedded or fid,sfid,is,pr")
    for n in names:
        METRICS.get(n)  # unknown names raise with a did-you-mean
    if batch_size < 1:
        raise PfbenchError(f"evaluate: batch_size must be >= 1, got {batch_size}")
    src = samples if isinstance(samples, Images) else open_images(samples, "samples")
    if src.n == 0:
        raise PfbenchError(f"samples {samples}: holds no images")
    res = src.shape[0]
    if src.labels is None and "class_acc" in names:
        raise PfbenchError(
            f"samples {samples}: no labels (npz arr_1, labels.json or shards); class_acc needs them"
        )
    if src.labels is None and src.captions is None and "clip_embedded" in names:
        raise PfbenchError(f"samples {samples}: no labels or captions (arr_1, labels.json, captions.json); "
                           "clip_embedded needs one")  # fmt: skip
    needs = [n for n in names if n in _NEEDS_REF]
    if ref is None and needs:
        raise PfbenchError(
            f"evaluate: {', '.join(needs)} need a reference; pass --ref (an ADM .npz, images, or 'embedded')"
        )
    refs = open_images(ref, "ref", resolution=res, ref_size=ref_size) if ref is not None else None
    check_options(names, src.n, refs.n if refs is not None else 0, kid_subset_size=kid_subset_size,
                  is_order=is_order)

    scorers: list[Any] = []
    inc = [n for n in names if n in INCEPTION]
    if inc:
        from pfbench.encoders.inception import InceptionV3
        from pfbench.metrics.standard import standard_metrics

        ext = extractor if extractor is not None else InceptionV3(
            weights, resize=resize, device=device, max_batch=batch_size, verify=verify_weights
        )
        ref_stats = (
            inception_ref(refs, inc, ext, batch_size, cache_dir)
            if refs is not None and set(inc) - {"is"}
            else None
        )
        scorers += standard_metrics(ref_stats, inc, ext, kid_subset_size=kid_subset_size,  # type: ignore[arg-type]
                                    is_order=is_order)  # (IS alone takes no reference)
    emb = [n for n in names if n in EMBEDDED]
    if emb:
        if src.shape[0] != src.shape[1]:
            raise PfbenchError(f"samples {samples}: embedded metrics need square images, got {src.shape}")
        net = load_feature_net(res)
        net = net if torch.device(device).type == "cpu" else copy.deepcopy(net).to(device)
        emb_ref = None
        if {"fd_embedded", "pr_embedded"} & set(emb):
            assert refs is not None
            if refs.n == 0 or refs.shape != src.shape:
                raise PfbenchError(f"ref {ref}: embedded metrics need {src.shape} reference images, got {refs.n} of "
                                   f"{refs.shape}")  # fmt: skip
            emb_ref = embedded_ref(refs, net, batch_size, cache_dir)
        scorers.append(_EmbeddedPass(emb, net, emb_ref))
    if "fd_dinov2" in names:
        from pfbench.encoders.dinov2 import DINOv2, FDDINOv2, dinov2_ref_stats
        from pfbench.metrics.standard import FeatureBank

        if refs is None or refs.n == 0:
            raise PfbenchError(f"ref {ref}: fd_dinov2 needs reference images (an ADM stats-only .npz has none)")
        dino = DINOv2(dinov2_weights, device=device, max_batch=batch_size)
        dref = dinov2_ref_stats(iter_images(refs, batch_size), dino, dataset_key=content_id(refs), cache_dir=cache_dir)
        scorers.append(FDDINOv2(dref, bank=FeatureBank(dino)))
    if "clip_score" in names:
        from pfbench.metrics.clipscore import CLIPScore, load_openclip

        scorers.append(CLIPScore(*load_openclip(weights=clip_weights, device=device), class_names=class_names,
                                 device=device))
    scorers += [_other_metric(n, res, device) for n in names
                if n not in INCEPTION and n not in EMBEDDED and n not in ("fd_dinov2", "clip_score")]

    start = 0
    for images in iter_images(src, batch_size):
        b = images.shape[0]
        y = (
            torch.from_numpy(src.labels[start : start + b])
            if src.labels is not None
            else torch.full((b,), -1)
        )
        cond = Cond(y, src.captions[start : start + b] if src.captions is not None else None)
        for s in scorers:
            s.update(images, cond)
        start += b
    out: dict[str, float] = {"num_samples": float(start)}
    for s in scorers:
        out.update({k: float(v) for k, v in s.compute().items()})
    return out
