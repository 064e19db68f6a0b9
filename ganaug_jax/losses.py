"""GAN losses and stabilisers, as pure functions of logits, inputs and params.

Contract:
  * logits are discriminator outputs before any sigmoid, shape (N,), any float dtype; losses
    compute in float32 and return float32 scalars. Real and fake batches may differ in size
    (each term is a mean over its own batch).
  * a `critic` is any pure function (N, ...) -> (N,) logits, usually a closure over the
    discriminator's params. The project's discriminators return (logits, features), so take
    the logits: `lambda x: d.apply(variables, x, labels, train=False)[0]`; a critic that
    returns a tuple or (N, 1) is refused with ValueError. Penalties differentiate it with
    respect to its input; differentiate the penalty with respect to the params by closing over
    them inside the function you pass to `jax.grad` (double backprop works).
  * arguments that are Python numbers (or concrete arrays) are validated eagerly with
    ValueError, NaN and inf included where a finite value is meant; shapes, dtypes and PRNG
    keys are checked even under jit; traced values (a jitted `step`, a scheduled `std`) are
    used as they are.

Registry: `LOSSES = {name: (d_fn, g_fn)}`, reached through `d_loss(name)` and `g_loss(name)`:

  name            D loss (r = real logits, f = fake logits)           G loss
  minimax         -log s(r) - log(1 - s(f))                           log(1 - s(f))
  non_saturating  -log s(r) - log(1 - s(f))                           -log s(f)
  wgan            mean(f) - mean(r)                                   -mean(f)
  hinge           mean(relu(1 - r)) + mean(relu(1 + f))               -mean(f)
  lsgan           0.5 mean((r - 1)^2) + 0.5 mean(f^2)                 0.5 mean((f - 1)^2)

(s is the sigmoid; cross-entropy terms are averaged over the batch and computed with softplus,
never log(sigmoid(x)), so they are finite and exact for any finite logits.) `real_label` < 1 is
one-sided label smoothing (Salimans et al. 2016) and exists for the cross-entropy losses and
lsgan only; wgan and hinge reject it.
"""

import math
import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp

from ganaug_jax.augment._contract import check_key, check_real
from ganaug_jax.models.layers import check_positive_int

__all__ = [
    "LOSSES", "d_loss", "g_loss", "gradient_penalty", "r1_penalty", "lazy_r1",
    "instance_noise_std", "add_instance_noise", "feature_matching", "mode_seeking", "ema_decay", "ema_update",
]

Critic = Callable[[jax.Array], jax.Array]
DLoss = Callable[..., jax.Array]
GLoss = Callable[[jax.Array], jax.Array]


# ---- helpers ----

def _concrete(x) -> float | None:
    """float(x) when x is known at trace time (a Python number or a concrete array), else None."""
    try:
        return float(x)
    except (jax.errors.ConcretizationTypeError, TypeError):
        return None


def _check_finite_non_negative(x, name: str, hint: str = "") -> None:
    """Raises unless a concrete x is a finite number >= 0 (NaN and inf fail); traced x passes."""
    if _concrete(x) is not None:
        check_real(x, name, 0.0, why=hint)


def _check_scalar(x, name: str, form: str) -> None:
    """Raises unless x is a scalar (a 0-d array or a Python number); static, so it also holds
    for traced x."""
    if jnp.ndim(x) != 0:
        raise ValueError(f"{name} must be a scalar {form}, got shape {jnp.shape(x)}")


def _logits(x, name: str) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"{name} must have shape (N,), got {x.shape}; squeeze a trailing axis")
    if x.shape[0] == 0:
        raise ValueError(f"{name} must be non-empty, shape (N,) with N >= 1, got {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{name} must be floating point, got {x.dtype}")
    return x.astype(jnp.float32)


def _smoothed_label(real_label) -> jax.Array:
    _check_scalar(real_label, "real_label", "in (0, 1]")
    value = _concrete(real_label)
    if value is not None and not 0.0 < value <= 1.0:
        raise ValueError(f"real_label must be in (0, 1], got {value}")
    return jnp.asarray(real_label, jnp.float32)


def _no_label(real_label, loss: str) -> None:
    value = _concrete(real_label)
    if value is None or value != 1.0:
        raise ValueError(f"real_label is not meaningful for the {loss!r} loss and must be the "
                         f"Python number 1.0, got {real_label!r}")


# ---- losses: D(real_logits, fake_logits, *, real_label) and G(fake_logits) ----

def _cross_entropy_d(real_logits, fake_logits, *, real_label=1.0) -> jax.Array:
    """-y log s(r) - (1 - y) log(1 - s(r)) - log(1 - s(f)), batch means; y = real_label."""
    r, f = _logits(real_logits, "real_logits"), _logits(fake_logits, "fake_logits")
    y = _smoothed_label(real_label)
    # -log s(x) = softplus(-x); -log(1 - s(x)) = softplus(x).
    real_term = y * jax.nn.softplus(-r) + (1.0 - y) * jax.nn.softplus(r)
    return jnp.mean(real_term) + jnp.mean(jax.nn.softplus(f))


def _minimax_g(fake_logits) -> jax.Array:
    """mean(log(1 - s(f))) = -mean(softplus(f)): saturates when D rejects the fakes."""
    return -jnp.mean(jax.nn.softplus(_logits(fake_logits, "fake_logits")))


def _non_saturating_g(fake_logits) -> jax.Array:
    """mean(-log s(f)) = mean(softplus(-f))."""
    return jnp.mean(jax.nn.softplus(-_logits(fake_logits, "fake_logits")))


def _wgan_d(real_logits, fake_logits, *, real_label=1.0) -> jax.Array:
    """mean(f) - mean(r); pair it with gradient_penalty (or weight clipping)."""
    _no_label(real_label, "wgan")
    r, f = _logits(real_logits, "real_logits"), _logits(fake_logits, "fake_logits")
    return jnp.mean(f) - jnp.mean(r)


def _hinge_d(real_logits, fake_logits, *, real_label=1.0) -> jax.Array:
    """mean(relu(1 - r)) + mean(relu(1 + f))."""
    _no_label(real_label, "hinge")
    r, f = _logits(real_logits, "real_logits"), _logits(fake_logits, "fake_logits")
    return jnp.mean(jax.nn.relu(1.0 - r)) + jnp.mean(jax.nn.relu(1.0 + f))


def _mean_g(fake_logits) -> jax.Array:
    """-mean(f): the generator loss of wgan and hinge."""
    return -jnp.mean(_logits(fake_logits, "fake_logits"))


def _lsgan_d(real_logits, fake_logits, *, real_label=1.0) -> jax.Array:
    """0.5 mean((r - b)^2) + 0.5 mean((f - a)^2) with a = 0, b = real_label (Mao et al. 2017)."""
    r, f = _logits(real_logits, "real_logits"), _logits(fake_logits, "fake_logits")
    b = _smoothed_label(real_label)
    return 0.5 * jnp.mean(jnp.square(r - b)) + 0.5 * jnp.mean(jnp.square(f))


def _lsgan_g(fake_logits) -> jax.Array:
    """0.5 mean((f - c)^2) with c = 1."""
    return 0.5 * jnp.mean(jnp.square(_logits(fake_logits, "fake_logits") - 1.0))


LOSSES: dict[str, tuple[DLoss, GLoss]] = {
    "minimax": (_cross_entropy_d, _minimax_g),
    "non_saturating": (_cross_entropy_d, _non_saturating_g),
    "wgan": (_wgan_d, _mean_g),
    "hinge": (_hinge_d, _mean_g),
    "lsgan": (_lsgan_d, _lsgan_g),
}


def _lookup(name: str) -> tuple[DLoss, GLoss]:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names: {sorted(LOSSES)}")
    return LOSSES[name]


def d_loss(name: str) -> DLoss:
    """Returns fn(real_logits (N,), fake_logits (M,), *, real_label=1.0) -> float32 scalar."""
    return _lookup(name)[0]


def g_loss(name: str) -> GLoss:
    """Returns fn(fake_logits (M,)) -> float32 scalar."""
    return _lookup(name)[1]


# ---- gradient penalties ----

def _input_grads(critic: Critic, x: jax.Array) -> jax.Array:
    """d sum(critic(x)) / dx, shape of x. It is the per-sample gradient d critic(x)_i / dx_i only
    when the critic treats samples independently (no batch statistics, no minibatch-stddev
    layer); otherwise it also carries the cross-sample terms, as in StyleGAN2's R1."""
    if x.ndim < 1:
        raise ValueError(f"critic inputs must be batched (N, ...), got shape {x.shape}")
    out, pullback = jax.vjp(critic, x)
    if isinstance(out, (tuple, list)) or not hasattr(out, "shape"):
        raise ValueError(f"critic must return logits of shape (N,) = {x.shape[:1]}, got a "
                         f"{type(out).__name__}; the project's discriminators return (logits, "
                         "features): pass lambda x: d.apply(variables, x, ...)[0]")
    if out.shape != x.shape[:1]:
        raise ValueError(f"critic must map (N, ...) to (N,), got {x.shape} -> {out.shape}")
    return pullback(jnp.ones_like(out))[0]  # = jax.grad(lambda v: jnp.sum(critic(v)))(x)


def _squared_norms(grads: jax.Array) -> jax.Array:
    """Per-sample squared L2 norm over all non-batch axes, (N,) float32."""
    g = grads.astype(jnp.float32)
    return jnp.sum(jnp.square(g), axis=tuple(range(1, g.ndim)))


def _safe_sqrt(sq: jax.Array) -> jax.Array:
    """sqrt with a zero (not NaN) derivative at 0, so a critic with a zero input gradient
    (e.g. a zero-initialised last layer) gives finite parameter gradients."""
    positive = sq > 0.0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def _interpolation_weights(key: jax.Array, real: jax.Array) -> jax.Array:
    """eps ~ U(0, 1), one per sample, shape (N, 1, ..., 1) in float32."""
    shape = real.shape[:1] + (1,) * (real.ndim - 1)
    return jax.random.uniform(key, shape, jnp.float32)


def _penalty_at(critic: Critic, x_hat: jax.Array) -> jax.Array:
    """mean_i (||grad_x critic(x_hat)_i||_2 - 1)^2, a float32 scalar."""
    norms = _safe_sqrt(_squared_norms(_input_grads(critic, x_hat)))
    return jnp.mean(jnp.square(norms - 1.0))


def gradient_penalty(key: jax.Array, critic: Critic, real: jax.Array,
                     fake: jax.Array) -> jax.Array:
    """WGAN-GP (Gulrajani et al. 2017): mean_i (||grad critic(x_hat)_i||_2 - 1)^2 at per-sample
    interpolates x_hat = eps real + (1 - eps) fake, eps ~ U(0, 1) of shape (N, 1, ..., 1).

    real, fake: (N, ...) of any rank >= 1 (points (N, D), images (N, H, W, C)), same shape and
    float dtype; returns a float32 scalar (multiply by lambda, 10 in the paper). The gradient is
    taken of sum(critic(x_hat)), which is per sample when the critic treats samples
    independently (the paper's critic has no batch norm for that reason). Pass `fake` through
    `jax.lax.stop_gradient` if the generator must not receive this gradient.
    """
    check_key(key)
    real, fake = jnp.asarray(real), jnp.asarray(fake)
    if real.shape != fake.shape:
        raise ValueError(f"real and fake must have the same shape, got {real.shape}, {fake.shape}")
    if real.ndim < 1 or not jnp.issubdtype(real.dtype, jnp.floating):
        raise ValueError(f"real must be a floating (N, ...) batch, got {real.shape} {real.dtype}")
    eps = _interpolation_weights(key, real).astype(real.dtype)
    x_hat = eps * real + (1 - eps) * fake.astype(real.dtype)
    return _penalty_at(critic, x_hat)


def r1_penalty(critic: Critic, real: jax.Array) -> jax.Array:
    """R1 (Mescheder et al. 2018): mean_i ||grad_x critic(real)_i||_2^2, a float32 scalar.

    real: (N, ...) float. The caller multiplies by gamma / 2. Per-sample under the same
    independence assumption as `gradient_penalty`.
    """
    real = jnp.asarray(real)
    if real.ndim < 1 or not jnp.issubdtype(real.dtype, jnp.floating):
        raise ValueError(f"real must be a floating (N, ...) batch, got {real.shape} {real.dtype}")
    return jnp.mean(_squared_norms(_input_grads(critic, real)))


def _lazy(penalty_fn: Callable[[], jax.Array], step, interval: int) -> jax.Array:
    """interval * penalty_fn() when step % interval == 0, else 0.0, via lax.cond so that the
    penalty is not computed on the other steps (under vmap, cond runs both branches)."""
    check_positive_int(interval, "interval")
    step = jnp.asarray(step)
    if step.ndim != 0 or not jnp.issubdtype(step.dtype, jnp.integer):
        raise ValueError(f"step must be an int scalar (the training step), got shape "
                         f"{step.shape} {step.dtype}")
    active = step % interval == 0
    return jax.lax.cond(active, lambda: interval * penalty_fn().astype(jnp.float32),
                        lambda: jnp.zeros((), jnp.float32))


def lazy_r1(critic: Critic, real: jax.Array, *, step, interval: int) -> jax.Array:
    """Lazy R1 regularisation (Karras et al. 2020, StyleGAN2): interval * r1_penalty(critic,
    real) on steps where step % interval == 0 and 0.0 otherwise, so the expected penalty per
    step equals r1. `step` may be traced (int scalar); `interval` is a Python int >= 1. The
    penalty and its double backprop are skipped on the inactive steps (jax.lax.cond)."""
    return _lazy(lambda: r1_penalty(critic, real), step, interval)


# ---- instance noise ----

def instance_noise_std(step, *, initial_std: float, anneal_steps: int) -> jax.Array:
    """Linear anneal: initial_std at step 0, 0 at step >= anneal_steps (Sonderby et al. 2016,
    Arjovsky & Bottou 2017). step: int scalar, may be traced; returns a float32 scalar."""
    _check_finite_non_negative(initial_std, "initial_std")
    check_positive_int(anneal_steps, "anneal_steps")
    fraction = jnp.asarray(step, jnp.float32) / jnp.float32(anneal_steps)
    return jnp.float32(initial_std) * jnp.clip(1.0 - fraction, 0.0, 1.0)


def add_instance_noise(key: jax.Array, x: jax.Array, std) -> jax.Array:
    """x + std * N(0, 1), same shape and dtype as x (float). Use independent keys for the real
    and the fake batch; std may be traced (e.g. from instance_noise_std)."""
    check_key(key)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be floating point, got {x.dtype}")
    _check_finite_non_negative(std, "std")
    noise = jax.random.normal(key, x.shape, jnp.float32)
    return (x.astype(jnp.float32) + jnp.asarray(std, jnp.float32) * noise).astype(x.dtype)


# ---- feature matching ----

def feature_matching(real_features: jax.Array, fake_features: jax.Array) -> jax.Array:
    """||mean_batch(real) - mean_batch(fake)||_2^2 (Salimans et al. 2016), features (N, F) and
    (M, F), float32 scalar. A generator loss: real_features usually come from an intermediate
    discriminator layer and need no gradient."""
    real, fake = jnp.asarray(real_features), jnp.asarray(fake_features)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"features must be (N, F) and (M, F), got {real.shape}, {fake.shape}")
    if real.shape[0] == 0 or fake.shape[0] == 0:
        raise ValueError("real_features and fake_features must be non-empty (N, M >= 1), got "
                         f"{real.shape}, {fake.shape}")
    diff = jnp.mean(real.astype(jnp.float32), 0) - jnp.mean(fake.astype(jnp.float32), 0)
    return jnp.sum(jnp.square(diff))


def mode_seeking(fake_a: jax.Array, fake_b: jax.Array, z_a: jax.Array, z_b: jax.Array,
                 *, eps: float = 1e-5) -> jax.Array:
    """MSGAN's mode-seeking term (Mao et al. 2019), a generator loss against (within-class)
    mode collapse: 1 / (mean|G(z_a) - G(z_b)| / mean|z_a - z_b| + eps), where the pairs share
    their class. fake_*: (N, ...) samples, z_*: (N, latent_dim), N >= 1; eps: a finite number
    > 0 (may be traced); float32 scalar."""
    fake_a, fake_b, z_a, z_b = (jnp.asarray(a) for a in (fake_a, fake_b, z_a, z_b))
    if z_a.ndim != 2 or fake_a.ndim < 1:
        raise ValueError(f"z_a and z_b must have shape (N, latent_dim) and fake_a, fake_b "
                         f"(N, ...), got z {z_a.shape}, fake {fake_a.shape}")
    value = _concrete(eps)
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError(f"eps must be a finite number > 0, got {value}")
    if fake_a.shape != fake_b.shape or z_a.shape != z_b.shape or fake_a.shape[0] != z_a.shape[0]:
        raise ValueError(f"mode_seeking needs paired samples and latents, got {fake_a.shape}, "
                         f"{fake_b.shape}, {z_a.shape}, {z_b.shape}")
    if fake_a.shape[0] == 0:
        raise ValueError("mode_seeking needs at least one pair (a batch of >= 2 samples)")
    ratio = (jnp.mean(jnp.abs(fake_a.astype(jnp.float32) - fake_b.astype(jnp.float32)))
             / jnp.mean(jnp.abs(z_a.astype(jnp.float32) - z_b.astype(jnp.float32))))
    return 1.0 / (ratio + eps)


# ---- exponential moving average of params ----

def ema_decay(*, half_life_images: float, batch_size: int) -> float:
    """0.5 ** (batch_size / half_life_images): the weight of an old value halves every
    `half_life_images` images (StyleGAN's ema_kimg convention, e.g. 10_000 images).
    half_life_images == 0 means no averaging (decay 0.0)."""
    check_positive_int(batch_size, "batch_size")
    if isinstance(half_life_images, bool) or not isinstance(half_life_images, numbers.Real):
        raise ValueError(f"half_life_images must be a number >= 0, got {half_life_images!r}")
    _check_finite_non_negative(half_life_images, "half_life_images", " (0: no averaging)")
    if half_life_images == 0:
        return 0.0
    return float(0.5 ** (batch_size / half_life_images))


def ema_update(ema_params: Any, params: Any, decay) -> Any:
    """decay * ema + (1 - decay) * params, leaf by leaf; same tree structure and dtypes as
    ema_params. decay: scalar in [0, 1], may be traced. Non-float leaves take params' value.
    The trees must have the same structure and leaf shapes (checked, also under jit)."""
    _check_scalar(decay, "decay", "in [0, 1]")
    ema_def, params_def = jax.tree.structure(ema_params), jax.tree.structure(params)
    if ema_def != params_def:
        raise ValueError(f"ema_params and params must have the same tree structure, got "
                         f"{ema_def} and {params_def}")
    for (path, e), p in zip(jax.tree_util.tree_leaves_with_path(ema_params),
                            jax.tree.leaves(params)):
        if jnp.shape(e) != jnp.shape(p):
            raise ValueError(f"ema_params and params must have the same leaf shapes, got "
                             f"{jnp.shape(e)} and {jnp.shape(p)} at {jax.tree_util.keystr(path)}")
    value = _concrete(decay)
    if value is not None and not 0.0 <= value <= 1.0:
        raise ValueError(f"decay must be in [0, 1], got {value}")
    decay = jnp.asarray(decay, jnp.float32)

    def leaf(e, p):
        e, p = jnp.asarray(e), jnp.asarray(p)
        if not jnp.issubdtype(e.dtype, jnp.floating):
            return p.astype(e.dtype)
        mixed = decay * e.astype(jnp.float32) + (1.0 - decay) * p.astype(jnp.float32)
        return mixed.astype(e.dtype)

    return jax.tree.map(leaf, ema_params, params)
