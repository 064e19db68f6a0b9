"""DCGAN (Radford et al. 2016) generator and discriminator for square NHWC images.

Resolutions: H == W in DCGAN_RESOLUTIONS = (8, 16, 32, 64, 128), i.e. H = 4 * 2**k, k = 1..5
(8 x 8 is scikit-learn's digits). Any channel count C >= 1. With n stages (`depth`, default
log2(H / 4)) the base resolution is b = H / 2**n and, writing c_i = width * 2**(n - 1 - i):

Generator (z: (N, latent_dim) -> images (N, H, W, C) float32 in [-1, 1]):
  [concat Embed(y)] -> Dense(b*b*c_0, no bias) -> reshape (b, b, c_0) -> BN -> ReLU
  -> for i = 1..n-1: ConvTranspose(c_i, 4x4, stride 2, 'SAME', no bias) -> BN -> ReLU
  -> ConvTranspose(C, 4x4, stride 2, 'SAME', bias) -> tanh.
  `width` is the channel count of the last hidden layer (c_{n-1}). With conditioning 'cbn'
  every BN is class-conditional (`layers.ConditionalBatchNorm`) and z is not concatenated.
  BatchNorm: momentum 0.9, epsilon 1e-5 (PyTorch's 0.1 / 1e-5); train=True normalises with
  batch statistics and updates the running ones, train=False uses the running ones.

Discriminator (x: (N, H, W, C) -> (logits (N,), features (N, b*b*width*2**(n-1))), float32):
  for i = 0..n-1: Conv(width * 2**i, 4x4, stride 2, 'SAME', bias) -> LeakyReLU(0.2)
  -> flatten = features -> Dense(1) [+ class projection]. No BatchNorm at all (simpler,
  batch-independent, and the usual pairing with spectral norm); `train` only decides whether
  the spectral-norm state is updated.

Kernels use flax's default initialisers (LeCun normal), not DCGAN's N(0, 0.02). Every 4x4
stride-2 layer is a `convs.StrideTwoConv` (parameters as nn.Conv / nn.ConvTranspose);
`conv_impl` picks how its gradients are computed ('custom_vjp', fast on every backend, or
'xla', plain autodiff), `kernel_grad` the form of custom_vjp's kernel gradients ('matmul' or
'conv', see convs.kernel_grad_for); all give the same values within float32 rounding.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ganaug_jax.models import convs, layers

DCGAN_RESOLUTIONS = (8, 16, 32, 64, 128)


def check_image_shape(image_shape: Any, depth: int | None) -> int:
    """Validates (H, W, C) and depth; returns the number of stride-2 stages n."""
    if (not isinstance(image_shape, tuple) or len(image_shape) != 3
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in image_shape)):
        raise ValueError("data_shape for dcgan must be a tuple (H, W, C) of ints, "
                         f"got {image_shape!r}")
    h, w, c = image_shape
    if h != w or h not in DCGAN_RESOLUTIONS:
        raise ValueError(f"data_shape for dcgan must be square with H = W in {DCGAN_RESOLUTIONS} "
                         f"(H = 4 * 2**k), got {image_shape!r}")
    layers.check_positive_int(c, "data_shape channels C")
    max_depth = (h // 4).bit_length() - 1
    if depth is None:
        return max_depth
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= max_depth:
        raise ValueError(f"depth for a {h}x{w} dcgan must be None or an int in [1, {max_depth}] "
                         f"(stride-2 stages from a base of H / 2**depth >= 4), got {depth!r}")
    return depth


class DCGANGenerator(nn.Module, kw_only=True):
    """z: (N, latent_dim) float -> images (N, H, W, C) float32 in [-1, 1] (tanh).

    labels: (N,) int in [0, num_classes), required iff num_classes > 0 (traced labels are not
    range-checked, see `layers.check_labels`). conditioning 'concat': a learned class
    embedding (num_classes, embed_dim or latent_dim), N(0, 1) initialised, concatenated to z;
    'cbn': conditional BatchNorm everywhere. State: BN statistics in 'batch_stats'.
    latent_components > 0: z first goes through `layers.MixtureLatent` (params 'latent/centres').
    Params: 'embed' (concat only), 'project', 'bn0'..'bn{n-1}', 'deconv1'..'deconv{n}'.
    """

    image_shape: tuple[int, int, int]
    latent_dim: int = 64
    num_classes: int = 0
    width: int = 64
    depth: int | None = None
    conditioning: str = "concat"
    embed_dim: int | None = None
    bn_momentum: float = 0.9
    conv_impl: str = "custom_vjp"
    kernel_grad: str = "matmul"
    latent_components: int = 0
    latent_component_std: float = 0.25
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        check_image_shape(self.image_shape, self.depth)
        layers.check_latent_prior(self.latent_components, self.latent_component_std)
        for name in ("latent_dim", "width"):
            layers.check_positive_int(getattr(self, name), name)
        layers.check_positive_int(self.num_classes, "num_classes", minimum=0)
        if self.embed_dim is not None:
            layers.check_positive_int(self.embed_dim, "embed_dim")
        layers.check_conditioning(self.conditioning)
        convs.check_conv_impl(self.conv_impl)
        convs.check_kernel_grad(self.kernel_grad)
        layers.check_dtype(self.dtype)
        super().__post_init__()

    @property
    def data_shape(self) -> tuple[int, int, int]:
        return self.image_shape

    @property
    def num_stages(self) -> int:
        return check_image_shape(self.image_shape, self.depth)

    @nn.compact
    def __call__(self, z: jax.Array, labels: jax.Array | None = None, *,
                 train: bool) -> jax.Array:
        layers.check_inputs(z, (self.latent_dim,), "z")
        layers.check_labels(labels, self.num_classes, z.shape[0])
        n = self.num_stages
        h_out, _, c_out = self.image_shape
        base = h_out // 2**n
        channels = [self.width * 2**(n - 1 - i) for i in range(n)]
        cbn = self.num_classes > 0 and self.conditioning == "cbn"
        norm = lambda i: layers.ConditionalBatchNorm(  # noqa: E731
            num_classes=self.num_classes if cbn else 0, momentum=self.bn_momentum,
            dtype=self.dtype, param_dtype=self.param_dtype, name=f"bn{i}")
        bn_labels = labels if cbn else None
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        # Inference (train=False) runs XLA's own transposed convolution: a sample's pixels
        # then do not depend on the batch it is generated in (`ganaug generate` promises it).
        impl = self.conv_impl if train else "xla"
        up = lambda features, name, use_bias: convs.StrideTwoConv(  # noqa: E731
            features=features, transpose=True, use_bias=use_bias, impl=impl,
            kernel_grad=self.kernel_grad, name=name, **kw)

        h = layers.latent_prior(z, self.latent_components, self.latent_component_std)
        h = h.astype(self.dtype)
        if self.num_classes > 0 and not cbn:
            e = nn.Embed(self.num_classes, self.embed_dim or self.latent_dim,
                         embedding_init=nn.initializers.normal(1.0), name="embed", **kw)(labels)
            h = jnp.concatenate([h, e], axis=-1)
        h = nn.Dense(base * base * channels[0], use_bias=False, name="project", **kw)(h)
        h = h.reshape(h.shape[0], base, base, channels[0])
        h = nn.relu(norm(0)(h, bn_labels, train=train))
        for i in range(1, n):
            h = up(channels[i], f"deconv{i}", False)(h)
            h = nn.relu(norm(i)(h, bn_labels, train=train))
        h = up(c_out, f"deconv{n}", True)(h)
        return jnp.tanh(h).astype(jnp.float32)


class DCGANDiscriminator(nn.Module, kw_only=True):
    """x: (N, H, W, C) float -> (logits (N,) float32, features (N, F) float32).

    F = b*b*width*2**(n-1), the flattened last conv activations (after LeakyReLU), plus b*b
    with minibatch_std > 0 (its extra channel).
    labels: (N,) int in [0, num_classes), required iff num_classes > 0 (projection head;
    traced labels are not range-checked, see `layers.check_labels`). With `spectral_norm`,
    every Conv, the Dense and the projection embedding are spectrally normalised; that state is
    in 'batch_stats', updated only when train=True (there is no BatchNorm).
    Params: 'conv0'..'conv{n-1}', 'head/linear', 'head/embed' (conditional only).
    """

    image_shape: tuple[int, int, int]
    num_classes: int = 0
    width: int = 64
    depth: int | None = None
    spectral_norm: bool = False
    minibatch_std: int = 0
    conv_impl: str = "custom_vjp"
    kernel_grad: str = "matmul"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        check_image_shape(self.image_shape, self.depth)
        layers.check_positive_int(self.width, "width")
        layers.check_positive_int(self.minibatch_std, "minibatch_std", minimum=0)
        layers.check_positive_int(self.num_classes, "num_classes", minimum=0)
        convs.check_conv_impl(self.conv_impl)
        convs.check_kernel_grad(self.kernel_grad)
        layers.check_dtype(self.dtype)
        super().__post_init__()

    @property
    def data_shape(self) -> tuple[int, int, int]:
        return self.image_shape

    @property
    def num_stages(self) -> int:
        return check_image_shape(self.image_shape, self.depth)

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array | None = None, *,
                 train: bool) -> tuple[jax.Array, jax.Array]:
        layers.check_inputs(x, self.image_shape, "x")
        layers.check_labels(labels, self.num_classes, x.shape[0])
        h = x.astype(self.dtype)
        for i in range(self.num_stages):
            conv = convs.StrideTwoConv(features=self.width * 2**i, impl=self.conv_impl,
                                       kernel_grad=self.kernel_grad, dtype=self.dtype,
                                       param_dtype=self.param_dtype, name=f"conv{i}")
            h = nn.leaky_relu(layers.spectral(conv, h, enabled=self.spectral_norm,
                                              update_stats=train), 0.2)
        if self.minibatch_std:
            h = layers.minibatch_std(h, self.minibatch_std)
        features = h.reshape(h.shape[0], -1)
        logits = layers.ProjectionHead(num_classes=self.num_classes,
                                       spectral_norm=self.spectral_norm, dtype=self.dtype,
                                       param_dtype=self.param_dtype,
                                       name="head")(features, labels, update_stats=train)
        return logits, features.astype(jnp.float32)
