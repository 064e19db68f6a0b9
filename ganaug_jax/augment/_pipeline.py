"""Fused augmentation pipelines: `make_pipeline(ops) -> (key, images, p) -> images`.

Consecutive geometric ops become one resample per image (their matrices are multiplied);
consecutive colour ops become one per-pixel colour transform (their colour matrices are
multiplied), applied in the same pass as the resample when they follow it (`_warp`: one XLA
FFI kernel on CPU where it was built). Pixel ops (gamma, cutout, noise, blur, filter) run
where they stand. Fusing changes nothing but rounding: the result equals applying the ops one
by one. Geometric ops must therefore be contiguous, and so must colour ops.

A sample that an op (or a fused run of ops) is not applied to passes it unchanged, bit for
bit: p = 0 returns the input exactly. There is no `lax.cond` on p: on XLA:CPU it costs two
copies of the batch whatever p is; the warp kernel copies the inactive images instead.
"""

import functools
import itertools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from ganaug_jax.augment import _colour, _resample, _warp
from ganaug_jax.augment._contract import (BORDERS, INTERPOLATIONS, check_choice, check_fill,
                                          check_images, check_key, check_probability)
from ganaug_jax.augment._specs import COLOUR, GEOMETRIC, Op, sample

Pipeline = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def _check_ops(ops: Sequence[Op]) -> list:
    ops = list(ops)
    if not ops:
        raise ValueError("ops must name at least one op")
    for item in ops:
        if not isinstance(item, Op):
            raise ValueError(f"ops must be Op instances (see augment.op), got {item!r}")
    kinds = [kind for kind, _ in itertools.groupby(o.kind for o in ops)]
    for kind in (GEOMETRIC, COLOUR):
        if kinds.count(kind) > 1:
            names = [o.name for o in ops]
            raise ValueError(
                f"{kind} ops must be contiguous so they fuse into one pass, got order {names}")
    return ops


def _any_applied(run):
    """(N,) bool: the samples at least one op of a run (params, applied, op) applies to."""
    return functools.reduce(jnp.logical_or, [applied for _, applied, _ in run])


def _keep_unapplied(applied, out, images):
    """out where applied (N,), else images (bit for bit)."""
    return jnp.where(applied[:, None, None, None], out, images)


def geometry_matrix(shape, params_and_ops):
    """The product (N, 3, 3) of a run of geometric ops' matrices for images of `shape`."""
    n, h, w, _ = shape
    matrix = None  # the identity, not multiplied in: XLA:CPU would recompute every product
    for params, _, op in params_and_ops:
        built = op.build(params, h, w)
        matrix = built if matrix is None else _colour.compose(matrix, built)
    return _resample.identity(n) if matrix is None else matrix


def colour_matrix(shape, params_and_ops, channel_means):
    """The product (N, C+1, C+1) of a run of colour ops' matrices.

    channel_means: a function returning the (N, C) channel means of the images the run
    applies to; called only when an op needs them (contrast).
    """
    n, _, _, c = shape
    matrix = None  # the identity, not multiplied in (as in geometry_matrix)
    mean = channel_means() if any(op.needs_mean for *_, op in params_and_ops) else None
    for params, _, op in params_and_ops:
        current_mean = None
        if mean is not None:
            current_mean = mean if matrix is None else _colour.transform_mean(matrix, mean)
        built = op.build(params, c, current_mean)
        matrix = built if matrix is None else _colour.compose(built, matrix)
    return _colour.identity(n, c) if matrix is None else matrix


def run_geometric(images, geometric, colour, border, interpolation, fill):
    """One pass for a run of geometric ops and the run of colour ops right after it (may be
    empty): one resample and one colour matrix per image. images: float32 (N, H, W, C)."""
    options = dict(border=border, interpolation=interpolation, fill=fill,
                   active=_any_applied(geometric + colour))
    geometry = geometry_matrix(images.shape, geometric)
    if not colour:
        return _warp.warp(images, geometry, **options)[0]
    if not any(op.needs_mean for *_, op in colour):
        colours = colour_matrix(images.shape, colour, channel_means=None)
        return _warp.warp(images, geometry, colours, **options)[0]
    # Contrast needs the means of the resampled images, which the warp itself computes. The
    # colour matrix is affine in those means through its offset column only (every op's
    # linear part is mean-free): the warp applies it at mean 0 and adds slope @ means, the
    # slope read off the offsets at unit means.
    # The C + 1 evaluations (means 0, then each unit vector) run as one, vmapped: fewer small
    # kernels, which is what the parameters cost on CPU.
    n, _, _, c = images.shape
    grid = jnp.concatenate([jnp.zeros((1, c), jnp.float32), jnp.eye(c, dtype=jnp.float32)])
    at = jax.vmap(lambda m: colour_matrix(images.shape, colour,
                                          lambda: jnp.broadcast_to(m, (n, c))))(grid)
    at_zero = at[0]
    slope = jnp.moveaxis(at[1:, :, :c, c] - at_zero[None, :, :c, c], 0, 2)
    return _warp.warp(images, geometry, at_zero, slope, **options)[0]


def run_colour(images, params_and_ops):
    """One colour transform for a run of colour ops. images: float32 (N, H, W, C)."""
    matrix = colour_matrix(images.shape, params_and_ops,
                           lambda: _colour.channel_means(images))
    return _keep_unapplied(_any_applied(params_and_ops), _colour.apply(images, matrix), images)


def apply_ops(images, params_and_ops, *, border, interpolation, fill):
    """Applies ops with given (params, applied (N,) bool, op), fusing runs of the same kind
    (and a geometric run with the colour run that follows it). float32 in and out."""
    runs = [(kind, list(run))
            for kind, run in itertools.groupby(params_and_ops, key=lambda item: item[2].kind)]
    while runs:
        kind, run = runs.pop(0)
        if kind == GEOMETRIC:
            colour = runs.pop(0)[1] if runs and runs[0][0] == COLOUR else []
            images = run_geometric(images, run, colour, border, interpolation, fill)
        elif kind == COLOUR:
            images = run_colour(images, run)
        else:
            for params, applied, op in run:
                images = _keep_unapplied(applied, op.build(params, images), images)
    return images


def make_pipeline(ops: Sequence[Op], *, border: str = "reflect",
                  interpolation: str = "bilinear", fill: float = 0.0) -> Pipeline:
    """Composes ops into one pure function `pipeline(key, images, p=1.0) -> images`.

    Each op is applied to each sample independently with probability p (a scalar that may be
    traced: changing it does not recompile). Samples no op is applied to are returned
    unchanged, bit for bit (so p = 0 returns the input).
    images: (N, H, W, C) float32 or bfloat16; the output has the same shape and dtype.
    """
    ops = _check_ops(ops)
    check_choice(border, BORDERS, "border")
    check_choice(interpolation, INTERPOLATIONS, "interpolation")
    fill = check_fill(fill)

    def pipeline(key: jax.Array, images: jax.Array, p=1.0) -> jax.Array:
        key = check_key(key)
        images = check_images(images)
        p = check_probability(p)
        drawn = sample(ops, key, images.shape, p)
        out = apply_ops(images.astype(jnp.float32),
                        [(params, applied, o) for (params, applied), o in zip(drawn, ops)],
                        border=border, interpolation=interpolation, fill=fill)
        return out.astype(images.dtype)

    pipeline.ops = tuple(ops)
    return pipeline
