"""The oneDNN kernels of the 4x4 stride-2 convolutions' products (`models._onednn`) against a
float64 NumPy definition and their pure-JAX references, under jit, vmap, second derivatives,
a partitioned jit and a shard_map, and inside the compiled training step of the default config."""

import platform

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from _default_steps import ROOT, two_steps
from ganaug_jax import config as config_lib
from ganaug_jax.models import _onednn, convs

TARGETS = tuple(f"ganaug_onednn_conv_{mode}" for mode in _onednn.MODES)
REFERENCES = {"forward": convs._strided, "backward_data": convs._backward_data,
              "backward_weights": convs._conv_kernel_grad}
needs_kernel = pytest.mark.skipif(not _onednn.available(), reason="the oneDNN kernel is not built")


def _numpy_products(x, k, dy):
    """float64 definitions: y[n, i, j] = sum_ab xpad[n, 2i + a, 2j + b] @ k[a, b], and the
    input and kernel gradients of <y, dy> written as the adjoint sums."""
    x, k, dy = (np.asarray(v, np.float64) for v in (x, k, dy))
    n, h, w, c = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    y = sum(np.einsum("nhwc,co->nhwo", xp[:, a:a + h:2, b:b + w:2], k[a, b])
            for a in range(4) for b in range(4))
    dxp = np.zeros_like(xp)
    dk = np.zeros_like(k)
    for a in range(4):
        for b in range(4):
            dxp[:, a:a + h:2, b:b + w:2] += np.einsum("nhwo,co->nhwc", dy, k[a, b])
            dk[a, b] = np.einsum("nhwc,nhwo->co", xp[:, a:a + h:2, b:b + w:2], dy)
    return y, dxp[:, 1:-1, 1:-1], dk


def _operands(shape, out, seed=0):
    kx, kk, kd = jax.random.split(jax.random.key(seed), 3)
    n, h, w, c = shape
    return (jax.random.normal(kx, shape), jax.random.normal(kk, (4, 4, c, out)) * 0.2,
            jax.random.normal(kd, (n, h // 2, w // 2, out)))


def _run(mode, a, b):
    return jax.jit(lambda a, b: _onednn.product(mode, a, b, reference=REFERENCES[mode]))(a, b)


def _rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


def test_the_kernel_is_built_on_linux_x86_64_and_runs_in_a_one_device_jit():
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        pytest.skip("oneDNN's wheels (onednn-cpu-gomp) are for Linux x86-64 only")
    assert _onednn._onednn_cpu is not None, (
        "ganaug_jax/models/_onednn_cpu was not built or its library did not load; reinstall "
        "with `pip install -e .` and read the build log")
    _onednn._kernel_runs.cache_clear()
    assert _onednn.available() and convs.onednn_available()
    x, k, dy = _operands((2, 8, 6, 3), 4)
    for mode, a, b in (("forward", x, k), ("backward_data", dy, k), ("backward_weights", x, dy)):
        fn = lambda a, b, mode=mode: _onednn.product(mode, a, b, reference=REFERENCES[mode])  # noqa: E731
        assert f"ganaug_onednn_conv_{mode}" in jax.jit(fn).lower(a, b).compile().as_text()
    # float16 operands take the reference
    half = jax.jit(lambda a, b: _onednn.product("forward", a, b, reference=convs._strided))
    assert not any(t in half.lower(x.astype(jnp.float16), k.astype(jnp.float16)).compile()
                   .as_text() for t in TARGETS)


# Image layers (C = 1, 3; O = 1, 3), wide layers, rectangular images, odd batch sizes, and
# the DCGAN's 4 x 4 -> 2 x 2 last stage.
SHAPES = [((2, 8, 8, 3), 16), ((3, 16, 16, 1), 8), ((1, 4, 4, 32), 64), ((5, 8, 12, 16), 3),
          ((4, 6, 4, 24), 1), ((64, 16, 16, 64), 128)]


@needs_kernel
@pytest.mark.parametrize("shape, out", SHAPES)
def test_each_product_matches_the_float64_definition_and_the_reference(shape, out):
    x, k, dy = _operands(shape, out, seed=shape[1] + out)
    want = dict(zip(_onednn.MODES, _numpy_products(x, k, dy)))
    operands = {"forward": (x, k), "backward_data": (dy, k), "backward_weights": (x, dy)}
    for mode, (a, b) in operands.items():  # float32 sums of up to 64 * 8 * 8 * 64 terms
        got = _run(mode, a, b)
        assert got.shape == want[mode].shape, mode
        assert _rel_err(got, want[mode]) < 1e-5, mode
        assert _rel_err(got, REFERENCES[mode](a, b)) < 1e-5, mode


@needs_kernel
def test_same_inputs_give_the_same_bits():
    x, k, dy = _operands((16, 16, 16, 32), 64, seed=4)
    for mode, a, b in (("forward", x, k), ("backward_data", dy, k), ("backward_weights", x, dy)):
        np.testing.assert_array_equal(_run(mode, a, b), _run(mode, a, b))


def test_vmap_matches_a_loop():
    x, k, _ = _operands((3, 8, 8, 4), 6, seed=5)
    kernels = jnp.stack([k, 2 * k, -k])  # a mapped kernel too
    batched = jax.jit(jax.vmap(lambda v, w: convs.down_conv(v[None], w, "onednn")[0]))(x, kernels)
    for i in range(3):
        np.testing.assert_allclose(batched[i], convs._strided(x[i:i + 1], kernels[i])[0],
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", [convs.down_conv, convs.up_conv])
def test_second_derivatives_match_the_other_forms(op):
    """A gradient penalty's derivative (WGAN-GP, R1): the gradient of |d loss / d x|^2."""
    x, k, _ = _operands((2, 8, 8, 3), 5, seed=6)
    if op is convs.up_conv:
        x, k = x[:, :4, :4], k[..., :3, :]

    def penalty_grads(form):
        def penalty(x, k):
            grad_x = jax.grad(lambda v: jnp.sum(jnp.tanh(op(v, k, form))))(x)
            return jnp.sum(grad_x ** 2)
        return jax.jit(jax.grad(penalty, (0, 1)))(x, k)

    for got, want in zip(penalty_grads("onednn"), penalty_grads("matmul")):
        assert _rel_err(got, want) < 1e-5


def test_partitioned_jit_lowers_the_reference_and_shard_map_the_kernel():
    mesh = Mesh(np.asarray(jax.devices()), ("batch",))
    x, k, _ = _operands((2 * len(jax.devices()), 8, 8, 4), 6, seed=7)
    split = jax.device_put(x, NamedSharding(mesh, P("batch")))
    down = lambda v: convs.down_conv(v, k, "onednn")  # noqa: E731
    partitioned = jax.jit(down)
    per_shard = jax.jit(jax.shard_map(down, mesh=mesh, in_specs=P("batch"), out_specs=P("batch")))
    want = convs._strided(x, k)
    for fn, kernel in ((partitioned, False), (per_shard, _onednn.available())):
        assert (TARGETS[0] in fn.lower(split).compile().as_text()) == kernel
        np.testing.assert_allclose(fn(split), want, rtol=1e-5, atol=1e-5)


def test_default_config_runs_the_kernels_on_one_device_and_matches_eigen_and_eight_devices():
    assert config_lib.load_config(str(ROOT / "configs" / "default.py")).model.cpu_conv_library \
        == "onednn"
    one, one_hlo = two_steps(jax.devices()[:1], "onednn")
    eigen, eigen_hlo = two_steps(jax.devices()[:1], "eigen")
    eight, eight_hlo = two_steps(jax.devices(), "onednn")
    for target in TARGETS:
        assert (target in one_hlo) == _onednn.available(), target
        assert target not in eigen_hlo and target not in eight_hlo
    np.testing.assert_allclose(one, eigen, rtol=2e-5)
    np.testing.assert_allclose(one, eight, rtol=2e-5)
