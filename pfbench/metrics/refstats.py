"""Reference statistics (docs/protocol.md §9): ADM ``.npz`` files or cached computation, for any feature network.

``RefStats`` holds the ADM fields: ``mu``/``sigma`` of the pooled features (``pool``), ``mu_s``/``sigma_s`` of
Inception's spatial ones (sFID) and optionally the raw ``pool`` rows (precision/recall, KID). Two sources:

- ``load_adm_npz``: an ADM-evaluator reference batch (``VIRTUAL_imagenet256_labeled.npz``) read
  directly: ``mu``/``sigma`` (pool3) and ``mu_s``/``sigma_s`` (sFID) as stored; the reference
  images ``arr_0`` are embedded once (pool3, for precision/recall and KID) and cached.
- ``compute_ref_stats``: statistics computed once from any stream of uint8 batches and cached.

``Reference`` is what a metric receives: a reference set as one network sees it, loaded on first use.

Cache files live in ``<$PFBENCH_CACHE or ~/.cache/pfbench>/refstats`` and are named by a content
hash of (dataset key, preprocessing, extractor fingerprint — which includes the weights' sha256 and
the resize mode). Writes are atomic (temp file + rename); an unreadable cache file is recomputed.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pfbench import PfbenchError
from pfbench.assets import cache_root
from pfbench.encoders.base import FeatureExtractor
from pfbench.io import atomic_write, content_key
from pfbench.metrics.stats import FeatureStats
from pfbench.weights import file_sha256

_FORMAT = "pfbench-refstats-v1"


@dataclass(frozen=True, eq=False)
class RefStats:
    """Reference side of FID / sFID / precision-recall / KID.

    Attributes:
        mu, sigma: pool3 mean (D,) and covariance (D, D), float64.
        mu_s, sigma_s: spatial (sFID) mean and covariance, or ``None``.
        pool: (N, D) float32 reference pool features (precision/recall, KID), or ``None``.
        provenance: where the numbers come from (file hash, extractor fingerprint, counts).
    """

    mu: np.ndarray
    sigma: np.ndarray
    mu_s: np.ndarray | None = None
    sigma_s: np.ndarray | None = None
    pool: np.ndarray | None = None
    provenance: Mapping[str, str] = field(default_factory=dict)


_STATS = {"pool": ("mu", "sigma"), "spatial": ("mu_s", "sigma_s")}  # feature key -> RefStats fields (ADM names)


class Reference:
    """The reference set as one feature network sees it: its size now, its statistics when first used.

    ``pfbench.evaluate`` makes one per feature network and hands it to the metrics that need it; a metric
    that reads raw reference features (precision/recall, KID) calls ``require_features`` when it is built,
    so an unusable reference fails before any feature pass, and evaluate then ``load``s the statistics once
    (with the raw features only if someone asked for them) before the pass over the samples.

    Args:
        n: reference images (0: statistics only, e.g. an ADM ``.npz`` without ``arr_0``).
        where: what the user passed, for messages.
        load: ``load(features)`` → the statistics, with the raw ``pool`` rows when ``features`` is true.
    """

    def __init__(self, n: int, where: str, load: Callable[[bool], RefStats]) -> None:
        self.n, self.where, self._load = n, where, load
        self._want_features = False
        self._stats: RefStats | None = None

    @classmethod
    def of(cls, stats: RefStats) -> Reference:
        """A reference whose statistics are already computed (Python use, tests)."""
        return cls(len(stats.pool) if stats.pool is not None else 0, "given statistics", lambda features: stats)

    def require_features(self, metric: str) -> None:
        """Marks the raw reference features as needed by ``metric``; refuses a reference without images."""
        if self.n == 0:
            raise PfbenchError(f"ref {self.where} has statistics but no images arr_0; {metric} needs reference images")
        self._want_features = True

    def load(self) -> RefStats:
        """The statistics (computed or read once; again with the raw features if they were missing)."""
        if self._stats is None or (self._want_features and self._stats.pool is None):
            self._stats = self._load(self._want_features)
        return self._stats

    def stats(self, key: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """Mean (D,) and covariance (D, D) float64 of feature ``key`` ("pool" or "spatial")."""
        ref = self.load()
        mu, sigma = (getattr(ref, f) for f in _STATS[key])
        if mu is None or sigma is None:
            raise PfbenchError(f"{metric}: reference {self.where} has no {key} statistics (mu_s/sigma_s); use an "
                               "ADM .npz that has them or a reference of images")  # fmt: skip
        return mu, sigma

    def features(self, metric: str) -> np.ndarray:
        """Raw reference ``pool`` features (N, D) float32 (``require_features`` first)."""
        self._want_features = True
        pool = self.load().pool
        if pool is None:
            raise PfbenchError(f"{metric}: reference {self.where} has no pool features; build it from images")
        return pool


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    atomic_write(path, lambda fh: np.savez(fh, **arrays))  # type: ignore[arg-type]  # stubs type **kwds as allow_pickle


def _to_arrays(ref: RefStats) -> dict[str, np.ndarray]:
    arrays = {"mu": ref.mu, "sigma": ref.sigma, "provenance": np.array(json.dumps(dict(ref.provenance)))}
    for k in ("mu_s", "sigma_s", "pool"):
        if getattr(ref, k) is not None:
            arrays[k] = getattr(ref, k)
    return arrays


def _from_npz(path: Path) -> RefStats:
    with np.load(path) as z:
        get = {k: z[k] for k in z.files if k != "arr_0"}
    prov = json.loads(str(get["provenance"])) if "provenance" in get else {}
    return RefStats(get["mu"], get["sigma"], get.get("mu_s"), get.get("sigma_s"), get.get("pool"), prov)


def save_ref_stats(ref: RefStats, path: str | Path) -> None:
    """Writes ``ref`` as an ADM-compatible ``.npz`` (``mu``, ``sigma``, ``mu_s``, ``sigma_s``) atomically."""
    _atomic_savez(Path(path), _to_arrays(ref))


def _cached(key: str, cache_dir: str | Path | None) -> tuple[Path, RefStats | None]:
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    path = root / "refstats" / f"{key[:24]}.npz"
    if not path.is_file():
        return path, None
    try:
        ref = _from_npz(path)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as err:
        warnings.warn(
            f"reference stats cache {path} is unreadable ({err}); recomputing", RuntimeWarning, stacklevel=3
        )
        return path, None
    if ref.provenance.get("cache_key") != key:
        warnings.warn(
            f"reference stats cache {path} belongs to another key; recomputing", RuntimeWarning, stacklevel=3
        )
        return path, None
    return path, ref


def compute_ref_stats(
    batches: Iterable[Tensor],
    extractor: FeatureExtractor,
    *,
    dataset_key: str,
    preprocessing: str = "none",
    keep_pool: bool = True,
    cache_dir: str | Path | None = None,
) -> RefStats:
    """Reference statistics of a dataset, computed once and cached by content hash.

    Args:
        batches: uint8 (B, 3, H, W) batches of the reference images (consumed only on a cache miss).
        extractor: feature extractor (e.g. ``InceptionV3``); its fingerprint enters the cache key.
        dataset_key: content hash of the reference images (``images_key``, ``files_key`` or a file
            sha256); the caller vouches that it identifies the images.
        preprocessing: anything done to the images before they became uint8 batches (crop, resize).
        keep_pool: also store the (N, 2048) pool features (needed by precision/recall and KID).
        cache_dir: cache root (default ``$PFBENCH_CACHE`` or ``~/.cache/pfbench``).
    """
    if "pool" not in extractor.keys:
        raise PfbenchError(f"reference statistics: the network gives {extractor.keys or 'no'} features, no 'pool'")
    fp = extractor.fingerprint()
    key = content_key(_FORMAT, dataset_key, preprocessing, json.dumps(fp, sort_keys=True), str(keep_pool))
    path, ref = _cached(key, cache_dir)
    if ref is not None:
        return ref
    stats = {k: FeatureStats() for k in ("pool", "spatial") if k in extractor.keys}
    pools: list[Tensor] = []
    for images in batches:
        feats = extractor(images)
        for k, st in stats.items():
            st.update(feats[k])
        if keep_pool:
            pools.append(feats["pool"])
    n = stats["pool"].n
    if n < 2:
        raise PfbenchError(f"compute_ref_stats: need at least 2 reference images, got {n}")
    prov = {"cache_key": key, "dataset_key": dataset_key, "preprocessing": preprocessing, "n": str(n),
            "extractor": json.dumps(fp, sort_keys=True), "source": "computed"}  # fmt: skip
    sp = stats.get("spatial")
    ref = RefStats(
        mu=stats["pool"].mean(),
        sigma=stats["pool"].cov(),
        mu_s=sp.mean() if sp is not None else None,
        sigma_s=sp.cov() if sp is not None else None,
        pool=torch.cat(pools).numpy() if keep_pool else None,
        provenance=prov,
    )
    _atomic_savez(path, _to_arrays(ref))
    return ref


def iter_npz_images(path: str | Path, batch_size: int = 500, key: str = "arr_0") -> Iterator[Tensor]:
    """Streams an (N, H, W, 3) uint8 array out of an ``.npz`` as uint8 (B, 3, H, W) batches.

    Reads the member incrementally (the ADM sample file is ~10 GB as one array), like the ADM
    evaluator does; compressed and uncompressed ``.npz`` both work.
    """
    with zipfile.ZipFile(path) as zf:
        if f"{key}.npy" not in zf.namelist():
            raise PfbenchError(f"{path}: no array {key!r} (has {', '.join(zf.namelist())})")
        with zf.open(f"{key}.npy") as f:
            version = np.lib.format.read_magic(f)
            read_header = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }
            if version not in read_header:
                raise PfbenchError(f"{path}:{key}: unsupported .npy format version {version}")
            shape, fortran, dtype = read_header[version](f)
            if dtype != np.uint8 or len(shape) != 4 or shape[3] != 3 or fortran:
                raise PfbenchError(f"{path}:{key} must be uint8 (N, H, W, 3) C-order, got {dtype} {shape}")
            per = int(np.prod(shape[1:]))
            for start in range(0, shape[0], batch_size):
                b = min(batch_size, shape[0] - start)
                buf = np.frombuffer(f.read(b * per), np.uint8).reshape(b, *shape[1:])  # (b, H, W, 3)
                yield torch.from_numpy(buf.copy()).permute(0, 3, 1, 2).contiguous()  # (b, 3, H, W)


def load_adm_npz(
    path: str | Path,
    extractor: FeatureExtractor | None = None,
    *,
    batch_size: int = 500,
    cache_dir: str | Path | None = None,
) -> RefStats:
    """Reads an ADM-format reference batch.

    Args:
        path: ``.npz`` with ``mu``, ``sigma`` and optionally ``mu_s``, ``sigma_s``, ``arr_0``.
        extractor: if given and the file holds reference images ``arr_0``, their pool features are
            computed (once; cached by the file's sha256 + the extractor fingerprint) for
            precision/recall and KID. The stored ``mu``/``sigma`` are always used as they are.
        batch_size: images per extractor call.
        cache_dir: cache root for the pool features.
    """
    path = Path(path)
    if not path.is_file():
        raise PfbenchError(
            f"reference batch {path} not found; pass the ADM .npz (e.g. VIRTUAL_imagenet256_labeled.npz)"
        )
    with np.load(path) as z:
        files = set(z.files)
        if not {"mu", "sigma"} <= files:
            raise PfbenchError(
                f"{path}: missing 'mu'/'sigma' (has {sorted(files)}); not an ADM reference batch"
            )
        arrays = {k: np.asarray(z[k], np.float64) for k in ("mu", "sigma", "mu_s", "sigma_s") if k in files}
    sha = file_sha256(path)
    prov = {"source": "adm-npz", "file": str(path), "file_sha256": sha}
    pool = None
    if extractor is not None and "arr_0" in files:
        feats = compute_ref_stats(
            iter_npz_images(path, batch_size), extractor, dataset_key=f"adm-npz:{sha}", preprocessing="adm arr_0",
            cache_dir=cache_dir,
        )  # fmt: skip
        pool = feats.pool
        prov["pool_features"] = feats.provenance.get("extractor", "")
    return RefStats(arrays["mu"], arrays["sigma"], arrays.get("mu_s"), arrays.get("sigma_s"), pool, prov)


def images_key(images: Tensor) -> str:
    """Content hash of an in-memory uint8 image tensor (shape + bytes)."""
    arr = images.detach().cpu().contiguous().numpy()
    return content_key("images", str(arr.dtype), str(arr.shape), arr.tobytes())


def files_key(paths: Iterable[str | Path], root: str | Path | None = None) -> str:
    """Content hash of a set of files: sorted relative names and every file's sha256."""
    base = Path(root) if root is not None else None
    entries = sorted(
        (str(Path(p).relative_to(base)) if base else Path(p).name, file_sha256(p)) for p in paths
    )
    return content_key("files", json.dumps(entries))
