"""Random twins of the deterministic ops: `random_X(key, images, *, ..., p)`.

Each draws its parameters per sample from `key` and applies the op to each sample with
probability p (a scalar, may be traced). Each is a one-op pipeline, so a random twin and the
same op inside a pipeline behave identically.
"""

import jax

from ganaug_jax.augment import _specs
from ganaug_jax.augment._contract import check_images
from ganaug_jax.augment._pipeline import make_pipeline


def _run(op, key, images, p, **resample):
    return make_pipeline([op], **resample)(key, images, p)


def random_flip_left_right(key: jax.Array, images: jax.Array, *, p=0.5) -> jax.Array:
    """Mirrors each sample with probability p."""
    return _run(_specs.flip_left_right(), key, images, p)


def random_flip_up_down(key: jax.Array, images: jax.Array, *, p=0.5) -> jax.Array:
    """Mirrors each sample upside down with probability p."""
    return _run(_specs.flip_up_down(), key, images, p)


def random_rot90(key: jax.Array, images: jax.Array, *, p=1.0) -> jax.Array:
    """With probability p, rotates by k in {1, 2, 3} quarter turns (square images)."""
    images = check_images(images)
    if images.shape[1] != images.shape[2]:
        raise ValueError(f"random_rot90: images must be square (H == W), got shape {images.shape}")
    return _run(_specs.rot90(), key, images, p)


def random_translate(key: jax.Array, images: jax.Array, *, max_fraction=0.125,
                     mode="uniform", p=1.0, border="reflect", interpolation="bilinear",
                     fill=0.0) -> jax.Array:
    """Shifts by up to max_fraction of the size per axis (modes: see augment.op('translate'))."""
    return _run(_specs.translate(max_fraction=max_fraction, mode=mode), key, images, p,
                border=border, interpolation=interpolation, fill=fill)


def random_rotate(key: jax.Array, images: jax.Array, *, max_degrees=15.0, p=1.0,
                  border="reflect", interpolation="bilinear", fill=0.0) -> jax.Array:
    """Rotates by U(-max_degrees, max_degrees) degrees."""
    return _run(_specs.rotate(max_degrees=max_degrees), key, images, p,
                border=border, interpolation=interpolation, fill=fill)


def random_scale(key: jax.Array, images: jax.Array, *, factor_range=(0.8, 1.25),
                 log2_std=None, p=1.0, border="reflect", interpolation="bilinear",
                 fill=0.0) -> jax.Array:
    """Zooms by U(factor_range), or by 2 ** N(0, log2_std) when log2_std is given."""
    return _run(_specs.scale(factor_range=factor_range, log2_std=log2_std), key, images, p,
                border=border, interpolation=interpolation, fill=fill)


def random_anisotropic_scale(key: jax.Array, images: jax.Array, *, factor_range=(0.8, 1.25),
                             log2_std=None, p=1.0, border="reflect",
                             interpolation="bilinear", fill=0.0) -> jax.Array:
    """Zooms x by s and y by 1 / s, s from U(factor_range) or 2 ** N(0, log2_std)."""
    return _run(_specs.anisotropic_scale(factor_range=factor_range, log2_std=log2_std), key,
                images, p, border=border, interpolation=interpolation, fill=fill)


def random_shear(key: jax.Array, images: jax.Array, *, max_shear=0.2, p=1.0,
                 border="reflect", interpolation="bilinear", fill=0.0) -> jax.Array:
    """Shears by U(-max_shear, max_shear) along each axis."""
    return _run(_specs.shear(max_shear=max_shear), key, images, p,
                border=border, interpolation=interpolation, fill=fill)


def random_resized_crop(key: jax.Array, images: jax.Array, *, area_range=(0.08, 1.0),
                        ratio_range=(3 / 4, 4 / 3), p=1.0, interpolation="bilinear") -> jax.Array:
    """Crops a box of U(area_range) of the area and log-uniform aspect ratio (width over height
    in fractions of the image: in pixels on square images), resized back."""
    return _run(_specs.resized_crop(area_range=area_range, ratio_range=ratio_range), key,
                images, p, border="edge", interpolation=interpolation)


def random_cutout(key: jax.Array, images: jax.Array, *, size=0.5, mode="uniform",
                  p=1.0) -> jax.Array:
    """Zeroes a size x size box (fraction of the image) at a uniform centre."""
    return _run(_specs.cutout(size=size, mode=mode), key, images, p)


def random_brightness(key: jax.Array, images: jax.Array, *, max_delta=0.2, std=None,
                      p=1.0) -> jax.Array:
    """Adds U(-max_delta, max_delta), or N(0, std) when std is given."""
    return _run(_specs.brightness(max_delta=max_delta, std=std), key, images, p)


def random_contrast(key: jax.Array, images: jax.Array, *, factor_range=(0.8, 1.2),
                    log2_std=None, about: str = "mean", p=1.0) -> jax.Array:
    """Contrast factor U(factor_range), or 2 ** N(0, log2_std), about the image mean
    (about='mean') or about 0 (about='zero')."""
    return _run(_specs.contrast(factor_range=factor_range, log2_std=log2_std, about=about),
                key, images, p)


def random_saturation(key: jax.Array, images: jax.Array, *, factor_range=(0.8, 1.2),
                      log2_std=None, p=1.0) -> jax.Array:
    """Saturation factor U(factor_range), or 2 ** N(0, log2_std), about the luma."""
    return _run(_specs.saturation(factor_range=factor_range, log2_std=log2_std), key, images, p)


def random_hue(key: jax.Array, images: jax.Array, *, max_degrees=30.0, p=1.0) -> jax.Array:
    """Hue rotation by U(-max_degrees, max_degrees) (identity for C != 3)."""
    return _run(_specs.hue(max_degrees=max_degrees), key, images, p)


def random_gamma(key: jax.Array, images: jax.Array, *, gamma_range=(0.8, 1.25), p=1.0) -> jax.Array:
    """Gamma U(gamma_range) on (x + 1) / 2."""
    return _run(_specs.gamma(gamma_range=gamma_range), key, images, p)


def random_grayscale(key: jax.Array, images: jax.Array, *, p=0.2) -> jax.Array:
    """Turns each sample gray with probability p."""
    return _run(_specs.grayscale(), key, images, p)


def random_luma_flip(key: jax.Array, images: jax.Array, *, p=0.5) -> jax.Array:
    """Negates the luma of each sample with probability p."""
    return _run(_specs.luma_flip(), key, images, p)


def random_gaussian_noise(key: jax.Array, images: jax.Array, *, std=0.1, p=1.0) -> jax.Array:
    """Adds N(0, s^2) noise with per-sample s = |N(0, std)|."""
    return _run(_specs.noise(std=std), key, images, p)


def random_gaussian_blur(key: jax.Array, images: jax.Array, *, max_sigma=1.0, p=1.0) -> jax.Array:
    """Gaussian blur with sigma U(0, max_sigma), max_sigma finite and > 0; kernel radius
    ceil(3 * max_sigma), capped at gaussian_blur's longest, 2 * max(H, W)."""
    return _run(_specs.blur(max_sigma=max_sigma), key, images, p)
