"""Entry-point glue: unpacks a validated config into the typed objects a run needs."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import optax

from ganaug_jax import augment as aug
from ganaug_jax import losses
from ganaug_jax.data.sources import Source, load_source
from ganaug_jax.models import convs, make_gan
from ganaug_jax.models.dcgan import check_image_shape
from ganaug_jax.train.step import LossConfig, make_train_step


@dataclasses.dataclass(frozen=True)
class Run:
    source: Source
    generator: object
    discriminator: object
    g_tx: optax.GradientTransformation
    d_tx: optax.GradientTransformation
    latent_dim: int
    num_classes: int


def learning_rate(lr: float, c: ml_collections.ConfigDict, num_steps: int, *,
                  updates_per_step: int = 1):
    """The config's learning rate (optim.schedule, optim.warmup_steps) as a function of the
    update count, with `updates_per_step` updates per training step (D's n_critic), so that
    warm-up and cosine horizon span the same training steps for G and D."""
    warmup, total = c.warmup_steps * updates_per_step, num_steps * updates_per_step
    if c.schedule == "cosine" and warmup:
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, total)
    if c.schedule == "cosine":  # from the first update on (a warm-up of 1 would make it a no-op)
        return optax.cosine_decay_schedule(lr, total)
    if warmup:
        return optax.linear_schedule(0.0, lr, warmup)
    return lr


def make_optimizer(lr: float, c: ml_collections.ConfigDict, num_steps: int, *,
                   updates_per_step: int = 1) -> optax.GradientTransformation:
    """Adam (optim.b1, optim.b2) with `learning_rate`'s schedule."""
    return optax.adam(learning_rate(lr, c, num_steps, updates_per_step=updates_per_step),
                      b1=c.b1, b2=c.b2)


def build_run(config: ml_collections.ConfigDict) -> Run:
    source = load_source(config.data)
    m = config.model
    num_classes = source.num_classes if m.conditional else 0
    if m.conditional and not source.num_classes:
        raise ValueError(f"config key 'model.conditional' needs labelled data; "
                         f"data.source {config.data.source!r} has no labels")
    if (m.architecture == "mlp") == source.is_image:
        expected = "dcgan" if source.is_image else "mlp"
        raise ValueError(f"config key 'model.architecture' must be {expected!r} for data.source "
                         f"{config.data.source!r} of shape {source.shape}, got {m.architecture!r}")
    if m.architecture == "dcgan" and m.depth:
        max_depth = check_image_shape(source.shape, None)
        if not 1 <= m.depth <= max_depth:
            raise ValueError(f"config key 'model.depth' must be 0 (derived from the resolution) "
                             f"or in [1, {max_depth}] for {source.shape[0]}x{source.shape[1]} "
                             f"images, got {m.depth}")
    generator, discriminator = make_gan(
        m.architecture, data_shape=source.shape, num_classes=num_classes,
        latent_dim=m.latent_dim, width=m.width, depth=m.depth or None,
        spectral_norm=m.spectral_norm, conditioning=m.conditioning, minibatch_std=m.minibatch_std,
        conv_impl=m.conv_impl, kernel_grad=model_kernel_grad(config),
        latent_components=m.latent_components,
        latent_component_std=m.latent_component_std,
        dtype=jnp.bfloat16 if m.compute_dtype == "bfloat16" else jnp.float32)
    # D steps n_critic times per G step: its schedule runs over that many updates.
    g_tx = make_optimizer(config.optim.g_lr, config.optim, config.num_steps)
    d_tx = make_optimizer(config.optim.d_lr, config.optim, config.num_steps,
                          updates_per_step=config.optim.n_critic)
    return Run(source, generator, discriminator, g_tx, d_tx, m.latent_dim, num_classes)


def model_kernel_grad(config: ml_collections.ConfigDict) -> str:
    """The form of the dcgan's kernel gradients that goes with step_compiler_options on the
    default backend (`convs.kernel_grad_for`)."""
    return convs.kernel_grad_for(jax.default_backend(), config.model.cpu_conv_library)


def step_compiler_options(config: ml_collections.ConfigDict, mesh) -> dict[str, str]:
    """XLA options for the training step's jit: on CPU meshes, the library that runs its
    convolutions (config key 'model.cpu_conv_library'); none on other platforms."""
    if mesh.devices.flat[0].platform != "cpu":
        return {}
    return convs.cpu_compiler_options(config.model.cpu_conv_library)


def build_step(config: ml_collections.ConfigDict, run: Run):
    """The pure training step for this config (not jitted)."""
    a = config.augment
    pipeline, ada_update, fixed_p = None, None, 1.0
    if a.kind == "diffaugment":
        pipeline = aug.diffaugment(policy=a.policy)
    elif a.kind == "ada":
        pipeline = aug.ada(pipes=a.ada_pipes)
        if a.ada_fixed_p >= 0:
            fixed_p = a.ada_fixed_p
        else:
            ada_update = aug.make_ada_update(target=a.ada_target, speed_images=a.ada_speed_images,
                                             interval=a.ada_interval)
    ema = losses.ema_decay(half_life_images=config.optim.ema_half_life_images,
                           batch_size=config.batch_size)
    return make_train_step(
        generator=run.generator, discriminator=run.discriminator, g_tx=run.g_tx, d_tx=run.d_tx,
        latent_dim=run.latent_dim, num_classes=run.num_classes,
        loss=LossConfig(**config.loss.to_dict()), augment=pipeline, ada_update=ada_update,
        fixed_p=fixed_p, ema_decay=ema, reuse_fake=config.optim.reuse_fake)
