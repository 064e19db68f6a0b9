"""Sample quality in a feature space: Fréchet distance, precision / recall, memorisation.

PROTOCOLS.md section 3. Every metric takes feature arrays of shape (N, D) (any float dtype,
computed in float64 numpy) produced by a `FeatureExtractor`: a domain classifier's penultimate
layer for the offline recipe, or an Inception network for standard FID (plug it in with
`load_extractor("package.module:function")`; the metric code is the same).

Distances are Euclidean. Pairwise distances are computed in row chunks of at most
`_MAX_CHUNK_ELEMENTS` entries (32 MiB of float64), so N = 10k against 10k never holds the full
N x N matrix. Chunks use ||a||^2 + ||b||^2 - 2 a.b after centring both sets on the real mean
(which keeps that expansion accurate for features far from the origin); the distances that
are reported or compared for memorisation are then recomputed exactly as ||a - b|| for the
chosen pair, so an exact copy of a real sample is at distance 0.
"""

import importlib
from collections.abc import Callable

import numpy as np

FeatureExtractor = Callable[[np.ndarray], np.ndarray]
"""images (N, H, W, C) float32 in [-1, 1] -> features (N, D)."""

_MAX_CHUNK_ELEMENTS = 1 << 22


# ---- input checks ----

def _features(x, name: str, *, min_samples: int = 1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D), got shape {x.shape}")
    if x.shape[0] < min_samples:
        raise ValueError(f"{name} needs at least {min_samples} samples, got {x.shape[0]}")
    if x.shape[1] < 1:
        raise ValueError(f"{name} must have at least one feature, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return x


def _same_dim(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"{name_a} and {name_b} must have the same feature dimension D, "
                         f"got {a.shape[-1]} and {b.shape[-1]}")


def _check_k(k: int, n: int, name: str) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if n <= k:
        raise ValueError(f"{name} needs more than k = {k} samples for its k-NN radii, got {n}")


# ---- Fréchet distance ----

def _numerical_zero(values: np.ndarray) -> np.ndarray:
    """Eigenvalues at or below D * eps * max |eigenvalue| (the usual rank tolerance) set to 0:
    they are rounding noise, and their square roots (~1e-8 each) would otherwise add up."""
    tol = len(values) * np.finfo(np.float64).eps * np.abs(values).max()
    return np.where(values > tol, values, 0.0)


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix."""
    values, vectors = np.linalg.eigh(cov)
    return (vectors * np.sqrt(_numerical_zero(values))) @ vectors.T


# How far from symmetric and positive semi-definite (relative to the largest entry or
# eigenvalue) a covariance may be: float32 statistics differ from exact ones by rounding.
_PSD_TOLERANCE = 1e-3


def _symmetric_psd(cov: np.ndarray, name: str) -> np.ndarray:
    """cov symmetrised, after refusing one that is not symmetric PSD up to rounding."""
    scale = max(float(np.abs(cov).max()), np.finfo(np.float64).tiny)
    if np.abs(cov - cov.T).max() > _PSD_TOLERANCE * scale:
        raise ValueError(f"{name} must be a symmetric covariance matrix; it differs from its "
                         f"transpose by up to {np.abs(cov - cov.T).max():.3g}")
    cov = (cov + cov.T) / 2  # float32 statistics are often asymmetric by rounding
    values = np.linalg.eigvalsh(cov)
    if values[0] < -_PSD_TOLERANCE * max(values[-1], scale):
        raise ValueError(f"{name} must be positive semi-definite (a covariance); its smallest "
                         f"eigenvalue is {values[0]:.3g}")
    return cov


def gaussian_frechet_distance(mu_a, cov_a, mu_b, cov_b) -> float:
    """Fréchet (2-Wasserstein squared) distance between N(mu_a, cov_a) and N(mu_b, cov_b).

    ||mu_a - mu_b||^2 + Tr(cov_a) + Tr(cov_b) - 2 Tr((cov_a cov_b)^{1/2}). The last trace is
    the sum of square roots of the eigenvalues of the symmetric PSD matrix
    cov_a^{1/2} cov_b cov_a^{1/2}, which has the eigenvalues of cov_a cov_b (AB and BA share
    them); two `eigh` calls, eigenvalues within rounding of 0 (or below) set to 0. Unlike a
    general `sqrtm` this needs no complex arithmetic and stays accurate for singular
    covariances (N < D).
    The result is clipped at 0 (the distance is non-negative; rounding can make it -1e-12).
    """
    mu_a = np.asarray(mu_a, dtype=np.float64)
    mu_b = np.asarray(mu_b, dtype=np.float64)
    cov_a = np.atleast_2d(np.asarray(cov_a, dtype=np.float64))
    cov_b = np.atleast_2d(np.asarray(cov_b, dtype=np.float64))
    for name, mu, cov in (("a", mu_a, cov_a), ("b", mu_b, cov_b)):
        if mu.ndim != 1 or mu.shape[0] < 1:
            raise ValueError(f"mu_{name} must have shape (D,) with D >= 1, got shape {mu.shape}")
        if cov.shape != (mu.shape[0], mu.shape[0]):
            raise ValueError(f"cov_{name} must have shape (D, D) = ({mu.shape[0]}, {mu.shape[0]}), "
                             f"got shape {cov.shape}")
        if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(cov))):
            raise ValueError(f"mu_{name} / cov_{name} contain non-finite values (NaN or inf)")
    _same_dim(mu_a, mu_b, "mu_a", "mu_b")
    cov_a = _symmetric_psd(cov_a, "cov_a")
    cov_b = _symmetric_psd(cov_b, "cov_b")
    sqrt_a = _psd_sqrt(cov_a)
    middle = sqrt_a @ cov_b @ sqrt_a
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = np.sqrt(_numerical_zero(eigenvalues)).sum()
    diff = mu_a - mu_b
    value = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt
    return max(float(value), 0.0)


def gaussian_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """features (N, D), N >= 2 -> (mean (D,), covariance (D, D) with ddof=1, as in FID)."""
    x = _features(features, "features", min_samples=2)
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False, ddof=1))


def frechet_distance(features_a, features_b) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N >= 2 each, same D)."""
    a = _features(features_a, "features_a", min_samples=2)
    b = _features(features_b, "features_b", min_samples=2)
    _same_dim(a, b, "features_a", "features_b")
    return gaussian_frechet_distance(*gaussian_statistics(a), *gaussian_statistics(b))


# ---- nearest neighbours, chunked ----

def _row_chunks(rows: int, cols: int):
    step = max(1, _MAX_CHUNK_ELEMENTS // max(cols, 1))
    for start in range(0, rows, step):
        yield start, min(start + step, rows)


def _sq_dists(a: np.ndarray, b: np.ndarray, b_sq_norms: np.ndarray) -> np.ndarray:
    d = (a * a).sum(axis=1)[:, None] + b_sq_norms[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0, out=d)


def _knn_sq_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Squared distance from each row of x to its k-th nearest other row (itself excluded)."""
    norms = (x * x).sum(axis=1)
    radii = np.empty(len(x))
    for start, stop in _row_chunks(len(x), len(x)):
        d = _sq_dists(x[start:stop], x, norms)
        d[np.arange(stop - start), np.arange(start, stop)] = np.inf
        radii[start:stop] = np.partition(d, k - 1, axis=1)[:, k - 1]
    return radii


def _inside_any_ball(points: np.ndarray, centres: np.ndarray, sq_radii: np.ndarray) -> np.ndarray:
    """(M,) bool: is each point within (<=) the radius of at least one centre?"""
    norms = (centres * centres).sum(axis=1)
    inside = np.empty(len(points), dtype=bool)
    for start, stop in _row_chunks(len(points), len(centres)):
        d = _sq_dists(points[start:stop], centres, norms)
        inside[start:stop] = (d <= sq_radii[None, :]).any(axis=1)
    return inside


def _nearest(queries: np.ndarray, refs: np.ndarray, *, exclude_self: bool = False):
    """Nearest row of refs for each query: (exact Euclidean distances, indices)."""
    norms = (refs * refs).sum(axis=1)
    index = np.empty(len(queries), dtype=np.int64)
    for start, stop in _row_chunks(len(queries), len(refs)):
        d = _sq_dists(queries[start:stop], refs, norms)
        if exclude_self:
            d[np.arange(stop - start), np.arange(start, stop)] = np.inf
        index[start:stop] = d.argmin(axis=1)
    return np.linalg.norm(queries - refs[index], axis=1), index


def nearest_real(fake, real) -> tuple[np.ndarray, np.ndarray]:
    """fake (M, D), real (N, D) -> (distance (M,) to the nearest real row, its index (M,))."""
    fake = _features(fake, "fake")
    real = _features(real, "real")
    _same_dim(fake, real, "fake", "real")
    centre = real.mean(axis=0)
    return _nearest(fake - centre, real - centre)


# ---- precision / recall and memorisation ----

def precision_recall(real, fake, *, k: int = 3) -> dict:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN manifolds.

    Each real point carries a ball whose radius is the distance to its k-th nearest other real
    point; precision is the share of fake points inside (<=) at least one real ball. Recall is
    the same with the roles swapped (real points inside fake balls). -> {'precision', 'recall'}.
    """
    real = _features(real, "real")
    fake = _features(fake, "fake")
    _same_dim(real, fake, "real", "fake")
    _check_k(k, len(real), "real")
    _check_k(k, len(fake), "fake")
    centre = real.mean(axis=0)
    real, fake = real - centre, fake - centre
    precision = _inside_any_ball(fake, real, _knn_sq_radii(real, k)).mean()
    recall = _inside_any_ball(real, fake, _knn_sq_radii(fake, k)).mean()
    return {"precision": float(precision), "recall": float(recall)}


def memorised(fake, real_train) -> np.ndarray:
    """(M,) bool: is each synthetic sample closer to its nearest real training sample than that
    real sample is to its own nearest other real training sample? (PROTOCOLS.md section 3)."""
    fake = _features(fake, "fake")
    real = _features(real_train, "real_train", min_samples=2)
    _same_dim(fake, real, "fake", "real_train")
    centre = real.mean(axis=0)
    fake, real = fake - centre, real - centre
    distance, index = _nearest(fake, real)
    real_gap, _ = _nearest(real, real, exclude_self=True)
    return distance < real_gap[index]


def memorisation_ratio(fake, real_train) -> float:
    """Share of synthetic samples that are `memorised` (0 = none, 1 = all)."""
    return float(memorised(fake, real_train).mean())


# ---- feature extractors ----

def load_extractor(spec: str) -> FeatureExtractor:
    """Imports a feature extractor from "package.module:function" (attribute may be dotted)."""
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ValueError(f"feature extractor spec must look like 'package.module:function', got {spec!r}")
    module_name, attr_path = spec.split(":")
    parts = module_name.split(".") + attr_path.split(".")
    if not all(part.isidentifier() for part in parts):
        raise ValueError(f"feature extractor spec must look like 'package.module:function' "
                         f"(dotted Python names), got {spec!r}")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(f"cannot import module {module_name!r} of feature extractor spec "
                          f"{spec!r}: {err}") from err
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise AttributeError(f"{getattr(obj, '__name__', obj)!r} has no attribute {part!r} "
                                 f"(feature extractor spec {spec!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"feature extractor {spec!r} is a {type(obj).__name__}, not a callable")
    return obj


def extract_features(extractor: FeatureExtractor, images, *, batch_size: int = 256) -> np.ndarray:
    """Runs `extractor` over images (N, H, W, C) float32 in [-1, 1] in batches; checks that it
    returns finite (batch, D) features with the same D every time. -> (N, D) float64."""
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.float32:
        raise ValueError(f"images must be float32 (N, H, W, C) in [-1, 1], got {images.dtype} "
                         f"shape {images.shape}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    outputs, dim = [], None
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        out = np.asarray(extractor(batch), dtype=np.float64)
        if out.ndim != 2 or out.shape[0] != len(batch) or (dim is not None and out.shape[1] != dim):
            expected = f"({len(batch)}, {'D' if dim is None else dim})"
            raise ValueError(f"feature extractor must return features of shape {expected} "
                             f"for {len(batch)} images, got shape {out.shape}")
        if not np.all(np.isfinite(out)):
            raise ValueError("feature extractor returned non-finite features (NaN or inf)")
        dim = out.shape[1]
        outputs.append(out)
    if not outputs:
        raise ValueError("images is empty")
    return np.concatenate(outputs)


# ---- report ----

def quality_report(real_train_feats, real_test_feats, fake_feats, *, k: int = 3) -> dict:
    """PROTOCOLS.md section 3 in one dict, all in the same feature space.

    fd: FD(fake, real test); fd_floor: FD(real train, real test). Both use the held-out real
    set as reference, so a generator that copies its training set lands on the floor, not
    below it (FD against real train would reward memorisation). FD is biased by sample size:
    compare fd with fd_floor using as many fake samples as real training samples.
    precision, recall: fake vs real test, k-NN manifolds. memorisation: fake vs real train;
    memorisation_floor: real test vs real train, the share an independent fresh sample scores
    by chance (well above 0 in few dimensions), the level a non-copying generator should match.
    """
    train = _features(real_train_feats, "real_train_feats", min_samples=2)
    test = _features(real_test_feats, "real_test_feats", min_samples=2)
    fake = _features(fake_feats, "fake_feats", min_samples=2)
    _same_dim(train, test, "real_train_feats", "real_test_feats")
    _same_dim(train, fake, "real_train_feats", "fake_feats")
    pr = precision_recall(test, fake, k=k)
    return {"fd": frechet_distance(fake, test), "fd_floor": frechet_distance(train, test),
            "precision": pr["precision"], "recall": pr["recall"],
            "memorisation": memorisation_ratio(fake, train),
            "memorisation_floor": memorisation_ratio(test, train)}
