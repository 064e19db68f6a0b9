"""Batches that mix real and synthetic labelled samples at a fixed ratio, on device.

`mix_batch` is a pure function of its key: jit it with the batch size and the fraction static,
e.g. `jax.jit(mix_batch, static_argnames=("batch_size", "synthetic_fraction"))`.
"""

import jax
import jax.numpy as jnp

from ganaug_jax.augment._contract import check_key
from ganaug_jax.data.sources import draw_from_arrays


def synthetic_count(batch_size: int, synthetic_fraction: float) -> int:
    """Synthetic samples per batch: round(batch_size * synthetic_fraction), Python's round
    (halves to even). Checks both arguments."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(synthetic_fraction, bool) or not isinstance(synthetic_fraction, (int, float)) \
            or not 0.0 <= synthetic_fraction <= 1.0:  # also rejects NaN
        raise ValueError(f"synthetic_fraction must be a number in [0, 1], got {synthetic_fraction!r}")
    return round(batch_size * float(synthetic_fraction))


def _check_source(arrays, name: str) -> None:
    if not isinstance(arrays, dict) or set(arrays) != {"x", "y"}:
        keys = sorted(arrays) if isinstance(arrays, dict) else type(arrays).__name__
        raise ValueError(f"{name} must be a dict with keys 'x' and 'y', got {keys}")
    x, y = arrays["x"], arrays["y"]
    if y.ndim != 1 or x.ndim < 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"{name}['x'] must be (N, ...) and {name}['y'] (N,), got shapes "
                         f"{x.shape} and {y.shape}")


def mix_batch(key: jax.Array, real: dict, synthetic: dict, *, batch_size: int,
              synthetic_fraction: float) -> dict:
    """{'x': (B, ...), 'y': (B,), 'synthetic': (B,) bool} with exactly
    `synthetic_count(B, fraction)` synthetic samples (`synthetic` True) and the rest real, each
    drawn uniformly with replacement, in a random order (so every shard of a batch split on the
    `data` axis sees both sources).

    real, synthetic: {'x': (N, ...), 'y': (N,)} with the same sample shape and dtypes.
    """
    check_key(key)
    _check_source(real, "real")
    _check_source(synthetic, "synthetic")
    for field in ("x", "y"):
        r, s = real[field], synthetic[field]
        if r.shape[1:] != s.shape[1:] or r.dtype != s.dtype:
            raise ValueError(f"real[{field!r}] and synthetic[{field!r}] must have the same sample "
                             f"shape and dtype, got {r.dtype}{list(r.shape)} and "
                             f"{s.dtype}{list(s.shape)}")
    n_synthetic = synthetic_count(batch_size, synthetic_fraction)
    n_real = batch_size - n_synthetic
    for name, arrays, n in (("real", real, n_real), ("synthetic", synthetic, n_synthetic)):
        if n and arrays["x"].shape[0] == 0:
            raise ValueError(f"{name} is empty but the batch asks for {n} {name} samples")
    k_real, k_synthetic, k_order = jax.random.split(key, 3)
    parts = [draw_from_arrays(k, arrays, n) for k, arrays, n in
             ((k_real, real, n_real), (k_synthetic, synthetic, n_synthetic)) if n]
    order = jax.random.permutation(k_order, batch_size)
    mixed = {field: jnp.concatenate([p[field] for p in parts])[order] for field in ("x", "y")}
    return dict(mixed, synthetic=order >= n_real)
