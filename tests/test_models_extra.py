"""ProGAN's minibatch standard deviation (`layers.minibatch_std`) and the discriminator option
that uses it (`DCGANDiscriminator.minibatch_std`, `make_gan(..., minibatch_std=)`).

References: a float64 NumPy loop over the groups, the layer-free discriminator, and the same
jitted discriminator on 1 device vs 8 fake CPU devices (tests/conftest.py).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ganaug_jax.models import DCGANDiscriminator, make_gan
from ganaug_jax.models.layers import minibatch_std


def _reference(h: np.ndarray, group_size: int) -> np.ndarray:
    """float64 by hand: groups of consecutive samples, population std (ddof=0) with 1e-8 under
    the square root, averaged over H, W, C, repeated for every member of the group."""
    h = np.asarray(h, np.float64)
    n = h.shape[0]
    g = min(group_size, n)
    extra = np.empty(n)
    for start in range(0, n, g):
        group = h[start:start + g]
        mean = group.sum(axis=0) / g
        var = ((group - mean) ** 2).sum(axis=0) / g
        extra[start:start + g] = np.sqrt(var + 1e-8).mean()
    channel = np.broadcast_to(extra[:, None, None, None], (*h.shape[:3], 1))
    return np.concatenate([h, channel], axis=-1)


def _batch(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("group_size", [1, 2, 4, 8])
def test_minibatch_std_matches_float64_reference(group_size):
    h = _batch((8, 3, 2, 5), seed=group_size)
    h[4:] *= 3.0  # groups of different spread, so a wrong grouping cannot pass
    out = np.asarray(minibatch_std(jnp.asarray(h), group_size))
    assert out.shape == (8, 3, 2, 6) and out.dtype == np.float32
    np.testing.assert_allclose(out, _reference(h, group_size), rtol=2e-6, atol=1e-7)
    np.testing.assert_array_equal(out[..., :5], h)  # the input channels pass through untouched


def test_minibatch_std_group_of_one_is_sqrt_of_epsilon():
    out = np.asarray(minibatch_std(jnp.asarray(_batch((3, 2, 2, 1), 0)), 1))
    np.testing.assert_allclose(out[..., 1], np.sqrt(1e-8), rtol=1e-6)


def test_minibatch_std_groups_are_consecutive_samples():
    # Samples 0-1 identical, samples 2-3 far apart: consecutive grouping gives std ~0 for the
    # first pair; an interleaved grouping (0, 2), (1, 3) would not.
    h = np.zeros((4, 1, 1, 1), np.float32)
    h[2], h[3] = -5.0, 5.0
    extra = np.asarray(minibatch_std(jnp.asarray(h), 2))[:, 0, 0, 1]
    np.testing.assert_allclose(extra, [1e-4, 1e-4, 5.0, 5.0], rtol=1e-5)


def test_minibatch_std_group_larger_than_batch_is_one_group():
    h = _batch((4, 2, 2, 3), seed=1)
    big = np.asarray(minibatch_std(jnp.asarray(h), 16))
    np.testing.assert_array_equal(big, np.asarray(minibatch_std(jnp.asarray(h), 4)))
    np.testing.assert_allclose(big, _reference(h, 4), rtol=2e-6, atol=1e-7)
    assert np.unique(big[..., -1]).size == 1  # one value for the whole batch


@pytest.mark.parametrize("n, group_size", [(6, 4), (5, 2), (9, 4)])
def test_minibatch_std_batch_not_divisible_raises(n, group_size):
    with pytest.raises(ValueError, match=rf"group size {group_size} must divide the batch size {n}"):
        minibatch_std(jnp.zeros((n, 2, 2, 1)), group_size)


def test_minibatch_std_extra_channel_constant_over_space_and_group():
    h = _batch((6, 4, 5, 2), seed=2)
    extra = np.asarray(minibatch_std(jnp.asarray(h), 3))[..., -1]
    np.testing.assert_array_equal(extra, np.broadcast_to(extra[:, :1, :1], extra.shape))
    per_sample = extra[:, 0, 0]
    np.testing.assert_array_equal(per_sample[:3], per_sample[0])
    np.testing.assert_array_equal(per_sample[3:], per_sample[3])
    assert per_sample[0] != per_sample[3]


def test_minibatch_std_jit_equals_eager_and_keeps_dtype():
    h = jnp.asarray(_batch((4, 2, 2, 3), seed=3))
    eager = minibatch_std(h, 2)
    jitted = jax.jit(minibatch_std, static_argnums=1)(h, 2)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-6)
    half = minibatch_std(h.astype(jnp.bfloat16), 2)
    assert half.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(half, np.float32), _reference(np.asarray(h), 2),
                               rtol=2e-2, atol=2e-2)


def test_minibatch_std_gradient_finite_for_identical_samples():
    # With no diversity at all the variance is 0; the 1e-8 inside the sqrt keeps d/dh finite.
    h = jnp.ones((4, 2, 2, 1))
    grad = jax.jit(jax.grad(lambda x: minibatch_std(x, 4)[..., -1].sum()))(h)
    assert np.isfinite(np.asarray(grad)).all()


# ---- the discriminator option ----

SHAPE = (8, 8, 1)


def _d(minibatch, num_classes=0, **kw):
    return DCGANDiscriminator(image_shape=SHAPE, num_classes=num_classes, width=4,
                              minibatch_std=minibatch, **kw)


def _init(d, x, labels=None, seed=0):
    """Random variables of init's shapes (a real init compiles flax's initialisers, seconds on
    CPU): kernels N(0, 1/fan_in), everything else N(0, 1), spectral-norm sigma 1."""
    shapes = jax.eval_shape(lambda: d.init(jax.random.key(0), x, labels, train=False))
    rng = np.random.default_rng(seed)

    def leaf(path, s):
        if path[-1].key == "sigma":
            return jnp.ones(s.shape, s.dtype)
        fan_in = int(np.prod(s.shape[:-1])) if len(s.shape) >= 2 else 1
        return jnp.asarray(rng.normal(size=s.shape) / np.sqrt(fan_in), s.dtype)

    return jax.tree_util.tree_map_with_path(leaf, shapes)


@jax.jit
def _images(key):
    return jnp.tanh(jax.random.normal(key, (4, *SHAPE)))


def test_discriminator_features_gain_one_channel():
    x = _images(jax.random.key(1))
    with_std, without = _d(2), _d(0)
    v = _init(with_std, x)
    logits, features = jax.jit(lambda v, x: with_std.apply(v, x, train=False))(v, x)
    # 8x8 -> one stride-2 stage (depth 1): base 4, width 4 channels, + 1 std channel.
    assert logits.shape == (4,) and features.shape == (4, 4 * 4 * (4 + 1))
    assert _init(without, x)["params"]["head"]["linear"]["kernel"].shape == (4 * 4 * 4, 1)
    assert v["params"]["head"]["linear"]["kernel"].shape == (4 * 4 * 5, 1)
    # the last feature channel is the minibatch std of the conv activations, one per group
    extra = np.asarray(features).reshape(4, 4, 4, 5)[..., -1]
    assert np.all(extra == extra[:, :1, :1])
    assert extra[0, 0, 0] == extra[1, 0, 0] and extra[2, 0, 0] == extra[3, 0, 0]


def test_discriminator_output_depends_on_diversity_within_the_group_only():
    d = _d(2)
    x = _images(jax.random.key(2))
    v = _init(d, x)
    apply = jax.jit(lambda x: d.apply(v, x, train=False)[0])
    base = np.asarray(apply(x))
    # Sample 0's neighbour in its group becomes a copy of sample 0: no diversity in group 0.
    collapsed = np.asarray(apply(x.at[1].set(x[0])))
    assert abs(collapsed[0] - base[0]) > 1e-6   # sample 0 itself did not change
    np.testing.assert_array_equal(collapsed[2:], base[2:])  # the other group is unaffected
    # Without the layer, each logit depends on its own sample only.
    d0 = _d(0)
    v0 = _init(d0, x)
    plain = jax.jit(lambda x: d0.apply(v0, x, train=False)[0])
    np.testing.assert_allclose(np.asarray(plain(x.at[1].set(x[0])))[0], np.asarray(plain(x))[0],
                               rtol=1e-6)


def test_discriminator_sees_collapse_through_the_std_channel():
    # Identical images in a group: the extra feature channel is exactly sqrt(1e-8).
    d = _d(4)
    x = jnp.broadcast_to(_images(jax.random.key(3))[:1], (4, *SHAPE))
    v = _init(d, x)
    _, features = jax.jit(lambda v, x: d.apply(v, x, train=False))(v, x)
    extra = np.asarray(features).reshape(4, 4, 4, 5)[..., -1]
    np.testing.assert_allclose(extra, np.sqrt(1e-8), rtol=1e-5)


def test_make_gan_minibatch_std_arguments():
    _, d = make_gan("dcgan", data_shape=SHAPE, width=4, minibatch_std=4)
    assert d.minibatch_std == 4
    with pytest.raises(ValueError, match=r"minibatch_std is for dcgan only"):
        make_gan("mlp", data_shape=(2,), minibatch_std=4)
    make_gan("mlp", data_shape=(2,), minibatch_std=0)  # 0 means off, also for mlp
    for bad in (-1, 2.0, True):
        with pytest.raises(ValueError, match=r"minibatch_std must be an int >= 0"):
            make_gan("dcgan", data_shape=SHAPE, minibatch_std=bad)
    with pytest.raises(ValueError, match=r"minibatch_std must be an int >= 0"):
        DCGANDiscriminator(image_shape=SHAPE, minibatch_std=-2)


@pytest.mark.parametrize("group_size", [2, 16])
def test_discriminator_eight_devices_equal_one_device(group_size):
    """Group 2: each group lies on one device; group 16: one group spans all 8 devices."""
    devices = jax.devices()
    assert len(devices) == 8
    d = _d(group_size, num_classes=3, spectral_norm=True)
    x = jnp.tanh(jax.random.normal(jax.random.key(4), (16, *SHAPE)))
    y = jnp.arange(16, dtype=jnp.int32) % 3
    v = _init(d, x[:2], y[:2])

    def fwd(v, x, y):
        (logits, features), _ = d.apply(v, x, y, train=True, mutable=["batch_stats"])
        return logits, features

    one = jax.device_get(jax.jit(fwd)(v, x, y))
    mesh = Mesh(np.asarray(devices), ("data",))
    rep, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    sharded = jax.jit(fwd, in_shardings=(rep, split, split), out_shardings=(split, split))
    eight = sharded(jax.device_put(v, rep), jax.device_put(x, split), jax.device_put(y, split))
    assert len(eight[0].sharding.device_set) == 8
    for a, b in zip(one, jax.device_get(eight)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    # and the sharded extra channel is the float64 reference of the activations it was
    # computed from (the features before it: D's last conv output, gathered from 8 devices)
    h = np.asarray(jax.device_get(eight[1])).reshape(16, 4, 4, 5)
    np.testing.assert_allclose(h, _reference(h[..., :4], group_size), rtol=2e-6, atol=1e-7)
    assert len(np.unique(h[:, 0, 0, -1])) == 16 // min(group_size, 16)  # one value per group
