"""The XLA:CPU layout kernel of the convolutions' kernel gradients (`models._layout`) against a
float64 NumPy loop and its pure-JAX reference, under jit, vmap, derivatives of any order, a
partitioned jit and a shard_map, and inside the compiled training step."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from _default_steps import two_steps
from ganaug_jax.models import _layout

TARGET = "ganaug_padded_space_to_depth"


def _numpy_definition(x: np.ndarray) -> np.ndarray:
    """s[(2 rh + rw) C + c, i, j, n] = x[n, 2i + rh - 1, 2j + rw - 1, c], zero outside x."""
    n, h, w, c = x.shape
    s = np.zeros((4 * c, h // 2 + 1, w // 2 + 1, n), np.float64)
    for rh in (0, 1):
        for rw in (0, 1):
            for i in range(h // 2 + 1):
                for j in range(w // 2 + 1):
                    y, col = 2 * i + rh - 1, 2 * j + rw - 1
                    if 0 <= y < h and 0 <= col < w:
                        k = (2 * rh + rw) * c
                        s[k:k + c, i, j, :] = x[:, y, col, :].T
    return s


def _random(shape, seed=0, dtype=jnp.float32):
    return jax.random.normal(jax.random.key(seed), shape).astype(dtype)


def _fast(x):
    """The kernel where it was built (even if its self-test disabled it), else the reference."""
    built = _layout._layout_cpu is not None
    return jax.jit(lambda v: _layout.padded_space_to_depth_t(v, use_kernel=built))(x)


def test_the_kernel_is_built_where_a_compiler_is_and_runs_in_a_one_device_jit():
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler: the package runs the pure-JAX path")
    assert _layout._layout_cpu is not None, (
        "a C++ compiler is present but ganaug_jax/models/_layout_cpu was not built; "
        "reinstall with `pip install -e .` and read the build log")
    _layout._kernel_runs.cache_clear()
    assert _layout.kernel_available()
    x = _random((4, 6, 8, 3))
    assert TARGET in jax.jit(_layout.padded_space_to_depth_t).lower(x).compile().as_text()
    no_kernel = jax.jit(lambda v: _layout.padded_space_to_depth_t(v, use_kernel=False))
    assert TARGET not in no_kernel.lower(x).compile().as_text()


# Batch and channel counts on and off the kernel's 16 x 16 tiles, one-pixel and rectangular
# images, one channel.
SHAPES = [(1, 2, 2, 1), (3, 6, 4, 5), (17, 8, 10, 19), (32, 16, 16, 64), (2, 4, 12, 3)]


@pytest.mark.parametrize("shape", SHAPES)
def test_reference_matches_the_float64_definition(shape):
    x = _random(shape)
    np.testing.assert_array_equal(np.asarray(_layout.reference(x), np.float64),
                                  _numpy_definition(np.asarray(x, np.float64)))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("shape", SHAPES)
def test_kernel_equals_the_reference_bit_for_bit(shape, dtype):
    x = _random(shape, dtype=dtype)
    out, ref = _fast(x), _layout.reference(x)
    assert out.dtype == dtype and out.shape == (4 * shape[3], shape[1] // 2 + 1,
                                                shape[2] // 2 + 1, shape[0])
    np.testing.assert_array_equal(np.asarray(out).view(np.uint8), np.asarray(ref).view(np.uint8))


def test_vmap_matches_a_loop():
    xs = _random((3, 5, 4, 6, 7))
    out = jax.jit(jax.vmap(_layout.padded_space_to_depth_t))(xs)
    np.testing.assert_array_equal(out, np.stack([_layout.reference(x) for x in xs]))
    moved = jax.jit(jax.vmap(_layout.padded_space_to_depth_t, in_axes=1, out_axes=2))(xs)
    np.testing.assert_array_equal(moved, np.stack([_layout.reference(xs[:, k])
                                                   for k in range(xs.shape[1])], axis=2))


def test_derivatives_are_the_linear_maps_and_their_adjoint():
    """jvp maps the tangent; grad is the adjoint (<S x, y> = <x, S^T y> in float64); second
    order (as an R1 penalty through the kernel gradient takes it) equals the reference's."""
    x, t = _random((5, 4, 6, 3), 1), _random((5, 4, 6, 3), 2)
    ct = _random(_layout.reference(x).shape, 3)
    _, tangent = jax.jvp(_layout.padded_space_to_depth_t, (x,), (t,))
    np.testing.assert_array_equal(tangent, _layout.reference(t))
    grad = jax.jit(jax.grad(lambda v: jnp.vdot(_layout.padded_space_to_depth_t(v), ct)))(x)
    lhs = np.vdot(_numpy_definition(np.asarray(t, np.float64)), np.asarray(ct, np.float64))
    np.testing.assert_allclose(np.vdot(np.asarray(t, np.float64), np.asarray(grad, np.float64)),
                               lhs, rtol=1e-6)

    def second(op):
        inner = jax.grad(lambda v: jnp.sum(jnp.sin(op(v)) * ct))
        return jax.jit(jax.grad(lambda v: jnp.sum(inner(v) ** 2)))(x)
    np.testing.assert_allclose(second(_layout.padded_space_to_depth_t),
                               second(_layout.reference), rtol=1e-6, atol=1e-6)


def test_partitioned_jit_lowers_the_reference_and_shard_map_the_kernel():
    mesh = Mesh(np.asarray(jax.devices()), ("batch",))
    x = _random((2 * len(jax.devices()), 6, 4, 5))
    split = jax.device_put(x, NamedSharding(mesh, P("batch")))
    partitioned = jax.jit(_layout.padded_space_to_depth_t)
    per_shard = jax.jit(jax.shard_map(_layout.padded_space_to_depth_t, mesh=mesh,
                                      in_specs=P("batch"), out_specs=P(None, None, None, "batch")))
    ref = _layout.reference(x)
    for fn, kernel in ((partitioned, False), (per_shard, _layout.kernel_available())):
        assert (TARGET in fn.lower(split).compile().as_text()) == kernel
        np.testing.assert_array_equal(fn(split), ref)


def test_bad_input_is_named_before_compute():
    with pytest.raises(ValueError, match=r"x must be \(N, H, W, C\) with H and W even, got "
                                         r"shape \(2, 5, 4, 3\)"):
        _layout.padded_space_to_depth_t(jnp.zeros((2, 5, 4, 3)))
    with pytest.raises(ValueError, match=r"got shape \(4, 4, 3\)"):
        _layout.padded_space_to_depth_t(jnp.zeros((4, 4, 3)))


def test_one_device_step_runs_the_kernel_and_matches_the_eight_device_step():
    # 'eigen': the library whose kernel gradients take the 'conv' form, which this kernel serves
    one, one_hlo = two_steps(jax.devices()[:1], "eigen")
    eight, eight_hlo = two_steps(jax.devices(), "eigen")
    assert (TARGET in one_hlo) == _layout.kernel_available()
    assert TARGET not in eight_hlo
    np.testing.assert_allclose(one, eight, rtol=2e-5)
