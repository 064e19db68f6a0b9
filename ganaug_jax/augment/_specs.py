"""Op specifications for pipelines: how each op draws its per-sample parameters.

An `Op` says how to draw the parameters of one augmentation for every sample of a batch and
what those parameters do (a geometric matrix, a colour matrix, or a pixel function). A
pipeline draws each op's parameters, replaces them by the identity for the samples where the
op is not applied (probability p per op and sample), and fuses what it can.

The constructors below are the registry `OPS` (name -> constructor); keyword arguments set
the parameter distributions.
"""

import dataclasses
import inspect
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from ganaug_jax.augment import _colour, _filters, _geometry, _hash, _pixel
from ganaug_jax.augment._contract import CONTRAST_CENTRES, check_choice, check_range, check_real

GEOMETRIC, COLOUR, PIXEL = "geometric", "colour", "pixel"
Params = Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Op:
    """One augmentation of a pipeline.

    draw(u, key, shape, p) -> params: per-sample arrays (leading axis N) for an applied op,
        computed from u, (N, n_uniform) independent U(0, 1) draws (one random call serves a
        whole pipeline), and from key where an op needs more (the noise field). An op whose
        own draws decide where it acts (ada_filter) also returns "applied", (N,) bool.
    identity: parameter values that make the op a no-op (used where it is not applied).
    build: geometric (params, H, W) -> (N, 3, 3) centred output->input matrices;
           colour (params, C, mean (N, C)) -> (N, C+1, C+1) colour matrices;
           pixel (params, images) -> images.
    probability: maps the pipeline's p to this op's per-sample application probability.
    """
    name: str
    kind: str
    draw: Callable
    identity: Mapping[str, float]
    build: Callable
    n_uniform: int = 1
    needs_mean: bool = False
    needs_key: bool = False
    probability: Callable = lambda p: p

    def __post_init__(self):
        if not callable(self.probability):
            raise ValueError(f"op {self.name!r}: probability must be a function of the "
                             f"pipeline's p (e.g. lambda p: p / 2), got {self.probability!r}")


def sample(ops, key: jax.Array, shape: tuple, p: jax.Array) -> list:
    """Draws every op's parameters for a batch of `shape`, identity where not applied.

    One (N, K) uniform draw feeds all ops (few small kernels: this matters on CPU, where each
    kernel launch costs microseconds). Returns one (params dict, applied (N,) bool) per op.
    """
    n = shape[0]
    widths = [o.n_uniform + 1 for o in ops]
    u = _hash.uniform(key, (n, sum(widths)))
    out, start = [], 0
    for index, (o, width) in enumerate(zip(ops, widths)):
        op_key = jax.random.fold_in(key, index) if o.needs_key else None
        block = u[:, start:start + width]
        start += width
        params = dict(o.draw(block[:, 1:], op_key, shape, p))
        applied = (block[:, 0] < o.probability(p)) & params.pop("applied", True)
        for name, value in o.identity.items():
            params[name] = jnp.where(applied, params[name], jnp.asarray(value, params[name].dtype))
        out.append((params, applied))
    return out


def _uniform(u, lo, hi):
    return lo + u * (hi - lo)


def _normal(u):
    """Standard normal draws from U(0, 1) draws (inverse CDF, open interval)."""
    eps = jnp.finfo(jnp.float32).eps
    return jax.scipy.special.ndtri(jnp.clip(u, eps, 1.0 - eps))


def _randint(u, lo, hi):
    """Integers uniform in [lo, hi) from U(0, 1) draws."""
    return jnp.minimum(jnp.floor(lo + u * (hi - lo)), hi - 1).astype(jnp.int32)


def _factor(u, factor_range, log2_std):
    """Multiplicative factor: uniform in factor_range, or 2 ** N(0, log2_std) when given."""
    if log2_std is not None:
        return jnp.exp2(_normal(u) * log2_std)
    return _uniform(u, *factor_range)


MAX_LOG2_STD = 16.0  # normal draws reach +-5.2 std: 2 ** (5.2 * 16) is finite in float32


def _check_log2_std(name, log2_std):
    """The std of a log2 factor 2 ** N(0, log2_std): in [0, MAX_LOG2_STD]."""
    check_real(log2_std, f"{name}: log2_std", 0.0, MAX_LOG2_STD,
               why=" (the factors 2 ** N(0, log2_std) must stay finite and non-zero)")


def _check_factor_args(name, factor_range, log2_std, *, zoom=False):
    """zoom: a geometric factor, which must be > 0 (0 collapses the image to a point)."""
    if log2_std is not None:
        _check_log2_std(name, log2_std)
    else:
        check_range(factor_range, f"{name}: factor_range", low_bound=0.0)
        if zoom and not factor_range[0] > 0:
            raise ValueError(f"{name}: factor_range must have lo > 0 (a zoom factor of 0 "
                             f"collapses the image to a point), got {tuple(factor_range)}")


# ---- geometric ----

def _always(shape):
    return {"mask": jnp.ones((shape[0],), bool)}


def flip_left_right(*, probability: Callable = lambda p: p) -> Op:
    """Mirror left-right (every sample the op is applied to is flipped)."""
    return Op("flip_left_right", GEOMETRIC, lambda u, key, shape, p: _always(shape),
              {"mask": False}, lambda q, h, w: _geometry.flip_left_right(q["mask"]),
              n_uniform=0, probability=probability)


def flip_up_down(*, probability: Callable = lambda p: p) -> Op:
    """Mirror up-down (every sample the op is applied to is flipped)."""
    return Op("flip_up_down", GEOMETRIC, lambda u, key, shape, p: _always(shape),
              {"mask": False}, lambda q, h, w: _geometry.flip_up_down(q["mask"]),
              n_uniform=0, probability=probability)


def rot90(*, probability: Callable = lambda p: p) -> Op:
    """k quarter turns, k uniform in {1, 2, 3}. Exact on square images; on others it is, as in
    StyleGAN2-ADA's pipe, a quarter-turn resample about the centre that the border fills (the
    deterministic `rot90` op refuses non-square images instead)."""
    return Op("rot90", GEOMETRIC, lambda u, key, shape, p: {"k": _randint(u[:, 0], 1, 4)},
              {"k": 0}, lambda q, h, w: _geometry.rot90(q["k"]), probability=probability)


_TRANSLATE_MODES = ("uniform", "round", "randint", "normal")


def translate(*, max_fraction: float = 0.125, mode: str = "uniform") -> Op:
    """Shift by a fraction of the image size per axis.

    mode 'uniform': U(-max_fraction, max_fraction) * size (sub-pixel);
    'round': that value rounded to whole pixels (StyleGAN2-ADA xint);
    'randint': whole pixels uniform in [-s, s], s = int(size * max_fraction + 0.5) (DiffAugment);
    'normal': N(0, max_fraction) * size, sub-pixel (StyleGAN2-ADA xfrac, max_fraction = its std).
    """
    check_choice(mode, _TRANSLATE_MODES, "translate: mode")
    check_real(max_fraction, "translate: max_fraction", 0.0, 1.0)

    def draw(u, key, shape, p):
        h, w = shape[1:3]
        ux, uy = u[:, 0], u[:, 1]
        if mode == "randint":
            sx, sy = int(w * max_fraction + 0.5), int(h * max_fraction + 0.5)
            return {"dx": _randint(ux, -sx, sx + 1).astype(jnp.float32),
                    "dy": _randint(uy, -sy, sy + 1).astype(jnp.float32)}
        if mode == "normal":
            fx, fy = _normal(ux) * max_fraction, _normal(uy) * max_fraction
        else:
            fx, fy = _uniform(ux, -max_fraction, max_fraction), _uniform(uy, -max_fraction, max_fraction)
        dx, dy = fx * w, fy * h
        if mode == "round":
            dx, dy = jnp.round(dx), jnp.round(dy)
        return {"dx": dx, "dy": dy}

    return Op("translate", GEOMETRIC, draw, {"dx": 0.0, "dy": 0.0},
              lambda q, h, w: _geometry.translate(q["dx"], q["dy"]), n_uniform=2)


def rotate(*, max_degrees: float = 15.0, probability: Callable = lambda p: p) -> Op:
    """Rotation by U(-max_degrees, max_degrees) degrees, counter-clockwise on screen."""
    check_real(max_degrees, "rotate: max_degrees", 0.0, 180.0)
    return Op("rotate", GEOMETRIC,
              lambda u, key, shape, p: {"degrees": _uniform(u[:, 0], -max_degrees, max_degrees)},
              {"degrees": 0.0}, lambda q, h, w: _geometry.rotate(q["degrees"]),
              probability=probability)


def scale(*, factor_range=(0.8, 1.25), log2_std=None) -> Op:
    """Isotropic scale: U(factor_range), or 2 ** N(0, log2_std) (StyleGAN2-ADA)."""
    _check_factor_args("scale", factor_range, log2_std, zoom=True)
    return Op("scale", GEOMETRIC,
              lambda u, key, shape, p: {"factor": _factor(u[:, 0], factor_range, log2_std)},
              {"factor": 1.0}, lambda q, h, w: _geometry.scale(q["factor"], q["factor"]))


def anisotropic_scale(*, factor_range=(0.8, 1.25), log2_std=None) -> Op:
    """Scale x by s and y by 1 / s, s from U(factor_range) or 2 ** N(0, log2_std)."""
    _check_factor_args("anisotropic_scale", factor_range, log2_std, zoom=True)
    return Op("anisotropic_scale", GEOMETRIC,
              lambda u, key, shape, p: {"factor": _factor(u[:, 0], factor_range, log2_std)},
              {"factor": 1.0},
              lambda q, h, w: _geometry.scale(q["factor"], 1.0 / q["factor"]))


def shear(*, max_shear: float = 0.2) -> Op:
    """Shear factors U(-max_shear, max_shear) along x and along y."""
    check_real(max_shear, "shear: max_shear", 0.0, 1.0, high_open=True)
    return Op("shear", GEOMETRIC,
              lambda u, key, shape, p: {"shear_x": _uniform(u[:, 0], -max_shear, max_shear),
                                        "shear_y": _uniform(u[:, 1], -max_shear, max_shear)},
              {"shear_x": 0.0, "shear_y": 0.0},
              lambda q, h, w: _geometry.shear(q["shear_x"], q["shear_y"]), n_uniform=2)


def resized_crop(*, area_range=(0.08, 1.0), ratio_range=(3 / 4, 4 / 3)) -> Op:
    """Random-resized-crop boxes: area fraction U(area_range), log-uniform aspect ratio.

    The aspect ratio is the box's width over its height in fractions of the image, so it is
    also the stretch the resize back to the full image undoes (on square images it is the
    ratio in pixels, as torchvision's). Boxes are clipped to the image.
    """
    check_range(area_range, "resized_crop: area_range", low_bound=1e-6)
    check_range(ratio_range, "resized_crop: ratio_range", low_bound=1e-6)
    if area_range[1] > 1:
        raise ValueError(f"resized_crop: area_range must lie in (0, 1], got {area_range}")

    def draw(u, key, shape, p):
        area = _uniform(u[:, 0], *area_range)
        ratio = jnp.exp(_uniform(u[:, 1], np.log(ratio_range[0]), np.log(ratio_range[1])))
        height = jnp.minimum(jnp.sqrt(area / ratio), 1.0)
        width = jnp.minimum(jnp.sqrt(area * ratio), 1.0)
        return {"top": u[:, 2] * (1.0 - height), "left": u[:, 3] * (1.0 - width),
                "height": height, "width": width}

    return Op("resized_crop", GEOMETRIC, draw,
              {"top": 0.0, "left": 0.0, "height": 1.0, "width": 1.0},
              lambda q, h, w: _geometry.crop(q["top"], q["left"], q["height"], q["width"], h, w),
              n_uniform=4)


# ---- colour ----

def brightness(*, max_delta: float = 0.2, std=None) -> Op:
    """Additive delta: U(-max_delta, max_delta), or N(0, std) (StyleGAN2-ADA)."""
    check_real(max_delta, "brightness: max_delta", 0.0)
    if std is not None:
        check_real(std, "brightness: std", 0.0)

    def draw(u, key, shape, p):
        if std is not None:
            return {"delta": _normal(u[:, 0]) * std}
        return {"delta": _uniform(u[:, 0], -max_delta, max_delta)}

    return Op("brightness", COLOUR, draw, {"delta": 0.0},
              lambda q, c, mean: _colour.brightness(q["delta"], c))


def contrast(*, factor_range=(0.8, 1.2), log2_std=None, about: str = "mean") -> Op:
    """Contrast factor U(factor_range) or 2 ** N(0, log2_std), about the per-image mean
    (about='mean', DiffAugment) or about 0 (about='zero', StyleGAN2-ADA)."""
    _check_factor_args("contrast", factor_range, log2_std)
    check_choice(about, CONTRAST_CENTRES, "contrast: about")
    draw = lambda u, key, shape, p: {"factor": _factor(u[:, 0], factor_range, log2_std)}  # noqa: E731
    if about == "zero":
        return Op("contrast", COLOUR, draw, {"factor": 1.0},
                  lambda q, c, mean: _colour.scale(q["factor"], c))
    return Op("contrast", COLOUR, draw, {"factor": 1.0},
              lambda q, c, mean: _colour.contrast(q["factor"], mean), needs_mean=True)


def saturation(*, factor_range=(0.8, 1.2), log2_std=None) -> Op:
    """Saturation factor about the luma: U(factor_range) or 2 ** N(0, log2_std)."""
    _check_factor_args("saturation", factor_range, log2_std)
    return Op("saturation", COLOUR,
              lambda u, key, shape, p: {"factor": _factor(u[:, 0], factor_range, log2_std)},
              {"factor": 1.0}, lambda q, c, mean: _colour.saturation(q["factor"], c))


def hue(*, max_degrees: float = 30.0) -> Op:
    """Hue rotation by U(-max_degrees, max_degrees) about the luma axis (RGB; the identity
    when C != 3)."""
    check_real(max_degrees, "hue: max_degrees", 0.0, 180.0)
    return Op("hue", COLOUR,
              lambda u, key, shape, p: {"degrees": _uniform(u[:, 0], -max_degrees, max_degrees)},
              {"degrees": 0.0}, lambda q, c, mean: _colour.hue(q["degrees"], c))


def grayscale() -> Op:
    """Every channel set to the luma."""
    return Op("grayscale", COLOUR, lambda u, key, shape, p: _always(shape),
              {"mask": False}, lambda q, c, mean: _colour.grayscale(q["mask"], c), n_uniform=0)


def luma_flip(*, probability: Callable = lambda p: p) -> Op:
    """Flips the luma (StyleGAN2-ADA lumaflip) of every sample it is applied to."""
    return Op("luma_flip", COLOUR, lambda u, key, shape, p: _always(shape), {"mask": False},
              lambda q, c, mean: _colour.luma_flip(q["mask"], c), n_uniform=0,
              probability=probability)


# ---- pixel ----

def gamma(*, gamma_range=(0.8, 1.25)) -> Op:
    check_range(gamma_range, "gamma: gamma_range", low_bound=1e-6)
    return Op("gamma", PIXEL,
              lambda u, key, shape, p: {"gamma": _uniform(u[:, 0], *gamma_range)},
              {"gamma": 1.0}, lambda q, x: _pixel.gamma(x, q["gamma"]))


def cutout(*, size: float = 0.5, mode: str = "uniform") -> Op:
    """A size x size box (fraction of the image) filled with 0.

    mode 'uniform': centre U(0, 1)^2 (StyleGAN2-ADA); 'randint': whole-pixel offsets as in
    DiffAugment (box of int(size * side + 0.5) pixels).
    """
    check_real(size, "cutout: size", 0.0, 1.0, low_open=True)
    check_choice(mode, ("uniform", "randint"), "cutout: mode")

    def draw(u, key, shape, p):
        n, h, w = shape[:3]
        if mode == "uniform":
            return {"center_y": u[:, 0], "center_x": u[:, 1],
                    "height": jnp.full((n,), size), "width": jnp.full((n,), size)}
        out = {}
        for column, side, axis, extent in ((0, h, "y", "height"), (1, w, "x", "width")):
            box = int(side * size + 0.5)
            offset = _randint(u[:, column], 0, side + (1 - box % 2))
            out["center_" + axis] = (offset - box // 2 + box / 2) / side
            out[extent] = jnp.full((n,), box / side)
        return out

    return Op("cutout", PIXEL, draw, {"height": 0.0, "width": 0.0},
              lambda q, x: _pixel.cutout(x, q["center_y"], q["center_x"], q["height"], q["width"]),
              n_uniform=2)


def noise(*, std: float = 0.1) -> Op:
    """Additive Gaussian noise with per-sample std |N(0, std)| (StyleGAN2-ADA)."""
    check_real(std, "noise: std", 0.0)
    return Op("noise", PIXEL,
              lambda u, key, shape, p: {"std": jnp.abs(_normal(u[:, 0])) * std,
                                        "noise": jax.random.normal(key, shape)},
              {"std": 0.0}, lambda q, x: _pixel.gaussian_noise(x, q["noise"], q["std"]),
              needs_key=True)


def blur(*, max_sigma: float = 1.0) -> Op:
    """Gaussian blur with sigma U(0, max_sigma), max_sigma finite and > 0, kernel radius
    ceil(3 * max_sigma) capped at `gaussian_blur`'s longest, 2 * max(H, W) (a wider blur
    tends to the image mean, which that kernel already reaches)."""
    check_real(max_sigma, "blur: max_sigma", 0.0, low_open=True)
    radius = int(np.ceil(3 * max_sigma))

    def build(q, x):
        return _pixel.gaussian_blur(x, q["sigma"], min(radius, _filters.max_radius(*x.shape[1:3])))

    return Op("blur", PIXEL,
              lambda u, key, shape, p: {"sigma": _uniform(u[:, 0], 0.0, max_sigma)},
              {"sigma": 0.0}, build)


_EXPECTED_POWER = np.array([10.0, 1.0, 1.0, 1.0]) / 13.0


def ada_filter(*, log2_std: float = 1.0) -> Op:
    """StyleGAN2-ADA's filter: each of 4 bands amplified by 2 ** N(0, log2_std) with
    probability p, gains renormalised to the expected power spectrum (10, 1, 1, 1) / 13."""
    _check_log2_std("ada_filter", log2_std)

    def draw(u, key, shape, p):
        n = shape[0]
        gains = jnp.ones((n, 4))
        for band in range(4):
            t_band = jnp.exp2(_normal(u[:, 2 * band]) * log2_std)
            t_band = jnp.where(u[:, 2 * band + 1] < p, t_band, 1.0)
            t = jnp.ones((n, 4)).at[:, band].set(t_band)
            t = t / jnp.sqrt(jnp.sum(_EXPECTED_POWER * t ** 2, axis=1, keepdims=True))
            gains = gains * t
        return {"gains": gains, "applied": jnp.any(u[:, 1::2] < p, axis=1)}

    return Op("ada_filter", PIXEL, draw, {}, lambda q, x: _pixel.ada_filter(x, q["gains"]),
              n_uniform=8, probability=lambda p: 1.0)


OPS = {
    "flip_left_right": flip_left_right, "flip_up_down": flip_up_down, "rot90": rot90,
    "translate": translate, "rotate": rotate, "scale": scale,
    "anisotropic_scale": anisotropic_scale, "shear": shear, "resized_crop": resized_crop,
    "brightness": brightness, "contrast": contrast, "saturation": saturation, "hue": hue,
    "grayscale": grayscale, "luma_flip": luma_flip, "gamma": gamma, "cutout": cutout,
    "noise": noise, "blur": blur, "ada_filter": ada_filter,
}


def op(name: str, **kwargs) -> Op:
    """Builds a registered op by name, e.g. op('rotate', max_degrees=10)."""
    if name not in OPS:
        raise ValueError(f"unknown op {name!r}; expected one of {sorted(OPS)}")
    accepted = inspect.signature(OPS[name]).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"op {name!r}: unknown parameter(s) {unknown}; expected some of "
                         f"{list(accepted)}")
    return OPS[name](**kwargs)
