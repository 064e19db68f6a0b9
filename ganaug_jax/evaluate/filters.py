"""Export filters for synthetic samples: each returns `Kept(keep, dropped)`, a boolean keep mask
(N,) and the number of samples it drops. Combine filters with `&` on the masks.

The thresholds are user options, so their errors name the command-line flag.
"""

from typing import NamedTuple

import numpy as np

from ganaug_jax.evaluate import quality


class Kept(NamedTuple):
    keep: np.ndarray  # (N,) bool, True = export this sample
    dropped: int


def _kept(keep: np.ndarray) -> Kept:
    return Kept(keep, int(keep.size - np.count_nonzero(keep)))


def privacy_filter(fake_features, real_features, *, threshold: float) -> Kept:
    """Drops synthetic samples whose nearest real training sample (Euclidean, in this feature
    space) is closer than `threshold` (strictly; 0 keeps everything)."""
    threshold = float(threshold)
    if not (np.isfinite(threshold) and threshold >= 0.0):
        raise ValueError(f"--privacy-threshold must be a finite distance >= 0, got {threshold}")
    distance, _ = quality.nearest_real(fake_features, real_features)
    return _kept(distance >= threshold)


def quality_filter(probabilities, labels, *, min_confidence: float) -> Kept:
    """Keeps samples whose classifier probability for their conditioning label is
    >= `min_confidence`. probabilities (N, K), rows summing to 1; labels (N,) ints in [0, K)."""
    min_confidence = float(min_confidence)
    if not 0.0 <= min_confidence <= 1.0:  # also rejects NaN
        raise ValueError(f"--min-confidence must be a probability in [0, 1], got {min_confidence}")
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    if probabilities.ndim != 2 or probabilities.shape[1] < 1:
        raise ValueError(f"probabilities must have shape (N, K), got shape {probabilities.shape}")
    n, k = probabilities.shape
    if not np.all(np.isfinite(probabilities)) or np.any(probabilities < 0):
        raise ValueError("probabilities must be finite and non-negative")
    if not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("probabilities must be rows that sum to 1 (apply softmax to logits)")
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers of shape (N,) = ({n},), got {labels.dtype} "
                         f"shape {labels.shape}")
    if n and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels must lie in [0, {k}), got range [{labels.min()}, {labels.max()}]")
    return _kept(probabilities[np.arange(n), labels] >= min_confidence)
