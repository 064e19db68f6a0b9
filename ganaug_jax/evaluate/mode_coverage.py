"""Mode coverage on 2-D mixtures, as in PacGAN / VEEGAN (PROTOCOLS.md section 1).

A sample is high quality if it lies within 3 std of its nearest mean; a mode is captured if at
least one high-quality sample has it as nearest mean. Also reports the reverse KL between the
distribution of high-quality samples over modes and the uniform distribution.
"""

import numpy as np


def mode_coverage(samples: np.ndarray, means: np.ndarray, std: float) -> dict:
    """samples (S, 2), means (K, 2) -> {'modes', 'num_modes', 'high_quality', 'reverse_kl'}."""
    samples, means = np.asarray(samples, np.float64), np.asarray(means, np.float64)
    if means.ndim != 2 or not len(means):
        raise ValueError(f"means must have shape (K, D) with K >= 1, got {means.shape}")
    if samples.ndim != 2 or samples.shape[1] != means.shape[1] or not len(samples):
        raise ValueError(f"samples must have shape (S, {means.shape[1]}) with S >= 1, "
                         f"got {samples.shape}")
    if not np.isfinite(means).all():
        raise ValueError("means must be finite")
    if not (np.isfinite(std) and std > 0):
        raise ValueError(f"std must be finite and > 0, got {std}")
    distances = np.linalg.norm(samples[:, None, :] - means[None, :, :], axis=-1)
    nearest = distances.argmin(axis=1)
    good = distances[np.arange(len(samples)), nearest] <= 3 * std
    counts = np.bincount(nearest[good], minlength=len(means))
    num_good = counts.sum()
    if num_good:
        q = counts / num_good
        present = q > 0
        reverse_kl = float(np.sum(q[present] * np.log(q[present] * len(means))))
    else:
        reverse_kl = float("inf")
    return {"modes": int((counts > 0).sum()), "num_modes": int(len(means)),
            "high_quality": float(good.mean()), "reverse_kl": reverse_kl}
