"""Fused augmentation pipelines: `make_pipeline(ops) -> (key, images, p) -> images`.

Consecutive geometric ops become one resample per image (their matrices are multiplied);
consecutive colour ops become one per-pixel colour transform (their colour matrices are
multiplied). Pixel ops (gamma, cutout, noise, blur, filter) run where they stand. Fusing
changes nothing but rounding: the result equals applying the ops one by one. Geometric ops
must therefore be contiguous, and so must colour ops.
"""

import itertools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from ganaug_jax.augment import _colour, _resample
from ganaug_jax.augment._contract import (BORDERS, INTERPOLATIONS, check_choice, check_images,
                                          check_probability)
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


def run_geometric(images, params_and_ops, border, interpolation, fill):
    """One resample for a run of geometric ops. images: float32 (N, H, W, C)."""
    n, h, w, _ = images.shape
    matrix = _resample.identity(n)
    for params, op in params_and_ops:
        matrix = _colour.compose(matrix, op.build(params, h, w))
    return _resample.resample(images, matrix, border=border, interpolation=interpolation, fill=fill)


def run_colour(images, params_and_ops):
    """One colour transform for a run of colour ops. images: float32 (N, H, W, C)."""
    n, _, _, c = images.shape
    matrix = _colour.identity(n, c)
    mean = None
    if any(op.needs_mean for _, op in params_and_ops):
        mean = _colour.channel_means(images)
    for params, op in params_and_ops:
        current_mean = None if mean is None else _colour.transform_mean(matrix, mean)
        matrix = _colour.compose(op.build(params, c, current_mean), matrix)
    return _colour.apply(images, matrix)


def apply_ops(images, params_and_ops, *, border, interpolation, fill):
    """Applies ops with given parameters, fusing runs of the same kind. float32 in and out."""
    for kind, run in itertools.groupby(params_and_ops, key=lambda item: item[1].kind):
        run = list(run)
        if kind == GEOMETRIC:
            images = run_geometric(images, run, border, interpolation, fill)
            # Keep the gather out of the consumers' fusions: XLA would otherwise repeat it
            # once per output channel of the colour transform that follows.
            images = lax.optimization_barrier(images)
        elif kind == COLOUR:
            images = run_colour(images, run)
        else:
            for params, op in run:
                images = op.build(params, images)
    return images


def make_pipeline(ops: Sequence[Op], *, border: str = "reflect",
                  interpolation: str = "bilinear", fill: float = 0.0) -> Pipeline:
    """Composes ops into one pure function `pipeline(key, images, p=1.0) -> images`.

    Each op is applied to each sample independently with probability p (a scalar that may be
    traced: changing it does not recompile). p = 0 returns the input unchanged.
    images: (N, H, W, C) float32 or bfloat16; the output has the same shape and dtype.
    """
    ops = _check_ops(ops)
    check_choice(border, BORDERS, "border")
    check_choice(interpolation, INTERPOLATIONS, "interpolation")

    def pipeline(key: jax.Array, images: jax.Array, p=1.0) -> jax.Array:
        images = check_images(images)
        p = check_probability(p)
        params = sample(ops, key, images.shape, p)

        def augment(x):
            out = apply_ops(x.astype(jnp.float32), list(zip(params, ops)), border=border,
                            interpolation=interpolation, fill=fill)
            return out.astype(x.dtype)

        return lax.cond(p > 0, augment, lambda x: x, images)

    pipeline.ops = tuple(ops)
    return pipeline
