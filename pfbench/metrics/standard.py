"""Standard ImageNet metrics (docs/protocol.md §9): FID, sFID, IS, precision/recall, KID on Inception features.

Every metric here reads the "inception" feature network (``pfbench.encoders.inception``: ``pool``,
``logits``, ``spatial``); ``pfbench.evaluate`` runs it once per batch for all of them. Statistics are
pfbench's float64 ``FeatureStats``/``frechet_distance``/``precision_recall``; IS and KID call
torch-fidelity's own formulas on the features. Used directly::

    net = InceptionV3()
    fid, is_ = FID(Reference.of(ref_stats)), InceptionScore()
    for images, cond in loader:          # images uint8 (B, 3, H, W)
        feats = net(images)              # {"pool": (B, 2048), "logits": (B, 1008), "spatial": (B, 2023)}
        fid.update(feats, cond)
        is_.update(feats, cond)
    scores = fid.compute() | is_.compute()

``FrechetDistance`` is the shared Fréchet-distance metric: ``fd_embedded`` and ``fd_dinov2`` are it on other
networks.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from pfbench import FieldError, PfbenchError
from pfbench.metrics.frechet import frechet_distance
from pfbench.metrics.refstats import Reference
from pfbench.metrics.scores import precision_recall
from pfbench.metrics.stats import FeatureStats
from pfbench.types import Cond


class FrechetDistance:
    """Fréchet distance of feature ``key`` of network ``features`` to the reference's statistics.

    Args:
        reference: the reference set as the same network sees it.
    """

    name: ClassVar[str]
    higher_is_better: ClassVar[bool] = False
    features: ClassVar[str]
    needs: ClassVar[frozenset[str]] = frozenset({"reference"})
    key: ClassVar[str] = "pool"

    def __init__(self, reference: Reference) -> None:
        self.reference = reference
        self.stats = FeatureStats()  # streaming float64 mean/covariance of the samples' features

    def update(self, features: dict[str, Tensor], cond: Cond) -> None:
        """Adds one batch's features (``features[key]``: (B, D)); ``cond`` is unused."""
        self.stats.update(features[self.key])

    def compute(self) -> dict[str, float]:
        if self.stats.n < 2:
            raise PfbenchError(f"{self.name}: need at least 2 images, got {self.stats.n}")
        mu, sigma = self.reference.stats(self.key, self.name)
        if mu.shape != (self.stats.dim,):
            raise PfbenchError(f"{self.name}: reference has {mu.shape[0]}-d statistics, the {self.features} network "
                               f"gives {self.stats.dim}-d; compute both with the same network")  # fmt: skip
        return {self.name: frechet_distance(self.stats.mean(), self.stats.cov(), mu, sigma)}


class FID(FrechetDistance):
    """Fréchet Inception Distance on pool3 features against the reference's ``mu``/``sigma``."""

    name: ClassVar[str] = "fid"
    features: ClassVar[str] = "inception"


class SFID(FrechetDistance):
    """Spatial FID: Fréchet distance on ``mixed_6/conv`` features against the reference's ``mu_s``/``sigma_s``."""

    name: ClassVar[str] = "sfid"
    features: ClassVar[str] = "inception"
    key: ClassVar[str] = "spatial"


IS_ORDERS = ("file", "shuffle")


class InceptionScore:
    """Inception Score from unbiased logits over ``splits`` contiguous splits (torch-fidelity's formula).

    Two conventions differ only in which samples share a split (7.76 vs 7.71 on the same 200 images):

    - ``is_order="file"`` (default): samples in the order given, as the ADM evaluator does (it never
      shuffles; its splits hold 5,000 images, i.e. these 10 splits at the standard 50,000 samples).
    - ``is_order="shuffle"``: torch-fidelity's default (``samples_shuffle=True``): the logits permuted by
      ``numpy.random.RandomState(seed).permutation`` first, seed 2020 like its ``rng_seed``; equal
      to ``torch_fidelity.calculate_metrics(isc=True)`` on the same logits.

    Args:
        is_order: ``"file"`` or ``"shuffle"`` (checked here, before any feature is computed).
        splits: 10 (docs/protocol.md §9).
        seed: permutation seed for ``is_order="shuffle"``.
    """

    name: ClassVar[str] = "is"
    higher_is_better: ClassVar[bool] = True
    directions: ClassVar[dict[str, bool]] = {"is": True, "is_std": False}
    features: ClassVar[str] = "inception"
    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, is_order: str = "file", splits: int = 10, seed: int = 2020) -> None:
        check_is_order(is_order)
        self.order, self.splits, self.seed = is_order, splits, seed
        self._logits: list[Tensor] = []

    def update(self, features: dict[str, Tensor], cond: Cond) -> None:
        """Keeps one batch's ``logits`` (B, 1008); ``cond`` is unused."""
        self._logits.append(features["logits"].float().cpu())

    def compute(self) -> dict[str, float]:
        from torch_fidelity.metric_isc import isc_features_to_metric

        if not self._logits:
            raise PfbenchError("is: compute() before any update(); no images were seen")
        logits = torch.cat(self._logits)  # (N, 1008)
        if logits.shape[0] < self.splits:
            raise PfbenchError(f"is: {logits.shape[0]} samples is fewer than {self.splits} splits")
        out = isc_features_to_metric(logits, self.splits, shuffle=self.order == "shuffle", rng_seed=self.seed)
        return {"is": out["inception_score_mean"], "is_std": out["inception_score_std"]}


class _KeptPool:
    """Keeps the samples' raw ``pool`` rows (B, D) float32 and checks the reference has images."""

    name: ClassVar[str]

    def __init__(self, reference: Reference) -> None:
        reference.require_features(self.name)
        self.reference = reference
        self._pool: list[Tensor] = []

    def update(self, features: dict[str, Tensor], cond: Cond) -> None:
        """Keeps one batch's ``pool`` features; ``cond`` is unused."""
        self._pool.append(features["pool"].float().cpu())

    def _fake(self) -> Tensor:
        if not self._pool:
            raise PfbenchError(f"{self.name}: compute() before any update(); no images were seen")
        return torch.cat(self._pool)  # (N, D)


class PrecisionRecall(_KeptPool):
    """Improved precision/recall (Kynkäänniemi et al.), k-NN manifolds on pool3 features vs the reference's.

    Reports ``precision{suffix}`` and ``recall{suffix}`` (``pr_embedded`` is it on the embedded network).
    """

    name: ClassVar[str] = "pr"
    higher_is_better: ClassVar[bool] = True
    directions: ClassVar[dict[str, bool]] = {"precision": True, "recall": True}
    features: ClassVar[str] = "inception"
    needs: ClassVar[frozenset[str]] = frozenset({"reference"})
    suffix: ClassVar[str] = ""

    def __init__(self, reference: Reference, k: int = 3) -> None:
        super().__init__(reference)
        self.k = k

    def compute(self) -> dict[str, float]:
        p, r = precision_recall(self.reference.features(self.name), self._fake(), k=self.k)
        return {f"precision{self.suffix}": p, f"recall{self.suffix}": r}


def check_is_order(order: str) -> None:
    """The IS sample order, checked once for ``pfbench eval`` and a suite (``eval.is_order``)."""
    if order not in IS_ORDERS:
        raise FieldError("is_order", f"{order!r} is not one of {', '.join(IS_ORDERS)} (file: the ADM evaluator's "
                         "sample order, shuffle: torch-fidelity's default)")  # fmt: skip


def check_kid_sizes(subset_size: int, sides: dict[str, int]) -> None:
    """Refuses a KID subset below 2 or larger than a side (``{"generated": 60, "reference": 300}``, or a suite's
    ``{"sweep.num_samples": 200, ...}``), before any feature pass; checked once for ``pfbench eval`` and a suite."""
    if subset_size < 2:
        raise FieldError("kid_subset_size", f"{subset_size}; it must be >= 2 (the MMD estimate pairs images)")
    short = [f"{n} {side}" for side, n in sides.items() if n < subset_size]
    if short:
        raise FieldError("kid_subset_size", f"{subset_size} exceeds the {' and '.join(short)} images; lower it to at "
                         f"most {min(sides.values())} (pfbench eval --kid-subset-size, suite eval.kid_subset_size)")


class KID(_KeptPool):
    """Kernel Inception Distance (torch-fidelity's unbiased cubic-polynomial MMD over random subsets).

    Args:
        reference: reference with images (its pool features are kept).
        kid_subset_size: torch-fidelity's ``kid_subset_size``; checked against both sides here when
            ``num_samples`` is given, i.e. before any feature pass.
        num_samples: samples that will be scored, if known.
        subsets, seed: torch-fidelity's ``kid_subsets``/``rng_seed``.
    """

    name: ClassVar[str] = "kid"
    higher_is_better: ClassVar[bool] = False
    directions: ClassVar[dict[str, bool]] = {"kid": False, "kid_std": False}
    features: ClassVar[str] = "inception"
    needs: ClassVar[frozenset[str]] = frozenset({"reference"})

    def __init__(self, reference: Reference, kid_subset_size: int = 1000, num_samples: int | None = None,
                 subsets: int = 100, seed: int = 2020) -> None:  # fmt: skip
        super().__init__(reference)
        if num_samples is not None:
            check_kid_sizes(kid_subset_size, {"generated": num_samples, "reference": reference.n})
        self.subsets, self.subset_size, self.seed = subsets, kid_subset_size, seed

    def compute(self) -> dict[str, float]:
        from torch_fidelity.metric_kid import kid_features_to_metric

        fake = self._fake()
        real = torch.from_numpy(np.asarray(self.reference.features(self.name), np.float32))
        check_kid_sizes(self.subset_size, {"generated": len(fake), "reference": len(real)})
        out = kid_features_to_metric(fake, real, kid_subsets=self.subsets, kid_subset_size=self.subset_size,
                                     rng_seed=self.seed, verbose=False)  # fmt: skip
        return {"kid": out["kernel_inception_distance_mean"], "kid_std": out["kernel_inception_distance_std"]}
