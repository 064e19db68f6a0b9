"""The fused resample + colour pass, with an XLA:CPU kernel where it was built.

`warp(images, geometry, colour)` returns `_colour.apply(resample, colour)` and the per-image
channel means of `resample = _resample.resample(images, geometry)` (the means contrast needs),
from one pass over the pixels. On CPU, when the C++ extension `_warp_cpu` was built at
install time, it runs as an XLA FFI kernel (`_warp_cpu.cc`) threaded on XLA's intra-op pool;
on other platforms, or without the extension, it runs the pure-JAX reference below.

The kernel is a JAX primitive with a batching rule (vmapped axes join the batch) and a CPU
lowering that XLA may partition along the batch (a jit whose batch is sharded over devices
runs it per shard, with no all-gather); on other platforms the primitive lowers to the
reference. Its derivatives are the reference's (`jax.custom_vjp`), so `grad` sees one
function either way. `jax.export` refuses FFI calls for the CPU: export under
`without_fast_kernels()`.
"""

import contextlib
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jex_core
from jax.interpreters import batching, mlir

from ganaug_jax import cpu_kernels
from ganaug_jax.augment import _colour, _resample

try:
    from ganaug_jax.augment import _warp_cpu
except ImportError:  # built without a C++ compiler: the pure-JAX path only
    _warp_cpu = None

_TARGET = "ganaug_warp"
_BORDER_CODES = {"reflect": 0, "constant": 1, "edge": 2}
_INTERPOLATION_CODES = {"bilinear": 0, "nearest": 1}
_MAX_KERNEL_CHANNELS = 16  # kMaxChannels in _warp_cpu.cc


def reference_warp(images, geometry, colour, mean_slope, active=None, *, border,
                   interpolation, fill):
    """Pure JAX warp: (N, H, W, C), (N, 3, 3), (N, C+1, C+1) or (N, 0) (no colour), (N, C, C)
    or (N, 0) (no mean correction) float32, (N,) bool or None (all active) -> ((N, H, W, C),
    (N, C))."""
    resampled = _resample.resample(images, geometry, border=border,
                                   interpolation=interpolation, fill=fill)
    # Keep the gather out of the colour transform's fusion: XLA would otherwise repeat it
    # once per output channel.
    resampled = lax.optimization_barrier(resampled)
    keep = None if active is None else active[:, None, None, None]
    if keep is not None:
        resampled = jnp.where(keep, resampled, images)
    out = resampled if colour.size == 0 else _colour.apply(resampled, colour)
    means = _colour.channel_means(resampled)
    if mean_slope.size:
        out = out + jnp.sum(mean_slope * means[:, None, :], axis=2)[:, None, None, :]
    return (out if keep is None else jnp.where(keep, out, images)), means


# The kernel as a primitive: images (..., H, W, C), geometry (..., 3, 3), colour
# (..., C+1, C+1) or (..., 0), mean_slope (..., C, C) or (..., 0), active (...) bool, any
# number of shared leading batch dims.
_warp_p = jex_core.Primitive("ganaug_warp")
_warp_p.multiple_results = True


@_warp_p.def_abstract_eval
def _warp_abstract(images, *_, **__):
    return (jax.core.ShapedArray(images.shape, jnp.float32),
            jax.core.ShapedArray(images.shape[:-3] + images.shape[-1:], jnp.float32))


@_warp_p.def_impl
def _warp_eager(*arrays, **params):
    return jax.jit(functools.partial(_warp_p.bind, **params))(*arrays)


def _warp_batched(args, dims, **params):
    """vmap: the mapped axis becomes the leading batch dim of every operand."""
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    args = [jnp.broadcast_to(a, (size,) + a.shape) if d is None
            else jnp.moveaxis(a, d, 0) for a, d in zip(args, dims)]
    return _warp_p.bind(*args, **params), (0, 0)


batching.primitive_batchers[_warp_p] = _warp_batched


def _warp_lowering(ctx, *arrays, border, interpolation, fill):
    # `num_batch_dims` lets XLA's partitioner split the call along the leading batch dims
    # (the target is registered batch-partitionable below), as JAX's own CPU linalg kernels.
    batch_dims = len(ctx.avals_in[0].shape) - 3
    frontend = mlir.ir_attribute({"num_batch_dims": str(batch_dims)})
    rule = jax.ffi.ffi_lowering(_TARGET,
                                extra_attributes={"mhlo.frontend_attributes": frontend})
    return rule(ctx, *arrays, border=np.int32(_BORDER_CODES[border]),
                interpolation=np.int32(_INTERPOLATION_CODES[interpolation]),
                fill=np.float32(fill))


def _reference_any_batch(*arrays, **static):
    """reference_warp over any number of leading batch dims (the primitive's own form)."""
    images = arrays[0]
    batch = images.shape[:-3]
    n = math.prod(batch)
    out, means = reference_warp(*(a.reshape((n,) + a.shape[len(batch):]) for a in arrays),
                                **static)
    return out.reshape(images.shape), means.reshape(batch + images.shape[-1:])


# Every platform lowers the primitive to the pure-JAX reference; the CPU to the kernel.
mlir.register_lowering(_warp_p, mlir.lower_fun(_reference_any_batch, multiple_results=True))
if _warp_cpu is not None:
    jax.ffi.register_ffi_target(_TARGET, _warp_cpu.handlers()[_TARGET], platform="cpu")
    jax.ffi.register_ffi_target_as_batch_partitionable(_TARGET)
    mlir.register_lowering(_warp_p, _warp_lowering, platform="cpu")


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _kernel(images, geometry, colour, mean_slope, active, border, interpolation, fill):
    return tuple(_warp_p.bind(images, geometry, colour, mean_slope, active, border=border,
                              interpolation=interpolation, fill=float(fill)))


def _kernel_forward(images, geometry, colour, mean_slope, active, border, interpolation, fill):
    out = _kernel(images, geometry, colour, mean_slope, active, border, interpolation, fill)
    return out, (images, geometry, colour, mean_slope, active)


def _kernel_backward(border, interpolation, fill, arrays, cotangents):
    _, pullback = jax.vjp(functools.partial(reference_warp, border=border,
                                            interpolation=interpolation, fill=fill), *arrays)
    return pullback(cotangents)


_kernel.defvjp(_kernel_forward, _kernel_backward)


def fast_kernels_available() -> bool:
    """Whether the XLA:CPU kernel of the fused pipeline was built at install time and runs."""
    return _warp_cpu is not None and _kernel_runs()


@functools.cache
def _kernel_runs() -> bool:
    return cpu_kernels.kernel_runs("augmentation kernel", _kernel_problem)


def _kernel_problem() -> str | None:
    cpu = jax.local_devices(backend="cpu")[0]
    images = jax.device_put(np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2), cpu)
    identity = jax.device_put(np.eye(3, dtype=np.float32)[None], cpu)
    none, active = jnp.zeros((1, 0), jnp.float32), jnp.ones((1,), bool)
    out, _ = jax.jit(lambda x, g: _kernel(x, g, none, none, active, "edge", "bilinear",
                                          0.0))(images, identity)
    return None if np.array_equal(np.asarray(out), np.asarray(images)) else "returned wrong values"


_disabled = 0


@contextlib.contextmanager
def without_fast_kernels():
    """Functions traced inside this block use the pure-JAX path (to compare the two).

    It acts at trace time: a function jitted inside keeps the path it was traced with.
    """
    global _disabled
    _disabled += 1
    try:
        yield
    finally:
        _disabled -= 1


def warp(images, geometry, colour=None, mean_slope=None, active=None, *, border: str,
         interpolation: str, fill: float):
    """colour @ [r, 1] + mean_slope @ means(r), r = resample(images, geometry), and the means.

    images: (N, H, W, C) float32, H, W >= 2; geometry: (N, 3, 3) centred output->input maps
    (see _resample); colour: (N, C+1, C+1) affine colour matrices, or None for none;
    mean_slope: (N, C, C), or None: adds mean_slope @ (the channel means of r) to every pixel
    (a colour matrix that depends on those means, as contrast's does, is affine in them
    through its offset); active: (N,) bool, or None for all: images where it is False are
    returned unchanged, bit for bit (their means are the input's). Returns the (N, H, W, C)
    float32 output and the (N, C) float32 means of r. The kernel and the reference agree to
    float32 rounding; with nearest sampling a source coordinate within rounding of a
    half-pixel may round to the other neighbour.
    """
    static = dict(border=border, interpolation=interpolation, fill=fill)
    none = jnp.zeros(images.shape[:1] + (0,), jnp.float32)
    arrays = (images, geometry, none if colour is None else colour,
              none if mean_slope is None else mean_slope)
    if not _kernel_applies(images, fill):
        return reference_warp(*arrays, active, **static)
    arrays += (jnp.ones(images.shape[:1], bool) if active is None else active,)
    # The primitive lowers to the kernel on CPU and to the reference elsewhere.
    return _kernel(*arrays, border, interpolation, fill)


def _kernel_applies(images, fill) -> bool:
    """The kernel's limits: float32, 1-16 channels, tap offsets exact in float32 (H * W <=
    2^24), and a fill known at trace time; anything else runs the reference."""
    _, h, w, c = images.shape
    return (fast_kernels_available() and not _disabled and images.dtype == jnp.float32
            and 1 <= c <= _MAX_KERNEL_CHANNELS and h * w <= 2 ** 24
            and isinstance(fill, (int, float, np.floating, np.integer)))
