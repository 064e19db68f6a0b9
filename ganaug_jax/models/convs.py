"""The two convolutions of a DCGAN, 4x4 kernels with stride 2 and 'SAME' padding, with
gradients written out by hand so that every product runs on a fast convolution path.

  down_conv(x, kernel): (N, H, W, C) -> (N, H/2, W/2, O), kernel (4, 4, C, O) HWIO; equal to
    `lax.conv_general_dilated(x, kernel, (2, 2), 'SAME')` and to `nn.Conv(O, (4, 4), 2)`.
  up_conv(x, kernel):   (N, H, W, C) -> (N, 2H, 2W, O), kernel (4, 4, C, O); equal to
    `lax.conv_transpose(x, kernel, (2, 2), 'SAME')` and to `nn.ConvTranspose(O, (4, 4), 2)`.
H and W must be even for down_conv (they always are in a DCGAN).

Why (measured in benchmarks/NOTES.md): reverse-mode autodiff writes the kernel gradient of a
strided or transposed convolution as a convolution with window dilation, which XLA:CPU runs
at 3-25 GFLOP/s against ~100 for its strided convolutions (the matmul peak here: 120-150). The two
operators are adjoint to each other: with V = flip_hw(kernel) with C and O swapped,
up_conv(x, kernel) = down_conv^T_V(x). So every gradient is one of three fast products:
  down_conv forward  / up_conv's input gradient:  a strided convolution;
  up_conv forward    / down_conv's input gradient: a sub-pixel convolution (below), 2-3x
    faster than XLA's transposed convolution;
  with one image channel (C = 1 in, or O = 1 out), the strided and sub-pixel products are
    matrix products over the 16 taps instead (`_strided`, `_sub_pixel_taps`);
  both kernel gradients: the kernel gradient of a strided convolution (`_kernel_grad`),
  computed on the space-to-depth of the input as four matrix products ('matmul') or one
  stride-1 convolution that contracts over the batch ('conv'), instead of the
  window-dilated convolution (which took half of a 64x64 training step before this).
On CPU, form 'onednn' runs the three products (strided forward, its input gradient, its
kernel gradient) as oneDNN primitives instead (`_onednn`; an input gradient to fewer than
16 channels stays the sub-pixel product).
The sub-pixel form computes a stride-2 transposed convolution as one stride-1 2x2 convolution
of the once-padded input giving 4 * O channels (one 2x2 sub-kernel kernel[rh::2, rw::2] per
output phase (rh, rw)), then interleaves the phases; it does the same multiplies as the
transposed convolution without the zeros that lhs dilation inserts.
Both are exact reformulations: the tests compare outputs and gradients with the plain
`lax` operators and their autodiff within float32 rounding.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from ganaug_jax.models import _layout, _onednn

_DN = ("NHWC", "HWIO", "NHWC")
_PAD1 = ((1, 1), (1, 1))


def _strided(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """The 4x4 stride-2 convolution. With one input channel, as the matrix product of the 16
    taps of each output pixel with the kernel (XLA:CPU's convolution packs a depth-1 input
    slowly; benchmarks/NOTES.md, step 8)."""
    n, h, w, c = x.shape
    if c != 1:
        return lax.conv_general_dilated(x, kernel, (2, 2), _PAD1, dimension_numbers=_DN)
    padded = jnp.pad(x[..., 0], ((0, 0), (1, 1), (1, 1)))
    taps = jnp.stack([padded[:, i:i + h:2, j:j + w:2] for i in range(4) for j in range(4)], -1)
    return jnp.dot(taps, kernel.reshape(16, -1))


def _adjoint_kernel(kernel: jax.Array) -> jax.Array:
    """(4, 4, C, O) -> (4, 4, O, C): spatially flipped, channels swapped (an involution)."""
    return jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)


def _sub_pixel(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """lax.conv_transpose(x, kernel, (2, 2), 'SAME') as stride-1 2x2 convolutions.

    Output phase (rh, rw), output[2i + rh, 2j + rw], is the 2x2 sub-kernel kernel[rh::2, rw::2]
    over x padded by (1 - rh, rh) rows and (1 - rw, rw) columns. Either one convolution of the
    (1, 1)-padded x to 4 * O channels, which computes each phase on an (H+1) x (W+1) grid and
    keeps H x W of it, or one exact convolution per phase when that grid wastes more than a
    fifth (H, W <= 8) and O is not tiny (measured in benchmarks/NOTES.md, step 5). With one
    output channel, `_sub_pixel_taps`.
    """
    n, h, w, c = x.shape
    o = kernel.shape[-1]
    if o == 1:  # XLA:CPU's convolution to 4 channels is slow (benchmarks/NOTES.md, step 8)
        return _sub_pixel_taps(x, kernel)
    if 5 * (h + 1) * (w + 1) > 6 * h * w and o >= 16:
        phases = [[lax.conv_general_dilated(x, kernel[rh::2, rw::2], (1, 1),
                                            ((1 - rh, rh), (1 - rw, rw)), dimension_numbers=_DN)
                   for rw in (0, 1)] for rh in (0, 1)]
        return jnp.stack([jnp.stack(row, axis=3) for row in phases], axis=2).reshape(
            n, 2 * h, 2 * w, o)
    # sub[a, b, c, (rh, rw, o)] = kernel[2a + rh, 2b + rw, c, o]
    sub = kernel.reshape(2, 2, 2, 2, c, o).transpose(0, 2, 4, 1, 3, 5).reshape(2, 2, c, 4 * o)
    y = lax.conv_general_dilated(x, sub, (1, 1), _PAD1, dimension_numbers=_DN)
    y = y.reshape(n, h + 1, w + 1, 2, 2, o)
    # output[2i + rh, 2j + rw] = y[i + rh, j + rw, rh, rw]
    rows = [jnp.stack([y[:, rh:rh + h, rw:rw + w, rh, rw] for rw in (0, 1)], axis=3)
            for rh in (0, 1)]
    return jnp.stack(rows, axis=2).reshape(n, 2 * h, 2 * w, o)


def _sub_pixel_taps(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """_sub_pixel for one output channel: each input pixel's 16 taps (one matrix product,
    (N*H*W, C) x (C, 16 * O)), then every output phase (rh, rw) sums the taps
    kernel[2a + rh, 2b + rw] of its four input neighbours, x[i + rh + a - 1, j + rw + b - 1]."""
    n, h, w, c = x.shape
    o = kernel.shape[-1]
    taps = jnp.dot(x, kernel.transpose(2, 0, 1, 3).reshape(c, 16 * o)).reshape(n, h, w, 4, 4, o)
    taps = jnp.pad(taps, ((0, 0), (1, 1), (1, 1), (0, 0), (0, 0), (0, 0)))
    rows = [jnp.stack([sum(taps[:, rh + a:rh + a + h, rw + b:rw + b + w, 2 * a + rh, 2 * b + rw]
                           for a in (0, 1) for b in (0, 1)) for rw in (0, 1)], axis=3)
            for rh in (0, 1)]
    return jnp.stack(rows, axis=2).reshape(n, 2 * h, 2 * w, o)


def _kernel_grad(x: jax.Array, dy: jax.Array, form: str) -> jax.Array:
    """d/dK <_strided(x, K), dy>: x (N, H, W, C), dy (N, H/2, W/2, O) -> (4, 4, C, O).

    Instead of XLA's window-dilated convolution. With s = the space-to-depth of the
    once-padded x, (N, H/2 + 1, W/2 + 1, 4C), the 4x4 stride-2 kernel is a 2x2 stride-1 kernel
    over s, and its gradient is the correlation of s with dy over the four 2x2 offsets (a, b):
      * 16C <= O (an image layer, C = 1 or 3), either form: the four 2x2 patches of s side by
        side, one (16C)-wide matrix product (four 4C-wide products run 2-3x slower);
      * form 'conv': that correlation as one stride-1 'VALID' convolution of s by dy, the
        batch as its contracted feature dimension, (4C, 2, 2, O) out; it does exactly the
        multiplies needed. 1.1-1.7x faster than 'matmul' on XLA:CPU's Eigen path, 1.3-3x
        slower on YNNPACK (benchmarks/NOTES.md, step 6). Its operand, s with the batch last,
        comes from `_layout` (an XLA:CPU kernel where built; step 9);
      * form 'matmul': one matrix product per offset, shifting dy (zero-padded to s's grid,
        which multiplies zeros on its border) when dy is the smaller, otherwise taking s's
        2x2 patches (concatenating wide copies first costs more on XLA:CPU).
    """
    _, h, w, c = x.shape
    ho, wo, o = h // 2, w // 2, dy.shape[-1]
    offsets = [(a, b) for a in (0, 1) for b in (0, 1)]
    if 16 * c <= o:
        s = _layout.padded_space_to_depth(x)
        patches = jnp.concatenate([s[:, a:a + ho, b:b + wo] for a, b in offsets], axis=-1)
        g = jnp.dot(dy.reshape(-1, o).T, patches.reshape(-1, 16 * c))
        g = g.reshape(o, 2, 2, 2, 2, c).transpose(1, 2, 0, 3, 4, 5)  # (a, b, o, rh, rw, c)
    elif form == "conv":
        # s with the batch last, (4C, H/2 + 1, W/2 + 1, N): the batch-major operand Eigen takes
        g = lax.conv_general_dilated(_layout.padded_space_to_depth_t(x), dy, (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "IHWO", "HWNC"))
        g = g.reshape(2, 2, 2, 2, c, o).transpose(0, 1, 5, 2, 3, 4)  # (a, b, o, rh, rw, c)
    else:
        s = _layout.padded_space_to_depth(x)
        flat_s = s.reshape(-1, 4 * c)
        blocks = []  # (o, (rh, rw, c)) for each offset (a, b)
        for a, b in offsets:
            if dy.size <= x.size:
                shifted = jnp.pad(dy, ((0, 0), (a, 1 - a), (b, 1 - b), (0, 0))).reshape(-1, o)
                blocks.append(jnp.dot(shifted.T, flat_s))
            else:
                patch = s[:, a:a + ho, b:b + wo].reshape(-1, 4 * c)
                blocks.append(jnp.dot(dy.reshape(-1, o).T, patch))
        g = jnp.stack(blocks).reshape(2, 2, o, 2, 2, c)  # (a, b, o, rh, rw, c)
    return g.transpose(0, 3, 1, 4, 5, 2).reshape(4, 4, c, o)


def _backward_data(dy: jax.Array, kernel: jax.Array) -> jax.Array:
    """The input gradient of _strided(x, kernel) for output gradient dy: a sub-pixel product."""
    return _sub_pixel(dy, _adjoint_kernel(kernel))


_conv_kernel_grad = functools.partial(_kernel_grad, form="conv")  # one object: a static param

# oneDNN's input gradient to fewer channels than this is slower than _sub_pixel's (3 channels:
# 2.71 against 1.47 ms at 64x32x32x3, benchmarks/NOTES.md step 12); the rest is faster.
_ONEDNN_MIN_DATA_CHANNELS = 16


def _forward_product(x, kernel, form):
    if form == "onednn":
        return _onednn.product("forward", x, kernel, reference=_strided)
    return _strided(x, kernel)


def _backward_data_product(dy, kernel, form):
    if form == "onednn" and kernel.shape[2] >= _ONEDNN_MIN_DATA_CHANNELS:
        return _onednn.product("backward_data", dy, kernel, reference=_backward_data)
    return _backward_data(dy, kernel)


def _up_product(x, kernel, form):
    """up_conv(x, kernel): the input gradient of the strided convolution by its adjoint."""
    return _backward_data_product(x, _adjoint_kernel(kernel), form)


def _kernel_grad_product(x, dy, form):
    if form == "onednn":
        return _onednn.product("backward_weights", x, dy, reference=_conv_kernel_grad)
    return _kernel_grad(x, dy, form)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def down_conv(x: jax.Array, kernel: jax.Array, kernel_grad: str = "matmul") -> jax.Array:
    """4x4 stride-2 'SAME' convolution, NHWC x HWIO -> NHWC (see the module docstring);
    kernel_grad: how its products are computed, one of KERNEL_GRADS."""
    return _forward_product(x, kernel, kernel_grad)


def _down_fwd(x, kernel, kernel_grad):
    return _forward_product(x, kernel, kernel_grad), (x, kernel)


def _down_bwd(kernel_grad, residuals, dy):
    x, kernel = residuals
    return (_backward_data_product(dy, kernel, kernel_grad),
            _kernel_grad_product(x, dy, kernel_grad))


down_conv.defvjp(_down_fwd, _down_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def up_conv(x: jax.Array, kernel: jax.Array, kernel_grad: str = "matmul") -> jax.Array:
    """4x4 stride-2 'SAME' transposed convolution (flax's, kernel not flipped), NHWC x HWIO;
    kernel_grad as for down_conv."""
    return _up_product(x, kernel, kernel_grad)


def _up_fwd(x, kernel, kernel_grad):
    return _up_product(x, kernel, kernel_grad), (x, kernel)


def _up_bwd(kernel_grad, residuals, dy):
    x, kernel = residuals
    dx = _forward_product(dy, _adjoint_kernel(kernel), kernel_grad)
    return dx, _adjoint_kernel(_kernel_grad_product(dy, x, kernel_grad))


up_conv.defvjp(_up_fwd, _up_bwd)


# Whether the XLA:CPU layout kernel of the 'conv' kernel gradients was built and runs.
fast_kernels_available = _layout.kernel_available

CONV_IMPLS = ("custom_vjp", "xla")

# Which library runs the CPU convolutions. 'onednn': this module's products are oneDNN
# primitives (`_onednn`, an XLA:CPU kernel built against the onednn-cpu-gomp wheel), 1.0-2.9x
# faster per layer than Eigen's at the DCGAN's shapes on a Zen 4, 1.16x and 1.48x over the
# layers of the 32x32x3 and 32x32x1 models (benchmarks/NOTES.md, step 12); where
# that kernel is not built, 'eigen'. 'eigen': XLA:CPU's Eigen path, which runs this module's
# convolutions 1.4-1.7x faster than 'ynnpack' on an AVX-512 CPU (step 5). 'ynnpack': jax 0.10's
# default. Matrix products and reductions stay on YNNPACK either way (the rest of XLA's
# default fusion list).
CPU_CONV_LIBRARIES = ("onednn", "eigen", "ynnpack")
_YNN_WITHOUT_CONVOLUTIONS = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"


def _check_cpu_conv_library(library) -> None:
    if library not in CPU_CONV_LIBRARIES:
        raise ValueError(f"cpu_conv_library must be one of {CPU_CONV_LIBRARIES}, got {library!r}")


def onednn_available() -> bool:
    """Whether the oneDNN kernel of cpu_conv_library 'onednn' was built and runs."""
    return _onednn.available()


def cpu_compiler_options(library: str) -> dict[str, str]:
    """`jax.jit(..., compiler_options=...)` for a CPU program whose convolutions run on
    `library` (CPU_CONV_LIBRARIES; 'ynnpack', XLA's default: no options). 'onednn' takes
    'eigen''s, for the convolutions left to XLA."""
    _check_cpu_conv_library(library)
    if library == "ynnpack":
        return {}
    return {"xla_cpu_experimental_ynn_fusion_type": _YNN_WITHOUT_CONVOLUTIONS}


# How custom_vjp computes its products (`kernel_grad`). 'matmul' and 'conv': XLA products,
# the kernel gradients as matrix products or one convolution (`_kernel_grad`; 'conv' where
# convolutions run on XLA:CPU's Eigen path, 'matmul' on YNNPACK and on other backends,
# benchmarks/NOTES.md step 6; not measured on GPUs). 'onednn': every product on oneDNN on CPU
# (`_onednn`) but the input gradient to fewer than 16 channels, else as 'conv'.
KERNEL_GRADS = ("matmul", "conv", "onednn")


def kernel_grad_for(platform: str, cpu_conv_library: str) -> str:
    """The faster kernel_grad form for a program on `platform` ('cpu', 'gpu', 'tpu') whose
    CPU convolutions run on `cpu_conv_library` (see `cpu_compiler_options`); 'onednn' only
    where its kernel is built and runs, else 'conv'."""
    _check_cpu_conv_library(cpu_conv_library)
    if platform != "cpu" or cpu_conv_library == "ynnpack":
        return "matmul"
    return "onednn" if cpu_conv_library == "onednn" and onednn_available() else "conv"


def check_kernel_grad(form) -> None:
    if form not in KERNEL_GRADS:
        raise ValueError(f"kernel_grad must be one of {KERNEL_GRADS}, got {form!r}")


def check_conv_impl(impl) -> None:
    if impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {impl!r}")


class StrideTwoConv(nn.Module, kw_only=True):
    """4x4 stride-2 'SAME' convolution (`transpose=False`, halves H and W) or transposed
    convolution (`transpose=True`, doubles them): (N, H, W, C) -> (N, H', W', features).

    Parameters 'kernel' (4, 4, C, features), LeCun normal, and 'bias' (features,), zeros: the
    same names, shapes and initial values as `nn.Conv` / `nn.ConvTranspose` with kernel (4, 4),
    strides 2 and 'SAME' padding. impl 'custom_vjp' (default) uses `down_conv` / `up_conv`
    with kernel gradients of form `kernel_grad` (KERNEL_GRADS); 'xla' the plain `lax`
    operators and autodiff (the reference the tests compare against).
    """

    features: int
    transpose: bool = False
    use_bias: bool = True
    impl: str = "custom_vjp"
    kernel_grad: str = "matmul"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (4, 4, x.shape[-1], self.features), self.param_dtype)
        bias = (self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
                if self.use_bias else None)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        if self.impl == "custom_vjp":
            y = (up_conv if self.transpose else down_conv)(x, kernel, self.kernel_grad)
        elif self.transpose:
            y = lax.conv_transpose(x, kernel, (2, 2), "SAME", dimension_numbers=_DN)
        else:
            y = lax.conv_general_dilated(x, kernel, (2, 2), "SAME", dimension_numbers=_DN)
        return y if bias is None else y + bias
