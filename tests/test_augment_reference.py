"""Every deterministic op of ganaug_jax.augment against an independent float64 reference on
real images (scikit-image's astronaut, coffee and camera, scikit-learn's digits, and a 4-channel
multispectral stack).

References: NumPy (flips, rot90, integer shifts, cutout, colour maths, gamma, noise),
scipy.ndimage (shift / affine_transform with order 1 or 0 and the matching border mode,
gaussian_filter, correlate1d for StyleGAN2-ADA's band filter), scikit-image (rotate), PIL
(bilinear box resize) and scipy.spatial.transform.Rotation (hue). Each batch holds N = 4
different images with four different per-sample parameters, so per-sample handling is checked
too.

Border modes map to scipy.ndimage as: 'reflect' -> 'reflect' (half-sample symmetric),
'edge' -> 'nearest', 'constant' -> 'grid-constant' (out-of-image neighbours of a sample take
the fill value). Interpolation 'bilinear' -> order=1, 'nearest' -> order=0; nearest samples are
compared only where the float64 source coordinate is not within 1e-3 of a .5 tie.

The geometric tests taking the `path` fixture run twice: through the XLA:CPU kernel (where it
was built) and under `without_fast_kernels()`, the pure-JAX path that GPUs and TPUs run, against
the same references and tolerances.

Tolerances (stated at each comparison): pixel copies are bit-exact; colour ops ~1e-5 (float32
arithmetic vs float64); bilinear warps 1e-4 (float32 source coordinates, error ~1e-5 px times
a gradient of at most 2 per px).
"""

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi
from PIL import Image
from scipy.spatial.transform import Rotation

from ganaug_jax import augment as A
from ganaug_jax.augment import _filters, _pixel, _specs, _warp

N = 4
BORDERS = ("reflect", "edge", "constant")
INTERPOLATIONS = ("bilinear", "nearest")
SCIPY_MODE = {"reflect": "reflect", "edge": "nearest", "constant": "grid-constant"}
NUMPY_PAD = {"reflect": "symmetric", "edge": "edge", "constant": "constant"}
ORDER = {"bilinear": 1, "nearest": 0}
FILL = -0.375  # exactly representable, distinct from every pixel value that matters

# ---- real images ----

CASES = ("astronaut", "coffee", "camera", "digits", "multispectral")
SQUARE_CASES = ("astronaut", "digits", "multispectral")
RGB_CASES = ("astronaut", "coffee")


@functools.lru_cache(maxsize=None)
def case(name: str) -> np.ndarray:
    """(4, H, W, C) float32 in [-1, 1]: four different real images per case."""
    from skimage import data, transform

    def small(crops, shape):
        return np.stack([transform.resize(c, shape, anti_aliasing=True) for c in crops])

    if name == "digits":  # 8 x 8, C = 1, values 0..16
        from sklearn.datasets import load_digits
        return (load_digits().images[:N].astype(np.float32) / 8.0 - 1.0)[..., None]
    if name == "astronaut":  # 48 x 48, RGB
        a = data.astronaut()
        crops = [a[:256, 128:384], a[200:456, :256], a[64:448, 64:448], a[256:, 256:]]
        u = small(crops, (48, 48))
    elif name == "coffee":  # 40 x 56 (non-square), RGB
        c = data.coffee()
        crops = [c[:200, :280], c[100:300, 200:480], c[200:, 320:], c[50:350, 90:510]]
        u = small(crops, (40, 56))
    elif name == "camera":  # 32 x 44 (non-square), C = 1
        g = data.camera()
        crops = [g[:256, :352], g[256:, 160:], g[128:384, 80:432], g[:, :]]
        u = small(crops, (32, 44))[..., None]
    elif name == "multispectral":  # 48 x 48, C = 4: astronaut RGB + camera
        a, g = data.astronaut(), data.camera()
        boxes = [(0, 256, 128, 384), (200, 456, 0, 256), (64, 448, 64, 448), (256, 512, 256, 512)]
        rgb = small([a[t:b, l:r] for t, b, l, r in boxes], (48, 48))
        gray = small([g[t:b, l:r] for t, b, l, r in boxes], (48, 48))[..., None]
        u = np.concatenate([rgb, gray], axis=-1)
    else:
        raise KeyError(name)
    return (u * 2.0 - 1.0).astype(np.float32)


# Eager dispatch caches one compiled kernel per primitive and shape, shared by all ops (the
# warps all reuse the same resampler primitives), which is faster here than compiling every
# (op, border, interpolation, shape) under jit. The blur unrolls 2 * radius + 1 taps and is
# much faster jitted.
JITTED = ("gaussian_blur",)


@functools.lru_cache(maxsize=None)
def _jit(name, static):
    fn = functools.partial(getattr(A, name), **dict(static))
    return jax.jit(fn) if name in JITTED else fn


def run(name, *args, **static):
    """The op (jitted where that is faster, see JITTED), as float64 NumPy."""
    out = _jit(name, tuple(sorted(static.items())))(*args)
    return np.asarray(out.astype(jnp.float32) if out.dtype == jnp.bfloat16 else out, np.float64)


def f32(x):
    return np.asarray(x, np.float32)


# ---- the two implementations of the resample ----

# Cases that also run on the pure-JAX path: eager op-by-op dispatch compiles each of its small
# ops once per image shape, border and interpolation (~3 s a shape for the six pairs), so one
# shape, non-square RGB, with every border and interpolation. The pure-JAX resample has no
# per-channel-count code, unlike the kernel.
PURE_JAX_CASES = ("coffee",)


def cases_and_paths(names):
    """(name, path) parameters: every case through the kernel, PURE_JAX_CASES also pure JAX."""
    return [pytest.param(n, p, id=f"{p}-{n}") for n in names for p in ("kernel", "pure_jax")
            if p == "kernel" or n in PURE_JAX_CASES]


@pytest.fixture
def path(request, monkeypatch):
    """Runs the test body through the C++ kernel (the eager CPU default where it was built) or
    the pure-JAX resample (`without_fast_kernels()`, what other platforms lower to). The ops
    run eagerly (see `run`), so the context decides the path of every call in the body; the
    kernel's entry point is counted to check that each run took the path it names."""
    A.fast_kernels_available()  # its one-off self-test calls the kernel: run it before counting
    calls = []
    kernel = _warp._kernel

    def counted(*args):
        calls.append(1)
        return kernel(*args)

    monkeypatch.setattr(_warp, "_kernel", counted)
    pure = getattr(request, "param", "kernel") == "pure_jax"
    with A.without_fast_kernels() if pure else contextlib.nullcontext():
        yield "pure_jax" if pure else "kernel"
    if pure:
        assert not calls, "the pure-JAX run called the C++ kernel"
    elif A.fast_kernels_available():
        assert calls, "the kernel run never called the C++ kernel"


# ---- geometric references ----

def topleft(linear, h, w, shift=(0.0, 0.0)) -> np.ndarray:
    """Output->input (x, y, 1) map in top-left pixel coordinates of a map about the centre:
    in - c = linear @ (out - c) + shift, c = ((W - 1) / 2, (H - 1) / 2)."""
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    linear = np.asarray(linear, np.float64)
    m = np.eye(3)
    m[:2, :2] = linear
    m[:2, 2] = c - linear @ c + np.asarray(shift, np.float64)
    return m


def ref_warp(image, matrix, border, interpolation, fill) -> np.ndarray:
    """scipy.ndimage.affine_transform of one (H, W, C) image in float64. scipy works in
    (row, col) order, so the (x, y) matrix has its rows and columns swapped."""
    m = np.asarray(matrix, np.float64)
    linear, offset = m[:2, :2][::-1, ::-1], m[:2, 2][::-1]
    image = np.asarray(image, np.float64)
    return np.stack([ndi.affine_transform(image[..., ch], linear, offset=offset,
                                          order=ORDER[interpolation], mode=SCIPY_MODE[border],
                                          cval=fill, prefilter=False)
                     for ch in range(image.shape[-1])], axis=-1)


def tie_free(matrix, h, w, tol=1e-3) -> np.ndarray:
    """(H, W) mask of output pixels whose float64 source coordinates are not near a .5 tie
    (where nearest-neighbour rounding, and the constant border's inside test, are ill-defined
    between float32 and float64)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    m = np.asarray(matrix, np.float64)
    sx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    sy = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]

    def far(s):
        return np.abs(s - np.floor(s) - 0.5) > tol
    return far(sx) & far(sy)


def check_warp(out, images, matrices, border, interpolation, fill, what):
    """Compares each sample of `out` with ref_warp of the matching input and matrix."""
    _, h, w, _ = images.shape
    for i in range(images.shape[0]):
        ref = ref_warp(images[i], matrices[i], border, interpolation, fill)
        msg = f"{what}, sample {i}, border={border}, interpolation={interpolation}"
        if interpolation == "bilinear":
            # float32 source coordinates: ~1e-5 px error times gradients <= 2 / px -> atol 1e-4.
            np.testing.assert_allclose(out[i], ref, rtol=0, atol=1e-4, err_msg=msg)
        else:
            keep = tie_free(matrices[i], h, w)
            assert keep.mean() > 0.9, f"too many .5 ties in the test parameters: {msg}"
            # nearest copies an input pixel (or the fill): exact away from .5 ties.
            bad = np.any(out[i] != ref, axis=-1) & keep
            assert not bad.any(), (
                f"{msg}: {bad.sum()} of {keep.sum()} tie-free pixels differ, first at (row, col) "
                f"{tuple(np.argwhere(bad)[0])}, max |error| {np.abs(out[i] - ref)[bad].max():.4g}")


# ---- flips, rot90: bit-exact pixel permutations ----

@pytest.mark.parametrize("name", CASES)
def test_flip_left_right(name):
    x = case(name)
    mask = np.array([True, False, True, False])
    out = run("flip_left_right", x, mask)
    ref = np.where(mask[:, None, None, None], x[:, :, ::-1], x)
    np.testing.assert_array_equal(out, ref)  # a pixel permutation: bit-exact


@pytest.mark.parametrize("name", CASES)
def test_flip_up_down(name):
    x = case(name)
    mask = np.array([False, True, True, False])
    out = run("flip_up_down", x, mask)
    ref = np.where(mask[:, None, None, None], x[:, ::-1], x)
    np.testing.assert_array_equal(out, ref)  # a pixel permutation: bit-exact


@pytest.mark.parametrize("name", SQUARE_CASES)
def test_rot90(name):
    x = case(name)
    k = np.array([1, 2, -1, 7], np.int32)  # 7 = 3 quarter turns, -1 = 3 quarter turns
    out = run("rot90", x, k)
    for i in range(N):
        # np.rot90 over axes (rows, cols) turns counter-clockwise on screen; bit-exact.
        np.testing.assert_array_equal(out[i], np.rot90(x[i], k[i], axes=(0, 1)), err_msg=f"k={k[i]}")


# ---- identity parameters reproduce the input bit for bit ----

@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("path", ["kernel", "pure_jax"], indirect=True)
def test_identity_parameters_are_exact(border, interpolation, path):
    x = case("coffee")
    kw = dict(border=border, interpolation=interpolation, fill=FILL)
    zeros, ones = np.zeros(N, np.float32), np.ones(N, np.float32)
    outs = {
        "translate": run("translate", x, zeros, zeros, **kw),
        "rotate": run("rotate", x, zeros, **kw),
        "scale": run("scale", x, ones, **kw),
        "anisotropic_scale": run("anisotropic_scale", x, ones, ones, **kw),
        "shear": run("shear", x, zeros, zeros, **kw),
        "affine_transform": run("affine_transform", x, np.eye(3, dtype=np.float32), **kw),
        "crop_and_resize": run("crop_and_resize", x, np.tile(f32([0, 0, 1, 1]), (N, 1)), **kw),
    }
    for op_name, out in outs.items():
        np.testing.assert_array_equal(out, x, err_msg=op_name)  # identity: bit-exact


# ---- translate ----

def _integer_shifts(h, w):
    dx = np.array([0, 3, -5, w + 2], np.float32)  # the last one moves past the whole image
    dy = np.array([1, -2, 0, -(h + 3)], np.float32)
    return dx, dy


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("name, path", cases_and_paths(CASES), indirect=["path"])
def test_translate_integer_is_exact(name, border, interpolation, path):
    x = case(name)
    _, h, w, _ = x.shape
    dx, dy = _integer_shifts(h, w)
    out = run("translate", x, dx, dy, border=border, interpolation=interpolation, fill=FILL)
    p = int(max(np.abs(dx).max(), np.abs(dy).max()))
    for i in range(N):
        pad = dict(constant_values=FILL) if border == "constant" else {}
        padded = np.pad(x[i], ((p, p), (p, p), (0, 0)), mode=NUMPY_PAD[border], **pad)
        sy, sx = p - int(dy[i]), p - int(dx[i])
        ref = padded[sy:sy + h, sx:sx + w]  # out[y, x] = in[y - dy, x - dx], padded
        # integer shifts copy pixels (or the fill): bit-exact.
        np.testing.assert_array_equal(out[i], ref, err_msg=f"dx={dx[i]}, dy={dy[i]}")


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("name", CASES)
def test_translate_subpixel(name, border, interpolation):
    x = case(name)
    _, h, w, _ = x.shape
    dx = np.array([0.3, -2.6, 5.2, -0.35], np.float32)
    dy = np.array([0.3, 1.7, -3.15, 0.4], np.float32)
    out = run("translate", x, dx, dy, border=border, interpolation=interpolation, fill=FILL)
    for i in range(N):
        # scipy.ndimage.shift: out[y, x] = in[y - dy, x - dx].
        ref = ndi.shift(x[i].astype(np.float64), (float(dy[i]), float(dx[i]), 0.0),
                        order=ORDER[interpolation], mode=SCIPY_MODE[border], cval=FILL,
                        prefilter=False)
        msg = f"translate dx={dx[i]}, dy={dy[i]}, border={border}, interpolation={interpolation}"
        if interpolation == "bilinear":
            np.testing.assert_allclose(out[i], ref, rtol=0, atol=1e-4, err_msg=msg)  # bilinear: 1e-4
        else:
            # fractional parts are far from .5: nearest is an exact pixel copy.
            bad = np.any(out[i] != ref, axis=-1)
            assert not bad.any(), (f"{msg}: {bad.sum()} pixels differ, at (row, col) "
                                   f"{[tuple(r) for r in np.argwhere(bad)[:4]]}, max |error| "
                                   f"{np.abs(out[i] - ref).max():.4g}")


# ---- rotate ----

DEGREES = np.array([17.3, -41.7, 123.4, -95.2], np.float32)


def _rotation(deg):
    t = np.deg2rad(np.float64(deg))
    # output->input about the centre for a counter-clockwise turn on screen (y down).
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("name, path", cases_and_paths(CASES), indirect=["path"])
def test_rotate_against_scipy(name, border, interpolation, path):
    x = case(name)
    _, h, w, _ = x.shape
    out = run("rotate", x, DEGREES, border=border, interpolation=interpolation, fill=FILL)
    matrices = [topleft(_rotation(d), h, w) for d in DEGREES]
    check_warp(out, x, matrices, border, interpolation, FILL, f"rotate {DEGREES}")


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("name", ("astronaut", "coffee", "camera"))
def test_rotate_against_skimage(name, border):
    """skimage.transform.rotate: counter-clockwise, about ((W-1)/2, (H-1)/2)."""
    from skimage import transform
    x = case(name)
    out = run("rotate", x, DEGREES, border=border, interpolation="bilinear", fill=FILL)
    sk_mode = {"reflect": "symmetric", "edge": "edge", "constant": "constant"}[border]
    for i in range(N):
        ref = transform.rotate(x[i].astype(np.float64), float(DEGREES[i]), order=1, mode=sk_mode,
                               cval=FILL, clip=False, preserve_range=True)
        np.testing.assert_allclose(out[i], ref, rtol=0, atol=1e-4,  # bilinear warp: 1e-4
                                   err_msg=f"rotate {DEGREES[i]} deg, border={border}")


@pytest.mark.parametrize("name", SQUARE_CASES)
def test_rotate_quarter_turns_match_rot90(name):
    x = case(name)
    degrees = np.array([90.0, -90.0, 180.0, 270.0], np.float32)
    out = run("rotate", x, degrees, border="edge", interpolation="bilinear", fill=0.0)
    for i, k in enumerate((1, -1, 2, 3)):
        # cos(90 deg) is not exactly 0 in float32: a bilinear warp, atol 1e-4.
        np.testing.assert_allclose(out[i], np.rot90(x[i], k, axes=(0, 1)), rtol=0, atol=1e-4,
                                   err_msg=f"rotate {degrees[i]} vs np.rot90 k={k}")


# ---- scale, anisotropic_scale, shear, affine_transform ----

@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("name", ("coffee", "digits", "multispectral"))
def test_scale(name, border, interpolation):
    x = case(name)
    _, h, w, _ = x.shape
    factor = np.array([1.37, 0.71, 2.2, 0.43], np.float32)
    out = run("scale", x, factor, border=border, interpolation=interpolation, fill=FILL)
    # factor > 1 enlarges: in - c = (out - c) / factor.
    matrices = [topleft(np.eye(2) / np.float64(f), h, w) for f in factor]
    check_warp(out, x, matrices, border, interpolation, FILL, f"scale {factor}")


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("name", ("coffee", "camera"))
def test_anisotropic_scale(name, border, interpolation):
    x = case(name)
    _, h, w, _ = x.shape
    sx = np.array([1.23, 0.81, 1.0, 1.63], np.float32)
    sy = np.array([0.91, 1.37, 0.56, 1.0], np.float32)
    out = run("anisotropic_scale", x, sx, sy, border=border, interpolation=interpolation, fill=FILL)
    matrices = [topleft(np.diag([1 / np.float64(a), 1 / np.float64(b)]), h, w) for a, b in zip(sx, sy)]
    check_warp(out, x, matrices, border, interpolation, FILL, f"anisotropic_scale {sx} {sy}")


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("name", ("astronaut", "coffee"))
def test_shear(name, border, interpolation):
    x = case(name)
    _, h, w, _ = x.shape
    shx = np.array([0.0, 0.21, -0.17, 0.33], np.float32)
    shy = np.array([0.13, 0.0, 0.26, -0.19], np.float32)
    out = run("shear", x, shx, shy, border=border, interpolation=interpolation, fill=FILL)
    # forward map about the centre x' = x + shx * y, y' = y + shy * x; output->input = inverse.
    matrices = [topleft(np.linalg.inv(np.array([[1.0, a], [b, 1.0]], np.float64)), h, w)
                for a, b in zip(shx.astype(np.float64), shy.astype(np.float64))]
    check_warp(out, x, matrices, border, interpolation, FILL, f"shear {shx} {shy}")


def _random_matrices(h, w, seed=0):
    rng = np.random.default_rng(seed)
    lin = np.eye(2) + 0.3 * rng.standard_normal((N, 2, 2))
    m = np.tile(np.eye(3), (N, 1, 1))
    m[:, :2, :2] = lin
    m[:, :2, 2] = rng.standard_normal((N, 2)) * [w / 4, h / 4]
    return m.astype(np.float32)


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("name, path", cases_and_paths(("coffee", "camera", "multispectral")),
                         indirect=["path"])
def test_affine_transform_per_sample(name, border, interpolation, path):
    x = case(name)
    _, h, w, _ = x.shape
    m = _random_matrices(h, w)
    out = run("affine_transform", x, m, border=border, interpolation=interpolation, fill=FILL)
    check_warp(out, x, m.astype(np.float64), border, interpolation, FILL, "affine_transform")


def test_affine_transform_refuses_a_last_row_scipy_refuses_and_a_traced_one_is_ignored():
    """scipy.ndimage.affine_transform refuses a homogeneous matrix whose last row is not
    [0, 0, 1]; so does affine_transform for a concrete one. A traced one cannot be checked:
    its last row is taken as [0, 0, 1]."""
    x = case("coffee")
    good = _random_matrices(*x.shape[1:3], seed=2)[0]
    bad = good.copy()
    bad[2] = [0.5, 0.0, 2.0]
    with pytest.raises(ValueError, match="bottom row"):
        ndi.affine_transform(x[0, :, :, 0], bad)
    with pytest.raises(ValueError, match=r"matrix .* last row \[0, 0, 1\]"):
        A.affine_transform(x, bad)
    traced = jax.jit(functools.partial(A.affine_transform, border="edge"))(x, bad)
    np.testing.assert_array_equal(np.asarray(traced),
                                  np.asarray(A.affine_transform(x, good, border="edge")))


@pytest.mark.parametrize("border", BORDERS)
def test_affine_transform_shared_matrix(border):
    x = case("coffee")
    _, h, w, _ = x.shape
    m = _random_matrices(h, w, seed=1)[0]
    out = run("affine_transform", x, m, border=border, interpolation="bilinear", fill=FILL)
    check_warp(out, x, [m.astype(np.float64)] * N, border, "bilinear", FILL, "affine_transform (3, 3)")


# ---- crop_and_resize ----

BOXES_INSIDE = f32([[0.1, 0.2, 0.5, 0.6],  # (top, left, height, width), fractions
                    [0.0, 0.0, 0.7, 0.7],
                    [0.25, 0.05, 0.75, 0.4],
                    [0.33, 0.41, 0.3, 0.55]])


@pytest.mark.parametrize("name", CASES)
def test_crop_and_resize_against_pil(name):
    """Boxes inside the image and smaller than it (upsampling: PIL's bilinear does no
    antialiasing); PIL's 'F' resize with a box is the pixel-edge reference."""
    x = case(name)
    _, h, w, c = x.shape
    out = run("crop_and_resize", x, BOXES_INSIDE)
    for i in range(N):
        top, left, height, width = (float(v) for v in BOXES_INSIDE[i])
        box = (left * w, top * h, (left + width) * w, (top + height) * h)
        ref = []
        for ch in range(c):
            im = Image.fromarray(np.ascontiguousarray(x[i, :, :, ch]))
            assert im.mode == "F"
            ref.append(np.asarray(im.resize((w, h), Image.Resampling.BILINEAR, box=box), np.float64))
        # PIL keeps float32 intermediates; bilinear warp: atol 1e-4.
        np.testing.assert_allclose(out[i], np.stack(ref, -1), rtol=0, atol=1e-4,
                                   err_msg=f"crop_and_resize box={BOXES_INSIDE[i]}")


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("name, path", cases_and_paths(("coffee", "digits")), indirect=["path"])
def test_crop_and_resize_against_scipy(name, border, interpolation, path):
    """Boxes reaching outside the image, and one larger than it, with every border."""
    x = case(name)
    _, h, w, _ = x.shape
    boxes = f32([[-0.1, 0.2, 0.6, 0.9], [0.5, -0.2, 0.7, 0.5],
                 [-0.13, -0.09, 1.21, 1.33], [0.33, 0.41, 0.3, 0.55]])
    out = run("crop_and_resize", x, boxes, border=border, interpolation=interpolation, fill=FILL)
    matrices = []
    for top, left, height, width in boxes.astype(np.float64):
        # pixel-edge convention: output pixel centre x + 0.5 -> input edge coordinate
        # left * W + width * (x + 0.5) -> input centre coordinate minus 0.5.
        matrices.append(np.array([[width, 0, left * w + width / 2 - 0.5],
                                  [0, height, top * h + height / 2 - 0.5], [0, 0, 1]]))
    check_warp(out, x, matrices, border, interpolation, FILL, f"crop_and_resize {boxes}")


# ---- cutout ----

@pytest.mark.parametrize("name", CASES)
def test_cutout(name):
    x = case(name)
    _, h, w, _ = x.shape
    cy, cx = f32([0.503, 0.21, 0.77, 0.4]), f32([0.5, 0.93, 0.31, 0.61])
    hh, ww = f32([0.31, 0.55, 0.13, 0.0]), f32([0.27, 0.4, 0.61, 1.5])
    out = run("cutout", x, cy, cx, hh, ww, fill=0.25)
    ys = (np.arange(h) + 0.5) / h
    xs = (np.arange(w) + 0.5) / w
    for i in range(N):
        dy = np.abs(ys - np.float64(cy[i])) - np.float64(hh[i]) / 2
        dx = np.abs(xs - np.float64(cx[i])) - np.float64(ww[i]) / 2
        assert np.abs(dy).min() > 1e-5 and np.abs(dx).min() > 1e-5, "boundary tie in test parameters"
        inside = (dy < 0)[:, None] & (dx < 0)[None, :]  # membership by pixel centre, strict
        ref = np.where(inside[..., None], 0.25, x[i])
        np.testing.assert_array_equal(out[i], ref, err_msg=f"cutout sample {i}")  # exact copy/fill


# ---- colour ----

def _luma(x):
    return np.mean(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("name", CASES)
def test_adjust_brightness(name):
    x = case(name).astype(np.float64)
    delta = f32([0.0, 0.1, -0.37, 0.8])
    out = run("adjust_brightness", f32(x), delta)
    ref = x + delta.astype(np.float64)[:, None, None, None]
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)  # float32 add: atol 1e-5


@pytest.mark.parametrize("name", CASES)
def test_adjust_contrast(name):
    x = case(name).astype(np.float64)
    factor = f32([1.0, 0.5, 1.6, 0.0])
    out = run("adjust_contrast", f32(x), factor)
    mean = np.mean(x, axis=(1, 2, 3), keepdims=True)  # over pixels and channels
    ref = (x - mean) * factor.astype(np.float64)[:, None, None, None] + mean
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)  # float32 mean + affine: atol 1e-5
    about_zero = run("adjust_contrast", f32(x), factor, about="zero")  # StyleGAN2-ADA's
    ref = x * factor.astype(np.float64)[:, None, None, None]
    np.testing.assert_allclose(about_zero, ref, rtol=0, atol=1e-6)  # one float32 product


@pytest.mark.parametrize("name", CASES)
def test_adjust_saturation(name):
    x = case(name).astype(np.float64)
    factor = f32([1.0, 0.0, 0.4, 2.3])
    out = run("adjust_saturation", f32(x), factor)
    luma = _luma(x)
    ref = luma + (x - luma) * factor.astype(np.float64)[:, None, None, None]
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)  # float32 colour matrix: atol 1e-5


@pytest.mark.parametrize("name", RGB_CASES)
def test_adjust_hue(name):
    x = case(name).astype(np.float64)
    degrees = f32([0.0, 30.0, -75.0, 200.0])
    out = run("adjust_hue", f32(x), degrees)
    for i in range(N):
        axis = np.ones(3) / np.sqrt(3.0)
        rot = Rotation.from_rotvec(np.deg2rad(np.float64(degrees[i])) * axis).as_matrix()
        ref = x[i] @ rot.T  # per pixel: rot @ rgb
        # float32 colour matrix: atol 1e-5.
        np.testing.assert_allclose(out[i], ref, rtol=0, atol=1e-5, err_msg=f"hue {degrees[i]} deg")


def test_adjust_hue_direction():
    """Positive degrees turn right-handedly about +(1, 1, 1) (Rodrigues): red -> green -> blue,
    i.e. the HSV hue increases."""
    from skimage import color
    red, green, blue = f32([1, -1, -1]), f32([-1, 1, -1]), f32([-1, -1, 1])
    pixels = np.broadcast_to(np.stack([red, green, blue])[:, None, None, :], (3, 2, 2, 3))
    out = run("adjust_hue", f32(pixels), f32([120.0, 120.0, 120.0]))
    np.testing.assert_allclose(out[:, 0, 0], np.stack([green, blue, red]), atol=1e-5)  # atol 1e-5
    orange = np.broadcast_to(f32([0.8, 0.1, -0.6]), (3, 2, 2, 3))
    turned = run("adjust_hue", f32(orange), f32([10.0, 0.0, -10.0]))
    hue = color.rgb2hsv((turned[:, 0, 0] + 1) / 2)[:, 0]
    assert hue[0] > hue[1] > hue[2], hue


@pytest.mark.parametrize("name", ("camera", "digits", "multispectral"))
def test_adjust_hue_is_identity_unless_rgb(name):
    x = case(name)
    out = run("adjust_hue", x, f32([0.0, 30.0, -75.0, 200.0]))
    np.testing.assert_array_equal(out, x)  # identity colour matrix: bit-exact


@pytest.mark.parametrize("name", CASES)
def test_grayscale(name):
    x = case(name).astype(np.float64)
    mask = np.array([True, False, True, False])
    out = run("grayscale", f32(x), mask)
    ref = np.where(mask[:, None, None, None], np.broadcast_to(_luma(x), x.shape), x)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)  # channel mean in float32: atol 1e-5


@pytest.mark.parametrize("name", CASES)
def test_luma_flip(name):
    x = case(name).astype(np.float64)
    mask = np.array([False, True, True, False])
    out = run("luma_flip", f32(x), mask)
    ref = np.where(mask[:, None, None, None], x - 2 * _luma(x), x)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)  # float32 colour matrix: atol 1e-5


@pytest.mark.parametrize("name", CASES)
def test_adjust_gamma(name):
    x = case(name).astype(np.float64)
    gamma = f32([1.0, 0.5, 2.2, 1.7])
    out = run("adjust_gamma", f32(x), gamma)
    ref = ((x + 1) / 2) ** gamma.astype(np.float64)[:, None, None, None] * 2 - 1
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)  # float32 exp/log: atol 1e-5


def test_adjust_gamma_outside_the_range_is_odd_and_unclipped():
    x = f32([-1.4, -1.0, -0.999, 0.0, 1.0, 1.3]).reshape(1, 2, 3, 1)
    x = np.concatenate([x, x, x])
    gamma = f32([0.5, 1.0, 2.5])
    out = run("adjust_gamma", x, gamma)
    u = (x.astype(np.float64) + 1) / 2
    ref = np.sign(u) * np.abs(u) ** gamma.astype(np.float64)[:, None, None, None] * 2 - 1
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)  # documented odd extension, atol 1e-5


# ---- noise and blur ----

@pytest.mark.parametrize("name", CASES)
def test_gaussian_noise(name):
    x = case(name)
    noise = np.random.default_rng(3).standard_normal(x.shape).astype(np.float32)
    std = f32([0.0, 0.1, 0.5, 1.3])
    out = run("gaussian_noise", x, noise, std)
    ref = x.astype(np.float64) + std.astype(np.float64)[:, None, None, None] * noise
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)  # float32 multiply-add: atol 1e-5


@pytest.mark.parametrize("name, radius", [("astronaut", 1), ("astronaut", 6), ("coffee", 3),
                                          ("camera", 5), ("digits", 3), ("multispectral", 2)])
def test_gaussian_blur(name, radius):
    x = case(name)
    sigma = f32([0.0, 0.6, 1.3, 2.7])
    out = run("gaussian_blur", x, sigma, radius=radius)
    for i in range(N):
        s = float(sigma[i])
        img = x[i].astype(np.float64)
        ref = img if s == 0 else ndi.gaussian_filter(img, sigma=(s, s, 0), mode="reflect",
                                                     truncate=radius / s)
        # 2 x (2 * radius + 1) float32 taps: atol 1e-5.
        np.testing.assert_allclose(out[i], ref, rtol=0, atol=1e-5,
                                   err_msg=f"gaussian_blur sigma={s}, radius={radius}")


def test_gaussian_blur_radius_larger_than_the_image():
    x = case("digits")  # 8 x 8, kernel of 2 * 11 + 1 taps: several reflections
    sigma = f32([0.0, 1.1, 3.0, 6.0])
    out = run("gaussian_blur", x, sigma, radius=11)
    for i in range(N):
        s = float(sigma[i])
        img = x[i].astype(np.float64)
        ref = img if s == 0 else ndi.gaussian_filter(img, sigma=(s, s, 0), mode="reflect",
                                                     truncate=11 / s)
        np.testing.assert_allclose(out[i], ref, rtol=0, atol=1e-5,  # float32 taps: atol 1e-5
                                   err_msg=f"gaussian_blur sigma={s}, radius=11")


def test_gaussian_blur_radius_is_capped_at_twice_the_image_size():
    """gaussian_blur accepts radius up to 2 * max(H, W) (the longest kernel); the random blur
    op caps its kernel radius ceil(3 * max_sigma) there, and matches scipy with that truncate."""
    x = case("digits")  # 8 x 8: the cap is 16
    sigma = f32([0.0, 2.0, 40.0, 1e6])
    with pytest.raises(ValueError, match="radius"):
        A.gaussian_blur(x, sigma, radius=17)
    capped = _specs.blur(max_sigma=1e6).build({"sigma": jnp.asarray(sigma)}, jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(capped),
                                  np.asarray(A.gaussian_blur(x, sigma, radius=16)))
    for i in range(1, N):
        s = float(sigma[i])
        ref = ndi.gaussian_filter(x[i].astype(np.float64), sigma=(s, s, 0), mode="reflect",
                                  truncate=16 / s)
        np.testing.assert_allclose(np.asarray(capped)[i], ref, rtol=0, atol=1e-5,  # float32 taps
                                   err_msg=f"capped blur sigma={s}")


# ---- StyleGAN2-ADA's band filter (the 'filter' pipe) ----

def test_ada_filter_bank_splits_unity_into_its_documented_bands():
    bank = _filters.ada_filter_bank()
    bands, k = bank.shape
    assert bands == 4 and k % 2 == 1
    impulse = np.eye(1, k, k // 2)[0]
    # The four bands sum to a unit impulse. The published 17-digit sym2 taps (pywt, which
    # StyleGAN2-ADA copies) are orthonormal to ~1e-13; three cascaded stages: atol 1e-10.
    np.testing.assert_allclose(bank.sum(axis=0), impulse, rtol=0, atol=1e-10)
    np.testing.assert_allclose(bank, bank[:, ::-1], rtol=0, atol=1e-15)  # symmetric: zero phase
    # Zero-phase responses H_b(w) = sum_j bank[b, j] cos(w (j - k // 2)), float64.
    freqs = np.linspace(0.0, np.pi, 2049)
    response = bank @ np.cos(np.outer(np.arange(k) - k // 2, freqs))
    np.testing.assert_allclose(response.sum(axis=0), 1.0, atol=1e-10)  # unity at every w
    np.testing.assert_allclose(response[:, 0], [1, 0, 0, 0], atol=1e-10)  # DC: band 0 only
    np.testing.assert_allclose(response[:, -1], [0, 0, 0, 1], atol=1e-10)  # Nyquist: band 3
    # Documented bands [0, pi/8], [pi/8, pi/4], [pi/4, pi/2], [pi/2, pi]: each filter's
    # energy lies mostly (more than half of it) in its own band.
    edges = [0.0, np.pi / 8, np.pi / 4, np.pi / 2, np.pi]
    for b in range(4):
        inside = (freqs >= edges[b]) & (freqs <= edges[b + 1])
        energy = response[b] ** 2
        assert energy[inside].sum() > 0.5 * energy.sum(), (b, energy[inside].sum() / energy.sum())


def test_ada_filter_with_unit_gains_is_the_identity():
    x = case("coffee")
    out = np.asarray(_pixel.ada_filter(jnp.asarray(x), jnp.ones((N, 4))), np.float64)
    taps = np.asarray(_filters.ada_filter_taps(jnp.ones((1, 4))), np.float64)[0]
    impulse = np.eye(1, taps.size, taps.size // 2)[0]
    # float32 taps of the unit-gain filter differ from the impulse by their rounding
    # (l1 norm d); two passes move a pixel by at most ~2 d max|x|, plus a few float32 ulps.
    d = np.abs(taps - impulse).sum()
    assert d < 1e-5  # the float32 taps are the impulse to rounding
    tol = 2 * d * np.abs(x).max() + 4 * 2.0 ** -24
    np.testing.assert_allclose(out, x, rtol=0, atol=tol)


def _scipy_separable(image, taps):
    """float64 reference: correlate1d along rows then columns, scipy's 'reflect' (half-sample
    symmetric) border, as separable_filter documents; symmetric taps: correlation = convolution."""
    rows = ndi.correlate1d(np.asarray(image, np.float64), taps, axis=0, mode="reflect")
    return ndi.correlate1d(rows, taps, axis=1, mode="reflect")


@pytest.mark.parametrize("name", ("coffee", "digits"))
def test_ada_filter_pipe_against_scipy(name):
    """The 'ada:filter' preset at p = 0.8 (most samples filtered) against scipy.ndimage with
    the taps of the gains it drew (recovered from the same key). digits (8 x 8) is smaller than
    the 43-tap kernel's radius, so its border reflects several times."""
    x = case(name)
    pipe = A.ada(pipes="filter")
    key, p = jax.random.key(21), jnp.float32(0.8)
    out = np.asarray(pipe(key, x, p), np.float64)
    (params, applied), = _specs.sample(pipe.ops, key, x.shape, p)
    gains = np.asarray(params["gains"], np.float64)
    assert np.asarray(applied).sum() >= N - 1, "parameters that filter too few samples"
    assert np.abs(gains - 1.0).max() > 0.2, "parameters too close to the identity"
    bank = _filters.ada_filter_bank()
    for i in range(N):
        if not applied[i]:
            np.testing.assert_array_equal(out[i], x[i])  # not applied: the input, bit for bit
            continue
        taps = gains[i] @ bank
        ref = _scipy_separable(x[i], taps)
        # Two float32 passes of K = 43 taps with |taps|_1 <= 3 on |x| <= 1: rounding of order
        # sqrt(K) 2**-24 |taps|_1^2 ~ 4e-6 (errors ~5e-7 seen): atol 1e-5, as the Gaussian blur.
        assert np.abs(taps).sum() <= 3
        np.testing.assert_allclose(out[i], ref, rtol=0, atol=1e-5, err_msg=f"sample {i}")


# ---- bfloat16 ----

def _bf16_calls(h, w):
    p4 = f32([0.3, -0.7, 1.1, 0.0])
    noise = np.random.default_rng(5).standard_normal((N, h, w, 3)).astype(np.float32)
    return {
        "flip_left_right": (np.array([True, False, True, False]),),
        "flip_up_down": (np.array([False, True, True, False]),),
        "rot90": (np.array([1, 2, 3, 0], np.int32),),
        "translate": (f32([0.3, -2.6, 5.2, 3.0]), f32([0.3, 1.7, -3.15, 0.0])),
        "rotate": (DEGREES,),
        "scale": (f32([1.37, 0.71, 2.2, 1.0]),),
        "anisotropic_scale": (f32([1.23, 0.81, 1.0, 1.6]), f32([0.91, 1.37, 0.56, 1.0])),
        "shear": (f32([0.0, 0.21, -0.17, 0.33]), f32([0.13, 0.0, 0.26, -0.19])),
        "affine_transform": (_random_matrices(h, w),),
        "crop_and_resize": (BOXES_INSIDE,),
        "cutout": (f32([0.5, 0.21, 0.77, 0.4]), f32([0.5, 0.93, 0.31, 0.61]),
                   f32([0.31, 0.55, 0.13, 0.0]), f32([0.27, 0.4, 0.61, 1.5])),
        "adjust_brightness": (p4 * 0.5,),
        "adjust_contrast": (f32([1.0, 0.5, 1.6, 0.0]),),
        "adjust_saturation": (f32([1.0, 0.0, 0.4, 2.3]),),
        "adjust_hue": (f32([0.0, 30.0, -75.0, 200.0]),),
        "grayscale": (np.array([True, False, True, False]),),
        "luma_flip": (np.array([False, True, True, False]),),
        "adjust_gamma": (f32([1.0, 0.5, 2.2, 1.7]),),
        "gaussian_noise": (noise, f32([0.0, 0.1, 0.5, 1.3])),
        "gaussian_blur": (f32([0.0, 0.6, 1.3, 2.7]),),
    }


BF16_OPS = tuple(_bf16_calls(2, 2))


@pytest.mark.parametrize("op_name", BF16_OPS)
def test_bfloat16_matches_float32_within_rounding(op_name):
    """bfloat16 in, bfloat16 out, equal to the float32 op on the same (bf16-representable)
    values rounded once to bfloat16."""
    x = case("astronaut")
    _, h, w, _ = x.shape
    args = _bf16_calls(h, w)[op_name]
    static = {"radius": 4} if op_name == "gaussian_blur" else {}
    x_bf16 = jnp.asarray(x, jnp.bfloat16)
    out = _jit(op_name, tuple(static.items()))(x_bf16, *args)
    assert out.dtype == jnp.bfloat16
    ref = run(op_name, np.asarray(x_bf16.astype(jnp.float32)), *args, **static)
    # round to nearest bfloat16 (8 significant bits): |error| <= 2**-8 |value|, plus 1e-6 for
    # float32 differences between the two compiled programs.
    np.testing.assert_allclose(np.asarray(out.astype(jnp.float32), np.float64), ref,
                               rtol=2.0 ** -8, atol=1e-6, err_msg=op_name)
