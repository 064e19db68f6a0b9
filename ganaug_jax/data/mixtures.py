"""2-D Gaussian mixtures used to measure mode collapse (PacGAN / VEEGAN definitions).

ring8: 8 Gaussians with means (cos 2 pi k / 8, sin 2 pi k / 8), std 0.01.
grid25: 25 Gaussians with means {-4, -2, 0, 2, 4}^2, std 0.05.
"""

import numbers

import jax
import jax.numpy as jnp
import numpy as np

from ganaug_jax.augment._contract import check_key


def ring8_means() -> np.ndarray:
    angles = 2 * np.pi * np.arange(8) / 8  # not linspace(0, 2 pi, 8), which repeats a mode
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def grid25_means() -> np.ndarray:
    axis = np.array([-4.0, -2.0, 0.0, 2.0, 4.0])
    return np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)


MIXTURES = {"ring8": (ring8_means, 0.01), "grid25": (grid25_means, 0.05)}


def mixture(name: str) -> tuple[np.ndarray, float]:
    """(means (K, 2) float64, std) of a named mixture."""
    if name not in MIXTURES:
        raise ValueError(f"unknown mixture {name!r}; expected one of {sorted(MIXTURES)}")
    means_fn, std = MIXTURES[name]
    return means_fn(), std


def sample(key: jax.Array, name: str, n: int) -> jax.Array:
    """n points (n, 2) float32 from the mixture, modes chosen uniformly. key: a PRNG key;
    n: an int >= 0."""
    check_key(key)
    means, std = mixture(name)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"n (the number of points) must be an int >= 0, got {n!r}")
    k_mode, k_noise = jax.random.split(key)
    modes = jax.random.randint(k_mode, (n,), 0, means.shape[0])
    return (jnp.asarray(means, jnp.float32)[modes]
            + std * jax.random.normal(k_noise, (n, 2))).astype(jnp.float32)
