"""MSGAN's mode-seeking term (`losses.mode_seeking`) and its use in the training step
(`LossConfig.mode_seeking`): NumPy float64 hand formulas for the value and its gradient, bad
shapes, and the term inside a jitted conditional step recomputed from the same latents."""

import dataclasses
import importlib
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ganaug_jax import losses as L
from ganaug_jax.models import make_gan
from ganaug_jax.train.state import create_train_state
from ganaug_jax.train.step import LossConfig, make_train_step


def _reference(fa, fb, za, zb, eps=1e-5):
    """1 / (mean|G(z_a) - G(z_b)| / mean|z_a - z_b| + eps), in float64 with explicit sums."""
    fa, fb, za, zb = (np.asarray(a, np.float64) for a in (fa, fb, za, zb))
    image_distance = np.abs(fa - fb).sum() / fa.size
    latent_distance = np.abs(za - zb).sum() / za.size
    return 1.0 / (image_distance / latent_distance + eps)


def _pairs(seed, shape=(6, 4, 4, 3), latent=5):
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, shape).astype(np.float32),
            rng.uniform(-1, 1, shape).astype(np.float32),
            rng.normal(size=(shape[0], latent)).astype(np.float32),
            rng.normal(size=(shape[0], latent)).astype(np.float32))


@pytest.mark.parametrize("shape", [(6, 4, 4, 3), (5, 2), (1, 8, 8, 1)])
@pytest.mark.parametrize("eps", [1e-5, 0.5])
def test_mode_seeking_matches_float64_formula(shape, eps):
    fa, fb, za, zb = _pairs(len(shape), shape)
    value = L.mode_seeking(fa, fb, za, zb, eps=eps)
    assert value.shape == () and value.dtype == jnp.float32
    np.testing.assert_allclose(float(value), _reference(fa, fb, za, zb, eps), rtol=2e-6)
    jitted = jax.jit(lambda *a: L.mode_seeking(*a, eps=eps))(fa, fb, za, zb)
    np.testing.assert_allclose(float(jitted), float(value), rtol=1e-6)


def test_mode_seeking_is_symmetric_and_bfloat16_computes_in_float32():
    fa, fb, za, zb = _pairs(3)
    np.testing.assert_allclose(float(L.mode_seeking(fb, fa, zb, za)),
                               float(L.mode_seeking(fa, fb, za, zb)), rtol=1e-6)
    half = L.mode_seeking(*(jnp.asarray(a, jnp.bfloat16) for a in (fa, fb, za, zb)))
    assert half.dtype == jnp.float32
    rounded = [np.asarray(jnp.asarray(a, jnp.bfloat16), np.float64) for a in (fa, fb, za, zb)]
    np.testing.assert_allclose(float(half), _reference(*rounded), rtol=1e-5)


def test_mode_seeking_gradient_matches_hand_derivative():
    """d/d fa of 1 / (r + eps), r = mean|fa - fb| / mean|za - zb|:
    -1 / (r + eps)^2 * sign(fa - fb) / (fa.size * mean|za - zb|)."""
    fa, fb, za, zb = _pairs(4)
    grad = np.asarray(jax.jit(jax.grad(L.mode_seeking))(fa, fb, za, zb), np.float64)
    f64 = [np.asarray(a, np.float64) for a in (fa, fb, za, zb)]
    dz = np.abs(f64[2] - f64[3]).mean()
    r = np.abs(f64[0] - f64[1]).mean() / dz
    expected = -np.sign(f64[0] - f64[1]) / (fa.size * dz) / (r + 1e-5) ** 2
    np.testing.assert_allclose(grad, expected, rtol=1e-5)


def test_moving_paired_samples_apart_lowers_the_term():
    fa, fb, za, zb = _pairs(5)
    grad = np.asarray(jax.grad(L.mode_seeking)(fa, fb, za, zb), np.float64)
    apart = (fa - fb).astype(np.float64)
    assert np.sum(grad * apart) < 0  # the directional derivative along "further apart"
    before = float(L.mode_seeking(fa, fb, za, zb))
    for t in (0.1, 1.0):
        moved = (fa + t * (fa - fb)).astype(np.float32)
        assert float(L.mode_seeking(moved, fb, za, zb)) < before
    # and latents further apart (same images) raise it: the same image distance is worth less
    assert float(L.mode_seeking(fa, fb, za, 3 * zb - 2 * za)) > before
    # identical pairs (collapse) give the largest value, 1 / eps
    np.testing.assert_allclose(float(L.mode_seeking(fa, fa, za, zb)), 1 / 1e-5, rtol=1e-6)


@pytest.mark.parametrize("shapes", [
    ((4, 3), (4, 2), (4, 5), (4, 5)),      # images differ
    ((4, 3), (4, 3), (4, 5), (4, 6)),      # latents differ
    ((4, 3), (4, 3), (3, 5), (3, 5)),      # batch of images != batch of latents
    ((4, 3), (3, 3), (4, 5), (4, 5)),      # one half shorter
])
def test_mode_seeking_rejects_unpaired_shapes(shapes):
    arrays = [jnp.zeros(s) for s in shapes]
    with pytest.raises(ValueError, match=r"mode_seeking needs paired samples and latents"):
        L.mode_seeking(*arrays)


def test_mode_seeking_signature_defaults_are_keyword_only():
    params = inspect.signature(L.mode_seeking).parameters
    assert params["eps"].kind is inspect.Parameter.KEYWORD_ONLY and params["eps"].default == 1e-5


# ---- in the training step ----

K, LATENT, B, SHAPE = 3, 4, 8, (8, 8, 1)


def _setup(weights, *, architecture="dcgan", shape=SHAPE, num_classes=K):
    """One initial state, a batch, and one jitted step per mode_seeking weight."""
    g, d = make_gan(architecture, data_shape=shape, num_classes=num_classes, latent_dim=LATENT,
                    width=4)
    g_tx, d_tx = optax.adam(1e-2), optax.adam(1e-2)
    # Only the initial params are drawn without partitionable threefry: XLA:CPU compiles the
    # rank-4 conv-kernel initialisers ~10x faster so. The step runs with JAX's defaults.
    with jax.threefry_partitionable(False):
        state = jax.jit(lambda key: create_train_state(
            key, g, d, g_tx, d_tx, data_shape=shape, latent_dim=LATENT,
            num_classes=num_classes))(jax.random.key(0))
    steps = [jax.jit(make_train_step(generator=g, discriminator=d, g_tx=g_tx, d_tx=d_tx,
                                     latent_dim=LATENT, num_classes=num_classes,
                                     loss=LossConfig(mode_seeking=w))) for w in weights]
    rng = np.random.default_rng(0)
    batch = {"x": jnp.asarray(rng.uniform(-1, 1, (1, B, *shape)), jnp.float32)}
    if num_classes:
        batch["y"] = jnp.asarray(rng.integers(0, num_classes, (1, B)), jnp.int32)
    return g, state, steps, batch


@pytest.fixture(scope="module")
def conditional_steps():
    """One conditional DCGAN step with mode_seeking weights 1 and 0, same state and batch."""
    g, state, (step_ms, step_plain), batch = _setup([1.0, 0.0])
    after_ms, metrics_ms = step_ms(state, batch)
    after_plain, metrics_plain = step_plain(state, batch)
    return g, state, batch, (after_ms, metrics_ms), (after_plain, metrics_plain)


def _generator_latents(state):
    """The G update's latents, derived as the step documents: key = fold_in(state.key, step),
    (k_d, k_g) = split(key), (k_lat, k_aug) = split(k_g), (k_z, k_y) = split(k_lat)."""
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
    _, k_g = jax.random.split(key)
    k_lat, _ = jax.random.split(k_g)
    k_z, k_y = jax.random.split(k_lat)
    z = jax.random.normal(k_z, (B, LATENT), jnp.float32)
    y = jax.random.randint(k_y, (B,), 0, K)
    return np.asarray(z), np.asarray(y)


def test_step_metric_equals_formula_on_pairs_that_share_their_class(conditional_steps):
    g, state, _, (_, metrics), _ = conditional_steps
    assert "mode_seeking" in metrics
    value = float(metrics["mode_seeking"])
    assert np.isfinite(value) and value > 0
    z, y = _generator_latents(state)
    paired = np.concatenate([y[:B // 2], y[:B // 2]])  # sample i and i + B/2: one class

    @jax.jit
    def fakes(labels):
        variables = {"params": state.g_params, "batch_stats": state.g_stats}
        return g.apply(variables, jnp.asarray(z), labels, train=True, mutable=["batch_stats"])[0]

    x = np.asarray(fakes(jnp.asarray(paired)))
    h = B // 2
    np.testing.assert_allclose(value, _reference(x[:h], x[h:], z[:h], z[h:]), rtol=1e-5)
    # The labels matter: with the unpaired labels the same formula gives another value.
    assert not np.array_equal(paired, y)
    x_unpaired = np.asarray(fakes(jnp.asarray(y)))
    assert abs(_reference(x_unpaired[:h], x_unpaired[h:], z[:h], z[h:]) - value) > 1e-4 * value


def test_step_weight_changes_generator_but_not_discriminator(conditional_steps):
    _, state, _, (after_ms, metrics_ms), (after_plain, metrics_plain) = conditional_steps
    assert "mode_seeking" not in metrics_plain
    # The D update comes first and does not involve the mode-seeking term.
    for a, b in zip(jax.tree.leaves(after_ms.d_params), jax.tree.leaves(after_plain.d_params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(float(metrics_ms["d_loss"]), float(metrics_plain["d_loss"]))
    different = [not np.allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
                 for a, b in zip(jax.tree.leaves(after_ms.g_params),
                                 jax.tree.leaves(after_plain.g_params))]
    assert any(different)
    changed = [not np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree.leaves(after_ms.g_params), jax.tree.leaves(state.g_params))]
    assert all(changed)
    assert np.isfinite(float(metrics_ms["g_loss"])) and np.isfinite(float(metrics_ms["g_grad_norm"]))


def test_unconditional_step_metric_equals_formula_on_its_latents():
    g, state, (step,), batch = _setup([0.5], architecture="mlp", shape=(2,), num_classes=0)
    after, metrics = step(state, batch)
    assert int(after.step) == 1
    z, _ = _generator_latents(state)  # no labels: any two samples pair, i with i + B/2
    x = np.asarray(jax.jit(lambda z: g.apply({"params": state.g_params,
                                              "batch_stats": state.g_stats}, z, None,
                                             train=True, mutable=["batch_stats"])[0])(z))
    h = B // 2
    np.testing.assert_allclose(float(metrics["mode_seeking"]),
                               _reference(x[:h], x[h:], z[:h], z[h:]), rtol=1e-5)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(after.g_params))


# ---- bad input: mode_seeking, LossConfig and make_train_step ----

def test_mode_seeking_refuses_bad_eps_and_rank_one_latents():
    fa, fb, za, zb = _pairs(0, shape=(4, 3), latent=2)
    for eps in (0.0, -1e-5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="eps must be a finite number > 0"):
            L.mode_seeking(fa, fb, za, zb, eps=eps)
    with pytest.raises(ValueError, match=r"z_a and z_b must have shape \(N, latent_dim\)"):
        L.mode_seeking(fa, fb, za[:, 0], zb[:, 0])
    # A traced eps is used as it is.
    np.testing.assert_allclose(jax.jit(lambda e: L.mode_seeking(fa, fb, za, zb, eps=e))(0.5),
                               _reference(fa, fb, za, zb, eps=0.5), rtol=1e-5)


@pytest.mark.parametrize("fields,match", [
    (dict(name="wgan-gp"), "LossConfig.name"),
    (dict(name="wgan", gp_weight=-10.0), "LossConfig.gp_weight"),
    (dict(r1_gamma=-1.0), "LossConfig.r1_gamma"),
    (dict(feature_matching=-1.0), "LossConfig.feature_matching"),
    (dict(mode_seeking=float("inf")), "LossConfig.mode_seeking"),
    (dict(instance_noise_std=float("nan"), instance_noise_steps=10),
     "LossConfig.instance_noise_std"),
    (dict(instance_noise_std=0.1, instance_noise_steps=0), "LossConfig.instance_noise_steps"),
    (dict(r1_gamma=1.0, r1_interval=0), "LossConfig.r1_interval"),
    (dict(r1_interval=2.0), "LossConfig.r1_interval"),
    (dict(real_label=1.5), "LossConfig.real_label"),
    (dict(real_label=0.0), "LossConfig.real_label"),
    (dict(real_label=np.full(2, 0.9)), "LossConfig.real_label"),
    (dict(name="hinge", real_label=0.9), "LossConfig.real_label"),
    (dict(gp_weight=True), "LossConfig.gp_weight"),
])
def test_loss_config_validates_fields(fields, match):
    with pytest.raises(ValueError, match=match):
        LossConfig(**fields)


@pytest.mark.parametrize("name", ["default", "digits", "digits_lowdata", "grid25", "ring8"])
def test_loss_config_accepts_the_shipped_configs(name):
    config = importlib.import_module(f"configs.{name}").get_config()
    loss = LossConfig(**config.loss.to_dict())
    assert dataclasses.asdict(loss) == config.loss.to_dict()
    assert LossConfig(name="wgan", gp_weight=10, real_label=1).gp_weight == 10


@pytest.mark.parametrize("kwargs,match", [
    (dict(ema_decay=2.0), "ema_decay"),
    (dict(ema_decay=float("nan")), "ema_decay"),
    (dict(fixed_p=1.5), "fixed_p"),
    (dict(latent_dim=0), "latent_dim"),
    (dict(num_classes=-1), "num_classes"),
    (dict(reuse_fake=1), "reuse_fake"),
    (dict(loss={"name": "hinge"}), "loss must be a LossConfig"),
    (dict(latent_dim=LATENT + 1), rf"latent_dim={LATENT + 1} differs from the generator's "
                                  rf"latent_dim={LATENT}"),
    (dict(num_classes=3), "num_classes=3 differs from the generator's num_classes=0"),
])
def test_make_train_step_validates_its_arguments_when_built(kwargs, match):
    g, d = make_gan("mlp", data_shape=(2,), latent_dim=LATENT, width=8)
    args = dict(generator=g, discriminator=d, g_tx=optax.adam(1e-3), d_tx=optax.adam(1e-3),
                latent_dim=LATENT, num_classes=0)
    with pytest.raises(ValueError, match=match):
        make_train_step(**{**args, **kwargs})
