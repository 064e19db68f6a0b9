"""Per-sample separable filtering: Gaussian blur and StyleGAN2-ADA's band filter."""

import functools

import jax
import jax.numpy as jnp
import numpy as np


def separable_filter(images: jax.Array, taps: jax.Array) -> jax.Array:
    """Convolves each image with its own symmetric 1-D kernel along H, then along W.

    images: (N, H, W, C) float32; taps: (N, K) with K odd. Borders are half-sample
    symmetric ('reflect'), as scipy.ndimage's default. Returns (N, H, W, C).
    """
    n, h, w, _ = images.shape
    radius = taps.shape[1] // 2
    out = images
    for axis, size in ((1, h), (2, w)):
        pad = [(0, 0)] * 4
        pad[axis] = (radius, radius)
        padded = jnp.pad(out, pad, mode="symmetric")
        acc = 0.0
        for k in range(taps.shape[1]):
            window = jax.lax.slice_in_dim(padded, k, k + size, axis=axis)
            acc = acc + window * taps[:, k, None, None, None]
        out = acc
    return out


def gaussian_taps(sigma: jax.Array, radius: int) -> jax.Array:
    """Normalised Gaussian kernels (N, 2 * radius + 1); sigma = 0 gives the identity kernel."""
    offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    safe = jnp.maximum(sigma, 1e-6)[:, None]
    logits = -0.5 * (offsets / safe) ** 2
    taps = jnp.exp(logits - jnp.max(logits, axis=1, keepdims=True))
    return taps / jnp.sum(taps, axis=1, keepdims=True)


# Daubechies symlet 2 low-pass filter, the wavelet StyleGAN2-ADA builds its filter bank from.
_SYM2 = np.array([-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025])


@functools.lru_cache(maxsize=None)
def ada_filter_bank() -> np.ndarray:
    """Four band-pass 1-D filters (4, K) that sum to a unit impulse.

    Bands [0, pi/8], [pi/8, pi/4], [pi/4, pi/2], [pi/2, pi], built by iterating the sym2
    two-channel filter bank (half-band low-pass H(z) H(1/z) / 2 and its high-pass twin).
    """
    lo = _SYM2
    hi = lo * (-1.0) ** np.arange(lo.size)
    lo2 = np.convolve(lo, lo[::-1]) / 2
    hi2 = np.convolve(hi, hi[::-1]) / 2
    bank = np.eye(4, 1)
    for i in range(1, 4):
        # Upsample the bank by 2 (zeros between taps), then low-pass it; band i gets the high-pass.
        up = np.zeros((4, bank.shape[1] * 2 - 1))
        up[:, ::2] = bank
        bank = np.stack([np.convolve(row, lo2) for row in up])
        start = (bank.shape[1] - hi2.size) // 2
        bank[i, start:start + hi2.size] += hi2
    return bank


def ada_filter_taps(gains: jax.Array) -> jax.Array:
    """Per-sample filters from per-band gains (N, 4) -> (N, K)."""
    return gains @ jnp.asarray(ada_filter_bank(), jnp.float32)
