"""Building blocks shared by the GAN models: argument checks, spectral norm, conditioning.

Conventions used by every model in `ganaug_jax.models`:
  * modules are Flax Linen modules with keyword-only fields, used through `init`/`apply`;
  * `dtype` is the computation dtype (float32 or bfloat16), `param_dtype` the parameter dtype
    (float32); public outputs are always float32;
  * mutable state (BatchNorm running statistics, spectral-norm power-iteration vectors `u`
    and the last `sigma`) lives in the 'batch_stats' collection. With `train=True` it is
    updated, so call `apply(..., mutable=['batch_stats'])`; with `train=False` nothing is
    mutated (BatchNorm uses its running averages, spectral norm does one power-iteration
    step from the stored `u` without storing it, which is deterministic).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

COMPUTE_DTYPES = (jnp.float32, jnp.bfloat16)
CONDITIONINGS = ("concat", "cbn")
STATE_COLLECTION = "batch_stats"


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> None:
    """Raises ValueError unless `value` is a Python int >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def check_dtype(dtype: Any, name: str = "dtype") -> None:
    """Raises ValueError unless `dtype` is float32 or bfloat16."""
    try:
        ok = jnp.dtype(dtype) in [jnp.dtype(d) for d in COMPUTE_DTYPES]
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"{name} must be jnp.float32 or jnp.bfloat16, got {dtype!r}")


def check_latent_prior(components: Any, std: Any, *, minimum: int = 0) -> None:
    """Raises ValueError unless components is an int >= minimum and std a float > 0."""
    check_positive_int(components, "latent_components", minimum=minimum)
    if isinstance(std, bool) or not isinstance(std, (int, float)) or not std > 0:
        raise ValueError(f"latent_component_std must be a float > 0, got {std!r}")


def check_conditioning(conditioning: Any) -> None:
    """Raises ValueError unless `conditioning` is one of CONDITIONINGS."""
    if conditioning not in CONDITIONINGS:
        raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")


def check_inputs(x: Any, shape: tuple[int, ...], name: str) -> None:
    """Raises ValueError unless `x` has shape (N, *shape) and a floating dtype."""
    x_shape = getattr(x, "shape", None)
    if x_shape is None or tuple(x_shape[1:]) != tuple(shape) or len(x_shape) != len(shape) + 1:
        raise ValueError(f"{name} must have shape (N, {', '.join(map(str, shape))}), got "
                         f"{None if x_shape is None else tuple(x_shape)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{name} must be a floating array, got dtype {x.dtype}")


def check_labels(labels: Any, num_classes: int, batch: int) -> None:
    """Raises ValueError unless labels is None iff num_classes == 0, else int of shape (N,)
    with concrete values in [0, num_classes). Traced labels (under jit, vmap or grad) cannot
    be checked: keeping them in range is the caller's responsibility (out of range, an
    embedding lookup gives NaN for >= num_classes and wraps a negative label around)."""
    if num_classes == 0:
        if labels is not None:
            raise ValueError("labels must be None for an unconditional model (num_classes=0)")
        return
    if labels is None:
        raise ValueError(f"labels of shape (N,) int32 are required when num_classes={num_classes}")
    shape = getattr(labels, "shape", None)
    if shape is None or tuple(shape) != (batch,):
        raise ValueError(f"labels must have shape ({batch},), got {shape}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must be integers in [0, {num_classes}), got dtype {labels.dtype}")
    if isinstance(labels, jax.core.Tracer) or not isinstance(labels, (np.ndarray, jax.Array)):
        return  # traced (jit, vmap, grad): the range is the caller's responsibility
    values = np.asarray(labels)
    if values.size and not (values.min() >= 0 and values.max() < num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}) (num_classes={num_classes}), got "
                         f"values in [{values.min()}, {values.max()}]")


def spectral(layer: nn.Module, x: jax.Array, *, enabled: bool, update_stats: bool) -> jax.Array:
    """Applies `layer` to `x`, through `nn.SpectralNorm` when `enabled`.

    Must be called inside a compact method. The wrapped layer keeps its own name in 'params'
    (so parameter trees are the same with and without spectral norm); the power-iteration
    state goes to 'batch_stats' under `<layer name>_sn/<layer name>/<param>/{u,sigma}`.
    Kernels of rank > 2 (convolutions) are reshaped to (k * k * in, out) as flax does.
    """
    if not enabled:
        return layer(x)
    return nn.SpectralNorm(layer, name=f"{layer.name}_sn")(x, update_stats=update_stats)


class ConditionalBatchNorm(nn.Module, kw_only=True):
    """BatchNorm over all axes but the last, optionally class-conditional.

    num_classes == 0: `nn.BatchNorm` with learned scale and bias (params 'norm/{scale,bias}').
    num_classes > 0: `nn.BatchNorm` without scale/bias followed by
    (1 + gamma[y]) * x_hat + beta[y], gamma and beta `nn.Embed` tables (num_classes, C)
    initialised to zero (params 'gamma/embedding', 'beta/embedding').
    x: (N, ..., C), labels: (N,) int in [0, num_classes) when num_classes > 0, else None
    (see `check_labels`; traced labels are not range-checked); returns x's shape in `dtype`.
    """

    num_classes: int = 0
    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array | None = None, *, train: bool) -> jax.Array:
        check_labels(labels, self.num_classes, x.shape[0])
        conditional = self.num_classes > 0
        x = nn.BatchNorm(use_running_average=not train, momentum=self.momentum,
                         epsilon=self.epsilon, use_scale=not conditional,
                         use_bias=not conditional, dtype=self.dtype,
                         param_dtype=self.param_dtype, name="norm")(x)
        if not conditional:
            return x
        features = x.shape[-1]
        embed = lambda name: nn.Embed(self.num_classes, features,  # noqa: E731
                                      embedding_init=nn.initializers.zeros, dtype=self.dtype,
                                      param_dtype=self.param_dtype, name=name)(labels)
        gamma, beta = embed("gamma"), embed("beta")
        expand = (slice(None),) + (None,) * (x.ndim - 2) + (slice(None),)
        return (1 + gamma[expand]) * x + beta[expand]


class ProjectionHead(nn.Module, kw_only=True):
    """Discriminator head: Dense(1), plus the class projection of Miyato & Koyama (2018).

    logits = Dense(1)(phi) + sum(Embed(y) * phi, axis=-1) when num_classes > 0, else Dense(1)(phi).
    The projection embedding (num_classes, F) is Glorot-uniform initialised; with
    `spectral_norm` both the Dense kernel and the embedding table are spectrally normalised
    (as in the authors' SNEmbedID). phi: (N, F); labels: (N,) int in [0, num_classes) when
    num_classes > 0, else None (see `check_labels`; traced labels are not range-checked);
    returns (N,) float32. The projection sum is computed in float32.
    """

    num_classes: int = 0
    spectral_norm: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, phi: jax.Array, labels: jax.Array | None = None, *,
                 update_stats: bool) -> jax.Array:
        check_labels(labels, self.num_classes, phi.shape[0])
        linear = nn.Dense(1, dtype=self.dtype, param_dtype=self.param_dtype, name="linear")
        logits = spectral(linear, phi, enabled=self.spectral_norm,
                          update_stats=update_stats)[:, 0].astype(jnp.float32)
        if self.num_classes == 0:
            return logits
        embed = nn.Embed(self.num_classes, phi.shape[-1],
                         embedding_init=nn.initializers.xavier_uniform(), dtype=jnp.float32,
                         param_dtype=self.param_dtype, name="embed")
        class_vectors = spectral(embed, labels, enabled=self.spectral_norm,
                                 update_stats=update_stats)
        return logits + jnp.sum(class_vectors * phi.astype(jnp.float32), axis=-1)


class MixtureLatent(nn.Module, kw_only=True):
    """A latent prior with gaps: z ~ N(0, I) -> mu[c] + std * z, c uniform over `components`.

    The generator still takes standard-normal latents (so sampling and the per-index streams
    of `ganaug generate` are unchanged; truncating z would skew the component, so `generate`
    refuses --truncation for such runs); this first stage turns them into a
    uniform mixture of Gaussians with learned means (DeLiGAN, Gurumurthy et al. 2017;
    GM-GAN, Ben-Yosef & Weinshall 2018). The component is c = floor(K * Phi(z[:, 0])) (Phi the
    normal CDF), so it is uniform and a deterministic function of z. A continuous generator
    fed a connected latent must spend latent mass on paths between separated modes; with
    separated components it need not. z: (N, D) float; returns (N, D) float32.
    Params: 'centres' (K, D), N(0, 1) initialised.
    """

    components: int
    std: float = 0.25

    def __post_init__(self):
        check_latent_prior(self.components, self.std, minimum=1)
        super().__post_init__()

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        if getattr(z, "ndim", None) != 2 or not jnp.issubdtype(z.dtype, jnp.floating):
            raise ValueError("z must be a floating array of shape (N, D), got "
                             f"{getattr(z, 'shape', type(z).__name__)} {getattr(z, 'dtype', '')}")
        z = z.astype(jnp.float32)
        centres = self.param("centres", nn.initializers.normal(1.0),
                             (self.components, z.shape[-1]), jnp.float32)
        uniform = jax.scipy.special.ndtr(z[:, 0])
        component = jnp.minimum((uniform * self.components).astype(jnp.int32),
                                self.components - 1)
        return centres[component] + jnp.float32(self.std) * z


def latent_prior(z: jax.Array, components: int, std: float) -> jax.Array:
    """z itself (components == 0) or its `MixtureLatent` image; call inside a compact method."""
    if components == 0:
        return z
    return MixtureLatent(components=components, std=std, name="latent")(z)


def minibatch_std(h: jax.Array, group_size: int) -> jax.Array:
    """ProGAN's minibatch standard deviation: (N, H, W, C) -> (N, H, W, C + 1), the extra
    channel being the mean over features of the std across each group of `group_size`
    consecutive samples (N must divide by it), so D can see a lack of diversity. Groups of
    consecutive samples stay on one device when the batch is sharded."""
    n = h.shape[0]
    group_size = min(group_size, n)  # as in ProGAN: smaller batches form one group
    if n % group_size:
        raise ValueError(f"minibatch_std group size {group_size} must divide the batch size {n}")
    groups = h.reshape(n // group_size, group_size, *h.shape[1:]).astype(jnp.float32)
    std = jnp.sqrt(groups.var(axis=1) + 1e-8).mean(axis=(1, 2, 3))       # (N / G,)
    extra = jnp.repeat(std, group_size)[:, None, None, None]
    extra = jnp.broadcast_to(extra, (*h.shape[:3], 1)).astype(h.dtype)
    return jnp.concatenate([h, extra], axis=-1)
