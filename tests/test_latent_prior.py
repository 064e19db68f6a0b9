"""The mixture latent prior (`layers.MixtureLatent`, `make_gan(..., latent_components=)`).

References: the component index and the output recomputed in float64 with SciPy's normal CDF,
a chi-square bound on the component counts, the plain generator (components = 0) and the
config validation.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from ganaug_jax import config as config_lib
from ganaug_jax.models import MixtureLatent, make_gan


def _apply(components, std, z, seed=0):
    module = MixtureLatent(components=components, std=std)
    variables = module.init(jax.random.key(seed), z)
    return module, variables, module.apply(variables, z)


def test_output_matches_float64_reference():
    z = np.random.default_rng(0).normal(size=(512, 6)).astype(np.float32)
    _, variables, out = _apply(7, 0.3, jnp.asarray(z))
    centres = np.asarray(variables["params"]["centres"], np.float64)
    assert centres.shape == (7, 6)
    component = np.minimum(np.floor(7 * stats.norm.cdf(z[:, 0].astype(np.float64))), 6).astype(int)
    np.testing.assert_allclose(out, centres[component] + 0.3 * z.astype(np.float64),
                               rtol=1e-6, atol=1e-6)
    assert out.dtype == jnp.float32


def test_components_are_uniform_and_used():
    """200,000 standard-normal latents over 16 components: the centre each output was built
    from (output - std * z) is uniform over the components (chi-square test at p = 1e-4)."""
    z = jax.random.normal(jax.random.key(1), (200_000, 4))
    _, variables, out = _apply(16, 0.25, z)
    centres = np.asarray(variables["params"]["centres"])
    offsets = np.asarray(out) - 0.25 * np.asarray(z)
    distance = np.abs(offsets[:, None] - centres[None]).max(-1)
    assert np.all(distance.min(1) < 1e-5)  # every output is one centre + std * z
    counts = np.bincount(distance.argmin(1), minlength=16)
    assert stats.chisquare(counts).pvalue > 1e-4


def test_gradients_reach_only_the_chosen_centres():
    z = jnp.asarray(np.random.default_rng(2).normal(size=(3, 5)).astype(np.float32))
    module, variables, _ = _apply(50, 0.25, z)
    grads = jax.grad(lambda v: module.apply(v, z).sum())(variables)["params"]["centres"]
    chosen = np.minimum(np.floor(50 * stats.norm.cdf(np.asarray(z[:, 0], np.float64))), 49)
    used = np.zeros(50, bool)
    used[chosen.astype(int)] = True
    for c in range(50):  # d(sum of outputs)/d centre_c = (samples choosing c) per coordinate
        np.testing.assert_allclose(grads[c], np.full(5, np.sum(chosen == c)), atol=0)
    assert used.sum() >= 1 and np.all(grads[~used] == 0)


@pytest.mark.parametrize("architecture, data_shape", [("mlp", (2,)), ("dcgan", (8, 8, 1))])
def test_generators_with_and_without_the_prior(architecture, data_shape):
    """components = 0 is the plain generator (no 'latent' params); > 0 feeds the mixture's
    output to the same layers: same result as the plain generator applied to it."""
    plain, _ = make_gan(architecture, data_shape=data_shape, latent_dim=8, width=8)
    mixed, _ = make_gan(architecture, data_shape=data_shape, latent_dim=8, width=8,
                        latent_components=5, latent_component_std=0.5)
    z = jax.random.normal(jax.random.key(3), (4, 8))
    plain_vars = plain.init(jax.random.key(4), z, train=False)
    mixed_vars = mixed.init(jax.random.key(4), z, train=False)
    assert "latent" not in plain_vars["params"]
    assert mixed_vars["params"]["latent"]["centres"].shape == (5, 8)
    rest = {k: v for k, v in mixed_vars["params"].items() if k != "latent"}
    mapped = MixtureLatent(components=5, std=0.5).apply(
        {"params": mixed_vars["params"]["latent"]}, z)
    want = plain.apply({"params": rest, "batch_stats": mixed_vars.get("batch_stats", {})},
                       mapped, train=False)
    got = jax.jit(lambda v, z: mixed.apply(v, z, train=False))(mixed_vars, z)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(latent_components=-1), "latent_components"),
    (dict(latent_components=2.5), "latent_components"),
    (dict(latent_components=4, latent_component_std=0.0), "latent_component_std"),
    (dict(latent_components=4, latent_component_std=-1.0), "latent_component_std"),
])
def test_bad_arguments_name_themselves(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_gan("mlp", data_shape=(2,), **kwargs)


@pytest.mark.parametrize("key, value", [("model.latent_components", -1),
                                        ("model.latent_component_std", 0.0)])
def test_config_rejects_impossible_values(key, value):
    config = config_lib.load_config("configs/default.py")
    config = config_lib.apply_overrides(config, [f"{key}={value}"])
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        config_lib.validate(config)


def test_trained_run_generates_from_the_mixture_and_refuses_truncation(tmp_path):
    """The real entry point trains with the prior (its centres move), `generate` samples the
    EMA generator through it, and --truncation is refused (it would skew the components)."""
    from ganaug_jax.train.generate import generate, load_run_state, sample_generator, sample_latents
    from ganaug_jax.train.loop import train_and_evaluate
    from ganaug_jax.train.state import create_train_state
    config = config_lib.apply_overrides(config_lib.load_config("configs/default.py"), [
        "num_steps=4", "batch_size=16", "checkpoint_every=4", "log_every=2", "sample_every=0",
        "model.width=16", "model.latent_dim=4", "model.latent_components=8"])
    state = train_and_evaluate(config, str(tmp_path / "run"), progress=False)
    _, run, restored = load_run_state(str(tmp_path / "run"))
    initial = create_train_state(jax.random.key(config.seed), run.generator, run.discriminator,
                                 run.g_tx, run.d_tx, data_shape=run.source.shape,
                                 latent_dim=run.latent_dim, num_classes=run.num_classes)
    before = np.asarray(initial.g_params["latent"]["centres"])
    after = np.asarray(restored.g_params["latent"]["centres"])
    assert before.shape == after.shape == (8, 4)
    assert not np.allclose(before, after)  # learned, not fixed
    np.testing.assert_array_equal(after, state.g_params["latent"]["centres"])
    x = generate(run, restored, num=5, seed=3)["x"]
    z = sample_latents(jax.random.key(3), jnp.arange(5), latent_dim=4)
    np.testing.assert_allclose(x, sample_generator(run, restored, z, None), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="--truncation .*latent_components"):
        generate(run, restored, num=5, seed=3, truncation=1.0)
