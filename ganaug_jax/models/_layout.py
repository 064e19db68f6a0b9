"""The operand layout of the convolutions' kernel gradient, with an XLA:CPU kernel where built.

`padded_space_to_depth_t(x)`: (N, H, W, C), H and W even -> (4C, H/2 + 1, W/2 + 1, N), x's
dtype, s[(2 rh + rw) C + c, i, j, n] = x[n, 2i + rh - 1, 2j + rw - 1, c], zero outside x: the
space-to-depth of the once-padded x with the batch last, the operand of the kernel-gradient
convolution of `convs._kernel_grad` (form 'conv'), which contracts over the batch.

XLA:CPU fuses the pad, space-to-depth and transpose of `reference` into one loop that reads
x one element per cache line; on CPU, when the C++ extension `_layout_cpu` was built at
install time, the op is an XLA FFI kernel (`_layout_cpu.cc`) that moves whole cache lines
(benchmarks/NOTES.md, step 9). It only moves elements: bit-identical to `reference`.

The op is a linear JAX primitive (its derivatives are the reference's, to any order) with a
batching rule. The kernel runs where the program is not partitioned (a single-device jit, or
the body of a shard_map manual over every mesh axis); a jit partitioned over several devices
lowers the reference, which XLA partitions along the batch like any other op.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core
from jax.interpreters import ad, batching, mlir

from ganaug_jax import cpu_kernels

try:
    from ganaug_jax.models import _layout_cpu
except ImportError:  # built without a C++ compiler: the pure-JAX path only
    _layout_cpu = None

_TARGET = "ganaug_padded_space_to_depth"
_KERNEL_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)


def padded_space_to_depth(x: jax.Array) -> jax.Array:
    """(N, H, W, C), H and W even -> (N, H/2 + 1, W/2 + 1, 4C): the space-to-depth of x padded
    by one pixel on every side, channels ordered (row phase, column phase, C)."""
    n, h, w, c = x.shape
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return (padded.reshape(n, h // 2 + 1, 2, w // 2 + 1, 2, c).transpose(0, 1, 3, 2, 4, 5)
            .reshape(n, h // 2 + 1, w // 2 + 1, 4 * c))


def reference(x: jax.Array) -> jax.Array:
    """Pure JAX padded_space_to_depth_t: (N, H, W, C) -> (4C, H/2 + 1, W/2 + 1, N)."""
    return padded_space_to_depth(x).transpose(3, 1, 2, 0)


def _output_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    n, h, w, c = shape
    return 4 * c, h // 2 + 1, w // 2 + 1, n


_p = jex_core.Primitive("ganaug_padded_space_to_depth")


@_p.def_abstract_eval
def _abstract(x, *, kernel):
    return jax.core.ShapedArray(_output_shape(x.shape), x.dtype)


_bind_jitted = jax.jit(lambda x, kernel: _p.bind(x, kernel=kernel), static_argnames="kernel")


@_p.def_impl
def _eager(x, *, kernel):
    return _bind_jitted(x, kernel=kernel)  # one compilation per shape, not per call


def _batched(args, dims, *, kernel):
    """vmap: the mapped axis joins the batch, which is the output's last axis."""
    (x,), (d,) = args, dims
    x = jnp.moveaxis(x, d, 0)
    b, n = x.shape[:2]
    out = _p.bind(x.reshape((b * n,) + x.shape[2:]), kernel=kernel)
    return out.reshape(out.shape[:3] + (b, n)), 3


def _transpose(cotangent, x, *, kernel):
    return jax.linear_transpose(reference, jax.ShapeDtypeStruct(x.aval.shape, x.aval.dtype))(
        cotangent)


batching.primitive_batchers[_p] = _batched
ad.deflinear2(_p, _transpose)

_lower_reference = mlir.lower_fun(reference, multiple_results=False)


def _cpu_lowering(ctx, x, *, kernel):
    if kernel and cpu_kernels.unpartitioned(ctx):
        return jax.ffi.ffi_lowering(_TARGET)(ctx, x)
    return _lower_reference(ctx, x)


mlir.register_lowering(_p, lambda ctx, x, *, kernel: _lower_reference(ctx, x))
if _layout_cpu is not None:
    jax.ffi.register_ffi_target(_TARGET, _layout_cpu.handlers()[_TARGET], platform="cpu")
    mlir.register_lowering(_p, _cpu_lowering, platform="cpu")


def padded_space_to_depth_t(x: jax.Array, *, use_kernel: bool | None = None) -> jax.Array:
    """(N, H, W, C), H and W even -> (4C, H/2 + 1, W/2 + 1, N), x's dtype (module docstring).

    use_kernel: None (default) runs the XLA:CPU kernel where it is built, works, and x's dtype
    is one it moves (float32, bfloat16, float16); False always lowers `reference`."""
    if x.ndim != 4 or x.shape[1] % 2 or x.shape[2] % 2:
        raise ValueError(f"padded_space_to_depth_t: x must be (N, H, W, C) with H and W even, "
                         f"got shape {x.shape}")
    if use_kernel is None:
        use_kernel = x.dtype in _KERNEL_DTYPES and kernel_available()
    return _p.bind(x, kernel=bool(use_kernel))


def kernel_available() -> bool:
    """Whether the XLA:CPU kernel was built at install time and runs."""
    return _layout_cpu is not None and _kernel_runs()


@functools.cache
def _kernel_runs() -> bool:
    return cpu_kernels.kernel_runs("layout kernel of the kernel gradients", _kernel_problem)


def _kernel_problem() -> str | None:
    x = np.arange(2 * 4 * 2 * 3, dtype=np.float32).reshape(2, 4, 2, 3)
    x = jax.device_put(x, jax.local_devices(backend="cpu")[0])
    out = jax.jit(lambda v: _p.bind(v, kernel=True))(x)
    return None if np.array_equal(out, reference(x)) else "returned wrong values"
