"""Where real samples come from, and how a batch is drawn from (seed, step).

A `Source` knows the shape of one sample, the number of classes, the arrays to place on the
devices once (empty for synthetic mixtures) and how to draw a batch from a key. Batches are
pure functions of (data key, step): resuming needs no iterator state.
"""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ganaug_jax.data import mixtures


@dataclasses.dataclass(frozen=True)
class Source:
    """shape: one sample's shape ((2,) or (H, W, C)); num_classes: 0 when unlabelled;
    arrays: {'x', 'y'} numpy arrays placed on the devices once (may be empty);
    draw(key, arrays, n) -> {'x': (n, *shape) float32, 'y': (n,) int32 if labelled}."""
    name: str
    shape: tuple
    num_classes: int
    arrays: dict
    draw: Callable

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3


def _mixture_source(name: str) -> Source:
    return Source(name, (2,), 0, {}, lambda key, arrays, n: {"x": mixtures.sample(key, name, n)})


def load_digits_arrays() -> dict:
    """scikit-learn's digits (ships offline): x (1797, 8, 8, 1) float32 in [-1, 1], y int32."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 8.0 - 1.0)[..., None]  # pixel values 0..16
    return {"x": x, "y": digits.target.astype(np.int32)}


def draw_from_arrays(key: jax.Array, arrays: dict, n: int) -> dict:
    """n samples drawn uniformly with replacement from device-resident arrays."""
    index = jax.random.randint(key, (n,), 0, arrays["x"].shape[0])
    return {name: value[index] for name, value in arrays.items()}


def _digits_source() -> Source:
    arrays = load_digits_arrays()
    return Source("digits", arrays["x"].shape[1:], 10, arrays, draw_from_arrays)


SOURCES = {"ring8": lambda: _mixture_source("ring8"), "grid25": lambda: _mixture_source("grid25"),
           "digits": _digits_source}


def load_source(name: str) -> Source:
    if name not in SOURCES:
        raise ValueError(f"data.source must be one of {sorted(SOURCES)}, got {name!r}")
    return SOURCES[name]()


def make_batch_fn(source: Source, *, batch_size: int, n_critic: int) -> Callable:
    """batch(data_key, step, arrays) -> {'x': (n_critic, B, ...), 'y': (n_critic, B)}."""
    def batch(data_key, step, arrays):
        keys = jax.random.split(jax.random.fold_in(data_key, step), n_critic)
        draws = [source.draw(k, arrays, batch_size) for k in keys]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *draws)
    return batch
