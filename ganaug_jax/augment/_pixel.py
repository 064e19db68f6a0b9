"""Ops that neither move pixels nor mix channels affinely: gamma, cutout, noise, filters.

All take float32 (N, H, W, C) images and per-sample (N,) parameters.
"""

import jax
import jax.numpy as jnp

from ganaug_jax.augment import _filters

_TINY = 1e-12


def gamma(images: jax.Array, gamma_: jax.Array) -> jax.Array:
    """u ** gamma on u = (x + 1) / 2, mapped back to [-1, 1].

    Values below -1 (u < 0) get the odd extension -|u| ** gamma: nothing is clipped, and the
    gradient stays finite at u = 0.
    """
    u = (images + 1.0) * 0.5
    g = gamma_[:, None, None, None]
    magnitude = jnp.exp(g * jnp.log(jnp.maximum(jnp.abs(u), _TINY)))
    magnitude = jnp.where(jnp.abs(u) > _TINY, magnitude, 0.0)
    return jnp.sign(u) * magnitude * 2.0 - 1.0


def cutout(images, center_y, center_x, height, width, fill: float = 0.0) -> jax.Array:
    """Sets pixels whose centre lies inside the box to `fill` (box in fractions of the image)."""
    _, h, w, _ = images.shape
    ys = (jnp.arange(h, dtype=jnp.float32) + 0.5) / h
    xs = (jnp.arange(w, dtype=jnp.float32) + 0.5) / w
    inside_y = jnp.abs(ys[None, :] - center_y[:, None]) < height[:, None] / 2
    inside_x = jnp.abs(xs[None, :] - center_x[:, None]) < width[:, None] / 2
    inside = inside_y[:, :, None, None] & inside_x[:, None, :, None]
    return jnp.where(inside, jnp.asarray(fill, images.dtype), images)


def gaussian_noise(images: jax.Array, noise: jax.Array, std: jax.Array) -> jax.Array:
    """images + std * noise, noise of the images' shape (standard normal)."""
    return images + std[:, None, None, None] * noise.astype(images.dtype)


def gaussian_blur(images: jax.Array, sigma: jax.Array, radius: int) -> jax.Array:
    """Separable Gaussian blur, kernel of 2 * radius + 1 taps, reflect borders."""
    return _filters.separable_filter(images, _filters.gaussian_taps(sigma, radius))


def ada_filter(images: jax.Array, gains: jax.Array) -> jax.Array:
    """StyleGAN2-ADA image-space filter: per-sample gains (N, 4) of its four frequency bands."""
    return _filters.separable_filter(images, _filters.ada_filter_taps(gains))
