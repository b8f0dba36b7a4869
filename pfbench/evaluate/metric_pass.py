"""Evaluate stage (docs/protocol.md §9): score generated images from any codebase against a reference, in one pass.

Example::

    evaluate("samples/run1", "VIRTUAL_imagenet256_labeled.npz", ["fid", "sfid", "is", "pr"])
    evaluate("samples.npz", "embedded", ["fd_embedded", "is_embedded", "class_acc", "clip_embedded"])

``samples`` is a pfbench shard folder, an image folder (optional ``labels.json`` / ``captions.json``),
an ADM-style ``.npz`` (``arr_0`` images, optional ``arr_1`` labels), or images already in memory; see
``pfbench.evaluate.sources`` for the formats.

``ref`` is an ADM reference batch ``.npz`` (``mu``/``sigma``, optional ``mu_s``/``sigma_s``/``arr_0``),
any image collection above (its statistics are computed once per feature network and cached by content
hash), the string ``"embedded"`` (the embedded test split), or ``None`` when no metric needs one.

One generic loop: the named metrics (``pfbench.registry.METRICS``) are grouped by the feature network they
declare (``Metric.features``, ``pfbench.registry.FEATURES``); each network is built once, its reference
statistics are read or computed once, and each batch of samples goes once through each network, whose
output feeds every metric of its group. What a metric needs (``Metric.needs``: labels, text, a reference)
and its options are checked before any feature is computed. Images stream in batches; an ``.npz`` member
is read incrementally, never loaded whole.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from pfbench import FieldError, PfbenchError
from pfbench.encoders.base import FeatureContext, FeatureExtractor, weights_key
from pfbench.evaluate.sources import Images, content_id, iter_images, open_images
from pfbench.metrics.base import NEEDS
from pfbench.metrics.refstats import Reference, compute_ref_stats, load_adm_npz
from pfbench.registry import FEATURES, METRICS
from pfbench.types import Cond

__all__ = ["check_weights", "evaluate", "weights_option"]

# The Inception network: the one whose statistics an ADM reference batch stores (mu/sigma, mu_s/sigma_s), and the
# one ``extractor=`` replaces.
INCEPTION = "inception"
_REF_TAG = "pfbench.evaluate.metric_pass"  # cache-key label of computed reference statistics (kept: caches stay valid)
_NEED_MESSAGES = {
    "labels": "samples {where}: no labels (npz arr_1, labels.json or shards); {names} {need} them",
    "text": "samples {where}: no labels or captions (arr_1, labels.json, captions.json); {names} {need} one",
    "reference": "evaluate: {names} {need} a reference; pass --ref (an ADM .npz, images, or 'embedded')",
}


def _need(names: list[str]) -> str:
    return "needs" if len(names) == 1 else "need"


def _needs(name: str, cls: Any) -> frozenset[str]:
    needs = frozenset(getattr(cls, "needs", frozenset()))
    if needs - NEEDS:
        raise PfbenchError(f"metric {name!r} needs {sorted(needs - NEEDS)}; evaluate knows {', '.join(sorted(NEEDS))}")
    return needs


def _check_needs(classes: dict[str, Any], src: Images, has_ref: bool) -> None:
    """One-line errors for what the samples (labels, text) or the call (a reference) lack, before any pass."""
    have = {"labels": src.labels is not None, "text": src.labels is not None or src.captions is not None,
            "reference": has_ref}  # fmt: skip
    for need in sorted(NEEDS):
        names = [n for n, c in classes.items() if need in _needs(n, c)]
        if names and not have[need]:
            raise PfbenchError(_NEED_MESSAGES[need].format(where=src.where, names=", ".join(names), need=_need(names)))


def _check_sides(feature: str, network: Any, sources: dict[str, Images | None]) -> None:
    """A network trained at one image side (``network.resolution``) refuses other sides before any pass."""
    res = getattr(network, "resolution", None)
    for what, s in sources.items():
        if res is not None and s is not None and s.n and s.shape != (res, res):
            raise PfbenchError(f"{what} {s.where}: the {feature} network takes {res}×{res} images, got "
                               f"{s.shape[0]}×{s.shape[1]}")  # fmt: skip


def _reference(feature: str, network: FeatureExtractor, refs: Images, names: list[str], batch_size: int,
               cache_dir: str | Path | None) -> Reference:  # fmt: skip
    """The reference for one network: an ADM batch's stored statistics (Inception), else computed once and cached."""
    if refs.adm_stats and feature == INCEPTION:
        return Reference(refs.n, refs.where, lambda features: load_adm_npz(
            refs.files[0], network if features else None, batch_size=batch_size, cache_dir=cache_dir))
    if refs.n == 0:
        raise PfbenchError(f"ref {refs.where}: {', '.join(names)} {_need(names)} reference images (an ADM "
                           "stats-only .npz has none)")  # fmt: skip
    return Reference(refs.n, refs.where, lambda features: compute_ref_stats(
        iter_images(refs, batch_size), network, dataset_key=content_id(refs), preprocessing=f"{_REF_TAG} {refs.kind}",
        cache_dir=cache_dir))  # fmt: skip


def _build(name: str, cls: Any, context: dict[str, Any]) -> Any:
    """``cls(**the context entries its constructor names)``; a required argument evaluate lacks is an error."""
    params = inspect.signature(cls).parameters
    missing = [p.name for p in params.values() if p.default is p.empty and p.name not in context
               and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]  # fmt: skip
    if missing:
        raise PfbenchError(f"metric {name!r} needs {', '.join(missing)}, which evaluate cannot give (it gives "
                           f"{', '.join(sorted(context))}); use it from Python")  # fmt: skip
    return cls(**{k: v for k, v in context.items() if k in params})


def check_weights(weights: Mapping[str, object]) -> None:
    """Each entry of a weights map names a feature network (``pfbench.registry.FEATURES``) that reads a file.

    Raises:
        FieldError: the entry's network name as field (callers put their key path in front: ``eval.weights``).
    """
    for network in weights:
        try:
            builder = FEATURES.get(network)
        except PfbenchError as err:
            raise FieldError(network, str(err)) from None
        if weights_key(builder) is None:
            raise FieldError(network, f"the {network!r} feature network reads no weights file; remove the entry")


def weights_option(items: Sequence[str], aliases: Mapping[str, object] | None = None) -> dict[str, str]:
    """``pfbench eval --weights NETWORK=PATH`` (repeatable; a bare PATH is Inception's, as before the map) and the
    alias options (``{"clip": --clip-weights, ...}``, unset ``None``) as one checked weights map.

    Raises:
        PfbenchError: a network given twice, or an entry ``check_weights`` refuses, naming the option.
    """
    out = {k: str(v) for k, v in (aliases or {}).items() if v is not None}
    for item in items:
        network, sep, path = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][\w.-]*", network):  # a bare path (may itself hold a "=")
            network, path = INCEPTION, item
        if out.get(network, path) != path:
            raise PfbenchError(f"--weights {item}: the {network} weights are already given ({out[network]}); give one")
        out[network] = path
    try:
        check_weights(out)
    except FieldError as err:
        raise PfbenchError(f"--weights {err.field}=...: {err.reason}") from None
    return out


def evaluate(
    samples: str | os.PathLike[str] | Images,
    ref: str | os.PathLike[str] | Images | None,
    metrics: Sequence[str],
    context: FeatureContext | None = None,
    *,
    ref_size: int = 10_000,
    cache_dir: str | Path | None = None,
    extractor: FeatureExtractor | None = None,
    class_names: Sequence[str] | None = None,
    kid_subset_size: int = 1000,
    is_order: str = "file",
) -> dict[str, float]:
    """Scores ``samples`` against ``ref`` with the named metrics in one pass (see the module docstring).

    Args:
        samples: shard folder, image folder, ADM ``.npz``, or images in memory (``images_from_tensor``).
        ref: ADM reference ``.npz``, shard/image folder, ``.npz`` of images, ``"embedded"``, opened images (e.g.
            ``sources.embedded_reference`` at another heterogeneity), or ``None``.
        metrics: registered metric names (``pfbench.registry.METRICS``).
        context: the feature networks' settings (``pfbench.encoders.base.FeatureContext``; default: CPU, batches of
            250, weights found offline): ``device``; ``batch_size``, images per forward pass (does not change the
            statistics); ``weights``, one map ``{network: file or folder}`` (``{"inception": ...}``, ``{"dinov2":
            ...}``, ``{"clip": ...}``, a plugin network's name), checked by ``check_weights``; ``verify``: refuse an
            Inception file whose sha256 is not the official one (``False`` accepts it: a re-export, a fine-tuned or
            test network; record ``pfbench.metrics.options.metric_args(...)`` with such numbers); ``resize``:
            Inception input resize, ``"tf1x"`` (torch-fidelity, TF-compatible; docs/protocol.md §9) or ``"clean"``
            (clean-fid). Its ``resolution`` is set from the samples.
        ref_size: embedded test-split images for ``ref="embedded"``.
        cache_dir: cache root for reference statistics (default ``$PFBENCH_CACHE`` or ``~/.cache/pfbench``).
        extractor: replaces the Inception network (tests, other feature extractors).
        class_names: label → name, for ``clip_score``'s prompts when samples carry labels but no captions.
        kid_subset_size: images per KID subset; checked against both sides before any feature pass.
        is_order: ``"file"`` (ADM evaluator, default) or ``"shuffle"`` (torch-fidelity); see ``InceptionScore``.

    Returns:
        ``{"num_samples": N}`` then each metric's ``{key: value}``, in the order the metrics were named.

    Raises:
        PfbenchError: unknown metric, missing or malformed input, missing labels, text or reference, a weights
            entry for no network that reads weights.
    """
    names = list(dict.fromkeys(metrics))
    if not names:
        raise PfbenchError("evaluate: no metrics given; pass e.g. fd_embedded,is_embedded or fid,sfid,is,pr")
    classes = {n: METRICS.get(n) for n in names}  # unknown names raise with a did-you-mean
    base = context if context is not None else FeatureContext()
    batch_size, device = base.batch_size, base.device
    if batch_size < 1:
        raise PfbenchError(f"evaluate: batch_size must be >= 1, got {batch_size}")
    try:
        check_weights(base.weights)
    except FieldError as err:
        raise err.under("weights") from None
    src = samples if isinstance(samples, Images) else open_images(samples, "samples")
    if src.n == 0:
        raise PfbenchError(f"samples {src.where}: holds no images")
    _check_needs(classes, src, ref is not None)
    refs = ref if isinstance(ref, Images) or ref is None else open_images(ref, "ref", resolution=src.shape[0],
                                                                           ref_size=ref_size)

    ctx = dataclasses.replace(base, resolution=src.shape[0])
    groups: dict[str, list[str]] = {}  # feature network -> its metrics, in the order named
    for n in names:  # a metric that declares no network reads the uint8 images, as metrics did before networks
        groups.setdefault(getattr(classes[n], "features", "images"), []).append(n)
    networks = {f: extractor if extractor is not None and f == INCEPTION else FEATURES.get(f)(ctx) for f in groups}
    given: dict[str, Any] = {"resolution": src.shape[0], "device": device, "num_samples": src.n,
                             "class_names": class_names, "is_order": is_order, "kid_subset_size": kid_subset_size}
    scorers: dict[str, Any] = {}
    references: list[Reference] = []
    for feature, group in groups.items():
        net, with_ref = networks[feature], [n for n in group if "reference" in _needs(n, classes[n])]
        _check_sides(feature, net, {"samples": src, "ref": refs if with_ref else None})
        own = dict(given, network=net)
        if refs is not None and with_ref:
            references.append(_reference(feature, net, refs, with_ref, batch_size, cache_dir))
            own["reference"] = references[-1]
        scorers |= {n: _build(n, classes[n], own) for n in group}  # options and sizes are checked here
    for r in references:
        r.load()  # reference statistics once per network, before the pass over the samples

    start = 0
    for images in iter_images(src, batch_size):
        b = images.shape[0]
        y = torch.from_numpy(src.labels[start : start + b]) if src.labels is not None else torch.full((b,), -1)
        cond = Cond(y, src.captions[start : start + b] if src.captions is not None else None)
        for feature, group in groups.items():
            feats = networks[feature](images)  # the network's output for this batch, shared by its metrics
            for n in group:
                scorers[n].update(feats, cond)
        start += b
    out: dict[str, float] = {"num_samples": float(start)}
    for n in names:
        out.update({k: float(v) for k, v in scorers[n].compute().items()})
    return out
