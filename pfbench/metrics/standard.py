"""Standard ImageNet metrics (SPEC §6): FID, sFID, IS, precision/recall, KID — one feature pass.

Feature extraction is torch-fidelity's Inception (``pfbench.encoders.inception``); statistics are
pfbench's float64 ``FeatureStats``/``frechet_distance``/``precision_recall``; IS and KID call
torch-fidelity's own formulas on the features. Several metrics share one ``FeatureBank``, so the
Inception network runs once per batch however many metrics read its features::

    bank = FeatureBank(InceptionV3())
    metrics = [FID(ref, bank=bank), SFID(ref, bank=bank), InceptionScore(bank=bank)]
    for images, cond in loader:          # images uint8 (B, 3, H, W)
        for m in metrics:
            m.update(images, cond)       # the first call runs Inception; the others reuse it
    scores = {k: v for m in metrics for k, v in m.compute().items()}
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from pfbench import PfbenchError
from pfbench.metrics.base import check_images, content_key
from pfbench.encoders.inception import FeatureExtractor, InceptionV3
from pfbench.metrics.refstats import RefStats, iter_npz_images, load_adm_npz
from pfbench.metrics.stats import FeatureStats, frechet_distance, precision_recall
from pfbench.types import Cond


def _digest(images: Tensor) -> str:
    arr = images.detach().cpu().contiguous().numpy()
    return content_key(str(arr.shape), arr.tobytes())


class FeatureBank:
    """Runs a feature extractor once per batch and shares the features among subscribed metrics.

    Each metric subscribes (before the first batch) to the features it needs, either as streaming
    float64 statistics (``stats``: FID, sFID) or as kept rows (``raw``: IS, precision/recall,
    KID). Batches are numbered per subscriber: the first subscriber to present batch k runs the
    extractor; the others present the same batch and reuse it. "The same" is checked: the same
    tensor memory, shape and version counter (free), or else equal content hashes (sha256).

    Args:
        extractor: e.g. ``InceptionV3()``; any ``FeatureExtractor``.
    """

    def __init__(self, extractor: FeatureExtractor) -> None:
        self.extractor = extractor
        self._stats: dict[str, FeatureStats] = {}
        self._raw: dict[str, list[Tensor]] = {}
        self._digests: list[str] = []  # content hash of batch k ("" with a single subscriber)
        self._idents: list[tuple[object, ...]] = []  # memory identity of batch k as first presented
        self._cursor: list[int] = []  # next batch index per subscriber

    def subscribe(self, *, stats: Iterable[str] = (), raw: Iterable[str] = ()) -> int:
        """Registers a consumer of features ``stats``/``raw``; returns its subscriber id."""
        stats, raw = tuple(stats), tuple(raw)
        if self._digests:
            raise PfbenchError(
                "FeatureBank.subscribe: features were already computed; create every metric first"
            )
        for k in (*stats, *raw):
            if k not in self.extractor.keys:
                raise PfbenchError(f"FeatureBank: extractor provides {self.extractor.keys}, not {k!r}")
        for k in stats:
            self._stats.setdefault(k, FeatureStats())
        for k in raw:
            self._raw.setdefault(k, [])
        self._cursor.append(0)
        return len(self._cursor) - 1

    def update(self, sub: int, images: Tensor) -> None:
        """Presents the next batch for subscriber ``sub`` (uint8 (B, 3, H, W))."""
        check_images(images, "FeatureBank.update")
        ident = (images.device, images.data_ptr(), tuple(images.shape), images.stride(), images._version)
        k = self._cursor[sub]
        if k < len(self._digests):
            if ident != self._idents[k] and _digest(images) != self._digests[k]:
                raise PfbenchError(
                    f"FeatureBank: batch {k} differs between metrics sharing one bank; every metric must "
                    "receive the same images in the same order"
                )
        else:
            feats = self.extractor(images)
            for key, st in self._stats.items():
                st.update(feats[key])
            for key, rows in self._raw.items():
                rows.append(feats[key].float().cpu())
            self._digests.append(_digest(images) if len(self._cursor) > 1 else "")
            self._idents.append(ident)
        self._cursor[sub] = k + 1

    def _complete(self, sub: int) -> None:
        if self._cursor[sub] != len(self._digests):
            raise PfbenchError(
                f"FeatureBank: a metric saw {self._cursor[sub]} of {len(self._digests)} batches; update every "
                "metric with every batch before compute()"
            )
        if not self._digests:
            raise PfbenchError("FeatureBank: compute() before any update(); no images were seen")

    def stats(self, sub: int, key: str) -> FeatureStats:
        """Streaming statistics of feature ``key`` over all batches."""
        self._complete(sub)
        return self._stats[key]

    def raw(self, sub: int, key: str) -> Tensor:
        """All rows of feature ``key``, (N, D) float32, in input order."""
        self._complete(sub)
        return torch.cat(self._raw[key])


class _BankMetric:
    """Shared plumbing: subscribe to a bank, forward ``update``; subclasses implement ``compute``."""

    name: ClassVar[str]
    higher_is_better: ClassVar[bool]
    stats_keys: ClassVar[tuple[str, ...]] = ()
    raw_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, ref: RefStats | None, bank: FeatureBank | None) -> None:
        self.ref = ref
        self.bank = bank if bank is not None else FeatureBank(InceptionV3())
        self._sub = self.bank.subscribe(stats=self.stats_keys, raw=self.raw_keys)

    def update(self, images: Tensor, cond: Cond) -> None:
        """Adds uint8 (B, 3, H, W) generated images; ``cond`` is unused."""
        self.bank.update(self._sub, images)

    def compute(self) -> dict[str, float]:
        raise NotImplementedError

    def _ref(self) -> RefStats:
        if self.ref is None:
            raise PfbenchError(f"{self.name}: needs reference statistics (RefStats)")
        return self.ref


class FID(_BankMetric):
    """Fréchet Inception Distance on pool3 features against ``ref.mu``/``ref.sigma``."""

    name: ClassVar[str] = "fid"
    higher_is_better: ClassVar[bool] = False
    stats_keys = ("pool",)

    def __init__(self, ref: RefStats, *, bank: FeatureBank | None = None) -> None:
        super().__init__(ref, bank)

    def compute(self) -> dict[str, float]:
        st, ref = self.bank.stats(self._sub, "pool"), self._ref()
        return {"fid": frechet_distance(st.mean(), st.cov(), ref.mu, ref.sigma)}


class SFID(_BankMetric):
    """Spatial FID: Fréchet distance on ``mixed_6/conv`` features against ``ref.mu_s``/``ref.sigma_s``."""

    name: ClassVar[str] = "sfid"
    higher_is_better: ClassVar[bool] = False
    stats_keys = ("spatial",)

    def __init__(self, ref: RefStats, *, bank: FeatureBank | None = None) -> None:
        super().__init__(ref, bank)

    def compute(self) -> dict[str, float]:
        st, ref = self.bank.stats(self._sub, "spatial"), self._ref()
        if ref.mu_s is None or ref.sigma_s is None:
            raise PfbenchError(
                "sfid: reference has no mu_s/sigma_s; use an ADM .npz or recompute the reference stats"
            )
        return {"sfid": frechet_distance(st.mean(), st.cov(), ref.mu_s, ref.sigma_s)}


IS_ORDERS = ("file", "shuffle")


class InceptionScore(_BankMetric):
    """Inception Score from unbiased logits over ``splits`` contiguous splits (torch-fidelity's formula).

    Two conventions differ only in which samples share a split (7.76 vs 7.71 on the same 200 images):

    - ``order="file"`` (default): samples in the order given, as the ADM evaluator does (it never
      shuffles; its splits hold 5,000 images, i.e. these 10 splits at the standard 50,000 samples).
    - ``order="shuffle"``: torch-fidelity's default (``samples_shuffle=True``): the logits permuted by
      ``numpy.random.RandomState(seed).permutation`` first, seed 2020 like its ``rng_seed``; equal
      to ``torch_fidelity.calculate_metrics(isc=True)`` on the same logits.

    Args:
        bank: shared features.
        splits: 10 (SPEC).
        order: ``"file"`` or ``"shuffle"``.
        seed: permutation seed for ``order="shuffle"``.
    """

    name: ClassVar[str] = "is"
    higher_is_better: ClassVar[bool] = True
    raw_keys = ("logits",)

    def __init__(self, ref: RefStats | None = None, *, bank: FeatureBank | None = None, splits: int = 10,
                 order: str = "file", seed: int = 2020) -> None:  # fmt: skip
        if order not in IS_ORDERS:
            raise PfbenchError(f"is: order={order!r} is not one of {IS_ORDERS} (file: ADM evaluator, shuffle: "
                               "torch-fidelity)")  # fmt: skip
        super().__init__(ref, bank)
        self.splits, self.order, self.seed = splits, order, seed

    def compute(self) -> dict[str, float]:
        from torch_fidelity.metric_isc import isc_features_to_metric

        logits = self.bank.raw(self._sub, "logits")  # (N, 1008)
        if logits.shape[0] < self.splits:
            raise PfbenchError(f"is: {logits.shape[0]} samples is fewer than {self.splits} splits")
        out = isc_features_to_metric(logits, self.splits, shuffle=self.order == "shuffle", rng_seed=self.seed)
        return {"is": out["inception_score_mean"], "is_std": out["inception_score_std"]}


class PrecisionRecall(_BankMetric):
    """Improved precision/recall (Kynkäänniemi et al.), k-NN manifolds on pool3 features vs ``ref.pool``."""

    name: ClassVar[str] = "pr"
    higher_is_better: ClassVar[bool] = True
    raw_keys = ("pool",)

    def __init__(self, ref: RefStats, *, bank: FeatureBank | None = None, k: int = 3) -> None:
        super().__init__(ref, bank)
        self.k = k

    def compute(self) -> dict[str, float]:
        ref = self._ref()
        if ref.pool is None:
            raise PfbenchError("precision_recall: reference has no pool features; load it with an extractor")
        p, r = precision_recall(ref.pool, self.bank.raw(self._sub, "pool"), k=self.k)
        return {"precision": p, "recall": r}


def check_kid_sizes(subset_size: int, generated: int, reference: int) -> None:
    """Refuses a KID subset larger than either side, naming the option to change (before any feature pass)."""
    if subset_size < 2:
        raise PfbenchError(f"kid: kid_subset_size={subset_size}; it must be >= 2 (the MMD estimate pairs images)")
    short = [f"{n} {side}" for n, side in ((generated, "generated"), (reference, "reference")) if n < subset_size]
    if short:
        raise PfbenchError(
            f"kid: kid_subset_size={subset_size} exceeds the {' and '.join(short)} images; lower it to at most "
            f"{min(generated, reference)} (pfbench eval --kid-subset-size, suite eval.kid_subset_size)"
        )


class KID(_BankMetric):
    """Kernel Inception Distance (torch-fidelity's unbiased cubic-polynomial MMD over random subsets).

    Args:
        ref: reference with ``pool`` features.
        bank: shared features.
        subsets, subset_size, seed: torch-fidelity's ``kid_subsets``/``kid_subset_size``/``rng_seed``
            (``evaluate`` checks ``subset_size`` against both sides before computing any feature).
    """

    name: ClassVar[str] = "kid"
    higher_is_better: ClassVar[bool] = False
    raw_keys = ("pool",)

    def __init__(self, ref: RefStats, *, bank: FeatureBank | None = None, subsets: int = 100,
                 subset_size: int = 1000, seed: int = 2020) -> None:  # fmt: skip
        super().__init__(ref, bank)
        self.subsets, self.subset_size, self.seed = subsets, subset_size, seed

    def compute(self) -> dict[str, float]:
        from torch_fidelity.metric_kid import kid_features_to_metric

        ref = self._ref()
        if ref.pool is None:
            raise PfbenchError("kid: reference has no pool features; load it with an extractor")
        fake, real = self.bank.raw(self._sub, "pool"), torch.from_numpy(np.asarray(ref.pool, np.float32))
        check_kid_sizes(self.subset_size, len(fake), len(real))
        out = kid_features_to_metric(fake, real, kid_subsets=self.subsets, kid_subset_size=self.subset_size,
                                     rng_seed=self.seed, verbose=False)  # fmt: skip
        return {"kid": out["kernel_inception_distance_mean"], "kid_std": out["kernel_inception_distance_std"]}


METRIC_CLASSES: dict[str, type[_BankMetric]] = {
    c.name: c for c in (FID, SFID, InceptionScore, PrecisionRecall, KID)
}


def standard_metrics(
    ref: RefStats, names: Sequence[str] = ("fid", "sfid", "is", "pr"),
    extractor: FeatureExtractor | None = None, *, kid_subset_size: int = 1000, is_order: str = "file",
) -> list[_BankMetric]:  # fmt: skip
    """Builds the named metrics over one shared ``FeatureBank`` (one Inception pass per batch).

    ``kid_subset_size`` and ``is_order`` reach ``KID(subset_size=…)`` and ``InceptionScore(order=…)``.
    """
    unknown = [n for n in names if n not in METRIC_CLASSES]
    if unknown:
        raise PfbenchError(f"standard_metrics: unknown {unknown}; known: {sorted(METRIC_CLASSES)}")
    bank = FeatureBank(extractor if extractor is not None else InceptionV3())
    options: dict[str, dict[str, object]] = {"kid": {"subset_size": kid_subset_size}, "is": {"order": is_order}}
    return [METRIC_CLASSES[n](ref, bank=bank, **options.get(n, {})) for n in names]  # type: ignore[call-arg,arg-type]


# ADM evaluator golden pair (SPEC §7): admnet_guided_upsampled_imagenet256.npz vs VIRTUAL_imagenet256_labeled.npz.
ADM_GOLDEN: dict[str, float] = {
    "fid": 3.9426,
    "sfid": 6.1404,
    "is": 215.84,
    "precision": 0.8265,
    "recall": 0.5309,
}


def adm_parity(
    sample_npz: str | Path,
    ref_npz: str | Path,
    weights: str | Path | None = None,
    *,
    extractor: FeatureExtractor | None = None,
    device: str | None = None,
    batch_size: int = 500,
    cache_dir: str | Path | None = None,
) -> dict[str, float]:
    """FID, sFID, IS, precision and recall of an ADM sample batch against an ADM reference batch.

    Mirrors the ADM evaluator (``evaluations/evaluator.py``): reference ``mu``/``sigma``/``mu_s``/
    ``sigma_s`` as stored; precision/recall (k = 3) between the reference images' and all samples'
    pool features; IS over 10 contiguous splits of the samples in file order. Compare the result
    with ``ADM_GOLDEN`` for the golden pair.

    Args:
        sample_npz: samples ``.npz`` with ``arr_0`` (N, H, W, 3) uint8.
        ref_npz: ADM reference batch (``mu``, ``sigma``, ``mu_s``, ``sigma_s``, ``arr_0``).
        weights: Inception weights file/folder (offline resolution, see ``pfbench.weights``).
        extractor: replaces the Inception network (tests); ``weights``/``device`` are then unused.
        device: ``"cuda"`` when available by default.
        batch_size: images per forward pass.
        cache_dir: cache root for the reference pool features.

    Returns:
        ``{"fid", "sfid", "is", "is_std", "precision", "recall", "num_samples"}``.
    """
    if extractor is None:
        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        extractor = InceptionV3(weights, device=dev, max_batch=batch_size)
    ref = load_adm_npz(ref_npz, extractor, batch_size=batch_size, cache_dir=cache_dir)
    bank = FeatureBank(extractor)
    metrics = [
        FID(ref, bank=bank),
        SFID(ref, bank=bank),
        InceptionScore(bank=bank),
        PrecisionRecall(ref, bank=bank),
    ]
    n = 0
    for images in iter_npz_images(sample_npz, batch_size):
        cond = Cond(torch.zeros(images.shape[0], dtype=torch.long))
        for m in metrics:
            m.update(images, cond)
        n += images.shape[0]
    out: dict[str, float] = {"num_samples": float(n)}
    for m in metrics:
        out.update(m.compute())
    return out
