"""Properties of ganaug_jax.augment: API shape, randomness, p, parameter laws, jit/vmap/grad,
fusion, sharding, bad input. Per-op numerical references live in test_augment_reference.py."""

import contextlib
import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from ganaug_jax import augment as A
from ganaug_jax.augment import _hash, _specs

RANDOM_TWINS = {name: getattr(A, name) for name in A.__all__ if name.startswith("random_")}
DETERMINISTIC = ["flip_left_right", "flip_up_down", "rot90", "translate", "rotate", "scale",
                 "anisotropic_scale", "shear", "affine_transform", "crop_and_resize", "cutout",
                 "adjust_brightness", "adjust_contrast", "adjust_saturation", "adjust_hue",
                 "adjust_gamma", "grayscale", "luma_flip", "gaussian_noise", "gaussian_blur"]
PRESETS = ["diffaugment:color", "diffaugment:translation", "diffaugment:cutout",
           "diffaugment:color,translation,cutout", "ada:blit", "ada:geom", "ada:color",
           "ada:filter", "ada:noise", "ada:cutout", "ada:bgc", "ada:bgcfnc"]
# Ops whose draws are never the identity, so "applied" is visible in every sample.
ALWAYS_VISIBLE = ["random_flip_left_right", "random_flip_up_down", "random_rot90", "random_rotate",
                  "random_scale", "random_anisotropic_scale", "random_shear", "random_brightness",
                  "random_contrast", "random_saturation", "random_hue", "random_gamma",
                  "random_grayscale", "random_luma_flip", "random_gaussian_noise",
                  "random_resized_crop", "random_cutout"]


def _changed(a, b):
    """Per-sample: did anything change? (N,) bool."""
    return np.any(np.asarray(a) != np.asarray(b), axis=(1, 2, 3))


# ---- public API shape ----

def test_every_random_function_takes_key_first_and_keyword_only_defaults():
    assert len(RANDOM_TWINS) == 19
    for name, fn in RANDOM_TWINS.items():
        params = list(inspect.signature(fn).parameters.values())
        assert params[0].name == "key", name
        for param in params:
            if param.default is not inspect.Parameter.empty:
                assert param.kind == inspect.Parameter.KEYWORD_ONLY, (name, param.name)


def test_every_public_function_has_keyword_only_defaults():
    functions = {name: getattr(A, name) for name in A.__all__
                 if inspect.isfunction(getattr(A, name))}
    assert len(functions) == 48  # a new public function must be checked here too
    for name, fn in functions.items():
        for param in inspect.signature(fn).parameters.values():
            if param.default is not inspect.Parameter.empty:
                assert param.kind == inspect.Parameter.KEYWORD_ONLY, (name, param.name)


def test_deterministic_ops_have_keyword_only_defaults_and_a_random_twin():
    for name in DETERMINISTIC:
        fn = getattr(A, name)
        for param in inspect.signature(fn).parameters.values():
            if param.default is not inspect.Parameter.empty:
                assert param.kind == inspect.Parameter.KEYWORD_ONLY, (name, param.name)
    twins = {name[len("random_"):] for name in RANDOM_TWINS}
    for name in DETERMINISTIC:
        base = name.replace("adjust_", "")
        if name in ("affine_transform",):
            continue  # a general matrix has no single natural distribution; pipelines cover it
        expected = {"crop_and_resize": "resized_crop"}.get(name, base)
        assert expected in twins, name


def test_pipelines_take_key_first():
    pipe = A.preset("ada:bgc")
    assert list(inspect.signature(pipe).parameters)[:2] == ["key", "images"]


# ---- randomness and p ----

@pytest.mark.parametrize("name", sorted(RANDOM_TWINS))
def test_p_zero_is_identity_bit_for_bit(name, rgb_batch):
    out = RANDOM_TWINS[name](jax.random.key(0), rgb_batch, p=0.0)
    np.testing.assert_array_equal(np.asarray(out), rgb_batch)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_p_zero_is_identity_and_p_one_changes(name, rgb_batch):
    pipe = jax.jit(A.preset(name))
    np.testing.assert_array_equal(np.asarray(pipe(jax.random.key(0), rgb_batch, 0.0)), rgb_batch)
    assert _changed(pipe(jax.random.key(0), rgb_batch, 1.0), rgb_batch).any()


@pytest.mark.parametrize("fast", [True, False])
def test_samples_no_op_is_applied_to_come_back_bit_for_bit(fast, rgb_batch):
    # Every kind of run (geometric + colour in one warp, colour alone, pixel ops), at a p
    # where some samples get no op and the others get some.
    ops = [A.op("gamma"), A.op("rotate"), A.op("translate"), A.op("contrast"), A.op("hue"),
           A.op("cutout"), A.op("noise"), A.op("blur"), A.op("ada_filter")]
    images = np.concatenate([rgb_batch] * 8)
    key, p = jax.random.key(11), jnp.float32(0.15)
    with contextlib.nullcontext() if fast else A.without_fast_kernels():
        out = np.asarray(jax.jit(A.make_pipeline(ops))(key, images, p))
    applied = np.any([np.asarray(a) for _, a in _specs.sample(ops, key, images.shape, p)], 0)
    assert 0 < applied.sum() < len(applied), applied
    np.testing.assert_array_equal(out[~applied], images[~applied])
    assert _changed(out[applied], images[applied]).all()


@pytest.mark.parametrize("name", ALWAYS_VISIBLE)
def test_p_one_always_applies(name, rgb_batch):
    out = RANDOM_TWINS[name](jax.random.key(1), rgb_batch, p=1.0)
    assert _changed(out, rgb_batch).all(), name


def test_applied_fraction_is_close_to_p():
    images = jax.random.uniform(jax.random.key(0), (4000, 2, 2, 1), minval=-1, maxval=1)
    for p in (0.1, 0.5, 0.8):
        out = A.random_brightness(jax.random.key(7), images, p=p)
        fraction = _changed(out, images).mean()
        sigma = np.sqrt(p * (1 - p) / 4000)
        assert abs(fraction - p) < 4 * sigma, (p, fraction)


def test_same_key_same_output_and_different_keys_differ(rgb_batch):
    pipe = jax.jit(A.preset("ada:bgc"))
    a = np.asarray(pipe(jax.random.key(3), rgb_batch, 1.0))
    b = np.asarray(pipe(jax.random.key(3), rgb_batch, 1.0))
    c = np.asarray(pipe(jax.random.key(4), rgb_batch, 1.0))
    np.testing.assert_array_equal(a, b)
    assert _changed(a, c).all()


def test_samples_of_a_batch_get_different_parameters(rgb_batch):
    same = np.repeat(rgb_batch[:1], 8, axis=0)
    out = np.asarray(A.random_rotate(jax.random.key(5), same, max_degrees=30.0))
    flat = out.reshape(8, -1)
    distances = np.abs(flat[:, None] - flat[None]).max(-1)
    assert (distances + np.eye(8) > 1e-3).all()


def test_hash_uniforms_are_uniform_and_key_dependent():
    u = np.asarray(_hash.uniform(jax.random.key(0), (20000,)))
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    assert 0.0 <= u.min() and u.max() < 1.0
    # Adjacent keys from split are uncorrelated.
    k1, k2 = jax.random.split(jax.random.key(0))
    u1, u2 = (np.asarray(_hash.uniform(k, (20000,))) for k in (k1, k2))
    assert abs(np.corrcoef(u1, u2)[0, 1]) < 0.03
    # Neighbouring counters are uncorrelated too.
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.03


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="an XLA:CPU fusion property")
def test_hash_is_computed_once_per_pipeline_call_on_cpu():
    """XLA:CPU would fuse the hash into each consumer and recompute it per matrix element; the
    compiled ada:bgc pipeline holds the mixer's multiplier in exactly one fused computation.
    The draws are those of the unconditioned hash, bit for bit (the conditional is identity)."""
    pipe = A.preset("ada:bgc")
    images = jnp.zeros((16, 8, 8, 3), jnp.float32)
    key0, p = jax.random.key(0), jnp.float32(0.5)
    lowered = [jax.jit(pipe).lower(key0, images, p),  # p traced, as ADA passes it
               jax.jit(lambda k, x: pipe(k, x, 0.5)).lower(key0, images)]  # p a constant
    for text in (low.compile().as_text() for low in lowered):
        blocks = text.split("\n\n")
        assert sum(str(0x7FEB352D) in b for b in blocks) == 1, "hash fused into several kernels"
    key = jax.random.key(3)
    words = _hash.key_words(key)
    x = jnp.arange(12, dtype=jnp.uint32) * np.uint32(0x9E3779B9)
    for w in words:
        x = _hash._mix(x ^ w)
    x = _hash._mix(x + np.uint32(0x6A09E667))
    expected = np.asarray(x >> 8).astype(np.float32) * np.float32(2.0 ** -24)
    for run in (_hash.uniform, jax.jit(_hash.uniform, static_argnums=1)):
        np.testing.assert_array_equal(np.asarray(run(key, (3, 4))).ravel(), expected)


def test_changing_p_does_not_recompile(rgb_batch):
    traces = []
    pipe = A.preset("ada:bgc")

    @jax.jit
    def run(key, images, p):
        traces.append(1)
        return pipe(key, images, p)

    for p in (0.0, 0.3, 0.9):
        run(jax.random.key(0), rgb_batch, jnp.float32(p))
    assert len(traces) == 1


# ---- parameter laws and per-op probabilities ----

N_DRAWS = 4000  # samples per law: a binomial fraction to +-4 sigma <= 0.032, KS at p > 1e-3


def _draws(pipe, shape, p, seed=0):
    """[(op, params as float64 NumPy, applied (N,) bool)] for one batch of `shape`."""
    # jitted: eager dispatch would compile each of the draws' small ops for this shape
    sample = jax.jit(lambda key, p: _specs.sample(pipe.ops, key, shape, p))
    drawn = sample(jax.random.key(seed), jnp.float32(p))
    return [(o, {k: np.asarray(v, np.float64) for k, v in q.items()}, np.asarray(a))
            for (q, a), o in zip(drawn, pipe.ops)]


def _check_fraction(applied, probability, what):
    """The applied fraction of N independent draws is binomial: within 4 sigma of its mean."""
    sigma = np.sqrt(probability * (1 - probability) / applied.size)
    assert abs(applied.mean() - probability) < 4 * sigma, (what, applied.mean(), probability)


def _check_law(values, cdf, what):
    """Kolmogorov-Smirnov against a continuous law; fixed keys, so p > 1e-3 is a fixed margin."""
    assert values.size > 500, (what, values.size)
    pvalue = stats.kstest(values, cdf).pvalue
    assert pvalue > 1e-3, (what, pvalue)


def _check_discrete(values, probabilities, what):
    """Chi-square goodness of fit of integer values to {value: probability}, and no others."""
    support = sorted(probabilities)
    assert set(np.unique(values).astype(int)) <= set(support), (what, np.unique(values))
    counts = np.array([(values == k).sum() for k in support])
    expected = np.array([probabilities[k] for k in support]) * values.size
    assert np.isclose(expected.sum(), values.size)
    assert stats.chisquare(counts, expected).pvalue > 1e-3, (what, counts, expected)


def _rounded_uniform_law(half_width):
    """{k: P(round(U(-a, a)) = k)}, a = half_width: the share of [-a, a] within k +- 1/2."""
    top = int(np.floor(half_width + 0.5))
    return {k: (min(k + 0.5, half_width) - max(k - 0.5, -half_width)) / (2 * half_width)
            for k in range(-top, top + 1)}


def test_ada_bgc_per_op_probabilities_and_parameter_laws():
    """StyleGAN2-ADA's mapping of p to each op (the presets' documentation): p / 2 for xflip and
    luma flip, 3p / 4 for rot90 (k uniform in {1, 2, 3}), 1 - sqrt(1 - p) for each rotation (so
    that some rotation happens with probability p), p for the others; and each parameter's law
    among the samples the op is applied to; identity parameters elsewhere."""
    p, h, w = 0.6, 24, 40
    draws = _draws(A.ada(pipes="bgc"), (N_DRAWS, h, w, 3), p)
    assert [o.name for o, _, _ in draws] == [
        "flip_left_right", "rot90", "translate", "scale", "rotate", "anisotropic_scale", "rotate",
        "translate", "brightness", "contrast", "luma_flip", "hue", "saturation"]
    p_rotation = 1 - np.sqrt(1 - p)
    normal, uniform = stats.norm.cdf, stats.uniform(-1, 2).cdf  # uniform on [-1, 1]
    expected = [p / 2, 3 * p / 4, p, p, p_rotation, p, p_rotation, p, p, p, p / 2, p, p]
    for (o, params, applied), probability in zip(draws, expected):
        _check_fraction(applied, probability, o.name)
        for name, value in o.identity.items():  # not applied: the op's identity, exactly
            np.testing.assert_array_equal(params[name][~applied], float(value), err_msg=o.name)
    (_, flip, a_flip), (_, rot90, a_rot90), (_, xint, a_xint), (_, iso, a_iso), \
        (_, rot1, a_rot1), (_, aniso, a_aniso), (_, rot2, a_rot2), (_, xfrac, a_xfrac), \
        (_, bright, a_bright), (_, contrast, a_contrast), (_, luma, a_luma), (_, hue, a_hue), \
        (_, sat, a_sat) = draws
    assert flip["mask"][a_flip].all() and luma["mask"][a_luma].all()  # applied = flipped
    _check_discrete(rot90["k"][a_rot90], {1: 1 / 3, 2: 1 / 3, 3: 1 / 3}, "rot90 k")
    # blit's integer translation round(U(-1/8, 1/8) * size), per axis with its own size.
    _check_discrete(xint["dx"][a_xint], _rounded_uniform_law(w / 8), "xint dx")
    _check_discrete(xint["dy"][a_xint], _rounded_uniform_law(h / 8), "xint dy")
    _check_law(np.log2(iso["factor"][a_iso]) / 0.2, normal, "scale: 2**N(0, 0.2)")
    _check_law(np.log2(aniso["factor"][a_aniso]) / 0.2, normal, "aniso: 2**N(0, 0.2)")
    for rotation, applied in ((rot1, a_rot1), (rot2, a_rot2)):
        _check_law(rotation["degrees"][applied] / 180, uniform, "rotation U(-180, 180)")
    _check_fraction(a_rot1 | a_rot2, p, "some rotation")  # and the two are independent
    _check_fraction(a_flip & a_rot90, p / 2 * 3 * p / 4, "xflip and rot90")
    _check_law(xfrac["dx"][a_xfrac] / (w / 8), normal, "xfrac dx: N(0, 1/8) * W")
    _check_law(xfrac["dy"][a_xfrac] / (h / 8), normal, "xfrac dy: N(0, 1/8) * H")
    both = a_xfrac
    assert abs(np.corrcoef(xfrac["dx"][both], xfrac["dy"][both])[0, 1]) < 4 / np.sqrt(both.sum())
    _check_law(bright["delta"][a_bright] / 0.2, normal, "brightness N(0, 0.2)")
    _check_law(np.log2(contrast["factor"][a_contrast]) / 0.5, normal, "contrast 2**N(0, 0.5)")
    _check_law(hue["degrees"][a_hue] / 180, uniform, "hue U(-180, 180)")
    _check_law(np.log2(sat["factor"][a_sat]), normal, "saturation 2**N(0, 1)")


def test_ada_filter_noise_cutout_probabilities_and_parameter_laws():
    """'filter': each of the 4 bands is drawn with probability p, gain 2**N(0, 1); the gains
    (N, 4) are the band draws t up to a common factor (the renormalisations), so
    log2(g_0 / g_1) = log2 t_0 - log2 t_1 is 0 when neither band was drawn ((1 - p)**2), N(0, 1)
    when one was, N(0, 2) when both were. 'noise': std |N(0, 0.1)| and a standard normal field.
    'cutout': a half-size box at a U(0, 1)**2 centre."""
    p, h, w = 0.6, 4, 6
    draws = _draws(A.ada(pipes="filter,noise,cutout"), (N_DRAWS, h, w, 1), p, seed=1)
    assert [o.name for o, _, _ in draws] == ["ada_filter", "noise", "cutout"]
    (_, filt, a_filt), (_, noise, a_noise), (_, cut, a_cut) = draws
    _check_fraction(a_filt, 1 - (1 - p) ** 4, "filter: some band")
    ratio = np.log2(filt["gains"][:, 0] / filt["gains"][:, 1])
    _check_fraction(ratio == 0, (1 - p) ** 2, "filter: neither band 0 nor 1")
    one, two = 2 * p * (1 - p), p ** 2
    _check_law(ratio[ratio != 0], lambda x: (one * stats.norm.cdf(x)
                                             + two * stats.norm.cdf(x / np.sqrt(2))) / (one + two),
               "filter: log2 gain ratio")
    _check_fraction(a_noise, p, "noise")
    np.testing.assert_array_equal(noise["std"][~a_noise], 0.0)
    _check_law(noise["std"][a_noise] / 0.1, stats.halfnorm.cdf, "noise std |N(0, 0.1)|")
    _check_law(noise["noise"][:200].ravel(), stats.norm.cdf, "noise field N(0, 1)")
    _check_fraction(a_cut, p, "cutout")
    np.testing.assert_array_equal(cut["height"][a_cut], 0.5)
    np.testing.assert_array_equal(cut["width"][a_cut], 0.5)
    np.testing.assert_array_equal(cut["height"][~a_cut], 0.0)  # no box where not applied
    for axis in ("center_y", "center_x"):
        _check_law(cut[axis][a_cut], stats.uniform.cdf, f"cutout {axis} U(0, 1)")


def test_diffaugment_parameter_laws():
    """DiffAugment (every op on every sample at p = 1): brightness U(-0.5, 0.5), saturation
    U(0, 2), contrast U(0.5, 1.5); translation whole pixels uniform in [-s, s] per axis,
    s = int(size / 8 + 0.5); cutout a box of int(size / 2 + 0.5) pixels per axis."""
    h, w = 24, 40
    draws = _draws(A.diffaugment(), (N_DRAWS, h, w, 3), 1.0, seed=2)
    assert [o.name for o, _, _ in draws] == ["brightness", "saturation", "contrast", "translate",
                                             "cutout"]
    assert all(applied.all() for _, _, applied in draws)
    (_, bright, _), (_, sat, _), (_, contrast, _), (_, shift, _), (_, cut, _) = draws
    _check_law(bright["delta"], stats.uniform(-0.5, 1).cdf, "brightness U(-0.5, 0.5)")
    _check_law(sat["factor"], stats.uniform(0, 2).cdf, "saturation U(0, 2)")
    _check_law(contrast["factor"], stats.uniform(0.5, 1).cdf, "contrast U(0.5, 1.5)")
    for axis, size in (("dx", w), ("dy", h)):
        s = int(size / 8 + 0.5)
        _check_discrete(shift[axis], {k: 1 / (2 * s + 1) for k in range(-s, s + 1)}, axis)
    for extent, size in (("height", h), ("width", w)):
        np.testing.assert_array_equal(cut[extent] * size, int(size / 2 + 0.5), err_msg=extent)


# ---- transformations ----

@pytest.mark.parametrize("name", PRESETS)
def test_jit_equals_eager(name, rgb_batch):
    pipe = A.preset(name)
    eager = pipe(jax.random.key(2), rgb_batch, 0.7)
    jitted = jax.jit(pipe)(jax.random.key(2), rgb_batch, 0.7)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), atol=2e-5)


def test_vmap_equals_loop(rgb_batch):
    pipe = A.preset("ada:bgcfnc")
    groups = np.stack([rgb_batch, rgb_batch[::-1], rgb_batch * 0.5])
    keys = jax.random.split(jax.random.key(9), 3)
    ps = jnp.array([0.2, 0.6, 1.0])
    batched = jax.jit(jax.vmap(pipe))(keys, groups, ps)
    for i in range(3):
        single = pipe(keys[i], groups[i], ps[i])
        np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(single), atol=2e-5)


def test_bfloat16_in_bfloat16_out(rgb_batch):
    images = jnp.asarray(rgb_batch, jnp.bfloat16)
    out = A.preset("ada:bgc")(jax.random.key(0), images, 1.0)
    assert out.dtype == jnp.bfloat16
    # The float32 pipeline on the same (bfloat16-representable) values: a bfloat16 pipeline
    # computes in float32 and rounds once, at the end, to the nearest bfloat16. With 8
    # significant bits, steps are at most 2**-7 |value|, so that one rounding errs by at most
    # 2**-8 |value|; plus 1e-5 for float32 differences between the two programs.
    ref = A.preset("ada:bgc")(jax.random.key(0), images.astype(jnp.float32), 1.0)
    np.testing.assert_allclose(np.asarray(out, np.float64), np.asarray(ref, np.float64),
                               rtol=2.0 ** -8, atol=1e-5)
    assert float(jnp.max(jnp.abs(ref - images.astype(jnp.float32)))) > 0.1  # the ops acted


# ---- fusion ----

def _sequential(ops, params, images, border="reflect"):
    """Applies ops one at a time through the deterministic public API."""
    x = images
    for op, q in zip(ops, params):
        kw = dict(border=border)
        if op.name == "flip_left_right":
            x = A.flip_left_right(x, q["mask"])
        elif op.name == "rot90":
            x = A.rot90(x, q["k"])
        elif op.name == "translate":
            x = A.translate(x, q["dx"], q["dy"], **kw)
        elif op.name == "rotate":
            x = A.rotate(x, q["degrees"], **kw)
        elif op.name == "scale":
            x = A.scale(x, q["factor"], **kw)
        elif op.name == "anisotropic_scale":
            x = A.anisotropic_scale(x, q["factor"], 1 / q["factor"], **kw)
        elif op.name == "shear":
            x = A.shear(x, q["shear_x"], q["shear_y"], **kw)
        elif op.name == "brightness":
            x = A.adjust_brightness(x, q["delta"])
        elif op.name == "contrast":  # a contrast op that needs no means scales about 0
            x = A.adjust_contrast(x, q["factor"], about="mean" if op.needs_mean else "zero")
        elif op.name == "saturation":
            x = A.adjust_saturation(x, q["factor"])
        elif op.name == "hue":
            x = A.adjust_hue(x, q["degrees"])
        elif op.name == "luma_flip":
            x = A.luma_flip(x, q["mask"])
        else:
            raise AssertionError(op.name)
    return np.asarray(x)


def _fused(ops, key, images, border="reflect", p=1.0):
    pipe = A.make_pipeline(ops, border=border)
    params = [q for q, _ in _specs.sample(ops, key, images.shape, jnp.float32(p))]
    return np.asarray(pipe(key, images, p)), params


@functools.lru_cache(maxsize=None)
def _astronaut_non_square():
    """Eight real RGB images, 36 x 52 (non-square), float32 in [-1, 1]: four crops of
    scikit-image's astronaut and the same turned by 180 degrees."""
    from skimage import data, transform
    a = data.astronaut()
    crops = [a[0:300, 50:483], a[150:450, 0:433], a[200:500, 79:512], a[60:360, 40:473]]
    small = np.stack([transform.resize(c, (36, 52), anti_aliasing=True) for c in crops])
    small = (small * 2.0 - 1.0).astype(np.float32)
    return np.concatenate([small, small[:, ::-1, ::-1]])


@pytest.mark.parametrize("fast", [True, False], ids=["kernel", "pure_jax"])
def test_geometry_then_colour_equals_sequential(fast):
    """One resample with the colour ops fused into it (contrast through the warp's channel
    means and the mean slope, twice, once after a luma flip) equals rotating, then applying
    each colour op in turn with its deterministic function, on non-square real images; at
    p = 0.7, so that some samples get the colour ops without the rotation and vice versa."""
    images = _astronaut_non_square()
    ops = [A.op("rotate", max_degrees=40.0), A.op("brightness", max_delta=0.3),
           A.op("contrast", factor_range=(0.5, 1.5)), A.op("hue", max_degrees=90.0),
           A.op("saturation", factor_range=(0.3, 1.8)), A.op("luma_flip"),
           A.op("contrast", factor_range=(0.6, 1.4))]
    key, p = jax.random.key(8), 0.7
    applied = np.array([np.asarray(a) for _, a in _specs.sample(ops, key, images.shape,
                                                                  jnp.float32(p))])
    rotated, contrasted = applied[0], applied[2] | applied[6]  # a mix of applied ops:
    assert (rotated & contrasted).any() and (~rotated & contrasted).any() and (~applied[5]).any()
    with contextlib.nullcontext() if fast else A.without_fast_kernels():
        # jitted: one compile, where eager dispatch compiles each small op for a new shape
        fused = np.asarray(jax.jit(A.make_pipeline(ops))(key, images, p))
    params = [q for q, _ in _specs.sample(ops, key, images.shape, jnp.float32(p))]
    sequential = _sequential(ops, params, images)
    # The same rotation resample, then one colour matrix and mean slope versus six passes:
    # float32 rounding of a few products of values |x| < 4 (errors ~6e-7 seen): atol 1e-5.
    np.testing.assert_allclose(fused, sequential, rtol=0, atol=1e-5)
    assert np.abs(fused - images).max() > 0.5  # the ops acted


def test_ada_bgc_equals_one_resample_then_sequential_colour(rgb_batch):
    """The whole 'ada:bgc' preset against an independent composition: the product of its
    geometric ops' matrices applied by affine_transform, then its colour ops one by one with
    their deterministic functions (contrast about 0, as StyleGAN2-ADA's scale3d). (The pure-JAX
    path of the same fused pass is compared above.)"""
    images = rgb_batch
    pipe = A.ada(pipes="bgc")
    key, p = jax.random.key(2), jnp.float32(0.9)
    out = np.asarray(jax.jit(pipe)(key, images, p))
    drawn = _specs.sample(pipe.ops, key, images.shape, p)
    n, h, w, _ = images.shape
    matrix = np.eye(3)[None].repeat(n, 0)
    colour_ops, colour_params = [], []
    for (params, _), o in zip(drawn, pipe.ops):
        if o.kind == _specs.GEOMETRIC:
            matrix = matrix @ np.asarray(o.build(params, h, w), np.float64)
        else:
            colour_ops.append(o)
            colour_params.append(params)
    assert [o.name for o in colour_ops] == ["brightness", "contrast", "luma_flip", "hue",
                                            "saturation"]
    warped = A.affine_transform(images, _centred_to_topleft(matrix, h, w))
    reference = _sequential(colour_ops, colour_params, warped)
    # Bilinear warps of float32-rounded matrices (~1e-5 px, gradients <= 2 / px), through
    # colour matrices of gain up to ~5 (saturation 2**N(0, 1)); errors up to 1.5e-5 seen:
    # atol 1e-4, the bilinear tolerance of the per-op references.
    np.testing.assert_allclose(out, reference, rtol=0, atol=1e-4)
    applied = np.array([np.asarray(a) for _, a in drawn])
    assert applied[:8].any(0).all() and applied[9].all()  # every sample warped, contrasted


def test_fused_colour_equals_sequential(rgb_batch):
    ops = [A.op("brightness"), A.op("contrast", factor_range=(0.5, 1.5)), A.op("hue"),
           A.op("saturation", factor_range=(0.0, 2.0)), A.op("luma_flip"), A.op("contrast")]
    fused, params = _fused(ops, jax.random.key(4), rgb_batch)
    # One colour matrix versus six passes: float32 rounding only.
    np.testing.assert_allclose(fused, _sequential(ops, params, rgb_batch), atol=2e-5)


def test_fused_permutations_equal_sequential_exactly(rgb_batch):
    ops = [A.op("flip_left_right"), A.op("rot90"), A.op("translate", mode="randint")]
    fused, params = _fused(ops, jax.random.key(5), rgb_batch, border="edge")
    np.testing.assert_array_equal(fused, _sequential(ops, params, rgb_batch, border="edge"))


def test_fused_geometry_equals_sequential_within_interpolation_error():
    # A smooth image, so that resampling four times instead of once changes little.
    ys, xs = np.mgrid[0:48, 0:48] / 48.0
    smooth = np.stack([np.sin(2 * np.pi * xs) * np.cos(np.pi * ys), np.cos(2 * np.pi * ys * xs),
                       xs - ys], -1).astype(np.float32)
    images = np.stack([smooth, smooth[::-1], smooth[:, ::-1], smooth.transpose(1, 0, 2)])
    ops = [A.op("rotate", max_degrees=20.0), A.op("scale", factor_range=(0.9, 1.1)),
           A.op("shear", max_shear=0.1), A.op("translate", max_fraction=0.1)]
    fused, params = _fused(ops, jax.random.key(6), images)
    sequential = _sequential(ops, params, images)
    # Away from the borders (where reflection of a reflection differs), the difference is the
    # extra smoothing of three additional bilinear passes on a smooth image.
    inner = (slice(None), slice(8, -8), slice(8, -8))
    assert np.abs(fused - sequential)[inner].max() < 0.05
    assert np.abs(fused - sequential)[inner].mean() < 0.01
    # And the fused result is closer to the exact continuous warp than the sequential one:
    # its error against a single exact resample of the composed matrix is zero.
    n, h, w, _ = images.shape
    matrix = np.eye(3)[None].repeat(n, 0)
    for op, q in zip(ops, params):
        matrix = matrix @ np.asarray(op.build(q, h, w))
    composed = np.asarray(A.affine_transform(
        images, _centred_to_topleft(matrix, h, w)))
    np.testing.assert_allclose(fused, composed, atol=1e-4)


def _centred_to_topleft(matrix, h, w):
    cx, cy = (w - 1) / 2, (h - 1) / 2
    shift = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1]])
    unshift = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])
    return (shift @ matrix @ unshift).astype(np.float32)


def test_pipeline_rejects_interleaved_kinds():
    with pytest.raises(ValueError, match="contiguous"):
        A.make_pipeline([A.op("rotate"), A.op("brightness"), A.op("translate")])


# ---- gradients ----

@pytest.mark.parametrize("name", PRESETS)
def test_gradients_wrt_images_are_finite(name, rgb_batch):
    weights = jax.random.normal(jax.random.key(1), rgb_batch.shape)
    pipe = A.preset(name)
    grad = jax.grad(lambda x: jnp.sum(pipe(jax.random.key(3), x, 1.0) * weights))(rgb_batch)
    assert np.isfinite(np.asarray(grad)).all()
    assert np.abs(np.asarray(grad)).sum() > 0


# Every deterministic op with per-sample parameters made from v, (N,) in [0.5, 1.5].
OPS_OF_V = {
    "flip_left_right": lambda x, v: A.flip_left_right(x, v > 1),
    "flip_up_down": lambda x, v: A.flip_up_down(x, v > 1),
    "rot90": lambda x, v: A.rot90(x, jnp.arange(x.shape[0]) % 4),
    "translate": lambda x, v: A.translate(x, v, -v),
    "rotate": lambda x, v: A.rotate(x, 30 * v),
    "scale": lambda x, v: A.scale(x, v),
    "anisotropic_scale": lambda x, v: A.anisotropic_scale(x, v, 1 / v),
    "shear": lambda x, v: A.shear(x, v - 1, 1 - v),
    "affine_transform": lambda x, v: A.affine_transform(
        x, jnp.eye(3).at[0, 1].set(0.2).at[1, 2].set(1.5) * jnp.ones((x.shape[0], 1, 1))
        + jnp.zeros((3, 3)).at[0, 0].set(1.0) * (v - 1)[:, None, None]),
    "crop_and_resize": lambda x, v: A.crop_and_resize(
        x, jnp.stack([v * 0.1, v * 0.2, v * 0.5, v * 0.5], 1)),
    "cutout": lambda x, v: A.cutout(x, v / 2, v / 2, v / 3, v / 3),
    "adjust_brightness": lambda x, v: A.adjust_brightness(x, v),
    "adjust_contrast": lambda x, v: A.adjust_contrast(x, v),
    "adjust_saturation": lambda x, v: A.adjust_saturation(x, v),
    "adjust_hue": lambda x, v: A.adjust_hue(x, 90 * v),
    "adjust_gamma": lambda x, v: A.adjust_gamma(x, v),
    "grayscale": lambda x, v: A.grayscale(x, v > 1),
    "luma_flip": lambda x, v: A.luma_flip(x, v > 1),
    "gaussian_noise": lambda x, v: A.gaussian_noise(x, jnp.cos(x * 7.0), v),
    "gaussian_blur": lambda x, v: A.gaussian_blur(x, v, radius=3),
}


def test_every_deterministic_op_is_in_the_table():
    assert sorted(OPS_OF_V) == sorted(DETERMINISTIC)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_every_op_jit_equals_eager(name, rgb_batch):
    v = jnp.linspace(0.5, 1.5, rgb_batch.shape[0])
    eager = OPS_OF_V[name](jnp.asarray(rgb_batch), v)
    jitted = jax.jit(OPS_OF_V[name])(rgb_batch, v)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=0, atol=2e-6)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_every_op_vmap_equals_loop(name, rgb_batch):
    groups = jnp.stack([rgb_batch, rgb_batch[::-1], rgb_batch * 0.5])
    vs = jnp.stack([jnp.linspace(0.5, 1.5, 4), jnp.linspace(1.5, 0.5, 4), jnp.full(4, 1.2)])
    batched = jax.vmap(OPS_OF_V[name])(groups, vs)
    for i in range(3):
        single = OPS_OF_V[name](groups[i], vs[i])
        np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(single), rtol=0, atol=2e-6)


def test_gradients_through_every_deterministic_op_are_finite(digits_batch):
    x = jnp.asarray(digits_batch)  # contains exact -1 (black), where gamma's u = 0
    v = jnp.linspace(0.5, 1.5, x.shape[0])
    weights = jax.random.normal(jax.random.key(0), x.shape)
    for name, fn in OPS_OF_V.items():
        grad = jax.grad(lambda x: jnp.sum(fn(x, v) * weights))(x)
        assert np.isfinite(np.asarray(grad)).all(), name


def test_gradient_of_a_permutation_is_the_inverse_permutation(rgb_batch):
    weights = jax.random.normal(jax.random.key(0), rgb_batch.shape)
    k = jnp.array([0, 1, 2, 3])
    grad = jax.grad(lambda x: jnp.sum(A.rot90(x, k) * weights))(rgb_batch)
    expected = np.stack([np.rot90(np.asarray(weights[i]), -int(k[i])) for i in range(4)])
    np.testing.assert_array_equal(np.asarray(grad), expected)
    mask = jnp.array([True, False, True, False])
    grad = jax.grad(lambda x: jnp.sum(A.flip_left_right(x, mask) * weights))(rgb_batch)
    expected = np.where(np.asarray(mask)[:, None, None, None], np.asarray(weights)[:, :, ::-1], weights)
    np.testing.assert_array_equal(np.asarray(grad), expected)


@pytest.mark.parametrize("fn", [
    lambda x: A.rotate(x, jnp.array([17.0, -40.0]), border="constant"),
    lambda x: A.adjust_gamma(x, jnp.array([0.7, 1.6])),
    lambda x: A.adjust_contrast(A.adjust_saturation(x, jnp.array([0.3, 1.7])), jnp.array([1.4, 0.6])),
    lambda x: A.gaussian_blur(x, jnp.array([0.8, 1.5]), radius=4),
    lambda x: A.preset("ada:bgcf")(jax.random.key(1), x, 1.0),
    # Whole-pixel shifts and a box for this key (nonzero shifts, boxes inside): a linear map of
    # x with fixed parameters, so the derivative exists everywhere and equals the difference.
    lambda x: A.preset("diffaugment:translation,cutout")(jax.random.key(1), x, 1.0),
])
def test_gradients_match_finite_differences(fn, rgb_batch):
    x = jnp.asarray(rgb_batch[:2, :12, :12])
    direction = jax.random.normal(jax.random.key(2), x.shape)
    weights = jax.random.normal(jax.random.key(3), x.shape)
    loss = lambda x: jnp.sum(fn(x) * weights)
    analytic = jnp.vdot(jax.grad(loss)(x), direction)
    eps = 1e-2
    numeric = (loss(x + eps * direction) - loss(x - eps * direction)) / (2 * eps)
    # float32 central differences: relative agreement to ~1e-3 on these smooth functions.
    np.testing.assert_allclose(float(analytic), float(numeric), rtol=5e-3, atol=1e-2)


# ---- sharding ----

def test_sharded_batch_matches_unsharded_and_stays_sharded(rgb_batch):
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    devices = jax.devices()
    assert len(devices) == 8, "conftest sets 8 fake CPU devices"
    mesh = Mesh(np.array(devices), ("data",))
    batch = np.concatenate([rgb_batch] * 4)  # 16 images
    sharding = NamedSharding(mesh, P("data"))
    pipe = A.preset("ada:bgcfnc")
    run = jax.jit(pipe, in_shardings=(None, sharding, None), out_shardings=sharding)
    sharded = run(jax.random.key(0), jax.device_put(batch, sharding), 0.8)
    reference = jax.jit(pipe)(jax.random.key(0), batch, 0.8)
    np.testing.assert_allclose(np.asarray(sharded), np.asarray(reference), atol=2e-5)
    assert sharded.sharding.is_equivalent_to(sharding, 4)
    # The resample gathers within each device's shard: no image data crosses devices.
    hlo = run.lower(jax.random.key(0), jax.device_put(batch, sharding), 0.8).compile().as_text()
    assert "all-gather" not in hlo and "all-to-all" not in hlo


# ---- ADA controller ----

def test_ada_controller_matches_hand_computation():
    update = jax.jit(A.make_ada_update(target=0.6, speed_images=1000, interval=2))
    state = A.ada_init(p=0.5)
    logits = [jnp.array([1.0, 2.0, -1.0, 3.0]), jnp.array([1.0, 1.0, 1.0, -2.0])]
    state = update(state, logits[0])
    assert float(state.p) == 0.5 and int(state.calls) == 1  # no adjustment before `interval`
    state = update(state, logits[1])
    rt = (2 + 2) / 8  # sum of signs / count = 0.5 < 0.6: p decreases by 8 / 1000
    assert float(state.rt) == pytest.approx(rt)
    assert float(state.p) == pytest.approx(0.5 - 8 / 1000)
    assert int(state.calls) == 0 and float(state.count) == 0.0


def test_ada_p_stays_in_unit_interval_and_tracks_overfitting():
    update = jax.jit(A.make_ada_update(speed_images=64, interval=1))
    state = A.ada_init()
    for _ in range(10):  # D confident on reals: r_t = 1 > 0.6, p rises and saturates at 1
        state = update(state, jnp.ones(16))
    assert float(state.p) == 1.0
    for _ in range(10):  # r_t = -1: p falls to 0 and stays
        state = update(state, -jnp.ones(16))
    assert float(state.p) == 0.0
    leaves = jax.tree_util.tree_leaves(state)
    assert len(leaves) == 5 and all(np.ndim(leaf) == 0 for leaf in leaves)


def test_ada_counts_images_not_logits_and_leaves_nan_logits_out():
    """A patch discriminator's (N, 8, 8) map counts as N images (its mean sign as each
    image's), and NaN logits reach neither r_t nor p; an interval of only NaN keeps both."""
    update = jax.jit(A.make_ada_update(target=0.6, speed_images=1000, interval=1))
    state = A.ada_init(p=0.5)
    one = update(state, jnp.ones((4, 1)))
    patches = update(state, jnp.ones((4, 8, 8)))
    assert float(one.p) == float(patches.p) == pytest.approx(0.5 + 4 / 1000)
    # image 0: 48 positive, 16 negative logits (mean sign 0.5); images 1-3: all negative
    mixed = -np.ones((4, 8, 8), np.float32)
    mixed[0, :6] = 1.0
    out = update(state, mixed)
    assert float(out.rt) == pytest.approx((0.5 - 3) / 4)
    assert float(out.p) == pytest.approx(0.5 - 4 / 1000)
    with_nan = update(state, jnp.array([1.0, jnp.nan, -1.0, 1.0]))  # 3 images: r_t = 1/3
    assert float(with_nan.rt) == pytest.approx(1 / 3)
    assert float(with_nan.p) == pytest.approx(0.5 - 3 / 1000)
    all_nan = update(with_nan, jnp.full((4,), jnp.nan))
    assert float(all_nan.p) == float(with_nan.p) and float(all_nan.rt) == float(with_nan.rt)
    assert int(all_nan.calls) == 0 and float(all_nan.count) == 0.0


def test_empty_batches_pass_through_every_preset():
    for name in ("ada:bgc", "ada:bgcfnc", "diffaugment:color,translation,cutout"):
        empty = np.zeros((0, 8, 8, 3), np.float32)
        assert A.preset(name)(jax.random.key(0), empty, 0.5).shape == (0, 8, 8, 3), name


def test_a_numpy_integer_radius_blurs_like_a_python_int(rgb_batch):
    np.testing.assert_array_equal(np.asarray(A.gaussian_blur(rgb_batch, 1.0, radius=np.int64(2))),
                                  np.asarray(A.gaussian_blur(rgb_batch, 1.0, radius=2)))


# ---- presets ----

def test_diffaugment_translation_is_whole_pixels_within_an_eighth():
    n, size = 512, 32
    ramp = np.broadcast_to(np.arange(size, dtype=np.float32)[None, None, :, None], (n, size, size, 1))
    ramp = ramp / size
    out = np.asarray(A.diffaugment(policy="translation")(jax.random.key(0), ramp, 1.0))
    centre = out[:, size // 2, size // 2, 0] * size  # original column seen at the centre
    shifts = size // 2 - np.round(centre)
    assert np.allclose(centre, np.round(centre), atol=1e-4)  # whole pixels, no interpolation
    assert set(np.unique(shifts).astype(int)) == set(range(-4, 5))  # int(32 / 8 + 0.5) = 4


def test_diffaugment_translation_shifts_each_axis_by_up_to_an_eighth_of_its_own_size():
    """Non-square images (H 24, W 40) with a column code and a row code in two channels, so
    that swapping the axes, or their ranges, fails: content moves by whole pixels dx in
    [-5, 5] (int(40 / 8 + 0.5)) and dy in [-3, 3] (int(24 / 8 + 0.5)), every value occurring,
    with zero fill where it leaves the image."""
    n, h, w = 1024, 24, 40
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = np.stack([(xs + 1) / w, (ys + 1) / h], -1)  # > 0: distinct from the zero fill
    images = np.ascontiguousarray(np.broadcast_to(ramp, (n, h, w, 2)))
    out = np.asarray(jax.jit(A.diffaugment(policy="translation"))(jax.random.key(0), images, 1.0))
    # The source pixel seen at the centre gives each sample's shift.
    cy, cx = h // 2, w // 2
    column, row = out[:, cy, cx, 0] * w - 1, out[:, cy, cx, 1] * h - 1
    np.testing.assert_allclose(column, np.round(column), atol=1e-4)  # whole pixels: float32 codes
    np.testing.assert_allclose(row, np.round(row), atol=1e-4)
    dx, dy = cx - np.round(column).astype(int), cy - np.round(row).astype(int)
    sx, sy = int(w / 8 + 0.5), int(h / 8 + 0.5)
    assert set(dx) == set(range(-sx, sx + 1)) and set(dy) == set(range(-sy, sy + 1))
    for i in range(n):  # and the whole image is that shift: out[y, x] = in[y - dy, x - dx] or 0
        padded = np.pad(ramp, ((sy, sy), (sx, sx), (0, 0)))
        top, left = sy - dy[i], sx - dx[i]
        np.testing.assert_array_equal(out[i], padded[top:top + h, left:left + w],
                                      err_msg=f"dx={dx[i]}, dy={dy[i]}")


def test_diffaugment_cutout_boxes_are_half_of_each_side_at_every_offset():
    """Non-square images (H 24, W 40): each zeroed region is one axis-aligned box of
    int(24 / 2 + 0.5) = 12 rows by 20 columns, clipped at the borders, and the boxes' spans take
    exactly DiffAugment's offsets: start = offset - size // 2, offset uniform in
    [0, side + 1 - size % 2)."""
    n, h, w = 1024, 24, 40
    images = np.ones((n, h, w, 1), np.float32)
    out = np.asarray(jax.jit(A.diffaugment(policy="cutout"))(jax.random.key(1), images, 1.0))
    zero = out[..., 0] == 0
    assert ((out[..., 0] == 0) | (out[..., 0] == 1)).all()
    rows, cols = zero.any(axis=2), zero.any(axis=1)
    np.testing.assert_array_equal(zero, rows[:, :, None] & cols[:, None, :])  # a box
    for spans, side in ((rows, h), (cols, w)):
        box = int(side * 0.5 + 0.5)
        first = spans.argmax(axis=1)
        last = side - 1 - spans[:, ::-1].argmax(axis=1)
        np.testing.assert_array_equal(spans.sum(axis=1), last - first + 1)  # contiguous
        assert spans.sum(axis=1).max() == box  # unclipped boxes: half the side
        expected = {(max(0, o - box // 2), min(side - 1, o - box // 2 + box - 1))
                    for o in range(side + 1 - box % 2)}
        assert set(zip(first.tolist(), last.tolist())) == expected, side


def test_diffaugment_cutout_zeroes_half_size_squares():
    images = np.ones((64, 16, 16, 1), np.float32)
    out = np.asarray(A.diffaugment(policy="cutout")(jax.random.key(0), images, 1.0))
    zeroed = (out == 0).sum(axis=(1, 2, 3))
    assert zeroed.max() == 64 and zeroed.min() >= 16  # 8x8 boxes, clipped at the borders


# ---- bad input ----

@pytest.mark.parametrize("call, message", [
    (lambda x: A.rotate(x[0], 10.0), "rank 4"),
    (lambda x: A.rotate((x * 100).astype(np.int32), 10.0), "float32 or bfloat16"),
    (lambda x: A.random_rotate(jax.random.key(0), x, p=1.5), "p must be a probability"),
    (lambda x: A.random_rotate(jax.random.key(0), x, p=-0.1), "p must be a probability"),
    (lambda x: A.op("spin"), "unknown op 'spin'"),
    (lambda x: A.preset("ada:xyz"), "unknown ADA pipe 'xyz'"),
    (lambda x: A.preset("diffaugment:colour"), "unknown DiffAugment policy 'colour'"),
    (lambda x: A.preset("autoaugment"), "unknown preset"),
    (lambda x: A.rotate(x, np.zeros(3)), r"degrees must be a scalar or have shape \(N,\) = \(4,\)"),
    (lambda x: A.translate(x, np.zeros(4), np.zeros(5)), r"dy must be .* shape \(N,\) = \(4,\)"),
    (lambda x: A.rotate(x, 10.0, border="wrap"), "border must be one of"),
    (lambda x: A.rotate(x, 10.0, interpolation="bicubic"), "interpolation must be one of"),
    (lambda x: A.rot90(x[:, :, :16], 1), "square"),
    (lambda x: A.crop_and_resize(x, np.zeros((4, 3))), r"boxes must have shape \(N, 4\)"),
    (lambda x: A.random_rotate(jax.random.key(0), x, max_degrees=500), "max_degrees"),
    (lambda x: A.make_pipeline([]), "at least one op"),
    (lambda x: A.random_brightness(0, x), r"key must be a PRNG key.*got int"),
    (lambda x: A.preset("ada:bgc")(np.zeros(2, np.float32), x, 0.5), r"key must be a PRNG key"),
    (lambda x: A.random_hue(jax.random.split(jax.random.key(0), 4), x), r"key must be a PRNG key"),
    (lambda x: A.scale(x, 0.0), "factor must be non-zero"),
    (lambda x: A.anisotropic_scale(x, 1.0, np.array([1, 0, 1, 1.0])), "scale_y must be non-zero"),
    (lambda x: A.rotate(x, np.array([1, np.nan, 2, 3])), "degrees must be finite"),
    (lambda x: A.affine_transform(x, np.diag([np.inf, 1, 1])), "matrix must be finite"),
    (lambda x: A.crop_and_resize(x, np.full((4, 4), np.nan)), "boxes must be finite"),
    (lambda x: A.random_scale(jax.random.key(0), x, factor_range=(0.0, 1.0)), "lo > 0"),
    (lambda x: A.random_scale(jax.random.key(0), x, log2_std=40.0), r"log2_std .* in \[0.0, 16.0\]"),
    (lambda x: A.rotate(x, 10.0, border="constant", fill="a"), "fill must be a real number"),
    (lambda x: A.make_pipeline([A.op("rotate")], fill=np.nan), "fill must be finite"),
    (lambda x: A.cutout(x, 0.5, 0.5, 0.2, 0.2, fill=None), "fill must be a real number"),
    (lambda x: A.op("rotate", max_deg=3), r"op 'rotate': unknown parameter\(s\) \['max_deg'\]"),
    (lambda x: A.preset("ada:bgc")(jax.random.key(0), x, None), "p must be a scalar probability"),
    (lambda x: A.preset("ada:bgc")(jax.random.key(0), x, "0.5"), "p must be a scalar probability"),
    (lambda x: A.gaussian_blur(x, 1.0, radius=True), "radius must be a non-negative int"),
    (lambda x: A.make_ada_update(speed_images=np.nan), "speed_images must be a finite number"),
    (lambda x: A.make_ada_update(interval=2.5), "interval must be an int >= 1"),
    (lambda x: A.make_ada_update()(A.ada_init(), np.zeros(0)), r"d_real_logits must have shape"),
    # the blur's kernel is bounded by the image; sigma must be finite
    (lambda x: A.gaussian_blur(x, 1.0, radius=10 ** 6), r"radius .* <= 2 \* max\(H, W\) = 64"),
    (lambda x: A.gaussian_blur(x, 1.0, radius=65), r"radius .* <= 2 \* max\(H, W\) = 64"),
    (lambda x: A.random_gaussian_blur(jax.random.key(0), x, max_sigma=np.inf), "max_sigma must be a finite"),
    (lambda x: A.op("blur", max_sigma=np.nan), "max_sigma must be a finite"),
    # random ops' ranges: finite (in float32), log2_std in [0, 16] everywhere
    (lambda x: A.random_brightness(jax.random.key(0), x, max_delta=np.inf), "max_delta must be a finite"),
    (lambda x: A.random_brightness(jax.random.key(0), x, max_delta=1e300), "max_delta must be a finite"),
    (lambda x: A.random_brightness(jax.random.key(0), x, std=np.inf), "std must be a finite"),
    (lambda x: A.random_gaussian_noise(jax.random.key(0), x, std=np.inf), "std must be a finite"),
    (lambda x: A.random_saturation(jax.random.key(0), x, log2_std=1000), r"log2_std .* \[0.0, 16.0\]"),
    (lambda x: A.random_contrast(jax.random.key(0), x, log2_std=100), r"log2_std .* \[0.0, 16.0\]"),
    (lambda x: A.op("ada_filter", log2_std=1000), r"ada_filter: log2_std .* \[0.0, 16.0\]"),
    (lambda x: A.random_rotate(jax.random.key(0), x, max_degrees=np.nan), "max_degrees"),
    # concrete values outside the documented range
    (lambda x: A.adjust_gamma(x, 0.0), "gamma must be > 0"),
    (lambda x: A.adjust_gamma(x, np.array([1.0, -1.0, 1.0, 1.0])), "gamma must be > 0"),
    (lambda x: A.gaussian_blur(x, -1.0, radius=2), "sigma must be >= 0"),
    (lambda x: A.affine_transform(x, [[1, 0, 0], [0, 1, 0], [5, 5, 5]]), r"matrix .* last row \[0, 0, 1\]"),
    (lambda x: A.affine_transform(x, 2 * np.eye(3)), r"matrix .* last row \[0, 0, 1\]"),
    (lambda x: A.op("rotate", probability=0.5), "probability must be a function"),
    (lambda x: A.rot90(x, 1.5), "k must be integers"),
    (lambda x: A.rot90(x, np.array([0, 1, -0.5, 2])), "k must be integers"),
    (lambda x: A.flip_left_right(x, 0.3), r"mask must be booleans \(True/False, or 0/1\)"),
    (lambda x: A.flip_up_down(x, np.array([0, 1, 2, -1])), "mask must be booleans"),
    (lambda x: A.grayscale(x, -1), "mask must be booleans"),
    (lambda x: A.crop_and_resize(x, np.tile([0.0, 0.0, 0.0, 1.0], (4, 1))), "boxes .* height > 0"),
    (lambda x: A.crop_and_resize(x, np.tile([0.5, 0.5, 0.5, -0.5], (4, 1))), "boxes .* width > 0"),
    # wrong types
    (lambda x: A.rotate(x, "10"), "degrees must be a real number"),
    (lambda x: A.adjust_brightness(x, None), "delta must be a real number"),
    (lambda x: A.preset(3), "name must be a string"),
    (lambda x: A.ada(pipes=None), "pipes must be a comma-separated string"),
    (lambda x: A.diffaugment(policy=["color"]), "policy must be a comma-separated string"),
    (lambda x: A.random_rotate(jax.random.key(0), x, max_degrees="5"), "max_degrees must be a finite real"),
    (lambda x: A.random_rotate(jax.random.key(0), x, max_degrees=jnp.ones(4)), "max_degrees must be"),
    (lambda x: A.random_scale(jax.random.key(0), x, factor_range=1.0), r"factor_range must be a \(lo, hi\) pair"),
    (lambda x: A.random_scale(jax.random.key(0), x, factor_range=(1, 2, 3)), r"factor_range must be a \(lo, hi\)"),
    (lambda x: A.random_gamma(jax.random.key(0), x, gamma_range=("a", 2)), r"gamma_range must be a \(lo, hi\)"),
])
def test_bad_input_raises_value_error_naming_the_argument(call, message, rgb_batch):
    with pytest.raises(ValueError, match=message):
        call(rgb_batch)


def test_integral_masks_and_quarter_turns_act_as_bools_and_ints(rgb_batch):
    """0/1 masks and whole-number k (concrete, or traced, which cannot be checked) are accepted."""
    bools = np.array([False, True, True, False])
    for fn in (A.flip_left_right, A.grayscale):
        expected = np.asarray(fn(rgb_batch, bools))
        np.testing.assert_array_equal(np.asarray(fn(rgb_batch, bools.astype(np.int32))), expected)
        np.testing.assert_array_equal(np.asarray(jax.jit(fn)(rgb_batch, bools.astype(np.float32))),
                                      np.asarray(jax.jit(fn)(rgb_batch, bools)))
    np.testing.assert_array_equal(np.asarray(A.rot90(rgb_batch, 2.0)),
                                  np.asarray(A.rot90(rgb_batch, 2)))


def test_traced_values_outside_the_checked_ranges_still_run_and_differentiate(rgb_batch):
    """Concrete-only checks: a traced gamma, sigma or box is not refused, and gradients flow."""
    gamma = jax.grad(lambda g: jnp.sum(A.adjust_gamma(rgb_batch, g)))(0.7)
    sigma = jax.grad(lambda s: jnp.sum(A.gaussian_blur(rgb_batch, s, radius=3) ** 2))(0.8)
    boxes = jnp.tile(jnp.array([0.1, 0.2, 0.5, 0.6]), (4, 1))
    box = jax.grad(lambda b: jnp.sum(A.crop_and_resize(rgb_batch, b) ** 2))(boxes)
    assert np.isfinite(gamma) and gamma != 0 and np.isfinite(sigma) and sigma != 0
    assert np.all(np.isfinite(box)) and np.any(box != 0)


def test_a_raw_uint32_key_gives_what_the_typed_key_gives(rgb_batch):
    typed = A.preset("ada:bgc")(jax.random.key(3), rgb_batch, 0.8)
    raw = A.preset("ada:bgc")(jax.random.PRNGKey(3), rgb_batch, 0.8)
    np.testing.assert_array_equal(np.asarray(raw), np.asarray(typed))


def test_a_traced_p_outside_0_1_is_clipped(rgb_batch):
    pipe = jax.jit(A.preset("ada:bgc"))
    key = jax.random.key(4)
    np.testing.assert_array_equal(np.asarray(pipe(key, rgb_batch, 1.5)),
                                  np.asarray(pipe(key, rgb_batch, 1.0)))
    np.testing.assert_array_equal(np.asarray(pipe(key, rgb_batch, -0.5)), rgb_batch)
    np.testing.assert_array_equal(np.asarray(pipe(key, rgb_batch, jnp.nan)), rgb_batch)  # no op


def test_forward_mode_runs_on_the_pure_jax_pass(rgb_batch):
    """The README's advice for jax.jvp: the geometric ops are linear in the images, so the
    tangent is the op applied to the tangent images."""
    tangent = np.random.default_rng(0).standard_normal(rgb_batch.shape).astype(np.float32)
    with A.without_fast_kernels():
        out, out_tangent = jax.jvp(lambda z: A.rotate(z, 20.0), (rgb_batch,), (tangent,))
        expected = A.rotate(tangent, 20.0)
    np.testing.assert_allclose(np.asarray(out), np.asarray(A.rotate(rgb_batch, 20.0)), atol=1e-6)
    np.testing.assert_allclose(np.asarray(out_tangent), np.asarray(expected), atol=1e-5)
