"""Deterministic augmentation ops: images plus per-sample parameters of shape (N,).

Every op checks the image contract (see `_contract`), computes in float32 and returns the
input dtype. Scalars are broadcast to (N,).
"""

import jax
import jax.numpy as jnp
import numpy as np

from ganaug_jax.augment import _colour, _filters, _geometry, _pixel, _resample
from ganaug_jax.augment import _warp as _warp_lib
from ganaug_jax.augment._contract import (BORDERS, CONTRAST_CENTRES, INTERPOLATIONS, check_choice,
                                          check_fill, check_finite, check_images, check_param)


def _warp(images, matrices, border, interpolation, fill):
    check_choice(border, BORDERS, "border")
    check_choice(interpolation, INTERPOLATIONS, "interpolation")
    fill = check_fill(fill)
    out, _ = _warp_lib.warp(images.astype(jnp.float32), matrices, border=border,
                            interpolation=interpolation, fill=fill)
    return out.astype(images.dtype)


def _recolour(images, matrices):
    return _colour.apply(images.astype(jnp.float32), matrices).astype(images.dtype)


def _pixelwise(fn, images, *args):
    return fn(images.astype(jnp.float32), *args).astype(images.dtype)


def _images_and_params(images, **params):
    images = check_images(images)
    n = images.shape[0]
    return images, [check_param(v, n, name) for name, v in params.items()]


def _check_concrete(value, name, valid, expected):
    """Refuses a concrete value where valid(value as a NumPy array) is not all True; a traced
    one cannot be checked."""
    if not isinstance(value, jax.core.Tracer) and not np.all(valid(np.asarray(value))):
        raise ValueError(f"{name} must be {expected}, got {value}")


def _check_nonzero(factor, name):
    """A zoom factor of 0 collapses the image to a point (its inverse map is infinite)."""
    _check_concrete(factor, name, lambda f: f != 0,
                    "non-zero (a zoom factor; negative also mirrors)")


def _images_and_mask(images, mask):
    images = check_images(images)
    return images, check_param(mask, images.shape[0], "mask", dtype=bool)


# ---- geometric ----

def flip_left_right(images: jax.Array, mask) -> jax.Array:
    """Mirrors the samples where mask (N,) bool is True."""
    images, mask = _images_and_mask(images, mask)
    return _warp(images, _geometry.flip_left_right(mask), "edge", "nearest", 0.0)


def flip_up_down(images: jax.Array, mask) -> jax.Array:
    """Mirrors upside down the samples where mask (N,) bool is True."""
    images, mask = _images_and_mask(images, mask)
    return _warp(images, _geometry.flip_up_down(mask), "edge", "nearest", 0.0)


def rot90(images: jax.Array, k) -> jax.Array:
    """Rotates each sample by k (N,) int quarter turns counter-clockwise (as np.rot90).

    Needs square images, since the batch keeps one shape.
    """
    images = check_images(images)
    if images.shape[1] != images.shape[2]:
        raise ValueError(f"rot90: images must be square (H == W), got shape {images.shape}")
    k = check_param(k, images.shape[0], "k", dtype=jnp.int32)
    return _warp(images, _geometry.rot90(k), "edge", "nearest", 0.0)


def translate(images: jax.Array, dx, dy, *, border: str = "reflect",
              interpolation: str = "bilinear", fill: float = 0.0) -> jax.Array:
    """Moves content by (dx, dy) (N,) pixels right and down; integers shift exactly."""
    images, (dx, dy) = _images_and_params(images, dx=dx, dy=dy)
    return _warp(images, _geometry.translate(dx, dy), border, interpolation, fill)


def rotate(images: jax.Array, degrees, *, border: str = "reflect",
           interpolation: str = "bilinear", fill: float = 0.0) -> jax.Array:
    """Rotates by degrees (N,) counter-clockwise on screen, about the image centre."""
    images, (degrees,) = _images_and_params(images, degrees=degrees)
    return _warp(images, _geometry.rotate(degrees), border, interpolation, fill)


def scale(images: jax.Array, factor, *, border: str = "reflect",
          interpolation: str = "bilinear", fill: float = 0.0) -> jax.Array:
    """Zooms by factor (N,), non-zero, about the centre (> 1 enlarges the content)."""
    images, (factor,) = _images_and_params(images, factor=factor)
    _check_nonzero(factor, "factor")
    return _warp(images, _geometry.scale(factor, factor), border, interpolation, fill)


def anisotropic_scale(images: jax.Array, scale_x, scale_y, *, border: str = "reflect",
                      interpolation: str = "bilinear", fill: float = 0.0) -> jax.Array:
    """Zooms x by scale_x (N,) and y by scale_y (N,), non-zero, about the centre."""
    images, (sx, sy) = _images_and_params(images, scale_x=scale_x, scale_y=scale_y)
    _check_nonzero(sx, "scale_x")
    _check_nonzero(sy, "scale_y")
    return _warp(images, _geometry.scale(sx, sy), border, interpolation, fill)


def shear(images: jax.Array, shear_x, shear_y, *, border: str = "reflect",
          interpolation: str = "bilinear", fill: float = 0.0) -> jax.Array:
    """Shears about the centre: x' = x + shear_x * y, y' = y + shear_y * x (N,) each."""
    images, (shx, shy) = _images_and_params(images, shear_x=shear_x, shear_y=shear_y)
    return _warp(images, _geometry.shear(shx, shy), border, interpolation, fill)


def affine_transform(images: jax.Array, matrix, *, border: str = "reflect",
                     interpolation: str = "bilinear", fill: float = 0.0) -> jax.Array:
    """Samples output pixel (x, y) at matrix @ (x, y, 1) of the input.

    matrix: (N, 3, 3) or (3, 3), output->input, top-left pixel coordinates (x = column,
    y = row, pixel centres at integers), as scipy.ndimage.affine_transform's homogeneous
    matrix but in (x, y) order. As there, the last row must be [0, 0, 1] (a projective map is
    not affine): a concrete matrix with another last row is refused; a traced one's last row
    cannot be checked and is taken as [0, 0, 1].
    """
    images = check_images(images)
    n, h, w, _ = images.shape
    check_finite(matrix, "matrix")
    raw, matrix = matrix, jnp.asarray(matrix, jnp.float32)
    if matrix.shape == (3, 3):
        matrix = jnp.broadcast_to(matrix, (n, 3, 3))
    if matrix.shape != (n, 3, 3):
        raise ValueError(f"matrix must have shape (3, 3) or (N, 3, 3) = ({n}, 3, 3), got {matrix.shape}")
    _check_concrete(raw, "matrix", lambda m: m[..., 2, :] == np.array([0, 0, 1]),
                    "affine, its last row [0, 0, 1] (as scipy.ndimage.affine_transform's)")
    matrix = matrix.at[:, 2].set(jnp.array([0.0, 0.0, 1.0]))
    return _warp(images, _resample.centred(matrix, h, w), border, interpolation, fill)


def crop_and_resize(images: jax.Array, boxes, *, border: str = "edge",
                    interpolation: str = "bilinear", fill: float = 0.0) -> jax.Array:
    """Resizes box (top, left, height, width) of each image, in fractions of the image, to the
    full image size. boxes: (N, 4) float (a random-resized-crop box per sample), height and
    width > 0 (a concrete box of zero or negative size is refused; a traced one cannot be
    checked)."""
    images = check_images(images)
    n, h, w, _ = images.shape
    check_finite(boxes, "boxes")
    raw, boxes = boxes, jnp.asarray(boxes, jnp.float32)
    if boxes.shape != (n, 4):
        raise ValueError(f"boxes must have shape (N, 4) = ({n}, 4) as (top, left, height, width), "
                         f"got {boxes.shape}")
    _check_concrete(raw, "boxes", lambda b: b[..., 2:] > 0,
                    "(top, left, height, width) with height > 0 and width > 0")
    top, left, height, width = (boxes[:, i] for i in range(4))
    return _warp(images, _geometry.crop(top, left, height, width, h, w), border, interpolation, fill)


# ---- colour ----

def adjust_brightness(images: jax.Array, delta) -> jax.Array:
    """images + delta (N,)."""
    images, (delta,) = _images_and_params(images, delta=delta)
    return _recolour(images, _colour.brightness(delta, images.shape[-1]))


def adjust_contrast(images: jax.Array, factor, *, about: str = "mean") -> jax.Array:
    """(x - m) * factor + m, m the per-image mean over pixels and channels (about='mean',
    DiffAugment), or x * factor (about='zero', StyleGAN2-ADA); factor (N,)."""
    images, (factor,) = _images_and_params(images, factor=factor)
    check_choice(about, CONTRAST_CENTRES, "about")
    if about == "zero":
        return _recolour(images, _colour.scale(factor, images.shape[-1]))
    mean = _colour.channel_means(images.astype(jnp.float32))
    return _recolour(images, _colour.contrast(factor, mean))


def adjust_saturation(images: jax.Array, factor) -> jax.Array:
    """luma + (x - luma) * factor per pixel (luma = channel mean; any C); factor (N,)."""
    images, (factor,) = _images_and_params(images, factor=factor)
    return _recolour(images, _colour.saturation(factor, images.shape[-1]))


def adjust_hue(images: jax.Array, degrees) -> jax.Array:
    """Rotates RGB about the luma axis (1, 1, 1) by degrees (N,), right-handed: positive
    angles turn red towards green (the HSV hue increases). The identity when C != 3."""
    images, (degrees,) = _images_and_params(images, degrees=degrees)
    return _recolour(images, _colour.hue(degrees, images.shape[-1]))


def grayscale(images: jax.Array, mask) -> jax.Array:
    """Sets every channel to the luma (channel mean) where mask (N,) bool is True."""
    images, mask = _images_and_mask(images, mask)
    return _recolour(images, _colour.grayscale(mask, images.shape[-1]))


def luma_flip(images: jax.Array, mask) -> jax.Array:
    """x - 2 * luma where mask (N,) bool is True (negates the luma, keeps the chroma)."""
    images, mask = _images_and_mask(images, mask)
    return _recolour(images, _colour.luma_flip(mask, images.shape[-1]))


def adjust_gamma(images: jax.Array, gamma) -> jax.Array:
    """((x + 1) / 2) ** gamma mapped back to [-1, 1]; gamma (N,) > 0 (a concrete gamma <= 0
    is refused)."""
    images, (gamma_,) = _images_and_params(images, gamma=gamma)
    _check_concrete(gamma, "gamma", lambda g: g > 0, "> 0")
    return _pixelwise(_pixel.gamma, images, gamma_)


# ---- pixel ----

def cutout(images: jax.Array, center_y, center_x, height, width, *, fill: float = 0.0) -> jax.Array:
    """Fills a box per sample with `fill`; centre and size (N,) in fractions of the image.

    A pixel is inside when its centre is: |(row + 0.5) / H - center_y| < height / 2, same in x.
    """
    images, params = _images_and_params(images, center_y=center_y, center_x=center_x,
                                         height=height, width=width)
    return _pixelwise(_pixel.cutout, images, *params, check_fill(fill))


def gaussian_noise(images: jax.Array, noise, std) -> jax.Array:
    """images + std (N,) * noise, noise a standard-normal array of the images' shape."""
    images, (std,) = _images_and_params(images, std=std)
    noise = jnp.asarray(noise)
    if noise.shape != images.shape:
        raise ValueError(f"noise must have the images' shape {images.shape}, got {noise.shape}")
    return _pixelwise(_pixel.gaussian_noise, images, noise, std)


def gaussian_blur(images: jax.Array, sigma, *, radius: int) -> jax.Array:
    """Gaussian blur with per-sample sigma (N,) >= 0, kernel of 2 * radius + 1 taps, reflect
    borders (scipy.ndimage.gaussian_filter with truncate = radius / sigma).

    radius: a static int in [0, 2 * max(H, W)] (a kernel spanning the reflected image's
    period, 2 * size, twice over: a longer one only adds taps on pixels it already covers, at
    a cost that grows with the radius). A concrete sigma < 0 is refused.
    """
    images, (sigma_,) = _images_and_params(images, sigma=sigma)
    _check_concrete(sigma, "sigma", lambda s: s >= 0, ">= 0")
    limit = _filters.max_radius(*images.shape[1:3])
    if (isinstance(radius, (bool, np.bool_)) or not isinstance(radius, (int, np.integer))
            or not 0 <= radius <= limit):
        raise ValueError(f"radius must be a non-negative int (static) <= 2 * max(H, W) = "
                         f"{limit}, got {radius!r}")
    return _pixelwise(_pixel.gaussian_blur, images, sigma_, int(radius))
