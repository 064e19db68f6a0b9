"""The GAN training step: n_critic discriminator updates, then one generator update.

`make_train_step(...)` closes over static objects only (modules, optimizers, loss and
augmentation functions) and returns a pure `step(state, batch) -> (state, metrics)`:
  batch['x']: (n_critic, B, ...) real samples, batch['y']: (n_critic, B) int32 labels when
  the models are conditional. Per-step randomness is `fold_in(state.key, state.step)`.
Augmentation sits in front of D for real and fake samples alike, so G's gradients flow through
it (DiffAugment, StyleGAN2-ADA).
"""

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax

from ganaug_jax import losses
from ganaug_jax.augment._contract import check_real
from ganaug_jax.models.layers import check_positive_int
from ganaug_jax.train.state import TrainState


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Typed loss settings (unpacked from the config by the entry point), validated on
    construction with the ranges of `config.validate`: name one of `losses.LOSSES`; the
    weights gp_weight, r1_gamma, instance_noise_std, feature_matching and mode_seeking finite
    numbers >= 0 (0: off); r1_interval an int >= 1; instance_noise_steps an int >= 0 (>= 1
    when instance_noise_std > 0); real_label in (0, 1], and 1.0 for 'wgan' and 'hinge'."""
    name: str = "non_saturating"
    gp_weight: float = 0.0
    r1_gamma: float = 0.0
    r1_interval: int = 1
    real_label: float = 1.0
    instance_noise_std: float = 0.0
    instance_noise_steps: int = 0
    feature_matching: float = 0.0
    mode_seeking: float = 0.0

    def __post_init__(self):
        if self.name not in losses.LOSSES:
            raise ValueError(f"LossConfig.name must be one of {sorted(losses.LOSSES)}, "
                             f"got {self.name!r}")
        for field in ("gp_weight", "r1_gamma", "instance_noise_std", "feature_matching",
                      "mode_seeking"):
            check_real(getattr(self, field), f"LossConfig.{field}", 0.0, why=" (0: off)")
        check_positive_int(self.r1_interval, "LossConfig.r1_interval")
        check_positive_int(self.instance_noise_steps, "LossConfig.instance_noise_steps",
                           minimum=1 if self.instance_noise_std > 0 else 0)
        check_real(self.real_label, "LossConfig.real_label", 0.0, 1.0, low_open=True,
                      why=" (1: no label smoothing)")
        if self.name in ("wgan", "hinge") and self.real_label != 1.0:
            raise ValueError(f"LossConfig.real_label must be 1.0 with the {self.name!r} loss, "
                             f"got {self.real_label!r}")


def _norm(tree) -> jax.Array:
    """Global L2 norm of a pytree (optax.global_norm is deprecated)."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def _apply(module, params, stats, *args, train: bool):
    """Runs a module; returns (output, new batch_stats) (stats unchanged when not training)."""
    variables = {"params": params, "batch_stats": stats}
    if train:
        out, updates = module.apply(variables, *args, train=True, mutable=["batch_stats"])
        return out, updates.get("batch_stats", stats)
    return module.apply(variables, *args, train=False), stats


def make_train_step(*, generator, discriminator, g_tx: optax.GradientTransformation,
                    d_tx: optax.GradientTransformation, latent_dim: int, num_classes: int,
                    loss: LossConfig = LossConfig(), augment: Optional[Callable] = None,
                    ada_update: Optional[Callable] = None, fixed_p: float = 1.0,
                    ema_decay: float = 0.999,
                    reuse_fake: bool = False) -> Callable[[TrainState, Any], tuple]:
    """Builds `step(state, batch) -> (state, metrics)`.

    augment: a pipeline `(key, images, p) -> images` or None. With `ada_update` the
    pipeline's p is the ADA state's p (updated from D's real logits every D step); otherwise
    `fixed_p`.
    reuse_fake: False (default): the G update draws fresh latents and runs G again. True: it
    reuses the fakes (and G's saved activations) of the last D update, as the classic PyTorch
    DCGAN loop does, saving one G forward per step; G's batch statistics then update in
    every D update's G forward (n_critic times per step), as in that loop. Not combinable
    with loss.mode_seeking (which pairs the G update's latents).
    latent_dim: int >= 1; num_classes: int >= 0, both as the models were built with; fixed_p
    and ema_decay: finite numbers in [0, 1]; reuse_fake: a bool. Raises ValueError naming the
    argument otherwise.
    """
    if not isinstance(loss, LossConfig):
        raise ValueError(f"loss must be a LossConfig, got {type(loss).__name__}")
    check_positive_int(latent_dim, "latent_dim")
    check_positive_int(num_classes, "num_classes", minimum=0)
    check_real(fixed_p, "fixed_p", 0.0, 1.0)
    check_real(ema_decay, "ema_decay", 0.0, 1.0, why=" (0: no averaging)")
    if not isinstance(reuse_fake, bool):
        raise ValueError(f"reuse_fake must be a bool, got {reuse_fake!r}")
    for name, fn in (("augment", augment), ("ada_update", ada_update)):
        if fn is not None and not callable(fn):
            raise ValueError(f"{name} must be callable or None, got {fn!r}")
    for role, module, field, value in (("generator", generator, "latent_dim", latent_dim),
                                       ("generator", generator, "num_classes", num_classes),
                                       ("discriminator", discriminator, "num_classes",
                                        num_classes)):
        own = getattr(module, field, value)
        if own != value:
            raise ValueError(f"{field}={value} differs from the {role}'s {field}={own}")
    if reuse_fake and loss.mode_seeking > 0:
        raise ValueError("reuse_fake cannot be combined with loss.mode_seeking > 0: mode seeking "
                         "pairs latents drawn for the generator update")
    d_loss_fn = losses.d_loss(loss.name)
    g_loss_fn = losses.g_loss(loss.name)
    conditional = num_classes > 0

    def latents(key, n):
        k_z, k_y = jax.random.split(key)
        z = jax.random.normal(k_z, (n, latent_dim), jnp.float32)
        y = jax.random.randint(k_y, (n,), 0, num_classes) if conditional else None
        return z, y

    def prepare(key, x, p, noise_std):
        """Augmentation, then instance noise: what D sees."""
        k_aug, k_noise = jax.random.split(key)
        if augment is not None:
            x = augment(k_aug, x, p)
        if loss.instance_noise_std > 0:
            x = losses.add_instance_noise(k_noise, x, noise_std)
        return x

    def d_update(state, x_real, y_real, key):
        n = x_real.shape[0]
        k_lat, k_real, k_fake, k_gp = jax.random.split(key, 4)
        p = state.ada.p if ada_update is not None else jnp.float32(fixed_p)
        noise_std = losses.instance_noise_std(state.step, initial_std=loss.instance_noise_std,
                                              anneal_steps=max(loss.instance_noise_steps, 1))
        z, y_fake = latents(k_lat, n)
        if reuse_fake:  # keep G's pullback for the G update
            fake, g_pullback, g_stats = jax.vjp(
                lambda g_params: _apply(generator, g_params, state.g_stats, z, y_fake,
                                        train=True), state.g_params, has_aux=True)
            state = state.replace(g_stats=g_stats)
            generated = (fake, y_fake, g_pullback)
        else:
            fake, _ = _apply(generator, state.g_params, state.g_stats, z, y_fake, train=True)
            generated = None
        fake = jax.lax.stop_gradient(fake)
        real_in = prepare(k_real, x_real, p, noise_std)
        fake_in = prepare(k_fake, fake, p, noise_std)

        def d_objective(d_params):
            both = jnp.concatenate([real_in, fake_in])
            labels = jnp.concatenate([y_real, y_fake]) if conditional else None
            (logits, features), stats = _apply(discriminator, d_params, state.d_stats, both,
                                               labels, train=True)
            real_logits, fake_logits = logits[:n], logits[n:]
            total = d_loss_fn(real_logits, fake_logits, real_label=loss.real_label)
            terms = {"d_loss": total}

            def critic(x):
                return _apply(discriminator, d_params, stats, x, y_real, train=False)[0][0]

            if loss.gp_weight > 0:
                gp = losses.gradient_penalty(k_gp, critic, real_in, fake_in)
                total = total + loss.gp_weight * gp
                terms["gradient_penalty"] = gp
            if loss.r1_gamma > 0:
                r1 = losses.lazy_r1(critic, real_in, step=state.step, interval=loss.r1_interval)
                total = total + 0.5 * loss.r1_gamma * r1
                terms["r1_penalty"] = r1 / loss.r1_interval  # the penalty itself where it ran
            aux = (stats, real_logits, fake_logits, features[:n], terms)
            return total, aux

        grads, (stats, real_logits, fake_logits, real_features, terms) = jax.grad(
            d_objective, has_aux=True)(state.d_params)
        updates, d_opt_state = d_tx.update(grads, state.d_opt_state, state.d_params)
        ada = state.ada if ada_update is None else ada_update(state.ada, real_logits)
        state = state.replace(d_params=optax.apply_updates(state.d_params, updates),
                              d_stats=stats, d_opt_state=d_opt_state, ada=ada)
        metrics = dict(terms, d_real=jnp.mean(real_logits), d_fake=jnp.mean(fake_logits),
                       d_grad_norm=_norm(grads), augment_p=p)
        return state, jax.lax.stop_gradient(real_features), metrics, generated

    def g_update(state, key, real_features, n, generated):
        k_lat, k_aug = jax.random.split(key)
        p = state.ada.p if ada_update is not None else jnp.float32(fixed_p)
        noise_std = losses.instance_noise_std(state.step, initial_std=loss.instance_noise_std,
                                              anneal_steps=max(loss.instance_noise_steps, 1))
        z, y_fake = latents(k_lat, n)
        half = n // 2
        if loss.mode_seeking > 0 and conditional:  # pairs (i, i + n/2) share their class
            y_fake = jnp.concatenate([y_fake[:half], y_fake[:half], y_fake[2 * half:]])

        def objective_on(fake, labels):
            fake_in = prepare(k_aug, fake, p, noise_std)
            (logits, features), _ = _apply(discriminator, state.d_params, state.d_stats,
                                           fake_in, labels, train=False)
            total = g_loss_fn(logits)
            terms = {"g_loss": total}
            if loss.feature_matching > 0:
                fm = losses.feature_matching(real_features, features)
                total = total + loss.feature_matching * fm
                terms["feature_matching"] = fm
            return total, terms

        def g_objective(g_params):
            fake, g_stats = _apply(generator, g_params, state.g_stats, z, y_fake, train=True)
            total, terms = objective_on(fake, y_fake)
            if loss.mode_seeking > 0:
                ms = losses.mode_seeking(fake[:half], fake[half:2 * half], z[:half],
                                         z[half:2 * half])
                total = total + loss.mode_seeking * ms
                terms["mode_seeking"] = ms
            return total, (g_stats, terms)

        if generated is None:
            grads, (g_stats, terms) = jax.grad(g_objective, has_aux=True)(state.g_params)
        else:
            fake, labels, g_pullback = generated
            fake_grad, terms = jax.grad(objective_on, has_aux=True)(fake, labels)
            (grads,), g_stats = g_pullback(fake_grad), state.g_stats
        updates, g_opt_state = g_tx.update(grads, state.g_opt_state, state.g_params)
        g_params = optax.apply_updates(state.g_params, updates)
        ema_params = losses.ema_update(state.ema_params, g_params, ema_decay)
        state = state.replace(g_params=g_params, g_stats=g_stats, g_opt_state=g_opt_state,
                              ema_params=ema_params)
        return state, dict(terms, g_grad_norm=_norm(grads))

    def step(state: TrainState, batch) -> tuple:
        key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
        k_d, k_g = jax.random.split(key)
        x = batch["x"]
        n_critic, n = x.shape[:2]
        # n_critic is small and static: unrolled D updates, each on its own real batch.
        for i, d_key in enumerate(jax.random.split(k_d, n_critic)):
            y_real = batch["y"][i] if conditional else None
            state, real_features, metrics, generated = d_update(state, x[i], y_real, d_key)
        state, g_metrics = g_update(state, k_g, real_features, n, generated)
        metrics.update(g_metrics, ada_p=state.ada.p, ada_rt=state.ada.rt)
        return state.replace(step=state.step + 1), metrics

    # The two phases on their own, for measurements that jit them apart (benchmarks/NOTES.md):
    # d_update(state, x, y, key) -> (state, real_features, metrics, generated);
    # g_update(state, key, real_features, n, generated) -> (state, metrics).
    step.phases = (d_update, g_update)
    return step
