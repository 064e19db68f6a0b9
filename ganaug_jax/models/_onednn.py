"""The products of the 4x4 stride-2 convolutions on oneDNN, an XLA:CPU kernel where built.

`product(mode, a, b, reference=...)`, float32, NHWC activations, HWIO kernels:
  'forward':          a = x (N, H, W, C),     b = kernel (4, 4, C, O) -> y (N, H/2, W/2, O)
  'backward_data':    a = dy (N, h, w, O),    b = kernel (4, 4, C, O) -> dx (N, 2h, 2w, C)
  'backward_weights': a = x (N, H, W, C),     b = dy (N, H/2, W/2, O) -> dk (4, 4, C, O)
the strided convolution with padding 1 (`convs.down_conv`), its input gradient and its kernel
gradient; `reference` is the pure-JAX function of (a, b) computing the same (convs.py).

On CPU, when the C++ extension `_onednn_cpu` was built at install time (against the
onednn-cpu-gomp wheel, Linux x86-64), the product is one oneDNN convolution primitive, which
reads and writes the NHWC buffers in place (benchmarks/NOTES.md, step 12). Everywhere else,
and in a jit partitioned over several devices (where XLA partitions the reference along the
batch), the reference is lowered. Results equal the reference's within float32 rounding (the
summation order differs).

The op is a JAX primitive. Its derivatives and its batching rule are the reference's, so
second-order gradients (WGAN-GP, R1) and vmap work, through the pure-JAX products.
"""

import ctypes
import functools
import importlib.metadata
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core
from jax.interpreters import ad, batching, mlir

from ganaug_jax import cpu_kernels


def _load_extension():
    """The extension module, after loading the oneDNN library it links against from the
    onednn-cpu-gomp wheel; None where either is missing."""
    try:
        files = importlib.metadata.distribution("onednn-cpu-gomp").files or ()
        library = next(f for f in files if f.name == "libdnnl.so.3")
        path = os.path.abspath(library.locate())
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)  # found by soname by the extension
        from ganaug_jax.models import _onednn_cpu
    except (importlib.metadata.PackageNotFoundError, StopIteration, OSError, ImportError):
        return None
    return _onednn_cpu


_onednn_cpu = _load_extension()

MODES = ("forward", "backward_data", "backward_weights")
_TARGETS = {mode: f"ganaug_onednn_conv_{mode}" for mode in MODES}


def output_shape(mode: str, a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> tuple:
    """The product's output shape (module docstring)."""
    if mode == "forward":
        n, h, w, _ = a_shape
        return n, h // 2, w // 2, b_shape[3]
    if mode == "backward_data":
        n, h, w, _ = a_shape
        return n, 2 * h, 2 * w, b_shape[2]
    return 4, 4, a_shape[3], b_shape[3]


_p = jex_core.Primitive("ganaug_onednn_conv")


@_p.def_abstract_eval
def _abstract(a, b, *, mode, reference, kernel):
    return jax.core.ShapedArray(output_shape(mode, a.shape, b.shape), a.dtype)


_bind_jitted = jax.jit(lambda a, b, **params: _p.bind(a, b, **params),
                       static_argnames=("mode", "reference", "kernel"))


@_p.def_impl
def _eager(a, b, **params):
    return _bind_jitted(a, b, **params)  # one compilation per shape, not per call


def _jvp(primals, tangents, *, mode, reference, kernel):
    tangents = [ad.instantiate_zeros(t) for t in tangents]
    return (_p.bind(*primals, mode=mode, reference=reference, kernel=kernel),
            jax.jvp(reference, tuple(primals), tuple(tangents))[1])


def _batched(args, dims, *, mode, reference, kernel):
    return jax.vmap(reference, in_axes=tuple(dims))(*args), 0


ad.primitive_jvps[_p] = _jvp
batching.primitive_batchers[_p] = _batched


@functools.cache
def _lowered_reference(reference: Callable):
    return mlir.lower_fun(reference, multiple_results=False)


def _default_lowering(ctx, a, b, *, mode, reference, kernel):
    return _lowered_reference(reference)(ctx, a, b)


def _cpu_lowering(ctx, a, b, *, mode, reference, kernel):
    if kernel and cpu_kernels.unpartitioned(ctx):
        return jax.ffi.ffi_lowering(_TARGETS[mode])(ctx, a, b)
    return _lowered_reference(reference)(ctx, a, b)


mlir.register_lowering(_p, _default_lowering)
if _onednn_cpu is not None:
    for _mode, _target in _TARGETS.items():
        jax.ffi.register_ffi_target(_target, _onednn_cpu.handlers()[_target], platform="cpu")
    mlir.register_lowering(_p, _cpu_lowering, platform="cpu")


def product(mode: str, a: jax.Array, b: jax.Array, *, reference: Callable) -> jax.Array:
    """One of the three products (module docstring): the oneDNN kernel on CPU where it is
    built and runs and both operands are float32, else `reference(a, b)`."""
    kernel = a.dtype == jnp.float32 and b.dtype == jnp.float32 and available()
    return _p.bind(a, b, mode=mode, reference=reference, kernel=bool(kernel))


def available() -> bool:
    """Whether the oneDNN kernel was built at install time and runs."""
    return _onednn_cpu is not None and _kernel_runs()


@functools.cache
def _kernel_runs() -> bool:
    return cpu_kernels.kernel_runs("oneDNN convolution kernel", _kernel_problem)


def _kernel_problem() -> str | None:
    """The three products on a tiny case against plain lax convolutions in float32."""
    from jax import lax
    rng = np.random.default_rng(0)
    cpu = jax.local_devices(backend="cpu")[0]
    x, k, dy = (jax.device_put(rng.standard_normal(s).astype(np.float32), cpu)
                for s in ((2, 6, 4, 3), (4, 4, 3, 5), (2, 3, 2, 5)))
    conv = lambda v, w: lax.conv_general_dilated(  # noqa: E731
        v, w, (2, 2), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    _, vjp = jax.vjp(conv, x, k)
    dx, dk = vjp(dy)
    for mode, a, b, want in (("forward", x, k, conv(x, k)), ("backward_data", dy, k, dx),
                             ("backward_weights", x, dy, dk)):
        got = jax.jit(lambda a, b, mode=mode: _p.bind(a, b, mode=mode, reference=None,
                                                      kernel=True))(a, b)
        if not np.allclose(got, want, rtol=1e-4, atol=1e-4):
            return f"returned wrong values for {mode}"
    return None
