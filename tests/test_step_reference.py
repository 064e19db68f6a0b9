"""The default training step against an independent reimplementation of one GAN iteration:
n_critic D updates on augmented (ADA) real and fake batches with R1, instance noise and the
ADA controller, then a G update through the augmentation with feature matching, Adam, EMA.

Written from the step's documented key schedule (step key = fold_in(run key, step) -> split
(D, G); D update i's key -> split into (latents, real aug, fake aug, penalty); each aug key
-> split (pipeline, instance noise)) and the papers' formulas, not from the step's code.
Adam's first moments hold (1 - b1) * gradient, so comparing optimizer states compares the
gradients themselves (the first Adam step's parameter update is about lr * sign(grad) and
would hide a wrong gradient scale)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ganaug_jax import augment as A
from ganaug_jax.models import make_gan
from ganaug_jax.train.state import create_train_state
from ganaug_jax.train.step import LossConfig, make_train_step

SHAPE, CLASSES, LATENT, N, N_CRITIC = (8, 8, 3), 3, 8, 8, 2
R1_GAMMA, FM_WEIGHT, NOISE_STD, NOISE_STEPS, EMA = 0.7, 0.3, 0.1, 10, 0.9
ADA_TARGET, ADA_SPEED, ADA_INTERVAL, P0 = 0.6, 64, 2, 0.5


def _setup():
    g, d = make_gan("dcgan", data_shape=SHAPE, num_classes=CLASSES, latent_dim=LATENT, width=8)
    tx = optax.adam(1e-3, b1=0.5, b2=0.999)
    state = create_train_state(jax.random.key(0), g, d, tx, tx, data_shape=SHAPE,
                               latent_dim=LATENT, num_classes=CLASSES, ada_initial_p=P0)
    batch = {"x": jax.random.uniform(jax.random.key(1), (N_CRITIC, N, *SHAPE), minval=-1,
                                     maxval=1),
             "y": jax.random.randint(jax.random.key(2), (N_CRITIC, N), 0, CLASSES)}
    return g, d, tx, state, batch


def _reference_step(g, d, tx, pipeline, state, batch):
    """One iteration from the formulas; returns (new state fields as a dict, metrics)."""
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
    k_d, k_g = jax.random.split(key)
    g_params, g_stats, d_params, d_stats = (state.g_params, state.g_stats, state.d_params,
                                            state.d_stats)
    g_opt, d_opt = state.g_opt_state, state.d_opt_state
    p, rt = float(state.ada.p), float(state.ada.rt)
    sign_sum, count, calls = 0.0, 0, 0
    noise_std = NOISE_STD * max(0.0, 1.0 - int(state.step) / NOISE_STEPS)

    def draw(k):
        k_z, k_y = jax.random.split(k)
        return (jax.random.normal(k_z, (N, LATENT)),
                jax.random.randint(k_y, (N,), 0, CLASSES))

    @jax.jit  # the reference's pieces are jitted only to keep the test fast
    def what_d_sees(k, x, p):
        k_aug, k_noise = jax.random.split(k)
        return pipeline(k_aug, x, p) + noise_std * jax.random.normal(k_noise, x.shape)

    @jax.jit
    def g_forward(params, stats, z, y):  # D's phase discards G's new statistics
        return g.apply({"params": params, "batch_stats": stats}, z, y, train=True,
                       mutable=["batch_stats"])[0]

    def d_objective(params, d_stats, real_in, fake_in, y_real, y_fake):
        (logits, features), upd = d.apply(
            {"params": params, "batch_stats": d_stats}, jnp.concatenate([real_in, fake_in]),
            jnp.concatenate([y_real, y_fake]), train=True, mutable=["batch_stats"])
        real_logits, fake_logits = logits[:N], logits[N:]
        bce = jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))

        def critic_sum(x):  # D in eval mode with this forward's statistics
            return jnp.sum(d.apply({"params": params, "batch_stats": upd["batch_stats"]}, x,
                                   y_real, train=False)[0])

        r1 = jnp.mean(jnp.sum(jax.grad(critic_sum)(real_in) ** 2, axis=(1, 2, 3)))
        return bce + 0.5 * R1_GAMMA * r1, (upd["batch_stats"], real_logits, features[:N], bce, r1)

    d_grad = jax.jit(jax.grad(d_objective, has_aux=True))
    metrics = {}
    for i, d_key in enumerate(jax.random.split(k_d, N_CRITIC)):
        k_lat, k_real, k_fake, _ = jax.random.split(d_key, 4)
        z, y_fake = draw(k_lat)
        fake = g_forward(g_params, g_stats, z, y_fake)
        x_real, y_real = batch["x"][i], batch["y"][i]
        real_in = what_d_sees(k_real, x_real, jnp.float32(p))
        fake_in = what_d_sees(k_fake, fake, jnp.float32(p))
        grads, (d_stats, real_logits, real_features, bce, r1) = d_grad(
            d_params, d_stats, real_in, fake_in, y_real, y_fake)
        updates, d_opt = tx.update(grads, d_opt, d_params)
        d_params = optax.apply_updates(d_params, updates)
        metrics.update(d_loss=bce, r1_penalty=r1, augment_p=p)
        # ADA (Karras et al. 2020): r_t = E[sign(D(x_real))] over `interval` D updates
        signs = np.sign(np.asarray(real_logits, np.float64))
        sign_sum, count, calls = sign_sum + signs.sum(), count + signs.size, calls + 1
        if calls == ADA_INTERVAL:
            rt = sign_sum / count
            p = float(np.clip(p + np.sign(rt - ADA_TARGET) * count / ADA_SPEED, 0.0, 1.0))
            sign_sum, count, calls = 0.0, 0, 0

    k_lat, k_aug = jax.random.split(k_g)
    z, y_fake = draw(k_lat)

    def g_objective(params, g_stats, d_params, d_stats, real_features, z, y_fake, p):
        fake, upd = g.apply({"params": params, "batch_stats": g_stats}, z, y_fake, train=True,
                            mutable=["batch_stats"])
        logits, features = d.apply({"params": d_params, "batch_stats": d_stats},
                                   what_d_sees(k_aug, fake, p), y_fake, train=False)
        g_loss = jnp.mean(jax.nn.softplus(-logits))
        fm = jnp.sum((jnp.mean(real_features, 0) - jnp.mean(features, 0)) ** 2)
        return g_loss + FM_WEIGHT * fm, (upd["batch_stats"], g_loss, fm)

    grads, (g_stats, g_loss, fm) = jax.jit(jax.grad(g_objective, has_aux=True))(
        g_params, g_stats, d_params, d_stats, real_features, z, y_fake, jnp.float32(p))
    updates, g_opt = tx.update(grads, g_opt, g_params)
    new_g = optax.apply_updates(g_params, updates)
    ema = jax.tree.map(lambda e, q: EMA * e + (1 - EMA) * q, state.ema_params, new_g)
    metrics.update(g_loss=g_loss, feature_matching=fm, ada_p=p, ada_rt=rt)
    fields = dict(g_params=new_g, g_stats=g_stats, d_params=d_params, d_stats=d_stats,
                  ema_params=ema, g_opt_state=g_opt, d_opt_state=d_opt)
    return fields, metrics, sign_sum, count, calls


def _assert_trees_close(actual, expected, what):
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(actual), jax.tree.leaves(expected)):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        scale = max(np.max(np.abs(b)), 1e-6)  # float32 rounding of the leaf's largest entry
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-5 * scale,
                                   err_msg=f"{what}{jax.tree_util.keystr(path)}")


def test_default_step_with_ada_r1_noise_and_feature_matching_is_the_reference_iteration():
    g, d, tx, state, batch = _setup()
    pipeline = A.ada(pipes="bgc")
    loss = LossConfig(r1_gamma=R1_GAMMA, instance_noise_std=NOISE_STD,
                      instance_noise_steps=NOISE_STEPS, feature_matching=FM_WEIGHT)
    step = jax.jit(make_train_step(
        generator=g, discriminator=d, g_tx=tx, d_tx=tx, latent_dim=LATENT, num_classes=CLASSES,
        loss=loss, augment=pipeline, ema_decay=EMA,
        ada_update=A.make_ada_update(target=ADA_TARGET, speed_images=ADA_SPEED,
                                     interval=ADA_INTERVAL)))
    new, metrics = step(state, batch)
    fields, expected, sign_sum, count, calls = _reference_step(g, d, tx, pipeline, state, batch)

    for name, tree in fields.items():
        _assert_trees_close(getattr(new, name), tree, name)
    for name, value in expected.items():
        np.testing.assert_allclose(float(metrics[name]), float(value), rtol=2e-5, atol=1e-7,
                                   err_msg=name)
    # ADA moved p by count / speed = 16 / 64 after the two D updates, and the G update used it
    assert abs(expected["ada_p"] - P0) == 16 / ADA_SPEED
    assert (float(new.ada.p), float(new.ada.sign_sum), float(new.ada.count), int(new.ada.calls)) \
        == (expected["ada_p"], sign_sum, count, calls)
    assert int(new.step) == 1
    # and the augmentation is not a no-op at this p (so the comparison above covers it)
    x = batch["x"][0]
    assert not np.allclose(pipeline(jax.random.key(3), x, jnp.float32(P0)), x, atol=1e-3)
