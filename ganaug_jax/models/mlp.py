"""Fully connected GAN for low-dimensional points (e.g. the 2-D ring8 / grid25 mixtures).

Generator: z -> depth x (Dense(width) + ReLU) -> Dense(data_dim), no output activation.
Discriminator: x -> depth x (Dense(width) + LeakyReLU(0.2)) = features -> Dense(1) logits
(+ class projection when num_classes > 0). Neither uses BatchNorm, so the only
'batch_stats' state is the spectral-norm state of a discriminator built with
`spectral_norm=True` (an unconditional MLP GAN without it has no 'batch_stats' at all).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ganaug_jax.models import layers


def dense(features: int, fan_in: int, **kwargs) -> nn.Dense:
    """Dense with uniform(+-1/sqrt(fan_in)) kernel and bias (PyTorch's nn.Linear default).

    Flax's zero biases put every first-layer ReLU boundary through the origin, so at init an
    MLP discriminator on 2-D points separates directions but not distances; random biases
    spread the boundaries over the data range.
    """
    bound = 1.0 / np.sqrt(fan_in)

    def bias_init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return nn.Dense(features, kernel_init=nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
                    bias_init=bias_init, **kwargs)


class MLPGenerator(nn.Module, kw_only=True):
    """z: (N, latent_dim) float -> points (N, data_dim) float32.

    labels: (N,) int in [0, num_classes), required iff num_classes > 0 (traced labels are not
    range-checked, see `layers.check_labels`); a learned class embedding
    (num_classes, embed_dim or latent_dim), N(0, 1) initialised, is concatenated to z.
    `train` is accepted for interface uniformity (this generator has no state).
    latent_components > 0: z first goes through `layers.MixtureLatent` (a mixture prior with
    that many learned components of std latent_component_std; params 'latent/centres').
    Params: 'embed' (conditional only), 'dense0'..'dense{depth-1}', 'out'.
    """

    data_dim: int
    latent_dim: int = 64
    num_classes: int = 0
    width: int = 64
    depth: int = 3
    embed_dim: int | None = None
    latent_components: int = 0
    latent_component_std: float = 0.25
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        layers.check_latent_prior(self.latent_components, self.latent_component_std)
        for name in ("data_dim", "latent_dim", "width", "depth"):
            layers.check_positive_int(getattr(self, name), name)
        layers.check_positive_int(self.num_classes, "num_classes", minimum=0)
        if self.embed_dim is not None:
            layers.check_positive_int(self.embed_dim, "embed_dim")
        layers.check_dtype(self.dtype)
        super().__post_init__()

    @property
    def data_shape(self) -> tuple[int]:
        return (self.data_dim,)

    @nn.compact
    def __call__(self, z: jax.Array, labels: jax.Array | None = None, *,
                 train: bool) -> jax.Array:
        del train  # No state.
        layers.check_inputs(z, (self.latent_dim,), "z")
        layers.check_labels(labels, self.num_classes, z.shape[0])
        h = layers.latent_prior(z, self.latent_components, self.latent_component_std)
        h = h.astype(self.dtype)
        if self.num_classes > 0:
            e = nn.Embed(self.num_classes, self.embed_dim or self.latent_dim,
                         embedding_init=nn.initializers.normal(1.0), dtype=self.dtype,
                         param_dtype=self.param_dtype, name="embed")(labels)
            h = jnp.concatenate([h, e], axis=-1)
        for i in range(self.depth):
            h = nn.relu(dense(self.width, h.shape[-1], dtype=self.dtype,
                              param_dtype=self.param_dtype, name=f"dense{i}")(h))
        out = dense(self.data_dim, h.shape[-1], dtype=self.dtype, param_dtype=self.param_dtype,
                    name="out")(h)
        return out.astype(jnp.float32)


class MLPDiscriminator(nn.Module, kw_only=True):
    """x: (N, data_dim) float -> (logits (N,) float32, features (N, width) float32).

    features are the last hidden activations (after LeakyReLU). labels: (N,) int in
    [0, num_classes), required iff num_classes > 0 (projection head, see
    `layers.ProjectionHead`; traced labels are not range-checked). With `spectral_norm`,
    every Dense (and the projection embedding) is spectrally normalised; its
    state is in 'batch_stats' and is updated only when train=True.
    Params: 'dense0'..'dense{depth-1}', 'head/linear', 'head/embed' (conditional only).
    """

    data_dim: int
    num_classes: int = 0
    width: int = 64
    depth: int = 3
    spectral_norm: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        for name in ("data_dim", "width", "depth"):
            layers.check_positive_int(getattr(self, name), name)
        layers.check_positive_int(self.num_classes, "num_classes", minimum=0)
        layers.check_dtype(self.dtype)
        super().__post_init__()

    @property
    def data_shape(self) -> tuple[int]:
        return (self.data_dim,)

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array | None = None, *,
                 train: bool) -> tuple[jax.Array, jax.Array]:
        layers.check_inputs(x, (self.data_dim,), "x")
        layers.check_labels(labels, self.num_classes, x.shape[0])
        h = x.astype(self.dtype)
        for i in range(self.depth):
            layer = dense(self.width, h.shape[-1], dtype=self.dtype,
                          param_dtype=self.param_dtype, name=f"dense{i}")
            h = nn.leaky_relu(layers.spectral(layer, h, enabled=self.spectral_norm,
                                              update_stats=train), 0.2)
        logits = layers.ProjectionHead(num_classes=self.num_classes,
                                       spectral_norm=self.spectral_norm, dtype=self.dtype,
                                       param_dtype=self.param_dtype,
                                       name="head")(h, labels, update_stats=train)
        return logits, h.astype(jnp.float32)
