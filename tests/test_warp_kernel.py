"""The XLA:CPU kernel of the fused resample + colour pass (`augment._warp`) against its pure-JAX
reference (itself tested against PIL / SciPy / scikit-image in test_augment_reference.py),
under jit, vmap, grad and a sharded jit."""

import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ganaug_jax import augment as A
from ganaug_jax.augment import _resample, _warp
from test_augment_reference import tie_free  # tests/ is on sys.path (pytest's rootdir import)

BORDERS = ("reflect", "constant", "edge")
INTERPOLATIONS = ("bilinear", "nearest")


def _inputs(shape, seed=0):
    """Images in [-1, 1], rotation/scale/shear/translation matrices reaching past every border
    (so each border mode is exercised), and affine colour matrices."""
    rng = np.random.default_rng(seed)
    n, h, w, c = shape
    images = rng.uniform(-1, 1, shape).astype(np.float32)
    angle = rng.uniform(-np.pi, np.pi, n)
    scale = rng.uniform(0.6, 1.6, n)
    shear = rng.uniform(-0.3, 0.3, n)
    geometry = _resample.from_linear(
        jnp.asarray(scale * np.cos(angle)), jnp.asarray(-scale * np.sin(angle) + shear),
        jnp.asarray(scale * np.sin(angle)), jnp.asarray(scale * np.cos(angle)),
        jnp.asarray(rng.uniform(-w, w, n)), jnp.asarray(rng.uniform(-h, h, n)))
    colour = (np.eye(c + 1) + 0.2 * rng.standard_normal((n, c + 1, c + 1))).astype(np.float32)
    colour[:, c] = np.eye(c + 1)[c]
    return jnp.asarray(images), geometry.astype(jnp.float32), jnp.asarray(colour)


def _slope(n, c, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, c, c)), jnp.float32)


def _both(images, geometry, colour, slope, **options):
    """The kernel under jit, and the reference op by op. (Jitted, XLA:CPU may round a source
    coordinate differently in the gather's index and in its weight: 1 pixel of the 300x301
    case below then differs by O(1) from the op-by-op result, which the kernel matches.)"""
    kernel = jax.jit(lambda *a: _warp.warp(*a, **options))(images, geometry, colour, slope)
    reference = _warp.reference_warp(images, geometry, colour, slope, **options)
    return kernel, reference


def test_the_kernel_is_built_where_a_compiler_is_and_used_when_first_asked_while_tracing(
        rgb_batch, recwarn):
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler: the package runs the pure-JAX path")
    assert _warp._warp_cpu is not None, (
        "a C++ compiler is present but ganaug_jax/augment/_warp_cpu was not built; "
        "reinstall with `pip install -e .` and read the build log")
    _warp._kernel_runs.cache_clear()  # the self-test now runs inside the trace below
    pipe = A.make_pipeline([A.op("rotate", max_degrees=10.0), A.op("contrast")])
    hlo = jax.jit(pipe).lower(jax.random.key(0), rgb_batch, 1.0).compile().as_text()
    assert "ganaug_warp" in hlo and not [w for w in recwarn if "kernel" in str(w.message)]
    assert _warp.fast_kernels_available()


@pytest.mark.parametrize("shape", [(5, 9, 7, 3), (3, 32, 32, 3), (4, 6, 11, 1), (2, 8, 8, 5),
                                   (2, 300, 301, 3)])  # the last: row blocks, not whole images
@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_kernel_equals_the_reference(shape, border, interpolation):
    images, geometry, colour = _inputs(shape)
    slope = _slope(shape[0], shape[3])
    options = dict(border=border, interpolation=interpolation, fill=0.25)
    (out, means), (ref_out, ref_means) = _both(images, geometry, colour, slope, **options)
    assert out.shape == ref_out.shape and means.shape == (shape[0], shape[3])
    # Means are over the resample before the colour; tolerance: float32 sums of <= 90,300
    # terms (the kernel sums in float64 per block).
    np.testing.assert_allclose(np.asarray(means), np.asarray(ref_means), atol=3e-5)
    # float32 rounding of source coordinates (their size grows with the image: up to ~2 H
    # here) times the steepest pixel step (2), plus the colour and mean-slope products.
    atol = 1e-5 + 4 * 2 * max(shape[1:3]) * 2.0 ** -23 * 4
    if interpolation == "bilinear":
        np.testing.assert_allclose(np.asarray(out), np.asarray(ref_out), atol=atol)
        return
    # Nearest: a source coordinate within rounding of a half-pixel may pick the other
    # neighbour; anywhere else both pick the same pixel. tie_free marks the output pixels whose
    # float64 source coordinates are more than 1e-3 px from a tie (float32 coordinates of up to
    # ~1000 px are off by ~1e-4 px), which covers the constant border's inside test (ties at
    # -0.5 and size - 0.5) and the reflect fold (which maps half-integers to half-integers).
    n, h, w, _ = shape
    keep = np.stack([tie_free(_topleft(g, h, w), h, w) for g in np.asarray(geometry)])
    assert keep.mean() > 0.99, keep.mean()
    out, ref_out = np.asarray(out), np.asarray(ref_out)
    # With colour and mean slope: the same pixel, then float32 colour products (atol).
    np.testing.assert_allclose(out[keep], ref_out[keep], rtol=0, atol=atol)
    close = np.isclose(out, ref_out, atol=atol)  # and hardly any tie picks the other pixel
    assert close.mean() >= 0.999, close.mean()
    # Without colour: a copy of the same input pixel (or the fill), bit for bit.
    plain = np.asarray(jax.jit(lambda x, g: _warp.warp(x, g, **options)[0])(images, geometry))
    plain_ref = np.asarray(_warp.reference_warp(images, geometry, jnp.zeros((n, 0)),
                                                jnp.zeros((n, 0)), **options)[0])
    np.testing.assert_array_equal(plain[keep], plain_ref[keep])


@pytest.mark.skipif(not A.fast_kernels_available(), reason="the C++ kernel is not built")
@pytest.mark.parametrize("width", [7, 8, 13])  # the scalar tail after 4- and 8-lane blocks
@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_non_finite_matrices_read_inside_the_image_and_leave_other_samples_alone(
        width, border, interpolation):
    """Traced matrices holding inf or NaN (a zoom of 0, a NaN angle: concrete ones are refused
    on entry) once sent the kernel's scalar tail reading outside the image (a segfault). What
    such a sample shows is unspecified, but the kernel reads only its pixels (NaN coordinates
    read the first row or column, as its vector paths do), so the output is finite, and the
    other samples come out as they do in a batch without it."""
    images, geometry, colour = _inputs((4, 5, width, 3))
    inf, nan = np.float32(np.inf), np.float32(np.nan)
    geometry = (geometry.at[0, 0, 0].set(inf).at[0, 1, 1].set(inf)  # scale 0's inverse
                .at[1, :2].set(nan).at[2, 0, 2].set(inf).at[2, 1, 2].set(-inf))
    slope = _slope(4, 3)
    options = dict(border=border, interpolation=interpolation, fill=0.25)
    warp = jax.jit(lambda *a: _warp.warp(*a, **options))
    out, means = map(np.asarray, warp(images, geometry, colour, slope))
    assert np.isfinite(out).all() and np.isfinite(means).all()
    alone, alone_means = map(np.asarray, warp(images[3:], geometry[3:], colour[3:], slope[3:]))
    np.testing.assert_array_equal(out[3], alone[0])
    np.testing.assert_array_equal(means[3], alone_means[0])


def _topleft(centred, h, w):
    """A centred output->input matrix (see _resample) in top-left pixel coordinates, float64."""
    cx, cy = (w - 1) / 2, (h - 1) / 2
    shift = np.array([[1.0, 0.0, cx], [0.0, 1.0, cy], [0.0, 0.0, 1.0]])
    unshift = np.array([[1.0, 0.0, -cx], [0.0, 1.0, -cy], [0.0, 0.0, 1.0]])
    return shift @ np.asarray(centred, np.float64) @ unshift


@pytest.mark.parametrize("border", BORDERS)
def test_no_colour_is_the_plain_resample_and_integer_maps_are_exact(border):
    images, _, _ = _inputs((4, 10, 12, 3))
    n, h, w, _ = images.shape
    identity = _resample.identity(n)
    flips = _resample.from_linear(-jnp.ones(n), jnp.zeros(n), jnp.zeros(n), jnp.ones(n))
    shift = _resample.from_linear(jnp.ones(n), jnp.zeros(n), jnp.zeros(n), jnp.ones(n),
                                  jnp.full(n, 2.0), jnp.full(n, -3.0))
    for geometry in (identity, flips, shift):
        out, _ = jax.jit(lambda x, g: _warp.warp(x, g, border=border, interpolation="bilinear",
                                                 fill=0.0))(images, geometry)
        ref = _resample.resample(images, geometry, border=border, interpolation="bilinear")
        np.testing.assert_array_equal(np.asarray(out), np.asarray(ref))
    out, _ = _warp.warp(images, identity, border=border, interpolation="bilinear", fill=0.0)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(images))


def test_vmap_equals_a_loop():
    images, geometry, colour = _inputs((6, 12, 10, 3), seed=1)
    options = dict(border="reflect", interpolation="bilinear", fill=0.0)
    # vmapped over single images: each call sees a batch of one
    one = jax.jit(jax.vmap(lambda x, g, c: _warp.warp(x[None], g[None], c[None], **options)))
    out, means = one(images, geometry, colour)
    for i in range(images.shape[0]):
        ref, ref_means = _warp.warp(images[i:i + 1], geometry[i:i + 1], colour[i:i + 1],
                                    **options)
        np.testing.assert_array_equal(np.asarray(out[i]), np.asarray(ref))
        np.testing.assert_array_equal(np.asarray(means[i]), np.asarray(ref_means))
    # vmapped over a leading axis of image batches, geometry shared (broadcast)
    stack = jnp.stack([images, -images, 0.5 * images])
    outs, _ = jax.vmap(lambda x: _warp.warp(x, geometry, colour, **options))(stack)
    for k, x in enumerate((images, -images, 0.5 * images)):
        np.testing.assert_array_equal(np.asarray(outs[k]),
                                      np.asarray(_warp.warp(x, geometry, colour, **options)[0]))


def test_gradients_are_the_references():
    images, geometry, colour = _inputs((3, 9, 8, 3), seed=2)
    options = dict(border="constant", interpolation="bilinear", fill=0.5)
    weights = jnp.asarray(np.random.default_rng(3).normal(size=images.shape), jnp.float32)

    slope = _slope(3, 3, seed=5)

    def loss(fn):
        def f(x, g, c, s):
            out, means = fn(x, g, c, s, **options)
            return jnp.sum(weights * out) + jnp.sum(means ** 2)
        return jax.jit(jax.grad(f, argnums=(0, 1, 2, 3)))

    grads = loss(_warp.warp)(images, geometry, colour, slope)
    ref_grads = loss(_warp.reference_warp)(images, geometry, colour, slope)
    for g, r in zip(grads, ref_grads):
        assert np.all(np.isfinite(np.asarray(g)))
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(4, 9, 7, 3), (2, 300, 301, 3)])  # whole images, row blocks
def test_inactive_images_are_copied_bit_for_bit_with_the_inputs_means(shape):
    images, geometry, colour = _inputs(shape, seed=6)
    n, c = shape[0], shape[-1]
    active = jnp.asarray(np.arange(n) % 2 == 0)
    options = dict(border="reflect", interpolation="bilinear", fill=0.0)
    slope = _slope(n, c, seed=7)
    run = jax.jit(lambda *a: _warp.warp(*a, **options))
    out, means = run(images, geometry, colour, slope, active)
    ref, ref_means = _warp.reference_warp(images, geometry, colour, slope, active, **options)
    all_out, _ = run(images, geometry, colour, slope, jnp.ones(n, bool))
    for i in range(n):
        if active[i]:
            np.testing.assert_array_equal(np.asarray(out[i]), np.asarray(all_out[i]))
        else:
            np.testing.assert_array_equal(np.asarray(out[i]), np.asarray(images[i]))
            np.testing.assert_array_equal(np.asarray(ref[i]), np.asarray(images[i]))
            np.testing.assert_allclose(np.asarray(means[i]),
                                       np.asarray(images[i], np.float64).mean(axis=(0, 1)),
                                       atol=1e-6)
    np.testing.assert_allclose(np.asarray(means), np.asarray(ref_means), atol=1e-5)
    # Gradient: an inactive image passes its cotangent through unchanged.
    weights = jnp.asarray(np.random.default_rng(8).normal(size=shape), jnp.float32)
    grad = jax.jit(jax.grad(lambda x: jnp.sum(weights * _warp.warp(
        x, geometry, colour, slope, active, **options)[0])))(images)
    for i in range(1, n, 2):
        np.testing.assert_array_equal(np.asarray(grad[i]), np.asarray(weights[i]))


def test_what_the_kernel_does_not_take_runs_the_reference():
    images, geometry, _ = _inputs((2, 6, 6, 17))  # more channels than the kernel's 16
    options = dict(border="edge", interpolation="bilinear", fill=0.0)
    out, _ = _warp.warp(images, geometry, **options)
    ref, _ = _warp.reference_warp(images, geometry, jnp.zeros((2, 0)), jnp.zeros((2, 0)),
                                  **options)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(ref))
    # a traced fill value
    images, geometry, _ = _inputs((2, 6, 6, 3))
    out = jax.jit(lambda f: _warp.warp(images, geometry, border="constant",
                                       interpolation="bilinear", fill=f)[0])(0.5)
    ref, _ = _warp.reference_warp(images, geometry, jnp.zeros((2, 0)), jnp.zeros((2, 0)),
                                  border="constant", interpolation="bilinear", fill=0.5)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-6)


def test_pipeline_with_the_kernel_equals_the_pure_jax_pipeline(rgb_batch):
    ops = [A.op("flip_left_right"), A.op("rotate", max_degrees=30.0),
           A.op("translate", max_fraction=0.2), A.op("brightness", max_delta=0.2),
           A.op("contrast", factor_range=(0.6, 1.4)), A.op("saturation", factor_range=(0.5, 1.5)),
           A.op("hue", max_degrees=20.0)]
    key = jax.random.key(7)
    fast = jax.jit(A.make_pipeline(ops, border="reflect"))
    with A.without_fast_kernels():
        plain = jax.jit(A.make_pipeline(ops, border="reflect")).lower(key, rgb_batch, 1.0).compile()
        assert "ganaug_warp" not in plain.as_text()
    if A.fast_kernels_available():
        assert "ganaug_warp" in fast.lower(key, rgb_batch, 1.0).compile().as_text()
    fast, plain = fast(key, rgb_batch, 1.0), plain(key, rgb_batch, 1.0)
    np.testing.assert_allclose(np.asarray(fast), np.asarray(plain), atol=3e-5)
    assert float(jnp.max(jnp.abs(fast - rgb_batch))) > 0.1  # the ops did something


_PATHS_SCRIPT = """
import sys, numpy as np, jax
sys.path.insert(0, {tests!r})
from test_warp_kernel import _inputs, _slope, BORDERS, INTERPOLATIONS
from ganaug_jax.augment import _warp, _warp_cpu
out = {{"uses_avx2": np.array(_warp_cpu.uses_avx2())}}
# The first case spans two column tiles (kTile = 128). The last case shifts the last image
# so that, in its bottom rows, pixels 0-1 read readable patches and pixels 2-3 the
# bottom-right one (read past the buffer's end with 4-float loads).
corner = jax.numpy.asarray(np.array([[[1, 0, 6.5], [0, 1, 0], [0, 0, 1]],
                                     [[1, 0, 6.5], [0, 1, 4.0], [0, 0, 1]]], np.float32))
for shape in [(3, 37, 141, 3), (2, 8, 8, 3), (2, 19, 23, 1), (2, 16, 17, 5), (2, 6, 10, 3)]:
    images, geometry, colour = _inputs(shape, seed=7)
    geometry = corner if shape == (2, 6, 10, 3) else geometry
    for border in BORDERS:
        for interpolation in INTERPOLATIONS:
            for with_colour in (False, True):
                name = f"{{shape}}-{{border}}-{{interpolation}}-{{with_colour}}"
                args = (colour, _slope(shape[0], shape[3], 7)) if with_colour else (None, None)
                res = jax.jit(lambda x, g, c, s: _warp.warp(
                    x, g, c, s, border=border, interpolation=interpolation, fill=0.25))(
                    images, geometry, *args)
                out[name], out[name + "-means"] = map(np.asarray, res)
np.savez(sys.argv[1], **out)
"""


@pytest.mark.skipif(not A.fast_kernels_available(), reason="the C++ kernel is not built")
def test_avx2_paths_give_the_bits_of_the_4_lane_paths(tmp_path):
    """The kernel's AVX2 paths (coordinates 8 at a time, 3-channel bilinear pixels 2 and 4 at a
    time) against its 4-lane paths (GANAUG_WARP_NO_AVX2), in fresh processes: the same bits."""
    script = tmp_path / "paths.py"
    script.write_text(_PATHS_SCRIPT.format(tests=os.path.dirname(__file__)))
    results = {}
    for name, extra in (("default", {}), ("no_avx2", {"GANAUG_WARP_NO_AVX2": "1"})):
        env = {k: v for k, v in os.environ.items() if k != "GANAUG_WARP_NO_AVX2"}
        env.update(JAX_PLATFORMS="cpu", **extra)
        subprocess.run([sys.executable, str(script), str(tmp_path / f"{name}.npz")], env=env,
                       check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
        results[name] = np.load(tmp_path / f"{name}.npz")
    assert not results["no_avx2"]["uses_avx2"]
    if not results["default"]["uses_avx2"]:
        pytest.skip("this CPU has no AVX2: only the 4-lane paths exist here")
    keys = [k for k in results["default"].files if k != "uses_avx2"]
    assert len(keys) == 5 * 3 * 2 * 2 * 2
    for key in keys:
        np.testing.assert_array_equal(results["default"][key], results["no_avx2"][key], err_msg=key)


def test_sharded_jit_runs_the_kernel_per_shard():
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    mesh = Mesh(np.array(jax.devices()), ("data",))
    images, geometry, colour = _inputs((16, 12, 12, 3), seed=4)
    options = dict(border="reflect", interpolation="bilinear", fill=0.0)
    shard = NamedSharding(mesh, P("data"))
    run = jax.jit(lambda *a: _warp.warp(*a, **options), in_shardings=(shard, shard, shard),
                  out_shardings=(shard, shard))
    args = [jax.device_put(a, shard) for a in (images, geometry, colour)]
    hlo = run.lower(*args).compile().as_text()
    assert "ganaug_warp" in hlo and "all-gather" not in hlo
    out, means = run(*args)
    ref, ref_means = jax.jit(lambda *a: _warp.warp(*a, **options))(images, geometry, colour)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(ref))
    np.testing.assert_array_equal(np.asarray(means), np.asarray(ref_means))


@pytest.mark.parametrize("platform", ["cuda", "rocm", "tpu"])
def test_other_platforms_lower_to_the_pure_jax_pass(platform, rgb_batch):
    """The kernel is CPU-only: lowered for an accelerator, a pipeline (also vmapped) must
    contain no call to it. (Lowering needs no device of that kind.)"""
    pipe = A.make_pipeline([A.op("rotate", max_degrees=10.0), A.op("contrast")])
    key = jax.random.key(0)
    lowered = jax.jit(pipe).trace(key, rgb_batch, 1.0).lower(lowering_platforms=(platform,))
    assert "ganaug_warp" not in lowered.as_text() and "gather" in lowered.as_text()
    batched = jax.jit(jax.vmap(lambda x: pipe(key, x, 1.0)))
    text = batched.trace(jnp.stack([rgb_batch] * 2)).lower(
        lowering_platforms=(platform,)).as_text()
    assert "ganaug_warp" not in text
    if A.fast_kernels_available():  # and the CPU lowering does call it
        assert "ganaug_warp" in jax.jit(pipe).trace(key, rgb_batch, 1.0).lower(
            lowering_platforms=("cpu",)).as_text()
