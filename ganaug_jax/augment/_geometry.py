"""Per-sample parameters -> (N, 3, 3) centred output->input matrices, one builder per op."""

import jax
import jax.numpy as jnp

from ganaug_jax.augment import _resample


def _ones(x):
    return jnp.ones_like(x, dtype=jnp.float32)


def flip_left_right(mask: jax.Array) -> jax.Array:
    a = jnp.where(mask, -1.0, 1.0)
    zero = jnp.zeros_like(a)
    return _resample.from_linear(a, zero, zero, _ones(a))


def flip_up_down(mask: jax.Array) -> jax.Array:
    d = jnp.where(mask, -1.0, 1.0)
    zero = jnp.zeros_like(d)
    return _resample.from_linear(_ones(d), zero, zero, d)


def _rotation(cos, sin):
    """Output->input map of a counter-clockwise (as seen on screen, y down) rotation."""
    return _resample.from_linear(cos, -sin, sin, cos)


def rot90(k: jax.Array) -> jax.Array:
    """k quarter turns counter-clockwise, with exact integer entries."""
    k = jnp.mod(k, 4)
    cos = jnp.array([1.0, 0.0, -1.0, 0.0])[k]
    sin = jnp.array([0.0, 1.0, 0.0, -1.0])[k]
    return _rotation(cos, sin)


def rotate(degrees: jax.Array) -> jax.Array:
    theta = jnp.deg2rad(degrees)
    return _rotation(jnp.cos(theta), jnp.sin(theta))


def translate(dx: jax.Array, dy: jax.Array) -> jax.Array:
    """Content moves by (dx, dy) pixels (right, down)."""
    one, zero = _ones(dx), jnp.zeros_like(dx)
    return _resample.from_linear(one, zero, zero, one, -dx, -dy)


def scale(sx: jax.Array, sy: jax.Array) -> jax.Array:
    """Factors > 1 enlarge the content about the centre."""
    zero = jnp.zeros_like(sx)
    return _resample.from_linear(1.0 / sx, zero, zero, 1.0 / sy)


def shear(shear_x: jax.Array, shear_y: jax.Array) -> jax.Array:
    """Forward map x' = x + shear_x * y, y' = y + shear_y * x (inverted here)."""
    det = 1.0 - shear_x * shear_y
    return _resample.from_linear(1.0 / det, -shear_x / det, -shear_y / det, 1.0 / det)


def crop(top, left, height, width, image_height: int, image_width: int) -> jax.Array:
    """Output pixels cover the box (fractions of the image, pixel-edge convention)."""
    tx = (left + width / 2 - 0.5) * image_width
    ty = (top + height / 2 - 0.5) * image_height
    zero = jnp.zeros_like(top)
    return _resample.from_linear(width, zero, zero, height, tx, ty)
