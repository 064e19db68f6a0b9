"""Per-sample separable filtering: Gaussian blur and StyleGAN2-ADA's band filter."""

import functools

import jax
import jax.numpy as jnp
import numpy as np


def separable_filter(images: jax.Array, taps: jax.Array) -> jax.Array:
    """Convolves each image with its own symmetric 1-D kernel along H, then along W.

    images: (N, H, W, C) float32; taps: (N, K) with K odd. Borders are half-sample
    symmetric ('reflect'), as scipy.ndimage's default. Returns (N, H, W, C).
    Implemented as two depthwise convolutions over N * C channels (StyleGAN2-ADA's grouped
    convolution): one XLA op per axis, however long the kernel.
    """
    n, h, w, c = images.shape
    if n == 0:  # an empty batch: nothing to filter (a convolution needs >= 1 channel group)
        return images
    k = taps.shape[1]
    radius = k // 2
    padded = jnp.pad(images, ((0, 0), (radius, radius), (radius, radius), (0, 0)),
                     mode="symmetric")
    x = padded.transpose(1, 2, 0, 3).reshape(1, h + 2 * radius, w + 2 * radius, n * c)
    per_channel = jnp.repeat(taps.astype(images.dtype), c, axis=0).T  # (K, N * C)
    dims = ("NHWC", "HWIO", "NHWC")
    for kernel_shape in ((k, 1, 1, n * c), (1, k, 1, n * c)):
        x = jax.lax.conv_general_dilated(
            x, per_channel.reshape(kernel_shape), (1, 1), "VALID", dimension_numbers=dims,
            feature_group_count=n * c, precision=jax.lax.Precision.HIGHEST)
    return x.reshape(h, w, n, c).transpose(2, 0, 1, 3)


def max_radius(height: int, width: int) -> int:
    """The longest Gaussian kernel radius for (H, W) images: 2 * max(H, W). Its kernel spans
    the reflected image's period (2 * size) twice over; longer ones only add taps on pixels
    they already cover, at a cost that grows with the radius."""
    return 2 * max(height, width)


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
