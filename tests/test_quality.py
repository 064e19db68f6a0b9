"""ganaug_jax.evaluate.quality / filters and ganaug_jax.data.mixing: Fréchet distance vs closed
forms and scipy, precision / recall and memorisation vs brute-force loops, export filters,
batch mixing, feature-extractor loading."""

import inspect
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from ganaug_jax.data import mixing
from ganaug_jax.evaluate import filters, quality


def _spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


# ---- public API shape ----

def test_public_functions_have_keyword_only_defaults_and_key_first():
    functions = [quality.frechet_distance, quality.gaussian_frechet_distance,
                 quality.precision_recall, quality.memorisation_ratio, quality.nearest_real,
                 quality.load_extractor, quality.extract_features, quality.quality_report,
                 filters.privacy_filter, filters.quality_filter, mixing.mix_batch]
    for fn in functions:
        for param in inspect.signature(fn).parameters.values():
            if param.default is not inspect.Parameter.empty:
                assert param.kind == inspect.Parameter.KEYWORD_ONLY, (fn.__name__, param.name)
    assert next(iter(inspect.signature(mixing.mix_batch).parameters)) == "key"


# ---- Fréchet distance ----

def test_gaussian_frechet_distance_diagonal_and_commuting_closed_form():
    rng = np.random.default_rng(0)
    d = 6
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    mu_a, mu_b = rng.normal(size=d), rng.normal(size=d)
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = quality.gaussian_frechet_distance(mu_a, np.diag(a), mu_b, np.diag(b))
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))  # same eigenvectors: the covariances commute
    got = quality.gaussian_frechet_distance(mu_a, q @ np.diag(a) @ q.T, mu_b, q @ np.diag(b) @ q.T)
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_gaussian_frechet_distance_non_commuting_matches_scipy_sqrtm():
    rng = np.random.default_rng(1)
    for d in (2, 5, 16):
        cov_a, cov_b = _spd(rng, d), _spd(rng, d)
        mu_a, mu_b = rng.normal(size=d), rng.normal(size=d)
        assert not np.allclose(cov_a @ cov_b, cov_b @ cov_a)
        covmean = scipy.linalg.sqrtm(cov_a @ cov_b).real
        expected = (np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b)
                    - 2 * np.trace(covmean))
        got = quality.gaussian_frechet_distance(mu_a, cov_a, mu_b, cov_b)
        np.testing.assert_allclose(got, expected, rtol=1e-9)
        swapped = quality.gaussian_frechet_distance(mu_b, cov_b, mu_a, cov_a)
        np.testing.assert_allclose(swapped, got, rtol=1e-9)


@pytest.mark.parametrize("bad, match", [
    (-np.eye(2), "cov_a must be positive semi-definite"),
    (np.array([[1.0, 5.0], [-5.0, 1.0]]), "cov_a must be a symmetric"),
    (np.array([[1.0, 2.0], [2.0, 1.0]]), "cov_a must be positive semi-definite"),  # eig -1
])
def test_gaussian_frechet_distance_refuses_a_matrix_that_is_no_covariance(bad, match):
    with pytest.raises(ValueError, match=match):
        quality.gaussian_frechet_distance(np.zeros(2), bad, np.zeros(2), np.eye(2))


def test_gaussian_frechet_distance_accepts_float32_rounding_of_a_singular_covariance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 20)).astype(np.float32)  # N < D: rank 4, eigenvalues ~0 and below
    cov = np.cov(x, rowvar=False).astype(np.float32)
    assert np.linalg.eigvalsh(cov.astype(np.float64))[0] <= 0
    assert quality.gaussian_frechet_distance(x.mean(0), cov, x.mean(0), cov) == pytest.approx(
        0.0, abs=1e-4)


def test_frechet_distance_one_dimensional_uses_ddof_1():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(9, 1)), 2 + 3 * rng.normal(size=(13, 1))
    expected = (x.mean() - y.mean()) ** 2 + (x.std(ddof=1) - y.std(ddof=1)) ** 2
    np.testing.assert_allclose(quality.frechet_distance(x, y), expected, rtol=1e-12)


def test_frechet_distance_of_samples_converges_to_the_closed_form():
    # Diagonal Gaussians, independent samples of size n each. First order (delta method):
    # the mean term has sd 2 sqrt(m' (Sa + Sb) m / n), m = mu_a - mu_b; sqrt of a sample
    # variance has relative sd 1 / sqrt(2 n), so the trace term has sd
    # sqrt(2 sum (sqrt a - sqrt b)^2 (a + b) / n). Second order: bias O(D^2 max var / n).
    rng = np.random.default_rng(3)
    d, n = 4, 20_000
    a, b = rng.uniform(0.5, 2.0, d), rng.uniform(0.5, 2.0, d)
    mu_a, mu_b = rng.normal(size=d), rng.normal(size=d)
    m = mu_a - mu_b
    exact = m @ m + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    sd = np.sqrt(4 * np.sum(m * m * (a + b)) / n
                 + 2 * np.sum((np.sqrt(a) - np.sqrt(b)) ** 2 * (a + b)) / n)
    tol = 6 * sd + 4 * d * d * max(a.max(), b.max()) / n
    for seed in range(3):
        r = np.random.default_rng(100 + seed)
        x = mu_a + np.sqrt(a) * r.normal(size=(n, d))
        y = mu_b + np.sqrt(b) * r.normal(size=(n, d))
        assert abs(quality.frechet_distance(x, y) - exact) < tol, (seed, exact, tol)
    assert tol < 0.05 * exact


def test_frechet_distance_identity_symmetry_translation_and_singular_covariance():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(200, 8)), 0.5 + 1.5 * rng.normal(size=(150, 8))
    assert quality.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(quality.frechet_distance(x, y), quality.frechet_distance(y, x),
                               rtol=1e-10)
    # N < D: rank-deficient covariance. A translation changes only the mean term.
    z = rng.normal(size=(10, 32))
    shift = rng.normal(size=32)
    assert quality.frechet_distance(z, z) == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(quality.frechet_distance(z, z + shift), shift @ shift, rtol=1e-9)


def test_frechet_distance_errors_name_the_argument():
    good = np.zeros((5, 3)) + np.arange(3)
    with pytest.raises(ValueError, match="features_a needs at least 2"):
        quality.frechet_distance(good[:1], good)
    with pytest.raises(ValueError, match="same feature dimension"):
        quality.frechet_distance(good, good[:, :2])
    bad = good.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="features_b contains non-finite"):
        quality.frechet_distance(good, bad)
    with pytest.raises(ValueError, match=r"features_a must have shape \(N, D\)"):
        quality.frechet_distance(good[0], good)
    with pytest.raises(ValueError, match="cov_b must have shape"):
        quality.gaussian_frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))


# ---- precision / recall ----

def _brute_radii(x, k):
    return np.array([sorted(np.linalg.norm(x[i] - x[j]) for j in range(len(x)) if j != i)[k - 1]
                     for i in range(len(x))])


def _brute_precision_recall(real, fake, k):
    def share_inside(points, centres):
        radii = _brute_radii(centres, k)
        return np.mean([any(np.linalg.norm(p - c) <= r for c, r in zip(centres, radii))
                        for p in points])
    return {"precision": share_inside(fake, real), "recall": share_inside(real, fake)}


def _clusters(rng, centres, per_cluster, std=0.01):
    return np.concatenate([c + std * rng.normal(size=(per_cluster, len(c))) for c in centres])


def test_precision_recall_on_constructed_sets():
    rng = np.random.default_rng(5)
    centres = 10.0 * np.eye(4)  # four modes, far apart compared with their spread
    real = _clusters(rng, centres, 10)
    assert quality.precision_recall(real, real) == {"precision": 1.0, "recall": 1.0}
    far = _clusters(rng, [np.full(4, 100.0)], 20)
    assert quality.precision_recall(real, far) == {"precision": 0.0, "recall": 0.0}
    # The fake set is the real points of modes 0 and 1: every fake point is a real point
    # (precision 1); the real points of modes 2 and 3 are far from every fake ball (recall 1/2).
    assert quality.precision_recall(real, real[:20]) == {"precision": 1.0, "recall": 0.5}


def test_precision_recall_matches_brute_force_exactly_across_chunks(monkeypatch):
    rng = np.random.default_rng(6)
    real = rng.normal(size=(40, 5))
    fake = 0.7 + 1.3 * rng.normal(size=(30, 5))
    for k in (1, 3, 5):
        expected = _brute_precision_recall(real, fake, k)
        assert 0 < expected["precision"] < 1 and 0 < expected["recall"] < 1
        assert quality.precision_recall(real, fake, k=k) == expected
        monkeypatch.setattr(quality, "_MAX_CHUNK_ELEMENTS", 7 * 40)  # 7-row chunks, ragged end
        assert quality.precision_recall(real, fake, k=k) == expected
        monkeypatch.undo()


def test_precision_recall_errors():
    x = np.zeros((3, 2)) + np.arange(3)[:, None]
    with pytest.raises(ValueError, match="fake needs more than k = 3"):
        quality.precision_recall(np.ones((10, 2)), x, k=3)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        quality.precision_recall(x, x, k=0)


# ---- memorisation ----

def _brute_memorised(fake, real):
    out = []
    for f in fake:
        d = [np.linalg.norm(f - r) for r in real]
        j = int(np.argmin(d))
        own = min(np.linalg.norm(real[j] - real[i]) for i in range(len(real)) if i != j)
        out.append(d[j] < own)
    return np.array(out)


def test_memorisation_counts_copies_not_far_points():
    rng = np.random.default_rng(7)
    real = rng.normal(size=(50, 6))
    fake = np.concatenate([real[:10], real[20:25] + 1e-6, 50.0 + rng.normal(size=(15, 6))])
    mask = quality.memorised(fake, real)
    np.testing.assert_array_equal(mask, np.arange(30) < 15)
    assert quality.memorisation_ratio(fake, real) == 0.5
    distance, index = quality.nearest_real(fake[:10], real)
    np.testing.assert_array_equal(distance, 0.0)  # exact copies are at distance exactly 0
    np.testing.assert_array_equal(index, np.arange(10))


def test_memorisation_matches_brute_force(monkeypatch):
    rng = np.random.default_rng(8)
    real = rng.normal(size=(60, 4))
    fake = rng.normal(size=(45, 4))
    expected = _brute_memorised(fake, real)
    assert 0 < expected.sum() < len(fake)
    np.testing.assert_array_equal(quality.memorised(fake, real), expected)
    monkeypatch.setattr(quality, "_MAX_CHUNK_ELEMENTS", 11 * 60)
    np.testing.assert_array_equal(quality.memorised(fake, real), expected)
    assert quality.memorisation_ratio(fake, real) == expected.mean()


def test_quality_report_with_the_training_set_as_fake():
    rng = np.random.default_rng(9)
    train, test = rng.normal(size=(80, 5)), rng.normal(size=(70, 5))
    report = quality.quality_report(train, test, train, k=3)
    assert set(report) == {"fd", "fd_floor", "precision", "recall", "memorisation",
                           "memorisation_floor"}
    assert report["fd"] == report["fd_floor"] > 0  # copying the training set sits on the floor
    assert report["memorisation"] == 1.0
    assert report["memorisation_floor"] == quality.memorisation_ratio(test, train) < 0.5
    pr = quality.precision_recall(test, train, k=3)
    assert (report["precision"], report["recall"]) == (pr["precision"], pr["recall"])


def _scipy_fd(a, b):
    """FD from the textbook formula with scipy.linalg.sqrtm, float64."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False, ddof=1), np.cov(b, rowvar=False, ddof=1)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def test_quality_report_fields_use_the_documented_sets():
    # Three distinct sets, so that every field would change if it read the wrong one: the fake
    # set copies 25 training rows (memorised) and adds 35 shifted points.
    rng = np.random.default_rng(10)
    train = rng.normal(size=(80, 5))
    test = 0.3 + 1.2 * rng.normal(size=(70, 5))
    fake = np.concatenate([train[:25], 1.0 + 0.8 * rng.normal(size=(35, 5))])
    report = quality.quality_report(train, test, fake, k=3)
    # Docstring: fd = FD(fake, test), fd_floor = FD(train, test), precision / recall of fake
    # against test, memorisation = fake vs train, memorisation_floor = test vs train.
    expected = {"fd": _scipy_fd(fake, test), "fd_floor": _scipy_fd(train, test),
                **_brute_precision_recall(test, fake, 3),
                "memorisation": _brute_memorised(fake, train).mean(),
                "memorisation_floor": _brute_memorised(test, train).mean()}
    assert set(report) == set(expected)
    for name in ("fd", "fd_floor"):
        assert report[name] == pytest.approx(expected[name], rel=1e-9), name
    for name in ("precision", "recall", "memorisation", "memorisation_floor"):
        assert report[name] == expected[name], name  # shares of counts: exact
    # ... and the wrong sets give other values (each swap a plausible slip)
    wrong = {"fd": [_scipy_fd(fake, train), _scipy_fd(train, test)],
             "fd_floor": [_scipy_fd(fake, test), _scipy_fd(fake, train)],
             "precision": [_brute_precision_recall(train, fake, 3)["precision"],
                           _brute_precision_recall(fake, test, 3)["precision"]],
             "recall": [_brute_precision_recall(train, fake, 3)["recall"],
                        _brute_precision_recall(fake, test, 3)["recall"]],
             "memorisation": [_brute_memorised(fake, test).mean(),
                              _brute_memorised(train, fake).mean()],
             "memorisation_floor": [_brute_memorised(fake, train).mean(),
                                    _brute_memorised(train, test).mean()]}
    for name, values in wrong.items():
        for value in values:
            assert abs(report[name] - value) > 0.02, (name, report[name], value)


# ---- feature extractors ----

EXTRACTORS = '''
import numpy as np

def mean_colour(images):
    return images.mean(axis=(1, 2))

def wrong_shape(images):
    return images.mean(axis=(1, 2))[:1]

class Net:
    @staticmethod
    def features(images):
        return images.reshape(len(images), -1)

NOT_CALLABLE = 3
'''


@pytest.fixture
def extractor_module(tmp_path, monkeypatch):
    (tmp_path / "ganaug_test_extractors.py").write_text(textwrap.dedent(EXTRACTORS))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "ganaug_test_extractors"


def test_load_extractor_and_extract_features(extractor_module, rgb_batch):
    assert quality.load_extractor("numpy:ravel") is np.ravel
    fn = quality.load_extractor(f"{extractor_module}:mean_colour")
    features = quality.extract_features(fn, rgb_batch, batch_size=3)
    np.testing.assert_allclose(features, rgb_batch.mean(axis=(1, 2)), rtol=1e-6)
    assert features.dtype == np.float64
    nested = quality.load_extractor(f"{extractor_module}:Net.features")
    assert quality.extract_features(nested, rgb_batch).shape == (4, 32 * 32 * 3)
    with pytest.raises(ValueError, match=r"must return features of shape \(3, D\)"):
        quality.extract_features(quality.load_extractor(f"{extractor_module}:wrong_shape"),
                                 rgb_batch, batch_size=3)
    with pytest.raises(ValueError, match="images must be float32"):
        quality.extract_features(fn, rgb_batch.astype(np.float64))


def test_load_extractor_errors(extractor_module):
    for spec in ("numpy", "numpy:", ":ravel", "a:b:c", "numpy:ra-vel", 3):
        with pytest.raises(ValueError, match="package.module:function"):
            quality.load_extractor(spec)
    with pytest.raises(ImportError, match="cannot import module 'no_such_module_xyz'"):
        quality.load_extractor("no_such_module_xyz:features")
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        quality.load_extractor(f"{extractor_module}:nope")
    with pytest.raises(TypeError, match="not a callable"):
        quality.load_extractor(f"{extractor_module}:NOT_CALLABLE")


# ---- export filters ----

def test_privacy_filter_exact_mask():
    real = np.array([[0.0, 0.0], [10.0, 0.0]])
    fake = np.array([[0.5, 0.0], [3.0, 0.0], [10.0, 0.9], [10.0, 2.0], [0.0, 1.0]])
    keep, dropped = filters.privacy_filter(fake, real, threshold=1.0)
    np.testing.assert_array_equal(keep, [False, True, False, True, True])  # 1.0 is not closer
    assert dropped == 2
    keep, dropped = filters.privacy_filter(real, real, threshold=0.0)
    assert keep.all() and dropped == 0
    for bad in (-0.1, np.nan, np.inf):
        with pytest.raises(ValueError, match="--privacy-threshold"):
            filters.privacy_filter(fake, real, threshold=bad)


def test_quality_filter_exact_mask():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4], [0.3, 0.3, 0.4], [0.0, 0.0, 1.0]])
    labels = np.array([0, 2, 2, 1])
    keep, dropped = filters.quality_filter(probs, labels, min_confidence=0.4)
    np.testing.assert_array_equal(keep, [True, True, True, False])
    assert dropped == 1
    assert filters.quality_filter(probs, labels, min_confidence=0.0).keep.all()
    np.testing.assert_array_equal(filters.quality_filter(probs, labels, min_confidence=1.0).keep,
                                  [False, False, False, False])
    for bad in (-0.01, 1.01, np.nan):
        with pytest.raises(ValueError, match="--min-confidence"):
            filters.quality_filter(probs, labels, min_confidence=bad)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        filters.quality_filter(probs, np.array([0, 1, 2, 3]), min_confidence=0.5)
    with pytest.raises(ValueError, match="sum to 1"):
        filters.quality_filter(2 * probs, labels, min_confidence=0.5)
    with pytest.raises(ValueError, match="labels must be integers"):
        filters.quality_filter(probs, labels.astype(np.float32), min_confidence=0.5)


# ---- mixing real and synthetic batches ----

def _source(offset, n):
    values = offset + np.arange(n)
    x = np.broadcast_to(values[:, None, None, None], (n, 2, 2, 1)).astype(np.float32)
    return {"x": jnp.asarray(x), "y": jnp.asarray(values, jnp.int32)}


def test_mix_batch_counts_sources_determinism_and_jit():
    real, synthetic = _source(0, 20), _source(100, 7)
    key = jax.random.key(0)
    batch = mixing.mix_batch(key, real, synthetic, batch_size=10, synthetic_fraction=0.3)
    x, y = np.asarray(batch["x"]), np.asarray(batch["y"])
    assert x.shape == (10, 2, 2, 1) and y.shape == (10,) and y.dtype == np.int32
    np.testing.assert_array_equal(x[:, 0, 0, 0], y)  # each x keeps its own label
    np.testing.assert_array_equal(x, np.broadcast_to(x[:, :1, :1], x.shape))
    is_synthetic = y >= 100
    assert is_synthetic.sum() == 3
    np.testing.assert_array_equal(batch["synthetic"], is_synthetic)
    assert np.all(y[is_synthetic] < 107) and np.all(y[~is_synthetic] < 20)
    again = mixing.mix_batch(key, real, synthetic, batch_size=10, synthetic_fraction=0.3)
    np.testing.assert_array_equal(again["y"], y)
    jitted = jax.jit(mixing.mix_batch, static_argnames=("batch_size", "synthetic_fraction"))
    traced = jitted(key, real, synthetic, batch_size=10, synthetic_fraction=0.3)
    np.testing.assert_array_equal(traced["x"], x)
    np.testing.assert_array_equal(traced["y"], y)
    other = mixing.mix_batch(jax.random.key(1), real, synthetic, batch_size=10,
                             synthetic_fraction=0.3)
    assert not np.array_equal(other["y"], y)


def test_mix_batch_extremes_rounding_and_uniformity():
    real, synthetic = _source(0, 10), _source(100, 5)
    key = jax.random.key(3)
    assert np.all(mixing.mix_batch(key, real, synthetic, batch_size=8,
                                   synthetic_fraction=0.0)["y"] < 100)
    assert np.all(mixing.mix_batch(key, real, synthetic, batch_size=8,
                                   synthetic_fraction=1.0)["y"] >= 100)
    empty = {"x": real["x"][:0], "y": real["y"][:0]}
    assert mixing.mix_batch(key, real, empty, batch_size=8, synthetic_fraction=0.0)["y"].shape == (8,)
    assert (mixing.synthetic_count(5, 0.5), mixing.synthetic_count(7, 0.5)) == (2, 4)
    y = np.asarray(mixing.mix_batch(key, real, synthetic, batch_size=4000,
                                    synthetic_fraction=0.25)["y"])
    assert (y >= 100).sum() == 1000
    np.testing.assert_array_equal(mixing.mix_batch(key, real, synthetic, batch_size=4000,
                                                   synthetic_fraction=0.25)["synthetic"], y >= 100)
    counts = np.bincount(y[y < 100], minlength=10)  # 3000 draws over 10 items: 300 +- 16.4
    assert np.all(np.abs(counts - 300) < 5 * np.sqrt(3000 * 0.1 * 0.9)), counts
    # The real and synthetic halves sit in random positions, not in two blocks.
    assert 0 < (y[:2000] >= 100).sum() < 1000


def test_mix_batch_errors():
    real, synthetic = _source(0, 10), _source(100, 5)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        mixing.mix_batch(key, real, synthetic, batch_size=0, synthetic_fraction=0.5)
    for bad in (1.5, "0.5", True, None, float("nan")):
        with pytest.raises(ValueError, match=r"synthetic_fraction must be a number in \[0, 1\]"):
            mixing.mix_batch(key, real, synthetic, batch_size=8, synthetic_fraction=bad)
    empty = {"x": synthetic["x"][:0], "y": synthetic["y"][:0]}
    with pytest.raises(ValueError, match="synthetic is empty but the batch asks for 4"):
        mixing.mix_batch(key, real, empty, batch_size=8, synthetic_fraction=0.5)
    wrong = {"x": synthetic["x"][..., 0], "y": synthetic["y"]}
    with pytest.raises(ValueError, match="same sample shape and dtype"):
        mixing.mix_batch(key, real, wrong, batch_size=8, synthetic_fraction=0.5)
    with pytest.raises(ValueError, match="keys 'x' and 'y'"):
        mixing.mix_batch(key, real, {"x": synthetic["x"]}, batch_size=8, synthetic_fraction=0.5)
    with pytest.raises(ValueError, match="key must be a PRNG key"):
        mixing.mix_batch(0, real, synthetic, batch_size=8, synthetic_fraction=0.5)
