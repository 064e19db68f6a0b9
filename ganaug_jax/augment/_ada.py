"""Adaptive augmentation strength (StyleGAN2-ADA's controller), as a pure update function.

The overfitting heuristic r_t = E[sign(D(x_real))] is accumulated over `interval` calls;
then p moves by sign(r_t - target) * (images seen since the last adjustment) / speed_images,
so p can go from 0 to 1 in `speed_images` images, and is kept in [0, 1]. NaN logits (a
diverged discriminator) are left out of both counts, so they never reach p.
"""

import math
import numbers
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


class AdaState(NamedTuple):
    """p: augmentation probability; rt: the last r_t; sign_sum, count, calls: the running
    accumulators since the last adjustment. All scalars, so the state checkpoints with the rest."""
    p: jax.Array
    rt: jax.Array
    sign_sum: jax.Array
    count: jax.Array
    calls: jax.Array


def ada_init(*, p: float = 0.0) -> AdaState:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    def zero():  # separate buffers: the state is donated to the training step
        return jnp.zeros((), jnp.float32)
    return AdaState(jnp.full((), p, jnp.float32), zero(), zero(), zero(), jnp.zeros((), jnp.int32))


def make_ada_update(*, target: float = 0.6, speed_images: int = 500_000,
                    interval: int = 4) -> Callable[[AdaState, jax.Array], AdaState]:
    """Returns update(state, d_real_logits) -> state.

    d_real_logits: (N, ...) float, the discriminator's logits on N real images, one or more
    per image (a patch discriminator's map counts as one image, its mean sign as the image's).
    """
    if not 0.0 < target < 1.0:
        raise ValueError(f"target must be in (0, 1), got {target}")
    if not (isinstance(speed_images, numbers.Real) and math.isfinite(speed_images)
            and speed_images > 0):
        raise ValueError(f"speed_images must be a finite number > 0 (images for p to go from 0 "
                         f"to 1), got {speed_images!r}")
    if isinstance(interval, bool) or not isinstance(interval, numbers.Integral) or interval < 1:
        raise ValueError(f"interval must be an int >= 1 (calls per adjustment), got {interval!r}")

    def update(state: AdaState, d_real_logits: jax.Array) -> AdaState:
        logits = jnp.asarray(d_real_logits, jnp.float32)
        if logits.ndim == 0 or logits.size == 0:
            raise ValueError(f"d_real_logits must have shape (N, ...) with N >= 1 and at least "
                             f"one logit per image, got shape {logits.shape}")
        per_image = logits.size // logits.shape[0]
        valid = ~jnp.isnan(logits)
        # in images: each logit counts 1 / (logits per image)
        sign_sum = state.sign_sum + jnp.sum(jnp.where(valid, jnp.sign(logits), 0.0)) / per_image
        count = state.count + jnp.sum(valid, dtype=jnp.float32) / per_image
        calls = state.calls + 1
        adjust = calls >= interval
        seen = count > 0  # an interval of only NaN logits leaves p and r_t as they were
        rt = jnp.where(seen, sign_sum / jnp.where(seen, count, 1.0), state.rt)
        step = jnp.where(seen, jnp.sign(rt - target) * count / speed_images, 0.0)
        new_p = jnp.clip(state.p + step, 0.0, 1.0)
        zero = jnp.zeros_like(sign_sum)
        return AdaState(
            p=jnp.where(adjust, new_p, state.p),
            rt=jnp.where(adjust, rt, state.rt),
            sign_sum=jnp.where(adjust, zero, sign_sum),
            count=jnp.where(adjust, zero, count),
            calls=jnp.where(adjust, 0, calls))

    return update
