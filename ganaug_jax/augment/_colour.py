"""One per-pixel colour transform per image: (C+1)x(C+1) affine colour matrices.

A colour matrix M acts on the homogeneous pixel [x_1 .. x_C, 1]. A pipeline multiplies the
matrices of consecutive colour ops and applies the product once (StyleGAN2-ADA's 4x4 colour
matrix, generalised to C channels).

The luma axis is the per-pixel channel mean (StyleGAN2-ADA's v = (1, 1, 1) / sqrt(3) and
DiffAugment's saturation centre), defined for any C. Hue rotation turns RGB about that axis;
for C != 3 it is the identity. Contrast scales about the per-image mean over all pixels and
channels (DiffAugment's definition), or about 0 (StyleGAN2-ADA's, for images centred on 0).
"""

import jax
import jax.numpy as jnp
import numpy as np


def compose(later: jax.Array, earlier: jax.Array) -> jax.Array:
    """Batched product later @ earlier of small matrices (N, I, K) @ (N, K, J), elementwise.

    XLA:CPU turns tiny batched dots into slow library calls; broadcast products fuse.
    """
    out = 0.0
    for k in range(later.shape[2]):
        out = out + later[:, :, k, None] * earlier[:, None, k, :]
    return out


def identity(n: int, c: int) -> jax.Array:
    return jnp.broadcast_to(jnp.eye(c + 1, dtype=jnp.float32), (n, c + 1, c + 1))


def _affine(linear: jax.Array, offset: jax.Array) -> jax.Array:
    """(N, C, C) linear part and (N, C) offset -> (N, C+1, C+1)."""
    n, c, _ = linear.shape
    top = jnp.concatenate([linear, offset[:, :, None]], axis=2)
    bottom = jnp.broadcast_to(jnp.eye(1, c + 1, c, dtype=jnp.float32), (n, 1, c + 1))
    return jnp.concatenate([top, bottom], axis=1)


def _scaled_eye(scale: jax.Array, c: int) -> jax.Array:
    return scale[:, None, None] * jnp.eye(c, dtype=jnp.float32)


def _luma_projector(c: int) -> jax.Array:
    """P with P @ x = (mean of x over channels) * ones: the projection onto the luma axis."""
    return jnp.full((c, c), 1.0 / c, jnp.float32)


def brightness(delta: jax.Array, c: int) -> jax.Array:
    """x + delta."""
    return _affine(_scaled_eye(jnp.ones_like(delta), c), delta[:, None] * jnp.ones((c,)))


def contrast(factor: jax.Array, mean: jax.Array) -> jax.Array:
    """(x - m) * factor + m, m = per-image mean over pixels and channels; mean: (N, C)."""
    c = mean.shape[1]
    m = jnp.mean(mean, axis=1, keepdims=True)
    return _affine(_scaled_eye(factor, c), (1.0 - factor)[:, None] * m * jnp.ones((c,)))


def scale(factor: jax.Array, c: int) -> jax.Array:
    """x * factor: contrast about 0 (StyleGAN2-ADA's scale3d)."""
    return _affine(_scaled_eye(factor, c), jnp.zeros((factor.shape[0], c)))


def saturation(factor: jax.Array, c: int) -> jax.Array:
    """luma + (x - luma) * factor, per pixel."""
    linear = _scaled_eye(factor, c) + (1.0 - factor)[:, None, None] * _luma_projector(c)
    return _affine(linear, jnp.zeros((factor.shape[0], c)))


def hue(degrees: jax.Array, c: int) -> jax.Array:
    """Rotation of RGB about the luma axis (Rodrigues); identity when C != 3."""
    n = degrees.shape[0]
    if c != 3:
        return identity(n, c)
    theta = jnp.deg2rad(degrees)[:, None, None]
    v = np.full(3, 1 / np.sqrt(3.0))
    cross = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    outer = np.outer(v, v)
    linear = (jnp.cos(theta) * (np.eye(3) - outer) + jnp.sin(theta) * cross + outer)
    return _affine(linear.astype(jnp.float32), jnp.zeros((n, 3)))


def grayscale(mask: jax.Array, c: int) -> jax.Array:
    """Every channel set to the luma where mask is True."""
    return saturation(jnp.where(mask, 0.0, 1.0), c)


def luma_flip(mask: jax.Array, c: int) -> jax.Array:
    """Reflects the luma component (x - 2 * luma) where mask is True (StyleGAN2-ADA lumaflip)."""
    linear = jnp.eye(c) - 2.0 * mask.astype(jnp.float32)[:, None, None] * _luma_projector(c)
    return _affine(linear, jnp.zeros((mask.shape[0], c)))


def channel_means(images: jax.Array) -> jax.Array:
    """Per-image, per-channel means (N, C) of (N, H, W, C) images.

    Summed over rows of 16 pixels x C channels so the reduction runs along a non-minor axis
    with contiguous vectors; XLA:CPU reduces over (H, W) of a minor C = 3 about 3x slower.
    """
    n, h, w, c = images.shape
    lanes = next(k for k in (16, 8, 4, 2, 1) if (h * w) % k == 0)
    partial = jnp.sum(images.reshape(n, h * w // lanes, lanes * c), axis=1)
    return jnp.sum(partial.reshape(n, lanes, c), axis=1) / (h * w)


def transform_mean(matrices: jax.Array, mean: jax.Array) -> jax.Array:
    """Per-channel means after an affine colour transform: (N, C+1, C+1), (N, C) -> (N, C)."""
    c = mean.shape[1]
    out = matrices[:, :c, c]
    for k in range(c):  # unrolled: a reduction of this product is lowered to a slow dot
        out = out + matrices[:, :c, k] * mean[:, k, None]
    return out


def apply(images: jax.Array, matrices: jax.Array) -> jax.Array:
    """Applies (N, C+1, C+1) colour matrices to (N, H, W, C) float32 images.

    Written as a sum over input channels of broadcast products, which XLA fuses into one
    elementwise pass; a contraction over C = 3 would be lowered to a slow dot, and a
    per-channel stack to a slow concatenate.
    """
    c = images.shape[-1]
    m = matrices[:, None, None, :c, :]
    out = m[..., c]
    for k in range(c):
        out = out + images[..., k:k + 1] * m[..., k]
    return out
