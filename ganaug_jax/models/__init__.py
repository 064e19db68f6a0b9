"""GAN generators and discriminators (Flax Linen), and the `make_gan` factory.

Interface shared by every architecture in ARCHITECTURES:
  * generator(z, labels=None, *, train) -> samples float32: z (N, latent_dim) float,
    labels (N,) int in [0, num_classes) required iff num_classes > 0 (None otherwise; a
    concrete label out of range raises ValueError, a traced one under jit/vmap cannot be
    checked and is the caller's responsibility); samples (N, *data_shape)
    (mlp: raw points, dcgan: tanh images in [-1, 1]);
  * discriminator(x, labels=None, *, train) -> (logits (N,) float32, features (N, F)
    float32), features being the penultimate activations (for feature matching);
  * mutable state (BatchNorm running stats, spectral-norm `u`/`sigma`) lives in the
    'batch_stats' collection (STATE_COLLECTION). train=True updates it: call
    `apply(..., train=True, mutable=['batch_stats'])`, which returns (out, {'batch_stats': ...})
    (an empty dict when the module has no state). train=False mutates nothing;
  * fields `dtype` (computation, float32 or bfloat16) and `param_dtype` (float32).

Example:
    g, d = make_gan('dcgan', data_shape=(8, 8, 1), num_classes=10)
    z = jax.random.normal(key, (n, g.latent_dim)); y = jnp.zeros((n,), jnp.int32)
    g_vars = g.init(key_g, z, y, train=False)            # {'params', 'batch_stats'}
    x, g_upd = g.apply(g_vars, z, y, train=True, mutable=['batch_stats'])
    d_vars = d.init(key_d, x, y, train=False)
    (logits, feats), d_upd = d.apply(d_vars, x, y, train=True, mutable=['batch_stats'])
"""

from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from ganaug_jax.models import convs, layers
from ganaug_jax.models.dcgan import DCGAN_RESOLUTIONS, DCGANDiscriminator, DCGANGenerator
from ganaug_jax.models.layers import (CONDITIONINGS, STATE_COLLECTION, ConditionalBatchNorm,
                                      MixtureLatent, ProjectionHead)
from ganaug_jax.models.mlp import MLPDiscriminator, MLPGenerator

MLP_DEFAULT_DEPTH = 3


def _make_mlp(data_shape, *, num_classes, latent_dim, width, depth, spectral_norm,
              conditioning, minibatch_std, conv_impl, kernel_grad, latent_prior, dtype):
    if len(data_shape) != 1:
        raise ValueError(f"data_shape for mlp must be (D,), got {data_shape!r}")
    if conditioning != "concat":
        raise ValueError("conditioning for mlp must be 'concat' (the mlp generator has no "
                         f"BatchNorm for 'cbn'), got {conditioning!r}")
    if minibatch_std:
        raise ValueError(f"minibatch_std is for dcgan only, got {minibatch_std!r} for mlp")
    depth = MLP_DEFAULT_DEPTH if depth is None else depth
    generator = MLPGenerator(data_dim=data_shape[0], latent_dim=latent_dim,
                             num_classes=num_classes, width=width, depth=depth,
                             **latent_prior, dtype=dtype)
    discriminator = MLPDiscriminator(data_dim=data_shape[0], num_classes=num_classes,
                                     width=width, depth=depth, spectral_norm=spectral_norm,
                                     dtype=dtype)
    return generator, discriminator


def _make_dcgan(data_shape, *, num_classes, latent_dim, width, depth, spectral_norm,
                conditioning, minibatch_std, conv_impl, kernel_grad, latent_prior, dtype):
    generator = DCGANGenerator(image_shape=data_shape, latent_dim=latent_dim,
                               num_classes=num_classes, width=width, depth=depth,
                               conditioning=conditioning, conv_impl=conv_impl,
                               kernel_grad=kernel_grad,
                               **latent_prior, dtype=dtype)
    discriminator = DCGANDiscriminator(image_shape=data_shape, num_classes=num_classes,
                                       width=width, depth=depth, spectral_norm=spectral_norm,
                                       minibatch_std=minibatch_std, conv_impl=conv_impl,
                                       kernel_grad=kernel_grad,
                                       dtype=dtype)
    return generator, discriminator


ARCHITECTURES: dict[str, Callable[..., tuple[nn.Module, nn.Module]]] = {
    "mlp": _make_mlp,
    "dcgan": _make_dcgan,
}


def make_gan(architecture: str, *, data_shape: tuple, num_classes: int = 0,
             latent_dim: int = 64, width: int = 64, depth: int | None = None,
             spectral_norm: bool = False, conditioning: str = "concat",
             minibatch_std: int = 0, conv_impl: str = "custom_vjp", kernel_grad: str = "matmul",
             latent_components: int = 0, latent_component_std: float = 0.25,
             dtype: Any = jnp.float32) -> tuple[nn.Module, nn.Module]:
    """Returns unbound (generator, discriminator) modules for `architecture`.

    data_shape: (D,) for 'mlp'; (H, W, C) for 'dcgan' with H == W in (8, 16, 32, 64, 128).
    depth: None = the architecture's default (mlp: 3 hidden layers; dcgan: log2(H / 4)
    stride-2 stages). conditioning ('concat' or 'cbn') is the generator's class conditioning,
    used when num_classes > 0; the discriminator is then a projection discriminator.
    spectral_norm applies to every discriminator layer. minibatch_std > 0 (dcgan): the
    discriminator sees ProGAN's minibatch standard deviation over groups of that many
    samples (the batch must divide by it). conv_impl (dcgan): 'custom_vjp' or 'xla', how the
    stride-2 convolutions are differentiated (see models/convs.py); kernel_grad (dcgan,
    custom_vjp): 'matmul' or 'conv', the form of their kernel gradients
    (`convs.kernel_grad_for` picks the faster one for a platform). latent_components > 0: the
    generator's latent prior is a mixture of that many learned Gaussians of std
    latent_component_std (`layers.MixtureLatent`). Raises ValueError on bad arguments.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {sorted(ARCHITECTURES)}, "
                         f"got {architecture!r}")
    try:
        data_shape = tuple(data_shape)
    except TypeError:
        raise ValueError(f"data_shape must be a tuple of ints, got {data_shape!r}") from None
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in data_shape):
        raise ValueError(f"data_shape must be a tuple of positive ints, got {data_shape!r}")
    layers.check_positive_int(num_classes, "num_classes", minimum=0)
    layers.check_positive_int(latent_dim, "latent_dim")
    layers.check_positive_int(width, "width")
    if depth is not None:
        layers.check_positive_int(depth, "depth")
    if not isinstance(spectral_norm, bool):
        raise ValueError(f"spectral_norm must be a bool, got {spectral_norm!r}")
    layers.check_conditioning(conditioning)
    layers.check_positive_int(minibatch_std, "minibatch_std", minimum=0)
    convs.check_conv_impl(conv_impl)
    convs.check_kernel_grad(kernel_grad)
    layers.check_latent_prior(latent_components, latent_component_std)
    layers.check_dtype(dtype)
    return ARCHITECTURES[architecture](
        data_shape, num_classes=num_classes, latent_dim=latent_dim, width=width, depth=depth,
        spectral_norm=spectral_norm, conditioning=conditioning, minibatch_std=minibatch_std,
        conv_impl=conv_impl, kernel_grad=kernel_grad, dtype=dtype,
        latent_prior=dict(latent_components=latent_components,
                          latent_component_std=latent_component_std))


__all__ = [
    "ARCHITECTURES", "CONDITIONINGS", "DCGAN_RESOLUTIONS", "STATE_COLLECTION",
    "ConditionalBatchNorm", "DCGANDiscriminator", "DCGANGenerator", "MLPDiscriminator",
    "MLPGenerator", "MixtureLatent", "ProjectionHead", "make_gan",
]
