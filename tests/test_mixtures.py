"""The 2-D mixtures (`ganaug_jax.data.mixtures`) against PROTOCOLS.md's definitions.

ring8: means (cos 2 pi k / 8, sin 2 pi k / 8), k = 0..7, std 0.01; grid25: means
{-4, -2, 0, 2, 4}^2, std 0.05; `sample` picks modes uniformly. Statistical checks use a fixed
key and 20_000 samples and reject at p < 1e-4 (two-sided where it matters): scipy.stats chi-square
for the mode counts (H0: uniform) and for sum ||x - mean||^2 / std^2 (H0: chi^2 with 2n dof).
"""

import itertools
import math

import jax
import numpy as np
import pytest
from scipy import stats

from ganaug_jax.data import mixtures
from ganaug_jax.evaluate.mode_coverage import mode_coverage

N = 20_000
ALPHA = 1e-4


def test_ring8_means_are_the_eight_angles_2_pi_k_over_8():
    means, std = mixtures.mixture("ring8")
    assert std == 0.01 and means.shape == (8, 2) and means.dtype == np.float64
    expected = [(math.cos(2 * math.pi * k / 8), math.sin(2 * math.pi * k / 8)) for k in range(8)]
    np.testing.assert_allclose(means, expected, rtol=0, atol=1e-15)
    # linspace(0, 2 pi, 8) would space them 2 pi / 7 apart and repeat angle 0 at 2 pi:
    # all 8 are distinct, neighbours exactly 2 sin(pi / 8) apart, all on the unit circle.
    gaps = np.linalg.norm(means - np.roll(means, -1, axis=0), axis=1)
    np.testing.assert_allclose(gaps, 2 * math.sin(math.pi / 8), rtol=1e-14)
    np.testing.assert_allclose(np.linalg.norm(means, axis=1), 1.0, rtol=1e-15)


def test_grid25_means_are_the_product_grid():
    means, std = mixtures.mixture("grid25")
    assert std == 0.05 and means.shape == (25, 2) and means.dtype == np.float64
    axis = (-4.0, -2.0, 0.0, 2.0, 4.0)
    assert sorted(map(tuple, means.tolist())) == sorted(itertools.product(axis, axis))


def test_unknown_mixture_is_rejected():
    with pytest.raises(ValueError, match=r"unknown mixture 'ring9'.*'grid25', 'ring8'"):
        mixtures.mixture("ring9")


def _nearest(points, means):
    d = np.linalg.norm(points[:, None, :] - means[None], axis=-1)
    return d.argmin(axis=1)


@pytest.mark.parametrize("name", ["ring8", "grid25"])
def test_samples_have_uniform_modes_and_the_stated_std(name):
    means, std = mixtures.mixture(name)
    x = mixtures.sample(jax.random.key(0), name, N)
    assert x.shape == (N, 2) and x.dtype == np.float32
    x = np.asarray(x, np.float64)
    # Modes are >= 0.77 apart (ring: 2 sin(pi / 8)) and >= 15 std, so the nearest mean is the
    # mode drawn except with probability < 1e-40.
    nearest = _nearest(x, means)
    counts = np.bincount(nearest, minlength=len(means))
    assert stats.chisquare(counts).pvalue > ALPHA                      # uniform over modes
    residual = x - means[nearest]
    # Residual components i.i.d. N(0, std^2): sum r^2 / std^2 ~ chi^2(2N), two-sided.
    statistic = float(np.sum(residual ** 2) / std ** 2)
    p = stats.chi2.cdf(statistic, df=2 * N)
    assert ALPHA / 2 < p < 1 - ALPHA / 2, (statistic, p)
    # and the residual is centred: each coordinate's mean is N(0, std^2 / N)
    z = residual.mean(axis=0) / (std / math.sqrt(N))
    assert np.all(np.abs(z) < stats.norm.isf(ALPHA / 4)), z
    # A wrong std is far outside that test: 1.1 std gives a statistic 21 % lower.
    assert stats.chi2.cdf(statistic / 1.1 ** 2, df=2 * N) < ALPHA / 2


def test_sampled_mixture_has_the_mode_coverage_of_a_perfect_generator():
    # For a 2-D N(mu, std^2 I) point, P(||x - mu|| <= 3 std) = 1 - exp(-9 / 2) (Rayleigh).
    means, std = mixtures.mixture("ring8")
    out = mode_coverage(np.asarray(mixtures.sample(jax.random.key(1), "ring8", N)), means, std)
    p = 1 - math.exp(-4.5)
    assert out["modes"] == 8
    assert abs(out["high_quality"] - p) < 4 * math.sqrt(p * (1 - p) / N)
    # q close to uniform: 2 N KL is ~ chi^2(K - 1), so KL < chi2.isf(1e-4, 7) / (2 * 0.98 N)
    assert 0 <= out["reverse_kl"] < stats.chi2.isf(ALPHA, 7) / (2 * 0.98 * N)


def test_sample_is_a_function_of_the_key():
    a = mixtures.sample(jax.random.key(5), "grid25", 64)
    np.testing.assert_array_equal(a, mixtures.sample(jax.random.key(5), "grid25", 64))
    assert not np.array_equal(a, mixtures.sample(jax.random.key(6), "grid25", 64))
