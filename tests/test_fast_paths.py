"""The optimised training paths against the plain ones: hand-written convolution gradients
(models/convs.py) vs lax autodiff and a float64 NumPy reference, and the step's reuse_fake
mode vs an independent reimplementation of the classic G update."""

import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from ganaug_jax import config as config_lib
from ganaug_jax import losses
from ganaug_jax.models import make_gan
from ganaug_jax.models import convs
from ganaug_jax.models.convs import KERNEL_GRADS, StrideTwoConv, down_conv, up_conv
from ganaug_jax.train.state import create_train_state
from ganaug_jax.train.step import make_train_step

ROOT = pathlib.Path(__file__).resolve().parents[1]
DN = ("NHWC", "HWIO", "NHWC")


def _plain_down(x, k):
    return lax.conv_general_dilated(x, k, (2, 2), "SAME", dimension_numbers=DN)


def _plain_up(x, k):
    return lax.conv_transpose(x, k, (2, 2), "SAME", dimension_numbers=DN)


def _numpy_down(x, k):
    """float64 definition: y[n, i, j] = sum_{a, b} xpad[n, 2i + a, 2j + b] @ k[a, b]."""
    x, k = np.asarray(x, np.float64), np.asarray(k, np.float64)
    n, h, w, _ = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return sum(np.einsum("nhwc,co->nhwo", xp[:, a:a + h:2, b:b + w:2], k[a, b])
               for a in range(4) for b in range(4))


def _numpy_up(x, k):
    """float64 definition of flax's transposed convolution ('SAME', kernel not flipped):
    x[n, i, j] @ k[a, b] lands on output (2i + 2 - a, 2j + 2 - b) of the 2H x 2W result."""
    x, k = np.asarray(x, np.float64), np.asarray(k, np.float64)
    n, h, w, _ = x.shape
    out = np.zeros((n, 2 * h + 2, 2 * w + 2, k.shape[-1]))  # output index o at o + 1
    for a in range(4):
        for b in range(4):
            out[:, 3 - a:3 - a + 2 * h:2, 3 - b:3 - b + 2 * w:2] += np.einsum(
                "nhwc,co->nhwo", x, k[a, b])
    return out[:, 1:1 + 2 * h, 1:1 + 2 * w]


# (op, plain op, float64 reference, input shape, output channels). The shapes cover every
# branch of the kernel gradient (one patch product when 16C <= O; else the 'conv' form, or
# the 'matmul' form with dy smaller than x, and larger), both forms of the sub-pixel convolution (one padded-grid convolution; one per
# phase when H, W <= 8 and O >= 16: up_conv's forward, down_conv's input gradient) and
# single channels (the tap forms: a strided product with C = 1, a sub-pixel one with O = 1).
CASES = [
    (down_conv, _plain_down, _numpy_down, (2, 8, 8, 3), 5),
    (down_conv, _plain_down, _numpy_down, (3, 16, 16, 1), 16),
    (down_conv, _plain_down, _numpy_down, (2, 4, 4, 8), 16),
    (up_conv, _plain_up, _numpy_up, (2, 4, 4, 16), 8),
    (up_conv, _plain_up, _numpy_up, (3, 8, 8, 6), 1),
    (up_conv, _plain_up, _numpy_up, (2, 4, 4, 2), 7),
    (down_conv, _plain_down, _numpy_down, (2, 8, 8, 16), 8),
    (up_conv, _plain_up, _numpy_up, (2, 8, 8, 4), 16),
    (up_conv, _plain_up, _numpy_up, (2, 4, 4, 16), 1),
    (down_conv, _plain_down, _numpy_down, (2, 8, 12, 1), 4),  # one channel, H != W
    (up_conv, _plain_up, _numpy_up, (2, 6, 4, 5), 1),
]


def _rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


@pytest.mark.parametrize("kernel_grad", KERNEL_GRADS)
@pytest.mark.parametrize("op, plain, reference, shape, out", CASES)
def test_forward_matches_float64_definition_and_plain_op(op, plain, reference, shape, out,
                                                         kernel_grad):
    kx, kk = jax.random.split(jax.random.key(shape[1] * 7 + out))
    x = jax.random.normal(kx, shape)
    k = jax.random.normal(kk, (4, 4, shape[-1], out)) * 0.3
    y = jax.jit(lambda x, k: op(x, k, kernel_grad))(x, k)
    assert y.shape == reference(x, k).shape
    assert _rel_err(y, reference(x, k)) < 1e-5
    assert _rel_err(y, plain(x, k)) < 1e-5


@pytest.mark.parametrize("kernel_grad", KERNEL_GRADS)
@pytest.mark.parametrize("op, plain, reference, shape, out", CASES)
def test_gradients_match_plain_autodiff(op, plain, reference, shape, out, kernel_grad):
    kx, kk, kc = jax.random.split(jax.random.key(shape[1] + out), 3)
    x = jax.random.normal(kx, shape)
    k = jax.random.normal(kk, (4, 4, shape[-1], out)) * 0.3
    cotangent = jax.random.normal(kc, plain(x, k).shape)
    got = jax.jit(lambda x, k, c: jax.vjp(lambda x, k: op(x, k, kernel_grad), x, k)[1](c))(
        x, k, cotangent)
    want = jax.vjp(plain, x, k)[1](cotangent)
    for g, w, name in zip(got, want, ("input", "kernel")):
        assert g.shape == w.shape, name
        assert _rel_err(g, w) < 1e-5, name


@pytest.mark.parametrize("kernel_grad", KERNEL_GRADS)
@pytest.mark.parametrize("op, plain", [(down_conv, _plain_down), (up_conv, _plain_up)])
def test_gradients_match_float64_finite_differences(op, plain, kernel_grad):
    """An independent check of the hand-written gradients: directional derivatives of a
    scalar loss in float64 central differences (NumPy reference) vs <grad, direction>."""
    kx, kk, kd, ke = jax.random.split(jax.random.key(3), 4)
    x, k = jax.random.normal(kx, (2, 4, 4, 3)), jax.random.normal(kk, (4, 4, 3, 2)) * 0.3
    dx, dk = jax.random.normal(kd, x.shape), jax.random.normal(ke, k.shape)
    reference = _numpy_down if op is down_conv else _numpy_up
    weights = np.sin(np.arange(np.prod(reference(x, k).shape))).reshape(reference(x, k).shape)

    def loss64(x, k):
        return float(np.sum(np.tanh(reference(x, k)) * weights))

    gx, gk = jax.grad(lambda x, k: jnp.sum(jnp.tanh(op(x, k, kernel_grad)) * weights),
                      (0, 1))(x, k)
    eps = 1e-4
    x64, k64 = np.asarray(x, np.float64), np.asarray(k, np.float64)
    dx64, dk64 = np.asarray(dx, np.float64), np.asarray(dk, np.float64)
    fd_x = (loss64(x64 + eps * dx64, k64) - loss64(x64 - eps * dx64, k64)) / (2 * eps)
    fd_k = (loss64(x64, k64 + eps * dk64) - loss64(x64, k64 - eps * dk64)) / (2 * eps)
    assert abs(float(jnp.vdot(gx, dx)) - fd_x) <= 1e-4 * max(1.0, abs(fd_x))
    assert abs(float(jnp.vdot(gk, dk)) - fd_k) <= 1e-4 * max(1.0, abs(fd_k))


@pytest.mark.parametrize("transpose", [False, True])
def test_module_has_flax_parameters_for_both_impls(transpose):
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    flax_layer = (nn.ConvTranspose if transpose else nn.Conv)(6, (4, 4), (2, 2), padding="SAME")
    want = flax_layer.init(jax.random.key(1), x)
    for impl in ("custom_vjp", "xla"):
        layer = StrideTwoConv(features=6, transpose=transpose, impl=impl)
        got = layer.init(jax.random.key(1), x)
        assert jax.tree.structure(got) == jax.tree.structure(want)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_array_equal(a, b)
        assert _rel_err(layer.apply(got, x), flax_layer.apply(want, x)) < 1e-5


def test_bfloat16_compute_keeps_dtype_and_tracks_float32():
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
    f32 = StrideTwoConv(features=8, transpose=True)
    params = f32.init(jax.random.key(1), x)
    bf16 = StrideTwoConv(features=8, transpose=True, dtype=jnp.bfloat16)
    y = bf16.apply(params, x)
    assert y.dtype == jnp.bfloat16
    assert _rel_err(y, f32.apply(params, x)) < 2e-2
    grads = jax.grad(lambda p: jnp.sum(bf16.apply(p, x).astype(jnp.float32) ** 2))(params)
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))


def test_dcgan_gradients_equal_between_conv_impls(spectral_norm=True):
    """Whole models, the gradients a training step takes: G with batch statistics (train=True)
    and the conditional projection D with spectral norm, custom_vjp vs plain autodiff."""
    shape, key = (16, 16, 3), jax.random.key(0)
    models = {(impl, form): make_gan("dcgan", data_shape=shape, num_classes=4, latent_dim=8,
                                     width=8, spectral_norm=spectral_norm, conv_impl=impl,
                                     kernel_grad=form)
              for impl, form in (("custom_vjp", "matmul"), ("custom_vjp", "conv"),
                                 ("custom_vjp", "onednn"), ("xla", "matmul"))}
    z = jax.random.normal(key, (6, 8))
    y = jnp.arange(6) % 4
    x = jax.random.uniform(jax.random.key(1), (6, *shape), minval=-1, maxval=1)
    g_vars = models["xla", "matmul"][0].init(key, z, y, train=False)
    d_vars = models["xla", "matmul"][1].init(key, x, y, train=False)
    grads = {}
    for impl, (g, d) in models.items():
        def objective(g_params, d_params):
            fake, _ = g.apply({**g_vars, "params": g_params}, z, y, train=True,
                              mutable=["batch_stats"])
            (logits, _), _ = d.apply({**d_vars, "params": d_params}, jnp.concatenate([x, fake]),
                                     jnp.concatenate([y, y]), train=True, mutable=["batch_stats"])
            return jnp.mean(jax.nn.softplus(-logits[:6])) + jnp.mean(jax.nn.softplus(logits[6:]))
        grads[impl] = jax.jit(jax.grad(objective, (0, 1)))(g_vars["params"], d_vars["params"])
    for form in KERNEL_GRADS:
        for a, b in zip(jax.tree.leaves(grads["custom_vjp", form]),
                        jax.tree.leaves(grads["xla", "matmul"])):
            assert np.max(np.abs(a - b)) <= 1e-5 * max(np.max(np.abs(b)), 1e-3), form


def test_reuse_fake_step_is_the_classic_update():
    """reuse_fake: D's update is the default step's; G's is an Adam step on the gradient of
    g_loss(D_new(G(z))) for the latents (z, y) the D update drew, computed here directly."""
    shape, classes, latent, n = (8, 8, 1), 10, 8, 16
    g, d = make_gan("dcgan", data_shape=shape, num_classes=classes, latent_dim=latent, width=8)
    tx = optax.adam(1e-3, b1=0.5, b2=0.999)
    state = create_train_state(jax.random.key(0), g, d, tx, tx, data_shape=shape,
                               latent_dim=latent, num_classes=classes)
    batch = {"x": jax.random.uniform(jax.random.key(1), (1, n, *shape), minval=-1, maxval=1),
             "y": jax.random.randint(jax.random.key(2), (1, n), 0, classes)}
    steps = {reuse: jax.jit(make_train_step(generator=g, discriminator=d, g_tx=tx, d_tx=tx,
                                            latent_dim=latent, num_classes=classes,
                                            reuse_fake=reuse))
             for reuse in (False, True)}
    new, metrics = steps[True](state, batch)
    default, _ = steps[False](state, batch)
    for a, b in zip(jax.tree.leaves(new.d_params), jax.tree.leaves(default.d_params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)

    # The D update's latents: step key -> split (D, G) -> the one D update's key -> 4 keys.
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
    d_key = jax.random.split(jax.random.split(key)[0], 1)[0]
    k_z, k_y = jax.random.split(jax.random.split(d_key, 4)[0])
    z = jax.random.normal(k_z, (n, latent))
    y = jax.random.randint(k_y, (n,), 0, classes)

    def g_objective(g_params):
        fake, updates = g.apply({"params": g_params, "batch_stats": state.g_stats}, z, y,
                                train=True, mutable=["batch_stats"])
        logits, _ = d.apply({"params": new.d_params, "batch_stats": new.d_stats}, fake, y,
                            train=False)
        return losses.g_loss("non_saturating")(logits), updates["batch_stats"]

    (g_loss, g_stats), grads = jax.value_and_grad(g_objective, has_aux=True)(state.g_params)
    updates, _ = tx.update(grads, state.g_opt_state, state.g_params)
    expected = optax.apply_updates(state.g_params, updates)
    np.testing.assert_allclose(float(metrics["g_loss"]), float(g_loss), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(new.g_params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(new.g_stats), jax.tree.leaves(g_stats)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # and it is a different update from the default step's (fresh latents there)
    assert not np.allclose(jax.tree.leaves(default.g_params)[0], jax.tree.leaves(expected)[0])


def test_config_rejects_bad_conv_impl_and_reuse_with_mode_seeking():
    config = config_lib.load_config(str(ROOT / "configs" / "default.py"))
    bad = config_lib.apply_overrides(config, ["model.conv_impl=cudnn"])
    with pytest.raises(ValueError, match=r"'model.conv_impl' must be one of \('custom_vjp', 'xla'\)"):
        config_lib.validate(bad)
    both = config_lib.apply_overrides(config, ["optim.reuse_fake=True", "loss.mode_seeking=0.5"])
    with pytest.raises(ValueError, match=r"'optim.reuse_fake' cannot be combined with "
                                         r"'loss.mode_seeking'"):
        config_lib.validate(both)
    with pytest.raises(ValueError, match="conv_impl must be one of"):
        make_gan("dcgan", data_shape=(8, 8, 1), conv_impl="fast")
    with pytest.raises(ValueError, match=r"kernel_grad must be one of \('matmul', 'conv', 'onednn'\), "
                                         r"got 'dots'"):
        make_gan("dcgan", data_shape=(8, 8, 1), kernel_grad="dots")


def _ynn_fused_ops(hlo_text: str) -> set[str]:
    """The HLO opcodes ('convolution', 'dot') inside the YNNPACK fusions of a compiled program."""
    called = set(re.findall(r"calls=%([\w.\-]+)[^\n]*__ynn_fusion", hlo_text))
    bodies = re.findall(r"^%([\w.\-]+) [^\n]*\{\n(.*?)\n\}", hlo_text, flags=re.S | re.M)
    return {op for name, body in bodies if name in called
            for op in ("convolution", "dot") if f" {op}(" in body}


def test_cpu_conv_library_moves_the_steps_convolutions_off_ynnpack_same_losses():
    """model.cpu_conv_library: 'ynnpack' (XLA's default) fuses the step's convolutions into
    YNNPACK calls, 'eigen' leaves none there but keeps its matrix products there; two steps
    give the same losses within float32 rounding. The model's kernel gradients follow the
    library ('conv' form on Eigen, 'matmul' on YNNPACK), as `ganaug train` builds them."""
    from ganaug_jax.train import sharding
    from ganaug_jax.train.build import Run, build_step, model_kernel_grad, step_compiler_options
    shape, latent, n = (16, 16, 3), 16, 16  # XLA gives YNNPACK no smaller convolutions
    tx = optax.adam(2e-4, b1=0.5, b2=0.999)
    config = config_lib.load_config(str(ROOT / "configs" / "default.py"))
    mesh = sharding.make_mesh()
    batch = {"x": jax.device_put(jax.random.uniform(jax.random.key(1), (1, n, *shape),
                                                    minval=-1, maxval=1),
                                 sharding.batch_sharding(mesh, 1))}
    fused, losses_, forms = {}, {}, {}
    for library in ("eigen", "ynnpack"):
        config.model.cpu_conv_library = library
        forms[library] = model_kernel_grad(config)
        g, d = make_gan("dcgan", data_shape=shape, latent_dim=latent, width=32,
                        kernel_grad=forms[library])
        run = Run(None, g, d, tx, tx, latent, 0)
        state = jax.device_put(create_train_state(jax.random.key(0), g, d, tx, tx,
                                                  data_shape=shape, latent_dim=latent,
                                                  num_classes=0), sharding.replicated(mesh))
        step = sharding.shard_step(build_step(config, run), mesh, batch_axis=1,
                                   compiler_options=step_compiler_options(config, mesh))
        compiled = step.lower(state, batch).compile()
        fused[library] = _ynn_fused_ops(compiled.as_text())
        s, metrics = compiled(state, batch)
        _, metrics_2 = compiled(s, batch)
        losses_[library] = [float(m[k]) for m in (metrics, metrics_2) for k in ("d_loss", "g_loss")]
    assert forms == {"eigen": "conv", "ynnpack": "matmul"}
    assert fused["ynnpack"] == {"convolution", "dot"}
    assert fused["eigen"] == {"dot"}
    np.testing.assert_allclose(losses_["eigen"], losses_["ynnpack"], rtol=1e-5)
    with pytest.raises(ValueError, match="cpu_conv_library"):
        convs.cpu_compiler_options("mkl")
    with pytest.raises(ValueError, match="cpu_conv_library"):
        convs.kernel_grad_for("cpu", "mkl")
    assert convs.kernel_grad_for("cpu", "onednn") == (
        "onednn" if convs.onednn_available() else "conv")
    assert convs.cpu_compiler_options("onednn") == convs.cpu_compiler_options("eigen")
    assert convs.kernel_grad_for("gpu", "eigen") == "matmul"
