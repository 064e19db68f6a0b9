"""The downstream protocol (`ganaug_jax.evaluate.downstream`) and its classifier
(`ganaug_jax.models.classifier`).

References: sklearn.metrics for the scores, a counting loop for the smallest classes, one-shot
`apply` for batched prediction, and a toy problem any working trainer must solve exactly.
Everything is tiny (width 8, a few steps): compiles dominate the run time.

Every test here runs with `jax.threefry_partitionable(False)`: with the default (True, since
JAX 0.5) XLA:CPU took ~10 s (busy 2-core machine) to compile one rank-4 `jax.random.normal` such as a (3, 3, 8, 16)
conv-kernel initialiser, against ~1 s without it (the trainers share one compiled init per
classifier; other tests here use other widths, hence other inits). The
properties tested (determinism per key, which arrays are read, learning, batching) do not
depend on how the random bits are generated.
"""

import collections
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, recall_score

from ganaug_jax.evaluate import downstream as ds
from ganaug_jax.models.classifier import Classifier


@pytest.fixture(autouse=True)
def _fast_random_compiles():
    with jax.threefry_partitionable(False):
        yield


TINY = ds.ClassifierSpec(steps=3, batch_size=8, width=8, dropout=0.3)
SHAPE = (8, 8, 1)


def _toy(n_per_class, seed, *, noise=0.1):
    """Two classes: images near -0.8 (class 0) and near +0.8 (class 1), float32 (N, 8, 8, 1)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(2), n_per_class).astype(np.int32)
    x = np.where(y == 0, -0.8, 0.8)[:, None, None, None] + noise * rng.normal(size=(y.size, *SHAPE))
    return {"x": np.clip(x, -1, 1).astype(np.float32), "y": y}


def _other(data, seed):
    """Arrays of the same shapes and dtypes as `data` with unrelated values."""
    rng = np.random.default_rng(seed)
    return {"x": rng.uniform(-1, 1, data["x"].shape).astype(np.float32),
            "y": rng.integers(0, 2, data["y"].shape).astype(np.int32)}


def _device(data):
    return None if data is None else jax.tree.map(jnp.asarray, data)


def _leaves(params):
    return [np.asarray(x) for x in jax.tree.leaves(params)]


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(_leaves(a), _leaves(b)))


# ---- scores ----

def test_scores_match_sklearn_with_a_class_never_predicted_and_one_absent():
    rng = np.random.default_rng(0)
    k = 5
    y_true = rng.choice([0, 1, 2, 4], size=60)      # class 3 is absent from the test labels
    y_pred = rng.choice([0, 2, 3, 4], size=60)      # class 1 is never predicted
    y_pred[:25] = y_true[:25]                       # some signal, so the scores are not ~0
    y_pred[y_pred == 1] = 0
    small = np.array([1, 4])
    out = ds.scores(y_true, y_pred, k, small)
    present = np.unique(y_true)
    assert out["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)
    # macro-F1 over the classes present in the test labels; F1 = 0 where precision and recall
    # are both 0 (class 1: never predicted).
    expected_f1 = f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)
    assert out["macro_f1"] == pytest.approx(expected_f1, abs=1e-12)
    recall = recall_score(y_true, y_pred, labels=np.arange(k), average=None, zero_division=0)
    np.testing.assert_allclose(out["per_class_recall"], recall, atol=1e-12)
    assert out["per_class_recall"][1] == 0.0 and out["per_class_recall"][3] == 0.0
    assert out["small_class_recall"] == pytest.approx(recall[small].mean(), abs=1e-12)
    assert len(out["per_class_recall"]) == k
    # sklearn's default (union of true and predicted labels) would also count the absent but
    # predicted class 3 as an F1 of 0; the protocol averages over the real test classes only.
    assert out["macro_f1"] > f1_score(y_true, y_pred, average="macro", zero_division=0)


def test_scores_perfect_and_all_wrong():
    y = np.array([0, 1, 2, 2, 1, 0, 2])
    perfect = ds.scores(y, y, 3, np.array([0]))
    assert perfect["accuracy"] == 1.0 and perfect["macro_f1"] == 1.0
    assert perfect["per_class_recall"] == [1.0, 1.0, 1.0] and perfect["small_class_recall"] == 1.0
    wrong = ds.scores(y, (y + 1) % 3, 3, np.array([0, 1]))
    assert wrong["accuracy"] == 0.0 and wrong["macro_f1"] == 0.0
    assert wrong["small_class_recall"] == 0.0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_scores_random_labels_vs_sklearn(seed):
    rng = np.random.default_rng(seed)
    k = 4
    y_true, y_pred = rng.integers(0, k, 40), rng.integers(0, k, 40)
    out = ds.scores(y_true, y_pred, k, np.array([2]))
    assert out["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)
    assert out["macro_f1"] == pytest.approx(
        f1_score(y_true, y_pred, labels=np.unique(y_true), average="macro", zero_division=0),
        abs=1e-12)
    np.testing.assert_allclose(out["per_class_recall"],
                               recall_score(y_true, y_pred, labels=np.arange(k), average=None,
                                            zero_division=0), atol=1e-12)


# ---- smallest_classes ----

def _smallest_by_counting(y, k):
    counts = collections.Counter(int(v) for v in y)
    fewest = min(counts.get(c, 0) for c in range(k))
    return [c for c in range(k) if counts.get(c, 0) == fewest]


@pytest.mark.parametrize("counts", [[5, 5, 5, 5], [9, 2, 7, 2, 5], [3, 1, 4], [6, 6, 1]])
def test_smallest_classes(counts):
    y = np.random.default_rng(0).permutation(np.repeat(np.arange(len(counts)), counts))
    out = ds.smallest_classes(y, len(counts))
    assert out.tolist() == _smallest_by_counting(y, len(counts))
    if len(set(counts)) == 1:
        assert out.tolist() == list(range(len(counts)))  # balanced: every class


# ---- classifier and trainer ----

def test_classical_augmentation_keeps_shapes_and_constant_images():
    pipeline = jax.jit(ds.classical_augmentation())
    rng = np.random.default_rng(1)
    images = jnp.asarray(rng.uniform(-1, 1, (4, *SHAPE)), jnp.float32)
    constant = jnp.full((4, *SHAPE), 0.8, jnp.float32)
    out = np.asarray(pipeline(jax.random.key(0), images, 1.0))
    assert out.shape == images.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert not np.allclose(out, np.asarray(images))  # geometry actually applied
    # bilinear resampling with edge borders: convex weights, a constant image stays constant
    np.testing.assert_allclose(np.asarray(pipeline(jax.random.key(0), constant, 1.0)), 0.8,
                               atol=1e-6)
    assert out.min() >= -1 - 1e-6 and out.max() <= 1 + 1e-6


def test_trainer_is_a_function_of_its_key_and_ignores_synthetic_at_fraction_0():
    real = _device(_toy(6, 0))
    train = ds.make_trainer(2, TINY, augment=None, synthetic_fraction=0.0)
    a = train(jax.random.key(1), real, None)
    again = train(jax.random.key(1), real, None)
    other_key = train(jax.random.key(2), real, None)
    assert _same(a, again)  # bit-identical
    assert not any(np.array_equal(x, y) for x, y in zip(_leaves(a), _leaves(other_key))
                   if x.size > 1)
    # Synthetic arrays with unrelated values (and wrong labels) change nothing: never read.
    with_synthetic = train(jax.random.key(1), real, _device(_other(_toy(6, 0), 9)))
    assert _same(a, with_synthetic)
    assert all(np.isfinite(x).all() for x in _leaves(a))


def test_trainer_at_fraction_1_reads_only_synthetic():
    synthetic = _device(_toy(6, 3))
    train = ds.make_trainer(2, TINY, augment=None, synthetic_fraction=1.0)
    a = train(jax.random.key(1), None, synthetic)
    with_real = train(jax.random.key(1), _device(_other(_toy(6, 3), 8)), synthetic)
    assert _same(a, with_real)


def test_trainer_mixing_reads_both_sources():
    real, synthetic = _toy(6, 4), _toy(6, 5)
    train = ds.make_trainer(2, TINY, augment=None, synthetic_fraction=0.5)
    key = jax.random.key(1)
    a = train(key, _device(real), _device(synthetic))
    assert not _same(a, train(key, _device(real), _device(_other(synthetic, 6))))
    assert not _same(a, train(key, _device(_other(real, 7)), _device(synthetic)))


def test_every_arm_starts_from_one_compiled_initialiser():
    # width 6: no other test builds this classifier, so the compile count below is this test's
    spec = ds.ClassifierSpec(steps=1, batch_size=8, width=6, dropout=0.3)
    real, synthetic = _device(_toy(4, 0)), _device(_toy(4, 1))
    for fraction in (0.0, 0.5, 1.0):
        ds.make_trainer(2, spec, augment=None, synthetic_fraction=fraction)(
            jax.random.key(1), real, synthetic)
    other_budget = dataclasses.replace(spec, steps=2, learning_rate=1e-2)
    ds.make_trainer(2, other_budget, augment=ds.classical_augmentation(),
                    synthetic_fraction=0.0)(jax.random.key(1), real, None)
    init = ds._initial_params(2, spec.width, spec.dropout)
    assert init.jitted._cache_size() == 1  # four trainers, one compiled initialiser
    like = real["x"][:1]
    assert jax.tree.map(np.shape, init(jax.random.key(5), like)) == jax.tree.map(
        np.shape, jax.eval_shape(spec.module(2).init, jax.random.key(5), like)["params"])


def test_cross_entropy_smooths_only_the_synthetic_targets_against_float64_numpy():
    rng = np.random.default_rng(4)
    logits = rng.normal(0, 3, (12, 5)).astype(np.float32)
    labels = rng.integers(0, 5, 12).astype(np.int32)
    is_synthetic = rng.random(12) < 0.5
    assert 0 < is_synthetic.sum() < 12
    z = logits.astype(np.float64)
    log_p = z - z.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    for s in (0.0, 0.2, 0.9, 1.0):  # 1.0: uniform targets
        targets = np.eye(5)[labels]
        targets[is_synthetic] = (1 - s) * targets[is_synthetic] + s / 5
        expected = -(targets * log_p).sum(-1).mean()
        got = ds.cross_entropy(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(is_synthetic), s)
        np.testing.assert_allclose(float(got), expected, rtol=1e-6)
    # all real: smoothing changes nothing
    real_only = jnp.zeros(12, bool)
    np.testing.assert_allclose(float(ds.cross_entropy(jnp.asarray(logits), jnp.asarray(labels),
                                                      real_only, 0.5)),
                               -np.take_along_axis(log_p, labels[:, None], -1).mean(), rtol=1e-6)


def test_label_smoothing_changes_only_mixed_arms_and_is_checked():
    real, synthetic, test = _toy(6, 4), _toy(6, 5), _toy(4, 6)
    kw = {"num_classes": 2, "spec": TINY, "synthetic_fraction": 0.5}
    key = jax.random.key(1)
    for arm in ("real", "gan"):  # no mixed batches: hard labels whatever the option says
        a = ds.run_arm(arm, key, real, synthetic, test, **kw)
        b = ds.run_arm(arm, key, real, synthetic, test, synthetic_label_smoothing=0.3, **kw)
        assert a == b and b["synthetic_label_smoothing"] == 0.0
    plain = ds.make_trainer(2, TINY, augment=None, synthetic_fraction=0.5)
    smooth = ds.make_trainer(2, TINY, augment=None, synthetic_fraction=0.5,
                             synthetic_label_smoothing=0.3)
    args = (key, _device(real), _device(synthetic))
    assert not _same(plain(*args), smooth(*args))
    assert ds.run_arm("real+gan", key, real, synthetic, test, synthetic_label_smoothing=0.3,
                      **kw)["synthetic_label_smoothing"] == 0.3
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"synthetic_label_smoothing must lie in \[0, 1\]"):
            ds.make_trainer(2, TINY, augment=None, synthetic_fraction=0.5,
                            synthetic_label_smoothing=bad)


def _run_arm_params(monkeypatch, arm, key, real, synthetic, test):
    """run_arm's result and the parameters it scored (caught on their way to `predict`)."""
    seen, predict = [], ds.predict

    def spy(params, *args, **kwargs):
        seen.append(params)
        return predict(params, *args, **kwargs)
    monkeypatch.setattr(ds, "predict", spy)
    result = ds.run_arm(arm, key, real, synthetic, test, num_classes=2, spec=TINY)
    monkeypatch.undo()
    assert len(seen) == 1 and result["arm"] == arm
    return result, seen[0]


def test_classical_arms_train_through_the_classical_pipeline(monkeypatch):
    # PROTOCOLS.md section 2: real+classical = real images through the classical pipeline,
    # real+both = the real+gan mix, then the pipeline. Same key, same data: only the
    # augmentation differs, so the trained parameters must differ from the plain arm's and
    # equal those of the trainer built with `classical_augmentation()`.
    real, synthetic, test = _toy(6, 4), _toy(6, 5), _toy(4, 6)
    key = jax.random.key(1)
    params = {arm: _run_arm_params(monkeypatch, arm, key, real, synthetic, test)[1]
              for arm in ("real", "real+classical", "real+both")}
    # real+gan's trainer: no augmentation, fraction 0.5, no smoothing (run_arm's defaults; the
    # trainer the mixing test above compiled, so no compile here)
    params["real+gan"] = ds.make_trainer(2, TINY, augment=None, synthetic_fraction=0.5)(
        key, _device(real), _device(synthetic))
    assert not _same(params["real+classical"], params["real"])
    assert not _same(params["real+both"], params["real+gan"])
    pipeline = ds.classical_augmentation()
    for arm, fraction, data in (("real+classical", 0.0, None), ("real+both", 0.5, synthetic)):
        train = ds.make_trainer(2, TINY, augment=pipeline, synthetic_fraction=fraction,
                                synthetic_label_smoothing=0.0)  # run_arm's call: cached
        assert _same(params[arm], train(key, _device(real), _device(data))), arm
    # real+both reads the synthetic set it is given
    _, other = _run_arm_params(monkeypatch, "real+both", key, real, _other(synthetic, 6), test)
    assert not _same(other, params["real+both"])


def test_real_arm_learns_a_separable_toy_problem():
    spec = ds.ClassifierSpec(steps=30, batch_size=16, width=8, learning_rate=1e-2, dropout=0.0)
    train_set, test_set = _toy(16, 10), _toy(20, 11)
    out = ds.run_arm("real", jax.random.key(0), train_set, None, test_set, num_classes=2,
                     spec=spec)
    assert out["accuracy"] == 1.0 and out["macro_f1"] == 1.0
    assert out["per_class_recall"] == [1.0, 1.0]
    assert out["arm"] == "real" and out["synthetic_fraction"] == 0.0


def test_run_arm_rejects_unknown_arms_and_gan_arms_without_samples():
    real, test = _toy(4, 0), _toy(2, 1)
    kw = {"num_classes": 2, "spec": TINY}
    with pytest.raises(ValueError, match=r"arm must be one of .*'real\+gan'.*got 'real\+vae'"):
        ds.run_arm("real+vae", jax.random.key(0), real, None, test, **kw)
    for arm in ("real+gan", "real+both", "gan"):
        with pytest.raises(ValueError, match=rf"arm '{arm.replace('+', '[+]')}' needs synthetic"):
            ds.run_arm(arm, jax.random.key(0), real, None, test, **kw)


def test_predict_in_batches_equals_one_shot_apply():
    spec = ds.ClassifierSpec(width=8)
    model = Classifier(3, width=8, dropout=spec.dropout)
    images = np.random.default_rng(2).uniform(-1, 1, (10, *SHAPE)).astype(np.float32)
    params = jax.jit(model.init)(jax.random.key(0), images[:1])["params"]
    probs, feats = ds.predict(params, images, 3, spec, batch_size=3)
    logits, ref_feats = jax.jit(lambda p, x: model.apply({"params": p}, x))(params, images)
    ref_probs = np.exp(np.asarray(logits, np.float64))
    ref_probs /= ref_probs.sum(axis=1, keepdims=True)
    assert probs.shape == (10, 3) and feats.shape == (10, 128)
    assert probs.dtype == np.float32 and feats.dtype == np.float32
    np.testing.assert_allclose(probs, ref_probs, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(feats, np.asarray(ref_feats), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


def test_domain_classifier_features_and_probabilities():
    real = _toy(6, 12)
    spec = ds.ClassifierSpec(steps=3, batch_size=8, width=8)
    domain = ds.train_domain_classifier(real, 2, seed=3, spec=spec)
    images = _toy(5, 13)["x"]
    feats, probs = domain.features(images), domain.probabilities(images)
    assert feats.shape == (10, 128) and feats.dtype == np.float32
    assert np.all(feats >= 0)  # ReLU features
    assert probs.shape == (10, 2) and np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    # the same images one at a time give the same rows (no dependence on the batch)
    np.testing.assert_allclose(domain.features(images[:1]), feats[:1], rtol=1e-5, atol=1e-6)


def test_write_report_missing_a_field_replaces_no_earlier_file(tmp_path):
    from ganaug_jax.evaluate import protocol
    earlier = {name: f"earlier {name}" for name in protocol.REPORT_FILES}
    for name, text in earlier.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(KeyError, match="quality"):
        protocol.write_report({"workdir": "new", "summary": {}}, str(tmp_path))
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == earlier
