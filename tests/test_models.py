"""Tests for ganaug_jax.models: shapes, pinned architectures, spectral norm, conditioning, state."""

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ganaug_jax import models
from ganaug_jax.models import ConditionalBatchNorm, make_gan

LATENT = 5
N = 4
STATE = ("batch_stats",)


@functools.partial(jax.jit, static_argnames=("module", "train", "mutable"))
def _apply(module, variables, *args, train, mutable=False):
    """`module.apply` under jit: one compile per call site beats op-by-op eager on CPU."""
    return module.apply(variables, *args, train=train, mutable=mutable)


def _labels(num_classes, n=N, offset=0):
    return None if num_classes == 0 else (jnp.arange(n, dtype=jnp.int32) + offset) % num_classes


def _fill(shapes, seed):
    """Concrete variables for an `eval_shape`d init: random params, identity BN statistics.

    Real `init` compiles flax's truncated-normal initialisers (seconds per shape on CPU), so the
    tests mostly use these; `test_real_init_matches_eval_shape` covers the real path.
    """
    rng = np.random.default_rng(seed)

    def leaf(path, s):
        name = path[-1].key
        if name == "var" or name.endswith("/sigma"):
            return jnp.ones(s.shape, s.dtype)
        if name == "mean":
            return jnp.zeros(s.shape, s.dtype)
        fan_in = int(np.prod(s.shape[:-1])) if len(s.shape) >= 2 else 100
        if name == "embedding":
            fan_in = 1
        value = rng.normal(size=s.shape) / np.sqrt(fan_in) + (name == "scale")
        return jnp.asarray(value, s.dtype)

    return jax.tree_util.tree_map_with_path(leaf, shapes)


def _variables(module, *args, seed=0, real=False):
    """Variables of `module` for inputs `args` (real init if `real`, else `_fill`)."""
    key = jax.random.key(seed)
    if real:
        return jax.jit(module.init, static_argnames="train")(key, *args, train=False)
    return _fill(jax.eval_shape(lambda: module.init(key, *args, train=False)), seed)


def _init(architecture, data_shape, *, num_classes=0, seed=0, real=False, **kw):
    """Builds a GAN and its variables; returns (g, d, g_vars, d_vars, z, labels, fake)."""
    kw.setdefault("latent_dim", LATENT)
    g, d = make_gan(architecture, data_shape=data_shape, num_classes=num_classes, **kw)
    z = jax.random.normal(jax.random.key(seed + 100), (N, g.latent_dim))
    labels = _labels(num_classes)
    g_vars = _variables(g, z, labels, seed=seed, real=real)
    if real:
        fake = _apply(g, g_vars, z, labels, train=False)
    else:  # Stand-in samples: saves compiling the generator where only D is tested.
        fake = jnp.tanh(jax.random.normal(jax.random.key(seed + 200), (N, *g.data_shape)))
    d_vars = _variables(d, fake, labels, seed=seed + 1, real=real)
    return g, d, g_vars, d_vars, z, labels, fake


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


# ---------------------------------------------------------------- shapes, dtypes, ranges

@pytest.mark.parametrize("data_shape,num_classes,conditioning,spectral_norm,compute", [
    ((8, 8, 1), 10, "cbn", True, True),
    ((16, 16, 3), 0, "concat", False, False),
    ((32, 32, 1), 3, "concat", False, True),
    ((64, 64, 4), 0, "concat", True, False),
])
def test_dcgan_shapes_dtypes_range(data_shape, num_classes, conditioning, spectral_norm,
                                   compute):
    """Shapes and dtypes everywhere (eval_shape); values and range where `compute`."""
    width = 2
    g, d, g_vars, d_vars, z, labels, _ = _init(
        "dcgan", data_shape, num_classes=num_classes, width=width,
        conditioning=conditioning, spectral_norm=spectral_norm)

    def forward(g_vars, d_vars, z, labels):
        fake = g.apply(g_vars, z, labels, train=False)
        fake_train, g_upd = g.apply(g_vars, z, labels, train=True, mutable=STATE)
        (logits, features), d_upd = d.apply(d_vars, fake_train, labels, train=True,
                                            mutable=STATE)
        return fake, fake_train, g_upd, logits, features, d_upd

    forward = jax.jit(forward) if compute else functools.partial(jax.eval_shape, forward)
    fake, fake_train, g_upd, logits, features, d_upd = forward(g_vars, d_vars, z, labels)
    for x in (fake, fake_train):
        assert x.shape == (N, *data_shape) and x.dtype == jnp.float32
        if compute:
            assert float(jnp.max(jnp.abs(x))) <= 1.0 and float(jnp.std(x)) > 0
    assert set(g_upd) == {"batch_stats"}
    n = g.num_stages
    assert n == int(np.log2(data_shape[0] // 4))
    assert logits.shape == (N,) and logits.dtype == jnp.float32
    assert features.shape == (N, 16 * width * 2**(n - 1)) and features.dtype == jnp.float32
    assert ("batch_stats" in d_vars) == spectral_norm == bool(d_upd)


@pytest.mark.parametrize("num_classes", [0, 8])
def test_mlp_shapes_dtypes(num_classes):
    g, d, g_vars, d_vars, z, labels, _ = _init("mlp", (2,), num_classes=num_classes, width=8)
    fake = _apply(g, g_vars, z, labels, train=True)
    assert fake.shape == (N, 2) and fake.dtype == jnp.float32 and float(jnp.std(fake)) > 0
    assert "batch_stats" not in g_vars and "batch_stats" not in d_vars
    logits, features = _apply(d, d_vars, fake, labels, train=True)
    assert logits.shape == (N,) and features.shape == (N, 8)
    eager = d.apply(d_vars, fake, labels, train=True)  # jit == eager
    np.testing.assert_allclose(eager[0], logits, rtol=1e-5, atol=1e-6)
    assert logits.dtype == features.dtype == jnp.float32
    # Without state, mutable=['batch_stats'] still works and returns no state.
    _, upd = _apply(d, d_vars, fake, labels, train=True, mutable=STATE)
    assert not upd.get("batch_stats")


def test_dcgan_depth_sets_base_resolution():
    g, d, g_vars, d_vars, z, _, _ = _init("dcgan", (32, 32, 2), width=2, depth=2)
    assert g.num_stages == 2
    assert jax.eval_shape(lambda: g.apply(g_vars, z, train=False)).shape == (N, 32, 32, 2)
    assert g_vars["params"]["project"]["kernel"].shape == (LATENT, 8 * 8 * 4)
    assert set(d_vars["params"]) == {"conv0", "conv1", "head"}


def test_real_init_matches_eval_shape():
    architecture, data_shape, conditioning = "dcgan", (8, 8, 1), "cbn"
    g, d, g_vars, d_vars, z, labels, fake = _init(architecture, data_shape, num_classes=10,
                                                  width=4, conditioning=conditioning,
                                                  spectral_norm=True, real=True)
    shapes = jax.eval_shape(lambda: (g.init(jax.random.key(0), z, labels, train=False),
                                     d.init(jax.random.key(0), fake, labels, train=False)))
    assert jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), (g_vars, d_vars)) == \
        jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), shapes)
    assert fake.shape == (N, *data_shape) and bool(jnp.all(jnp.isfinite(fake)))
    # Zero-initialised class gains and biases, fresh BN statistics, unit SN sigma.
    assert not np.any(g_vars["params"]["bn0"]["gamma"]["embedding"])
    assert not np.any(g_vars["batch_stats"]["bn0"]["norm"]["mean"])
    assert np.all(np.asarray(d_vars["batch_stats"]["conv0_sn"]["conv0/kernel/sigma"]) == 1)
    logits, features = _apply(d, d_vars, fake, labels, train=False)
    assert logits.shape == (N,) and bool(jnp.all(jnp.isfinite(logits)))


# ---------------------------------------------------------------- pinned architecture

def _dcgan_g_counts(h, c, latent, w, n, num_classes, conditioning):
    """(params, batch_stats) of the generator, counted from the module docstring."""
    base, ch = h // 2**n, [w * 2**(n - 1 - i) for i in range(n)]
    cbn = num_classes > 0 and conditioning == "cbn"
    params, stats, in_dim = 0, 0, latent
    if num_classes > 0 and not cbn:
        params += num_classes * latent  # embedding, embed_dim = latent_dim
        in_dim += latent
    params += in_dim * base * base * ch[0]  # project, no bias
    for i in range(n):
        if i > 0:
            params += 16 * ch[i - 1] * ch[i]  # 4x4 transposed conv, no bias
        params += 2 * ch[i] * (num_classes if cbn else 1)  # BN scale/bias or gamma/beta tables
        stats += 2 * ch[i]  # running mean and var
    params += 16 * ch[-1] * c + c  # output transposed conv with bias
    return params, stats


def _dcgan_d_counts(h, c, w, n, num_classes, spectral_norm):
    params, stats, prev = 0, 0, c
    for i in range(n):
        out = w * 2**i
        params += 16 * prev * out + out
        stats += (out + 1) if spectral_norm else 0  # u (1, out) and sigma
        prev = out
    f = (h // 2**n) ** 2 * prev
    params += f + 1
    stats += 2 if spectral_norm else 0
    if num_classes:
        params += num_classes * f
        stats += (f + 1) if spectral_norm else 0
    return params, stats


@pytest.mark.parametrize("data_shape,num_classes,conditioning,depth,spectral_norm", [
    ((32, 32, 3), 0, "concat", None, False),
    ((32, 32, 3), 10, "concat", None, True),
    ((16, 16, 1), 10, "cbn", None, True),
    ((64, 64, 2), 4, "cbn", 2, False),
    ((128, 128, 3), 0, "concat", None, True),
])
def test_dcgan_parameter_counts(data_shape, num_classes, conditioning, depth, spectral_norm):
    w = 3
    g, d = make_gan("dcgan", data_shape=data_shape, num_classes=num_classes, width=w,
                    latent_dim=LATENT, depth=depth, conditioning=conditioning,
                    spectral_norm=spectral_norm)
    key, labels = jax.random.key(0), _labels(num_classes)
    g_vars = jax.eval_shape(lambda: g.init(key, jnp.zeros((N, LATENT)), labels, train=False))
    d_vars = jax.eval_shape(lambda: d.init(key, jnp.zeros((N, *data_shape)), labels,
                                           train=False))
    n = g.num_stages
    h, _, c = data_shape
    assert (_count(g_vars["params"]), _count(g_vars["batch_stats"])) == _dcgan_g_counts(
        h, c, LATENT, w, n, num_classes, conditioning)
    assert (_count(d_vars["params"]), _count(d_vars.get("batch_stats", {}))) == _dcgan_d_counts(
        h, c, w, n, num_classes, spectral_norm)


def test_mlp_parameter_counts():
    g, d = make_gan("mlp", data_shape=(2,), num_classes=8, width=6, depth=3, latent_dim=LATENT)
    key, labels = jax.random.key(0), _labels(8)
    g_vars = jax.eval_shape(lambda: g.init(key, jnp.zeros((N, LATENT)), labels, train=False))
    d_vars = jax.eval_shape(lambda: d.init(key, jnp.zeros((N, 2)), labels, train=False))
    e = LATENT
    assert _count(g_vars["params"]) == 8 * e + (2 * e * 6 + 6) + 2 * (6 * 6 + 6) + (6 * 2 + 2)
    assert _count(d_vars["params"]) == (2 * 6 + 6) + 2 * (6 * 6 + 6) + (6 + 1) + 8 * 6


# ---------------------------------------------------------------- spectral norm

def _sn_entries(params, batch_stats):
    """Yields (name, matrix, stored sigma) for every spectrally normalised weight."""
    flat = jax.tree_util.tree_flatten_with_path(batch_stats)[0]
    for path, sigma in flat:
        keys = [p.key for p in path]
        if not keys[-1].endswith("/sigma"):
            continue
        param_path = keys[:-2] + keys[-1].split("/")[:-1]
        w = params
        for k in param_path:
            w = w[k]
        w = np.asarray(w)
        yield "/".join(param_path), w.reshape(-1, w.shape[-1]), float(sigma)


def _converge(d, d_vars, x, labels, steps=400):
    @jax.jit
    def run(stats):
        def body(_, stats):
            _, upd = d.apply({"params": d_vars["params"], "batch_stats": stats}, x, labels,
                             train=True, mutable=["batch_stats"])
            return upd["batch_stats"]
        return jax.lax.fori_loop(0, steps, body, stats)
    return {"params": d_vars["params"], "batch_stats": run(d_vars["batch_stats"])}


@pytest.mark.parametrize("architecture,data_shape,expected", [
    ("mlp", (3,), {"dense0/kernel", "dense1/kernel", "head/linear/kernel", "head/embed/embedding"}),
    ("dcgan", (16, 16, 2), {"conv0/kernel", "conv1/kernel", "head/linear/kernel",
                            "head/embed/embedding"}),
])
def test_spectral_norm_every_layer_converges(architecture, data_shape, expected):
    _, d, _, d_vars, _, labels, fake = _init(architecture, data_shape, num_classes=4, width=3,
                                             depth=2, spectral_norm=True)
    d_vars = _converge(d, d_vars, fake, labels)
    entries = list(_sn_entries(d_vars["params"], d_vars["batch_stats"]))
    assert {name for name, *_ in entries} == expected
    for name, w, sigma in entries:
        top = np.linalg.svd(w, compute_uv=False)[0]
        assert sigma == pytest.approx(top, rel=1e-3), name
        assert np.linalg.svd(w / sigma, compute_uv=False)[0] == pytest.approx(1.0, abs=1e-2), name


def test_spectral_norm_is_used_in_forward():
    """After convergence the MLP discriminator equals a manual forward with W / sigma_max(W)."""
    _, d, _, d_vars, _, labels, x = _init("mlp", (3,), num_classes=4, width=5, depth=2,
                                          spectral_norm=True)
    d_vars = _converge(d, d_vars, x, labels)
    p = jax.tree_util.tree_map(np.asarray, d_vars["params"])
    sn = lambda w: w / np.linalg.svd(w.reshape(-1, w.shape[-1]), compute_uv=False)[0]  # noqa: E731
    h = np.asarray(x)
    for i in range(2):
        h = h @ sn(p[f"dense{i}"]["kernel"]) + p[f"dense{i}"]["bias"]
        h = np.where(h > 0, h, 0.2 * h)
    emb = sn(p["head"]["embed"]["embedding"])[np.asarray(labels)]
    want = (h @ sn(p["head"]["linear"]["kernel"]))[:, 0] + p["head"]["linear"]["bias"][0]
    want = want + np.sum(emb * h, axis=-1)
    logits, features = _apply(d, d_vars, x, labels, train=False)
    np.testing.assert_allclose(features, h, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- conditioning

def test_projection_logits_follow_formula():
    _, d, _, d_vars, _, labels, x = _init("dcgan", (8, 8, 1), num_classes=3, width=2)
    p = d_vars["params"]["head"]
    for lab in (labels, (labels + 1) % 3):
        logits, phi = _apply(d, d_vars, x, lab, train=False)
        want = (phi @ p["linear"]["kernel"])[:, 0] + p["linear"]["bias"][0]
        want = want + jnp.sum(p["embed"]["embedding"][lab] * phi, axis=-1)
        np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
    other, phi2 = _apply(d, d_vars, x, (labels + 1) % 3, train=False)
    np.testing.assert_array_equal(phi, phi2)  # features do not depend on labels
    emb = p["embed"]["embedding"]
    np.testing.assert_allclose(other - _apply(d, d_vars, x, labels, train=False)[0],
                               jnp.sum((emb[(labels + 1) % 3] - emb[labels]) * phi, -1),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("architecture,data_shape,conditioning", [
    ("mlp", (2,), "concat"),
    ("dcgan", (8, 8, 1), "concat"),
    ("dcgan", (8, 8, 1), "cbn"),
])
def test_conditional_generator_depends_on_labels(architecture, data_shape, conditioning):
    g, _, g_vars, *_ , z, labels, _ = _init(architecture, data_shape, num_classes=5, width=4,
                                            conditioning=conditioning)
    # (With real init, cbn gamma/beta start at zero, i.e. label-independent, by design;
    # `_fill` gives them random values.)
    a = _apply(g, g_vars, z, labels, train=False)
    b = _apply(g, g_vars, z, (labels + 1) % 5, train=False)
    assert np.all(np.max(np.abs(np.asarray(a - b)).reshape(N, -1), axis=1) > 1e-4)


def test_conditional_batchnorm_formula():
    x = jax.random.normal(jax.random.key(0), (6, 3, 3, 4)) * 2.0 + 1.0
    labels = jnp.array([0, 1, 2, 0, 1, 2], jnp.int32)
    cbn = ConditionalBatchNorm(num_classes=3)
    v = _variables(cbn, x, labels)  # random gamma/beta tables (real init: zeros)
    assert set(v["params"]) == {"gamma", "beta"}
    out, upd = _apply(cbn, v, x, labels, train=True, mutable=STATE)
    x, p = np.asarray(x, np.float64), jax.tree_util.tree_map(np.asarray, v["params"])
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    gamma = p["gamma"]["embedding"][np.asarray(labels)][:, None, None]
    beta = p["beta"]["embedding"][np.asarray(labels)][:, None, None]
    want = (1 + gamma) * (x - mean) / np.sqrt(var + 1e-5) + beta
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(upd["batch_stats"]["norm"]["mean"], 0.1 * mean, rtol=1e-5)


# ---------------------------------------------------------------- state

def test_train_false_does_not_mutate_train_true_does():
    g, d, g_vars, d_vars, z, labels, fake = _init("dcgan", (8, 8, 1), num_classes=3, width=2,
                                                  spectral_norm=True)

    @jax.jit
    def run(g_vars, d_vars):
        out = {}
        for key, module, variables, inp in (("g", g, g_vars, z), ("d", d, d_vars, fake)):
            for train in (False, True):
                out[f"{key}_{train}"] = module.apply(variables, inp, labels, train=train,
                                                     mutable=STATE)[1]
        # Eval-mode G is per-sample: the output for a sample does not depend on the batch.
        out["full"] = g.apply(g_vars, z, labels, train=False)
        out["one"] = g.apply(g_vars, z[:1], labels[:1], train=False)
        return out

    out = run(g_vars, d_vars)
    for key, variables in (("g", g_vars), ("d", d_vars)):
        jax.tree_util.tree_map(np.testing.assert_array_equal, out[f"{key}_False"]["batch_stats"],
                               variables["batch_stats"])
        # Every BN mean/var and SN u moves (a one-step sigma can equal the old one by chance).
        changed = jax.tree_util.tree_map_with_path(
            lambda path, a, b: bool(np.any(a != b)) or path[-1].key.endswith("/sigma"),
            out[f"{key}_True"]["batch_stats"], variables["batch_stats"])
        assert all(jax.tree_util.tree_leaves(changed)), changed
    np.testing.assert_allclose(out["one"], out["full"][:1], rtol=1e-5, atol=1e-6)


def test_gradients_finite_and_nonzero():
    g, d, g_vars, d_vars, z, labels, _ = _init("dcgan", (8, 8, 2), num_classes=3, width=2,
                                               spectral_norm=True)

    def loss(g_params, d_params):
        x, _ = g.apply(dict(g_vars, params=g_params), z, labels, train=True,
                       mutable=["batch_stats"])
        (logits, _), _ = d.apply(dict(d_vars, params=d_params), x, labels, train=True,
                                 mutable=["batch_stats"])
        return jnp.mean(jax.nn.softplus(-logits))

    value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(g_vars["params"],
                                                                     d_vars["params"])
    assert np.isfinite(float(value))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(grads))
    assert all(bool(jnp.any(x != 0)) for x in jax.tree_util.tree_leaves(grads))


# ---------------------------------------------------------------- bfloat16

@pytest.mark.parametrize("architecture,data_shape,conditioning", [
    ("mlp", (2,), "concat"),
    ("dcgan", (8, 8, 3), "cbn"),
])
def test_bfloat16_compute(architecture, data_shape, conditioning):
    kw = dict(num_classes=3, width=4, spectral_norm=True, conditioning=conditioning)
    g, d, g_vars, d_vars, z, labels, fake = _init(architecture, data_shape,
                                                  dtype=jnp.bfloat16, **kw)
    g32, d32 = make_gan(architecture, data_shape=data_shape, latent_dim=LATENT, **kw)
    assert g.dtype == d.dtype == jnp.bfloat16 and g32.dtype == jnp.float32
    for leaf in jax.tree_util.tree_leaves((g_vars, d_vars)):
        assert leaf.dtype == jnp.float32

    @jax.jit
    def run(g_vars, d_vars):
        fakes = [m.apply(g_vars, z, labels, train=True, mutable=STATE)[0] for m in (g, g32)]
        outs = [m.apply(d_vars, fakes[1], labels, train=True, mutable=STATE)[0]
                for m in (d, d32)]
        return fakes, outs

    (fake16, fake32), ((l16, f16), (l32, f32)) = run(g_vars, d_vars)
    assert fake16.dtype == l16.dtype == f16.dtype == jnp.float32
    np.testing.assert_allclose(fake16, fake32, atol=0.1)
    np.testing.assert_allclose(l16, l32, atol=0.05 * (float(jnp.max(jnp.abs(l32))) + 1e-3))
    np.testing.assert_allclose(f16, f32, atol=0.05 * (float(jnp.max(jnp.abs(f32))) + 1e-3))


# ---------------------------------------------------------------- arguments and API

@pytest.mark.parametrize("architecture,kwargs,match", [
    ("resnet", dict(data_shape=(2,)), "architecture must be one of"),
    ("mlp", dict(data_shape=(2, 2)), r"data_shape for mlp must be \(D,\)"),
    ("mlp", dict(data_shape=(2,), conditioning="cbn"), "conditioning for mlp"),
    ("dcgan", dict(data_shape=(32, 32)), r"data_shape for dcgan must be a tuple \(H, W, C\)"),
    ("dcgan", dict(data_shape=(24, 24, 3)), "H = W in"),
    ("dcgan", dict(data_shape=(32, 16, 3)), "square"),
    ("dcgan", dict(data_shape=(4, 4, 1)), "H = W in"),
    ("dcgan", dict(data_shape=(256, 256, 3)), "H = W in"),
    ("dcgan", dict(data_shape=(16, 16, 0)), "data_shape must be a tuple of positive ints"),
    ("dcgan", dict(data_shape=(16, 16, 3), depth=3), r"depth .* \[1, 2\]"),
    ("dcgan", dict(data_shape=(16, 16, 3), depth=0), "depth must be an int >= 1"),
    ("dcgan", dict(data_shape=(16, 16, 3), conditioning="film"), "conditioning must be one of"),
    ("dcgan", dict(data_shape=(16, 16, 3), num_classes=-1), "num_classes must be an int >= 0"),
    ("dcgan", dict(data_shape=(16, 16, 3), width=0), "width must be an int >= 1"),
    ("mlp", dict(data_shape=(2,), latent_dim=0), "latent_dim must be an int >= 1"),
    ("mlp", dict(data_shape=(2,), dtype=jnp.float16), "dtype must be"),
    ("mlp", dict(data_shape=(2,), spectral_norm=1), "spectral_norm must be a bool"),
])
def test_make_gan_rejects_bad_arguments(architecture, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_gan(architecture, **kwargs)


def test_call_time_argument_checks():
    g, d, g_vars, d_vars, z, labels, fake = _init("dcgan", (8, 8, 1), num_classes=3, width=2)
    with pytest.raises(ValueError, match="labels of shape"):
        g.apply(g_vars, z, train=False)
    with pytest.raises(ValueError, match="labels must be integers"):
        d.apply(d_vars, fake, labels.astype(jnp.float32), train=False)
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
        d.apply(d_vars, fake, labels[:2], train=False)
    with pytest.raises(ValueError, match=r"z must have shape \(N, 5\)"):
        g.apply(g_vars, z[:, :3], labels, train=False)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 8, 8, 1\)"):
        d.apply(d_vars, fake[:, :4], labels, train=False)
    g0, _, g0_vars, _, z0, _, _ = _init("mlp", (2,), width=4)
    with pytest.raises(ValueError, match="labels must be None"):
        g0.apply(g0_vars, z0, jnp.zeros((N,), jnp.int32), train=False)


def test_public_api():
    assert set(models.ARCHITECTURES) == {"mlp", "dcgan"}
    assert models.STATE_COLLECTION == "batch_stats"
    params = inspect.signature(make_gan).parameters
    assert all(p.kind == p.KEYWORD_ONLY for n, p in params.items() if n != "architecture")
    for cls in (models.MLPGenerator, models.MLPDiscriminator, models.DCGANGenerator,
                models.DCGANDiscriminator):
        fields = inspect.signature(cls).parameters
        assert all(p.kind == p.KEYWORD_ONLY for p in fields.values()), cls
        assert fields["dtype"].default is jnp.float32
        assert fields["param_dtype"].default is jnp.float32
        call = inspect.signature(cls.__call__).parameters
        first = "z" if "Generator" in cls.__name__ else "x"
        assert list(call)[:3] == ["self", first, "labels"] and call["labels"].default is None
        assert call["train"].kind == inspect.Parameter.KEYWORD_ONLY


def test_mlp_layers_use_uniform_fan_in_init_with_random_biases():
    # PyTorch nn.Linear's init: kernel and bias ~ U(+-1/sqrt(fan_in)). Zero biases would put
    # every first-layer boundary of D through the origin (measured to slow 2-D mixtures).
    import jax
    from ganaug_jax.models import make_gan
    _, d = make_gan("mlp", data_shape=(2,), width=256)
    params = d.init(jax.random.key(0), jnp.zeros((1, 2)), train=False)["params"]
    for name, fan_in in (("dense0", 2), ("dense1", 256)):
        bound = 1 / np.sqrt(fan_in)
        for leaf in ("kernel", "bias"):
            values = np.asarray(params[name][leaf])
            assert np.abs(values).max() <= bound
            assert np.abs(values).max() > 0.9 * bound  # spread over the whole interval
            assert abs(values.std() - bound / np.sqrt(3)) < 0.2 * bound


# ---------------------------------------------------------------- label range (concrete only)

@pytest.mark.parametrize("architecture,data_shape,conditioning", [
    ("mlp", (2,), "concat"),
    ("dcgan", (8, 8, 1), "concat"),
    ("dcgan", (8, 8, 1), "cbn"),
])
@pytest.mark.parametrize("bad", [3, -1])
def test_concrete_out_of_range_labels_are_refused(architecture, data_shape, conditioning, bad):
    g, d, g_vars, d_vars, z, labels, fake = _init(architecture, data_shape, num_classes=3,
                                                  width=8, conditioning=conditioning)
    wrong = labels.at[0].set(bad)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        g.apply(g_vars, z, wrong, train=False)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        d.apply(d_vars, fake, wrong, train=False)
    # Traced labels cannot be checked: the jitted call runs, in-range samples unchanged.
    out = _apply(g, g_vars, z, wrong, train=False)
    np.testing.assert_array_equal(out[1:], _apply(g, g_vars, z, labels, train=False)[1:])


def test_layers_check_labels_and_latent_rank():
    x = jnp.ones((4, 3))
    cbn = models.ConditionalBatchNorm(num_classes=3)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        cbn.init_with_output(jax.random.key(0), x, jnp.array([0, 1, 2, 3]), train=True)
    with pytest.raises(ValueError, match="labels of shape"):
        cbn.init_with_output(jax.random.key(0), x, None, train=True)
    head = models.ProjectionHead(num_classes=3)
    with pytest.raises(ValueError, match="labels of shape"):
        head.init(jax.random.key(0), jnp.ones((4, 5)), None, update_stats=False)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        head.init(jax.random.key(0), jnp.ones((4, 5)), jnp.array([0, 1, 2, -1]),
                  update_stats=False)
    with pytest.raises(ValueError, match=r"z must be a floating array of shape \(N, D\)"):
        models.MixtureLatent(components=4).init(jax.random.key(0), jnp.zeros(3))
    out, _ = models.MixtureLatent(components=4).init_with_output(jax.random.key(0),
                                                                 jnp.zeros((2, 3)))
    assert out.shape == (2, 3)
