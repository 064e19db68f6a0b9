"""ganaug_jax.losses against hand computations in NumPy float64: losses (with large logits and
label smoothing), WGAN-GP and R1 (values from a closed-form critic gradient, parameter gradients
from central finite differences of that closed form), lazy R1 under jit, instance noise,
feature matching, EMA, and bad input."""

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from ganaug_jax import losses as L

NAMES = ["minimax", "non_saturating", "wgan", "hinge", "lsgan"]
# Different batch sizes for real and fake. In float32 a naive log(sigmoid(x)) is -inf at
# x = -200 and log(1 - sigmoid(x)) is -inf from x = 17 on.
REAL = np.array([-200.0, -50.0, -3.0, -0.5, 0.0, 0.7, 4.0, 50.0, 200.0])
FAKE = np.array([-200.0, -50.0, -2.0, 0.0, 1.5, 50.0, 200.0])


# ---- NumPy float64 references ----

def _neg_log_sigmoid(x):
    return np.log1p(np.exp(-x))          # -log s(x), exact in float64 for |x| << 700


def _neg_log_one_minus_sigmoid(x):
    return np.log1p(np.exp(x))           # -log(1 - s(x))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _reference(name, r, f, y=1.0):
    """(D loss, G loss) from the textbook formulas."""
    ce_real = y * _neg_log_sigmoid(r) + (1 - y) * _neg_log_one_minus_sigmoid(r)
    ce_d = ce_real.mean() + _neg_log_one_minus_sigmoid(f).mean()
    return {
        "minimax": (ce_d, -_neg_log_one_minus_sigmoid(f).mean()),   # mean log(1 - s(f))
        "non_saturating": (ce_d, _neg_log_sigmoid(f).mean()),
        "wgan": (f.mean() - r.mean(), -f.mean()),
        "hinge": (np.maximum(0, 1 - r).mean() + np.maximum(0, 1 + f).mean(), -f.mean()),
        "lsgan": (0.5 * ((r - y) ** 2).mean() + 0.5 * (f ** 2).mean(),
                  0.5 * ((f - 1) ** 2).mean()),
    }[name]


# ---- public API shape ----

def test_public_functions_take_key_first_and_keyword_only_defaults():
    fns = {name: getattr(L, name) for name in L.__all__ if inspect.isfunction(getattr(L, name))}
    fns.update({f"{n}:d": d for n, (d, _) in L.LOSSES.items()})
    fns.update({f"{n}:g": g for n, (_, g) in L.LOSSES.items()})
    for name, fn in fns.items():
        params = list(inspect.signature(fn).parameters.values())
        for param in params:
            if param.default is not inspect.Parameter.empty:
                assert param.kind == inspect.Parameter.KEYWORD_ONLY, (name, param.name)
    for name in ("gradient_penalty", "add_instance_noise"):
        assert list(inspect.signature(getattr(L, name)).parameters)[0] == "key", name
    assert sorted(L.LOSSES) == sorted(NAMES)
    assert all(type(v) is tuple and len(v) == 2 for v in L.LOSSES.values())


# ---- losses ----

@pytest.mark.parametrize("name", NAMES)
def test_losses_match_hand_computation_and_are_stable(name):
    d, g = L.d_loss(name), L.g_loss(name)
    want_d, want_g = _reference(name, REAL, FAKE)
    r, f = jnp.asarray(REAL, jnp.float32), jnp.asarray(FAKE, jnp.float32)
    got_d, got_g = d(r, f), g(f)
    assert got_d.dtype == jnp.float32 and got_d.shape == () and got_g.shape == ()
    assert np.isfinite(got_d) and np.isfinite(got_g)
    np.testing.assert_allclose(got_d, want_d, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got_g, want_g, rtol=1e-6, atol=1e-6)
    # jit == eager, and the gradients at +-200 are finite too.
    jit_d, jit_g, grads = jax.jit(lambda a, b: (
        d(a, b), g(b), jax.grad(lambda u, v: d(u, v) + g(v), argnums=(0, 1))(a, b)))(r, f)
    np.testing.assert_allclose(jit_d, got_d, rtol=1e-6)
    np.testing.assert_allclose(jit_g, got_g, rtol=1e-6)
    assert all(np.all(np.isfinite(x)) for x in grads)


def test_cross_entropy_gradients_at_large_logits_are_exact():
    # d/dr mean(y softplus(-r) + (1 - y) softplus(r)) = (s(r) - y) / N; d/df = s(f) / M.
    y = 0.9
    d = L.d_loss("minimax")
    gr, gf = jax.grad(lambda a, b: d(a, b, real_label=y), argnums=(0, 1))(
        jnp.asarray(REAL, jnp.float32), jnp.asarray(FAKE, jnp.float32))
    np.testing.assert_allclose(gr, (_sigmoid(REAL) - y) / REAL.size, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(gf, _sigmoid(FAKE) / FAKE.size, rtol=1e-5, atol=1e-8)
    # Non-saturating G: d/df -log s(f) = -(1 - s(f)) / M, nonzero where minimax's vanishes.
    gg = jax.grad(L.g_loss("non_saturating"))(jnp.asarray(FAKE, jnp.float32))
    np.testing.assert_allclose(gg, -(1 - _sigmoid(FAKE)) / FAKE.size, rtol=1e-5, atol=1e-8)
    assert abs(float(gg[1])) > 0.14  # f = -50: D confidently rejects, G still learns


@pytest.mark.parametrize("name", ["minimax", "non_saturating", "lsgan"])
def test_one_sided_label_smoothing_matches_hand_formula(name):
    d = L.d_loss(name)
    r, f = jnp.asarray(REAL, jnp.float32), jnp.asarray(FAKE, jnp.float32)
    want = _reference(name, REAL, FAKE, y=0.9)[0]
    np.testing.assert_allclose(d(r, f, real_label=0.9), want, rtol=1e-6, atol=1e-6)
    # Traced label (e.g. a schedule) works as well.
    traced = jax.jit(lambda y: d(r, f, real_label=y))(jnp.float32(0.9))
    np.testing.assert_allclose(traced, want, rtol=1e-6, atol=1e-6)
    assert abs(float(d(r, f, real_label=0.9)) - float(d(r, f))) > 5e-3  # smoothing did something
    for bad in (0.0, 1.1, -0.5):
        with pytest.raises(ValueError, match="real_label"):
            d(r, f, real_label=bad)


@pytest.mark.parametrize("name", ["wgan", "hinge"])
def test_label_smoothing_is_rejected_for_wgan_and_hinge(name):
    d = L.d_loss(name)
    r, f = jnp.asarray(REAL, jnp.float32), jnp.asarray(FAKE, jnp.float32)
    d(r, f, real_label=1.0)
    d(r, f, real_label=1)
    with pytest.raises(ValueError, match="real_label"):
        d(r, f, real_label=0.9)
    with pytest.raises(ValueError, match="real_label"):
        jax.jit(lambda y: d(r, f, real_label=y))(jnp.float32(1.0))  # traced: cannot be checked


def test_loss_bad_input():
    with pytest.raises(ValueError, match="valid names.*hinge"):
        L.d_loss("vanilla")
    with pytest.raises(ValueError, match="valid names"):
        L.g_loss("relativistic")
    with pytest.raises(ValueError, match=r"shape \(N,\)"):
        L.d_loss("hinge")(jnp.zeros((4, 1)), jnp.zeros((4,)))
    with pytest.raises(ValueError, match="floating"):
        L.g_loss("wgan")(jnp.zeros((4,), jnp.int32))


def test_losses_compute_in_float32_for_bfloat16_logits():
    r = jnp.asarray(REAL, jnp.bfloat16)
    f = jnp.asarray(FAKE, jnp.bfloat16)
    for name in NAMES:
        assert L.d_loss(name)(r, f).dtype == jnp.float32
        assert L.g_loss(name)(f).dtype == jnp.float32


# ---- gradient penalties: a critic with a closed-form input gradient ----
# critic(W, x) = sum_j tanh(flat(x) @ W)_j, so grad_x critic(x)_i = W @ (1 - tanh(x_i W)^2).

def _critic(w, x):
    return jnp.sum(jnp.tanh(x.reshape(x.shape[0], -1) @ w), axis=-1)


def _np_input_grads(w, x):
    z = x.reshape(x.shape[0], -1) @ w
    return (1.0 - np.tanh(z) ** 2) @ w.T                      # (N, D)


def _np_gp(w, x_hat):
    return np.mean((np.linalg.norm(_np_input_grads(w, x_hat), axis=1) - 1.0) ** 2)


def _np_r1(w, x):
    return np.mean(np.sum(_np_input_grads(w, x) ** 2, axis=1))


def _central_differences(fn, w, eps=1e-6):
    grad = np.zeros_like(w)
    for idx in np.ndindex(w.shape):
        step = np.zeros_like(w)
        step[idx] = eps
        grad[idx] = (fn(w + step) - fn(w - step)) / (2 * eps)
    return grad


SHAPES = {"points": (6, 3), "images": (3, 4, 4, 2)}


def _problem(shape, seed=0):
    rng = np.random.default_rng(seed)
    dim = int(np.prod(shape[1:]))
    w = rng.normal(size=(dim, 4)) * 1.2 / np.sqrt(dim)
    real = rng.normal(size=shape)
    fake = rng.normal(size=shape) + 0.5
    return w, real, fake


def _documented_eps(key, real):
    """gradient_penalty's documented weights: eps ~ U(0, 1) drawn from `key`, one per sample,
    shape (N, 1, ..., 1), float32 (jax.random.uniform's default [0, 1) range)."""
    return np.asarray(jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1),
                                         jnp.float32), np.float64)


def test_interpolation_weights_are_per_sample_uniform():
    key = jax.random.key(3)
    eps = L._interpolation_weights(key, jnp.zeros((64, 4, 4, 2)))
    assert eps.shape == (64, 1, 1, 1) and eps.dtype == jnp.float32
    assert len(np.unique(np.asarray(eps))) == 64  # one independent weight per sample
    # Distribution: 4096 weights against U(0, 1), Kolmogorov-Smirnov (scipy), reject at
    # p < 1e-4; at this size a weight law off by a 0.1 shift or a square (eps^2) is rejected.
    many = np.asarray(L._interpolation_weights(jax.random.key(4), jnp.zeros((4096, 3))))
    assert many.shape == (4096, 1) and 0.0 <= many.min() and many.max() <= 1.0
    assert stats.kstest(many[:, 0], "uniform").pvalue > 1e-4
    assert stats.kstest(many[:, 0] ** 2, "uniform").pvalue < 1e-4  # the test has the power


@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_gradient_penalty_matches_closed_form(kind):
    w, real, fake = _problem(SHAPES[kind])
    key = jax.random.key(1)
    eps = _documented_eps(key, real)
    x_hat = eps * real + (1 - eps) * fake
    norms = np.linalg.norm(_np_input_grads(w, x_hat), axis=1)
    assert norms.std() > 0.05 and abs(norms.mean() - 1) > 0.05  # a non-trivial case
    critic = functools.partial(_critic, jnp.asarray(w, jnp.float32))
    args = jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32)
    got = L.gradient_penalty(key, critic, *args)
    np.testing.assert_allclose(got, _np_gp(w, x_hat), rtol=1e-5)
    jitted = jax.jit(L.gradient_penalty, static_argnums=1)
    np.testing.assert_allclose(jitted(key, critic, *args), got, rtol=1e-5)
    assert float(jitted(jax.random.key(2), critic, *args)) != float(got)


@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_gradient_penalty_param_gradient_matches_finite_differences(kind):
    w, real, fake = _problem(SHAPES[kind], seed=1)
    key = jax.random.key(5)
    eps = _documented_eps(key, real)
    x_hat = eps * real + (1 - eps) * fake
    want = _central_differences(lambda v: _np_gp(v, x_hat), w)
    r32, f32 = jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32)
    got = jax.jit(jax.grad(
        lambda v: L.gradient_penalty(key, functools.partial(_critic, v), r32, f32)))(
            jnp.asarray(w, jnp.float32))
    assert np.abs(want).max() > 1e-2
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())


def test_gradient_penalty_is_finite_when_the_input_gradient_vanishes():
    # A zero critic weight (e.g. a zero-initialised last layer): ||grad|| = 0, penalty 1.
    real = jnp.ones((4, 3))
    value, grad = jax.jit(jax.value_and_grad(lambda v: L.gradient_penalty(
        jax.random.key(0), functools.partial(_critic, v), real, -real)))(jnp.zeros((3, 4)))
    assert float(value) == 1.0 and np.all(np.isfinite(grad))


@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_r1_penalty_value_and_param_gradient(kind):
    w, real, _ = _problem(SHAPES[kind], seed=2)
    r32, w32 = jnp.asarray(real, jnp.float32), jnp.asarray(w, jnp.float32)
    np.testing.assert_allclose(L.r1_penalty(functools.partial(_critic, w32), r32),
                               _np_r1(w, real), rtol=1e-5)
    want = _central_differences(lambda v: _np_r1(v, real), w)
    got = jax.grad(lambda v: L.r1_penalty(functools.partial(_critic, v), r32))(w32)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())


def test_penalties_reject_bad_input():
    critic = functools.partial(_critic, jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="same shape"):
        L.gradient_penalty(jax.random.key(0), critic, jnp.zeros((4, 3)), jnp.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"\(N,\)"):
        L.r1_penalty(lambda x: x @ jnp.ones((3, 2)), jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="floating"):
        L.r1_penalty(critic, jnp.zeros((4, 3), jnp.int32))


# ---- lazy R1 ----

def test_lazy_r1_matches_eager_formula_under_jit_with_traced_step():
    w, real, _ = _problem(SHAPES["images"], seed=3)
    r32, w32 = jnp.asarray(real, jnp.float32), jnp.asarray(w, jnp.float32)
    interval = 4

    def lazy(v, step):
        return L.lazy_r1(functools.partial(_critic, v), r32, step=step, interval=interval)

    value_and_grad = jax.jit(jax.value_and_grad(lazy))
    r1 = _np_r1(w, real)
    r1_grad = _central_differences(lambda v: _np_r1(v, real), w)
    for step in range(9):
        value, grad = value_and_grad(w32, jnp.int32(step))
        if step % interval == 0:
            np.testing.assert_allclose(value, interval * r1, rtol=1e-5)
            np.testing.assert_allclose(grad, interval * r1_grad, rtol=1e-3,
                                       atol=1e-4 * interval * np.abs(r1_grad).max())
        else:
            assert float(value) == 0.0 and not np.any(np.asarray(grad))
    assert value_and_grad._cache_size() == 1  # one compilation for all steps
    # The penalty sits inside a cond, so inactive steps skip it.
    assert "cond" in str(jax.make_jaxpr(lazy)(w32, jnp.int32(0)))
    with pytest.raises(ValueError, match="interval"):
        L.lazy_r1(functools.partial(_critic, w32), r32, step=0, interval=0)


# ---- instance noise ----

def test_instance_noise_schedule():
    schedule = functools.partial(L.instance_noise_std, initial_std=0.2, anneal_steps=1000)
    jitted = jax.jit(schedule)
    for step, want in [(0, 0.2), (250, 0.15), (500, 0.1), (1000, 0.0), (5000, 0.0)]:
        np.testing.assert_allclose(schedule(step), want, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(jitted(jnp.int32(step)), want, rtol=1e-6, atol=1e-9)
    assert schedule(0).dtype == jnp.float32
    with pytest.raises(ValueError, match="initial_std"):
        L.instance_noise_std(0, initial_std=-0.1, anneal_steps=10)
    with pytest.raises(ValueError, match="anneal_steps"):
        L.instance_noise_std(0, initial_std=0.1, anneal_steps=0)


def test_add_instance_noise_statistics():
    x = jnp.full((100, 100), 0.25)
    key = jax.random.key(7)
    noise = np.asarray(L.add_instance_noise(key, x, 0.3)) - 0.25
    assert abs(noise.mean()) < 4 * 0.3 / 100
    assert abs(noise.std() / 0.3 - 1) < 0.03
    np.testing.assert_array_equal(L.add_instance_noise(key, x, 0.3),
                                  L.add_instance_noise(key, x, 0.3))
    assert not np.array_equal(L.add_instance_noise(key, x, 0.3),
                              L.add_instance_noise(jax.random.key(8), x, 0.3))
    np.testing.assert_array_equal(L.add_instance_noise(key, x, 0.0), x)
    # Traced std from the schedule, and the dtype is kept.
    xb = jnp.zeros((2, 4, 4, 1), jnp.bfloat16)
    out = jax.jit(lambda s: L.add_instance_noise(key, xb, L.instance_noise_std(
        s, initial_std=0.1, anneal_steps=10)))(jnp.int32(3))
    assert out.dtype == jnp.bfloat16 and out.shape == xb.shape
    assert np.any(np.asarray(out, np.float32))
    with pytest.raises(ValueError, match="std"):
        L.add_instance_noise(key, x, -0.1)


# ---- feature matching ----

def test_feature_matching_closed_form():
    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(6, 5)), rng.normal(size=(9, 5)) + 0.3
    want = np.sum((real.mean(0) - fake.mean(0)) ** 2)
    got = L.feature_matching(jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert float(L.feature_matching(jnp.asarray(real), jnp.asarray(real))) == 0.0
    with pytest.raises(ValueError, match=r"\(N, F\)"):
        L.feature_matching(jnp.zeros((4, 3)), jnp.zeros((4, 2)))


# ---- EMA ----

def test_ema_matches_closed_form_after_k_updates():
    ema0 = {"dense": {"w": jnp.full((3, 2), 2.0), "b": jnp.zeros(2)}, "scale": jnp.float32(-1.0)}
    params = {"dense": {"w": jnp.ones((3, 2)), "b": jnp.full(2, 4.0)}, "scale": jnp.float32(3.0)}
    decay, k = 0.9, 7
    update = jax.jit(L.ema_update)
    ema = ema0
    for _ in range(k):
        ema = update(ema, params, jnp.float32(decay))
    want = jax.tree.map(lambda e, p: decay ** k * np.asarray(e) + (1 - decay ** k) * np.asarray(p),
                        ema0, params)
    assert jax.tree.structure(ema) == jax.tree.structure(ema0)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), ema, want)
    # decay 0 copies the params, decay 1 keeps the average; dtypes are kept.
    jax.tree.map(np.testing.assert_array_equal, L.ema_update(ema0, params, 0.0), params)
    jax.tree.map(np.testing.assert_array_equal, L.ema_update(ema0, params, 1.0), ema0)
    half = L.ema_update({"w": jnp.ones(3, jnp.bfloat16)}, {"w": jnp.zeros(3, jnp.bfloat16)}, 0.5)
    assert half["w"].dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="decay"):
        L.ema_update(ema0, params, 1.5)


def test_ema_decay_half_life():
    decay = L.ema_decay(half_life_images=640, batch_size=32)
    assert isinstance(decay, float)
    np.testing.assert_allclose(decay ** (640 / 32), 0.5, rtol=1e-12)
    ema = {"w": jnp.ones(())}
    for _ in range(640 // 32):      # 640 images later the old value weighs one half
        ema = L.ema_update(ema, {"w": jnp.zeros(())}, decay)
    np.testing.assert_allclose(ema["w"], 0.5, rtol=1e-5)
    np.testing.assert_allclose(L.ema_decay(half_life_images=10_000, batch_size=64),
                               0.5 ** (64 / 10_000))
    assert L.ema_decay(half_life_images=0, batch_size=32) == 0.0
    with pytest.raises(ValueError, match="half_life_images"):
        L.ema_decay(half_life_images=-1, batch_size=32)
    with pytest.raises(ValueError, match="batch_size"):
        L.ema_decay(half_life_images=100, batch_size=0)


# ---- bad input: non-finite numbers, empty batches, keys, critics ----

@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_settings_are_refused(bad):
    with pytest.raises(ValueError, match="half_life_images"):
        L.ema_decay(half_life_images=bad, batch_size=32)
    with pytest.raises(ValueError, match="initial_std"):
        L.instance_noise_std(0, initial_std=bad, anneal_steps=10)
    with pytest.raises(ValueError, match="anneal_steps"):
        L.instance_noise_std(0, initial_std=0.1, anneal_steps=bad)
    with pytest.raises(ValueError, match="std"):
        L.add_instance_noise(jax.random.key(0), jnp.zeros((2, 3)), bad)
    with pytest.raises(ValueError, match="anneal_steps"):
        L.instance_noise_std(0, initial_std=0.1, anneal_steps=0.5)
    # A traced initial_std is used as it is.
    traced = jax.jit(lambda s: L.instance_noise_std(5, initial_std=s, anneal_steps=10))(0.2)
    np.testing.assert_allclose(traced, 0.1, rtol=1e-6)


def test_ema_update_refuses_mismatched_trees_and_non_scalar_decay():
    ema = {"w": jnp.ones(3), "b": jnp.ones(())}
    with pytest.raises(ValueError, match="leaf shapes"):
        L.ema_update(ema, {"w": jnp.zeros(1), "b": jnp.zeros(())}, 0.5)
    with pytest.raises(ValueError, match="leaf shapes"):
        jax.jit(L.ema_update)({"w": jnp.ones(1), "b": jnp.ones(())}, ema, 0.5)
    with pytest.raises(ValueError, match="tree structure"):
        L.ema_update(ema, {"w": jnp.zeros(3)}, 0.5)
    with pytest.raises(ValueError, match="decay must be a scalar"):
        L.ema_update(ema, ema, jnp.full(3, 0.5))
    got = jax.jit(L.ema_update)(ema, {"w": jnp.zeros(3), "b": jnp.zeros(())}, jnp.float32(0.25))
    np.testing.assert_allclose(got["w"], np.full(3, 0.25))


@pytest.mark.parametrize("name", NAMES)
def test_empty_logits_are_refused(name):
    empty, some = jnp.zeros((0,)), jnp.zeros((3,))
    with pytest.raises(ValueError, match="real_logits must be non-empty"):
        L.d_loss(name)(empty, some)
    with pytest.raises(ValueError, match="fake_logits must be non-empty"):
        jax.jit(L.d_loss(name))(some, empty)
    with pytest.raises(ValueError, match="fake_logits must be non-empty"):
        L.g_loss(name)(empty)


def test_feature_matching_refuses_empty_batches():
    with pytest.raises(ValueError, match="real_features and fake_features must be non-empty"):
        L.feature_matching(jnp.zeros((0, 3)), jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="real_features and fake_features must be non-empty"):
        L.feature_matching(jnp.zeros((4, 3)), jnp.zeros((0, 3)))


@pytest.mark.parametrize("name", ["non_saturating", "lsgan"])
def test_real_label_must_be_a_scalar(name):
    r, f = jnp.ones(4), -jnp.ones(4)
    for bad in (jnp.full(4, 2.0), jnp.full(4, 0.9), np.full(3, 0.9)):
        with pytest.raises(ValueError, match="real_label must be a scalar"):
            L.d_loss(name)(r, f, real_label=bad)
    with pytest.raises(ValueError, match="real_label must be a scalar"):
        jax.jit(lambda y: L.d_loss(name)(r, f, real_label=y))(jnp.full(4, 0.9))
    np.testing.assert_allclose(L.d_loss(name)(r, f, real_label=jnp.float32(0.9)),
                               L.d_loss(name)(r, f, real_label=0.9), rtol=1e-6)


def test_keys_must_be_prng_keys():
    critic = functools.partial(_critic, jnp.ones((3, 2)))
    real, fake = jnp.ones((4, 3)), jnp.zeros((4, 3))
    for bad in (0, jnp.ones(2), jax.random.split(jax.random.key(0), 4)):
        with pytest.raises(ValueError, match="key must be a PRNG key"):
            L.gradient_penalty(bad, critic, real, fake)
        with pytest.raises(ValueError, match="key must be a PRNG key"):
            L.add_instance_noise(bad, real, 0.1)
    # A legacy uint32 key is the same stream as the typed key of that seed.
    np.testing.assert_allclose(L.gradient_penalty(jax.random.PRNGKey(3), critic, real, fake),
                               L.gradient_penalty(jax.random.key(3), critic, real, fake),
                               rtol=1e-6)


def test_penalties_refuse_tuple_critics_and_non_scalar_step():
    w = jnp.ones((3, 2))
    real, fake = jnp.ones((4, 3)), jnp.zeros((4, 3))

    def pair_critic(x):  # what the project's discriminators return
        return _critic(w, x), x

    with pytest.raises(ValueError, match=r"critic must return logits of shape \(N,\)"):
        L.gradient_penalty(jax.random.key(0), pair_critic, real, fake)
    with pytest.raises(ValueError, match=r"critic must return logits of shape \(N,\)"):
        L.r1_penalty(pair_critic, real)
    with pytest.raises(ValueError, match="step must be an int scalar"):
        L.lazy_r1(functools.partial(_critic, w), real, step=jnp.arange(4), interval=4)
    with pytest.raises(ValueError, match="step must be an int scalar"):
        L.lazy_r1(functools.partial(_critic, w), real, step=0.5, interval=4)
    # The logits of the pair critic are accepted, and second-order grads still work under jit.
    grad = jax.jit(jax.grad(lambda v: L.lazy_r1(
        lambda x: pair_critic(x)[0] * jnp.sum(v), real, step=jnp.int32(0), interval=2)))(w)
    assert np.all(np.isfinite(grad)) and np.any(np.asarray(grad))
