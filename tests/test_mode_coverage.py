"""Mode coverage (`ganaug_jax.evaluate.mode_coverage`, PROTOCOLS.md section 1) on constructed
samples whose answers are known by construction, and against a per-sample Python loop.

Definitions (module docstring): a sample is high quality (HQ) if its distance to its nearest
mean is <= 3 std; a mode is captured if at least one HQ sample has it as nearest mean;
reverse KL = KL(q || uniform) = sum_k q_k log(q_k K), q the distribution of HQ samples over
the K modes (0 log 0 = 0). References: math.hypot loops and scipy.special.rel_entr.
"""

import math

import numpy as np
import pytest
from scipy.special import rel_entr

from ganaug_jax.evaluate.mode_coverage import mode_coverage

STD = 0.05
GRID = np.array([(x, y) for x in (-4.0, -2.0, 0.0, 2.0, 4.0) for y in (-4.0, -2.0, 0.0, 2.0, 4.0)])
RING = np.array([(math.cos(2 * math.pi * k / 8), math.sin(2 * math.pi * k / 8)) for k in range(8)])


def _loop_reference(samples, means, std):
    """The definitions, one sample at a time in Python floats."""
    counts, good = [0] * len(means), 0
    for x, y in samples:
        d = [math.hypot(x - mx, y - my) for mx, my in means]
        k = min(range(len(means)), key=d.__getitem__)
        if d[k] <= 3 * std:
            counts[k] += 1
            good += 1
    q = np.array(counts, float) / max(good, 1)
    kl = float(rel_entr(q, np.full(len(means), 1 / len(means))).sum()) if good else math.inf
    return {"modes": sum(c > 0 for c in counts), "num_modes": len(means),
            "high_quality": good / len(samples), "reverse_kl": kl}


def test_constructed_samples_exact_counts_thresholds_and_kl():
    # Grid modes 0..24 (means GRID[k]); radius 3 std = 0.15, margin 1e-6 relative.
    r_in, r_out = 3 * STD * (1 - 1e-6), 3 * STD * (1 + 1e-6)
    samples = [GRID[0], GRID[0] + [0.01, 0.0], GRID[0] + [0.0, -0.02],  # 3 HQ on mode 0
               GRID[7] + [r_in, 0.0],                                   # just inside: HQ on 7
               GRID[12] + [0.0, r_out],                                 # just outside: not HQ
               GRID[12] + [1.0, 0.0],                                   # halfway 12|17: not HQ
               GRID[24] + [-r_in / math.sqrt(2), r_in / math.sqrt(2)]]  # inside, diagonal: HQ
    samples = np.array(samples)
    out = mode_coverage(samples, GRID, STD)
    # HQ counts by construction: mode 0: 3, mode 7: 1, mode 24: 1 -> 5 of 7 samples.
    assert out["modes"] == 3 and out["num_modes"] == 25
    assert out["high_quality"] == pytest.approx(5 / 7, abs=1e-15)
    q = np.zeros(25)
    q[[0, 7, 24]] = [3 / 5, 1 / 5, 1 / 5]
    expected_kl = float(np.sum(q[q > 0] * np.log(q[q > 0] * 25)))  # float64 by hand
    assert expected_kl == pytest.approx(float(rel_entr(q, np.full(25, 1 / 25)).sum()), rel=1e-14)
    assert out["reverse_kl"] == pytest.approx(expected_kl, rel=1e-12)
    assert out == pytest.approx(_loop_reference(samples, GRID, STD), rel=1e-12)
    # Only the just-outside point moved inside: mode 12 is now captured.
    moved = samples.copy()
    moved[4] = GRID[12] + [0.0, r_in]
    out = mode_coverage(moved, GRID, STD)
    assert out["modes"] == 4 and out["high_quality"] == pytest.approx(6 / 7, abs=1e-15)


def test_reverse_kl_is_zero_for_uniform_and_log_k_for_one_mode():
    # 8 ring modes, 3 HQ samples on each (offsets well inside 3 * 0.01), plus 5 far points.
    offsets = np.array([[0.0, 0.0], [0.01, 0.0], [0.0, -0.015]])
    uniform = np.concatenate([RING[k] + offsets for k in range(8)] + [np.full((5, 2), 9.0)])
    out = mode_coverage(uniform, RING, 0.01)
    assert out["modes"] == 8 and out["high_quality"] == pytest.approx(24 / 29, abs=1e-15)
    assert out["reverse_kl"] == pytest.approx(0.0, abs=1e-15)
    # every HQ sample on mode 3: q = e_3, KL(e_3 || U_8) = 1 * log(1 * 8) = log 8.
    collapsed = np.concatenate([RING[3] + offsets, RING[3] + 0.5 * offsets, [[0.0, 0.0]]])
    out = mode_coverage(collapsed, RING, 0.01)
    assert out["modes"] == 1 and out["high_quality"] == pytest.approx(6 / 7, abs=1e-15)
    assert out["reverse_kl"] == pytest.approx(np.log(np.float64(8)), rel=1e-14)
    # no HQ sample at all: q undefined, reported as +inf, nothing captured
    out = mode_coverage(np.full((4, 2), 0.5), RING, 0.01)
    assert out["modes"] == 0 and out["high_quality"] == 0.0 and out["reverse_kl"] == math.inf


def test_random_samples_match_the_loop_reference():
    rng = np.random.default_rng(0)
    # around random grid modes with spread 2.2 std: a mix of HQ and not-HQ, some modes empty
    samples = GRID[rng.integers(0, 25, 300)] + 2.2 * STD * rng.normal(size=(300, 2))
    samples[:20] = rng.uniform(-5, 5, (20, 2))  # and some anywhere
    out = mode_coverage(samples.astype(np.float32), GRID, STD)  # float32 input is accepted
    ref = _loop_reference(samples.astype(np.float32).astype(np.float64), GRID, STD)
    assert 0.5 < ref["high_quality"] < 0.95 and ref["modes"] == 25
    assert out == pytest.approx(ref, rel=1e-12)


def test_rejects_samples_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"samples must have shape \(S, 2\)"):
        mode_coverage(np.zeros((4, 3)), RING, 0.01)
    with pytest.raises(ValueError, match=r"samples must have shape \(S, 2\)"):
        mode_coverage(np.zeros(8), RING, 0.01)
    with pytest.raises(ValueError, match=r"samples must have shape \(S, 2\) with S >= 1, "
                                         r"got \(0, 2\)"):
        mode_coverage(np.zeros((0, 2)), RING, 0.01)


def test_rejects_bad_means_and_std_and_takes_lists():
    with pytest.raises(ValueError, match=r"means must have shape \(K, D\) with K >= 1"):
        mode_coverage(np.zeros((4, 2)), np.zeros((0, 2)), 0.01)
    for std in (0.0, -0.01, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="std must be finite and > 0"):
            mode_coverage(np.zeros((4, 2)), RING, std)
    with pytest.raises(ValueError, match="means must be finite"):
        mode_coverage(np.zeros((4, 2)), np.where(np.arange(8)[:, None] == 3, np.nan, RING), 0.01)
    as_lists = mode_coverage(RING[:3].tolist(), RING.tolist(), 0.01)
    assert as_lists == mode_coverage(RING[:3], RING, 0.01) and as_lists["modes"] == 3
