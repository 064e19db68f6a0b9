"""Where real samples come from, and how a batch is drawn from (seed, step).

A `Source` knows the shape of one sample, the number of classes, the arrays to place on the
devices once (empty for synthetic mixtures) and how to draw a batch from a key. Batches are
pure functions of (data key, step): resuming needs no iterator state.
"""

import dataclasses
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ganaug_jax.data import loaders, mixtures, regimes


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


def draw_indices(key: jax.Array, n: int, num_records: int) -> jax.Array:
    """n record indices drawn uniformly with replacement from range(num_records), int32."""
    return jax.random.randint(key, (n,), 0, num_records)


def draw_from_arrays(key: jax.Array, arrays: dict, n: int) -> dict:
    """n samples drawn uniformly with replacement from device-resident arrays."""
    index = draw_indices(key, n, arrays["x"].shape[0])
    return {name: value[index] for name, value in arrays.items()}


@dataclasses.dataclass(frozen=True)
class RealData:
    """A labelled data set in the model's contract, split once: train x (N, R, R, C) float32 in
    [-1, 1], y (N,) int32 (after the low-data / imbalance regime); test: the held-out real
    split no GAN or classifier trains on (never subsampled)."""
    train: dict
    test: dict
    num_classes: int
    class_names: tuple


def load_real(data) -> RealData:
    """The real data a config's `data` section names: load, hold out the test split, apply the
    regime (data.per_class or data.class_counts), convert to the model range."""
    splits = loaders.load_splits(data.source, data_dir=data.data_dir or None)
    # [0, 1] or [-1, 1] floats: one decision over the whole data set, not per split or subset
    signed = loaders.float_range_is_signed(*(split.x for split in splits.values()))
    train, test = regimes.train_test_split(splits, test_fraction=data.test_fraction,
                                           seed=data.split_seed)
    counts = regimes.parse_counts(data.class_counts)
    if data.per_class and counts:
        raise ValueError("set only one of config keys 'data.per_class' and 'data.class_counts'")
    if data.per_class:
        train = regimes.take_per_class(train, data.per_class, seed=data.subset_seed)
    elif counts:
        train = regimes.take_counts(train, counts, seed=data.subset_seed)
    resolution = data.resolution or train.x.shape[1]
    channels = data.channels or train.x.shape[3]
    from ganaug_jax.models.dcgan import DCGAN_RESOLUTIONS
    height, width = train.x.shape[1:3]
    if not data.resolution and (resolution not in DCGAN_RESOLUTIONS or height != width):
        raise ValueError(f"the images of data.source {data.source!r} are {height}x{width} "
                         f"(H x W); set config key 'data.resolution' to one of "
                         f"{DCGAN_RESOLUTIONS} to resize them"
                         + (" (non-square images are stretched to R x R)" if height != width
                            else ""))
    loaders.check_fits(train, resolution=resolution, channels=channels, num_classes=None)
    empty = np.flatnonzero(regimes.class_counts(train.y, train.num_classes) == 0)
    if empty.size:
        regime = " after data.per_class / data.class_counts" if data.per_class or counts else ""
        raise ValueError(f"classes {empty.tolist()} of {data.source!r} have no training "
                         f"images{regime}; every class needs at least one")

    def convert(part):
        try:
            x = loaders.to_model_range(part.x, resolution=resolution, channels=channels,
                                       signed=signed)
        except ValueError as error:
            raise ValueError(f"data.source {data.source!r}: {error}") from None
        return {"x": x, "y": part.y}
    return RealData(convert(train), convert(test), train.num_classes, train.class_names)


def _image_source(data) -> Source:
    real = load_real(data)
    return Source(data.source, real.train["x"].shape[1:], real.num_classes, real.train,
                  draw_from_arrays)


MIXTURES = ("ring8", "grid25")


def with_absolute_paths(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of config whose data.source (a .npz path or an image folder) and data.data_dir
    are absolute, so that the run's config.json names the same data from any directory (for
    generate, evaluate and resuming). Names ('digits', 'tfds:NAME', mixtures) stay as they are."""
    config = ml_collections.ConfigDict(config.to_dict())
    source = config.data.source
    if (isinstance(source, str) and source not in MIXTURES and source != "digits"
            and not source.startswith("tfds:")
            and (source.endswith(".npz") or os.path.isdir(source))):
        config.data.source = os.path.abspath(source)
    if config.data.data_dir:
        config.data.data_dir = os.path.abspath(config.data.data_dir)
    return config


def load_source(data) -> Source:
    """The Source for a config's `data` section: a 2-D mixture by name, or labelled images
    (see `load_real` and `loaders.load_splits` for the accepted forms of data.source)."""
    if data.source in MIXTURES:
        return _mixture_source(data.source)
    return _image_source(data)


def step_keys(data_key: jax.Array, step, n_critic: int) -> jax.Array:
    """The n_critic draw keys of one step: the whole of a batch's randomness."""
    return jax.random.split(jax.random.fold_in(data_key, step), n_critic)


def batch_indices(data_key: jax.Array, step, *, num_records: int, batch_size: int,
                  n_critic: int) -> jax.Array:
    """(n_critic, B) int32: the records `make_batch_fn` draws with `draw_from_arrays` at this
    step (the same random calls), for readers that gather them elsewhere (data/streaming.py)."""
    return jnp.stack([draw_indices(k, batch_size, num_records)
                      for k in step_keys(data_key, step, n_critic)])


def make_batch_fn(source: Source, *, batch_size: int, n_critic: int) -> Callable:
    """batch(data_key, step, arrays) -> {'x': (n_critic, B, ...), 'y': (n_critic, B)}."""
    def batch(data_key, step, arrays):
        keys = step_keys(data_key, step, n_critic)
        draws = [source.draw(k, arrays, batch_size) for k in keys]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *draws)
    return batch
