"""One resample per image: per-sample 3x3 matrices and the sampler that applies them.

Every geometric op is a per-sample 3x3 matrix mapping *output* pixel coordinates to *input*
pixel coordinates, both centred on the image centre (x right, y down, in pixels). A
pipeline multiplies the matrices of its geometric ops and samples each image once.
"""

import jax
import jax.numpy as jnp
from jax import lax


def identity(n: int) -> jax.Array:
    return jnp.broadcast_to(jnp.eye(3, dtype=jnp.float32), (n, 3, 3))


def from_linear(a, b, c, d, tx=None, ty=None) -> jax.Array:
    """Builds (N, 3, 3) matrices [[a, b, tx], [c, d, ty], [0, 0, 1]] from (N,) entries."""
    zero = jnp.zeros_like(a)
    tx = zero if tx is None else tx
    ty = zero if ty is None else ty
    rows = [jnp.stack([a, b, tx], -1), jnp.stack([c, d, ty], -1),
            jnp.stack([zero, zero, jnp.ones_like(a)], -1)]
    return jnp.stack(rows, -2)


def centred(matrix_topleft: jax.Array, height: int, width: int) -> jax.Array:
    """Converts output->input matrices in top-left pixel coordinates to centred ones."""
    cx, cy = (width - 1) / 2, (height - 1) / 2
    shift = jnp.array([[1, 0, cx], [0, 1, cy], [0, 0, 1]], jnp.float32)
    unshift = jnp.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], jnp.float32)
    return unshift @ matrix_topleft @ shift


def _reflect(coord, size):
    """Folds continuous coordinates into [-0.5, size - 0.5] by half-sample symmetric reflection."""
    period = 2.0 * size
    t = coord + 0.5
    t = t - period * jnp.floor(t / period)  # cheaper than jnp.mod (fmod) on CPU
    t = jnp.where(t > size, period - t, t)
    return t - 0.5


def _inside_weight(coord, size):
    """Share of a bilinear sample that falls inside the image along one axis, in [0, 1]."""
    outside = jnp.maximum(jnp.maximum(-coord, coord - (size - 1)), 0.0)
    return jnp.clip(1.0 - outside, 0.0, 1.0)


def _gather(images, rows, cols, patch_h, patch_w):
    """Gathers (patch_h, patch_w * C) patches at integer (row, col) of every output pixel.

    images: (N, H, W, C); rows, cols: (N, H', W') int32, in bounds. Returns (N, H', W', ph, pw*C).
    """
    n, h, w, c = images.shape
    flat = images.reshape(n, h, w * c)
    idx = jnp.stack([rows, cols * c], axis=-1)
    dims = lax.GatherDimensionNumbers(
        offset_dims=(3, 4), collapsed_slice_dims=(), start_index_map=(1, 2),
        operand_batching_dims=(0,), start_indices_batching_dims=(0,))
    return lax.gather(flat, idx, dims, (1, patch_h, patch_w * c),
                      mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS)


def source_coordinates(matrices: jax.Array, height: int, width: int):
    """Input coordinates (top-left pixel units) of every output pixel. Returns two (N, H, W)."""
    cx, cy = (width - 1) / 2, (height - 1) / 2
    xs = jnp.arange(width, dtype=jnp.float32)[None, None, :] - cx
    ys = jnp.arange(height, dtype=jnp.float32)[None, :, None] - cy
    m = matrices[:, :, :, None, None]
    sx = m[:, 0, 0] * xs + m[:, 0, 1] * ys + m[:, 0, 2] + cx
    sy = m[:, 1, 0] * xs + m[:, 1, 1] * ys + m[:, 1, 2] + cy
    return sx, sy


def resample(images: jax.Array, matrices: jax.Array, *, border: str = "reflect",
             interpolation: str = "bilinear", fill: float = 0.0) -> jax.Array:
    """Samples each image at matrix @ (x, y, 1) for every output pixel.

    images: (N, H, W, C) float32; matrices: (N, 3, 3) centred output->input maps.
    Returns (N, H, W, C) float32. Identity matrices reproduce the input exactly.
    """
    n, h, w, c = images.shape
    sx, sy = source_coordinates(matrices, h, w)
    if border == "reflect":
        sx, sy = _reflect(sx, w), _reflect(sy, h)
    if border == "constant":
        inside_x, inside_y = _inside_weight(sx, w), _inside_weight(sy, h)
        inside = inside_x * inside_y
    sx = jnp.clip(sx, 0.0, w - 1.0)
    sy = jnp.clip(sy, 0.0, h - 1.0)
    if interpolation == "nearest":
        x0 = jnp.round(sx).astype(jnp.int32)
        y0 = jnp.round(sy).astype(jnp.int32)
        out = _gather(images, y0, x0, 1, 1)[..., 0, :]
        if border == "constant":  # the rounded index is inside on each axis
            inside = ((inside_x >= 0.5) & (inside_y >= 0.5)).astype(images.dtype)
    else:
        x0 = jnp.minimum(jnp.floor(sx), w - 2.0)
        y0 = jnp.minimum(jnp.floor(sy), h - 2.0)
        fx = (sx - x0)[..., None]
        fy = (sy - y0)[..., None]
        patch = _gather(images, y0.astype(jnp.int32), x0.astype(jnp.int32), 2, 2)
        # a * (1 - f) + b * f (not a + (b - a) * f) is exact at f = 0 and f = 1, so integer
        # coordinates (identity, flips, rot90, integer shifts) reproduce pixels bit for bit.
        gx, gy = 1.0 - fx, 1.0 - fy
        top = patch[..., 0, :c] * gx + patch[..., 0, c:] * fx
        bottom = patch[..., 1, :c] * gx + patch[..., 1, c:] * fx
        out = top * gy + bottom * fy
    if border == "constant":
        inside = inside[..., None]
        out = out * inside + fill * (1.0 - inside)
    return out
