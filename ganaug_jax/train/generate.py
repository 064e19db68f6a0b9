"""Sampling a run's latest checkpoint into labelled arrays.

Sample i depends only on (seed, i) for a given label assignment: its latent is drawn from
fold_in(key(seed), i) (a standard normal, or a normal truncated to [-t, t]) and its label
(conditional models) is labels[i], the single requested label, or i % num_classes. Inference
uses batch-norm running statistics, and the generator always runs on fixed chunks of samples
aligned to their indices (chunk k holds samples k*C .. k*C + C - 1, `sample_chunk()`): a
product's summation order depends on its shapes (XLA:CPU picks its matmul kernel by the
number of rows), so with the shapes and each sample's row fixed, a sample's bits change with
neither the batch size nor first_index. The EMA generator is the default; the raw
(last-step) generator is an option.
"""

import math
import pathlib

import jax
import numpy as np

from ganaug_jax import config as config_lib
from ganaug_jax.augment._contract import check_key
from ganaug_jax.models.layers import check_positive_int
from ganaug_jax.train import checkpoint
from ganaug_jax.train.build import build_run
from ganaug_jax.train.loop import sample_ema
from ganaug_jax.train.state import TrainState, abstract_train_state


def load_run_state(workdir: str, *, step: int | None = None):
    """(config, run, state) of the checkpoint of `step` in workdir (None: the latest one);
    clear errors when the run, its checkpoints or that step are missing."""
    if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
        raise ValueError(f"--step must be an int >= 0 (a checkpoint's step), got {step!r}")
    path = pathlib.Path(workdir)
    saved = path / "config.json"
    if not saved.is_file():
        raise ValueError(f"--workdir {workdir!r} holds no run (no config.json)")
    config = config_lib.read_saved(saved)
    config_lib.validate(config)
    run = build_run(config)
    like = abstract_train_state(
        run.generator, run.discriminator, run.g_tx, run.d_tx, data_shape=run.source.shape,
        latent_dim=run.latent_dim, num_classes=run.num_classes,
        sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    if not (path / "checkpoints").is_dir():
        raise checkpoint.CheckpointError(f"--workdir {workdir!r} has no checkpoints")
    manager = checkpoint.make_manager(path, keep=config.keep_checkpoints, read_only=True)
    try:
        if step is None:
            state = checkpoint.restore_latest(manager, like)
        elif step not in manager.all_steps():
            raise checkpoint.CheckpointError(
                f"--step {step}: --workdir {workdir!r} has checkpoints at steps "
                f"{sorted(manager.all_steps())} (config key keep_checkpoints sets how many stay)")
        else:
            state = checkpoint.restore(manager, step, like)
    finally:
        manager.close()
    if state is None:
        raise checkpoint.CheckpointError(f"--workdir {workdir!r} has no checkpoints")
    return config, run, state


def check_truncation(truncation: float | None) -> None:
    """None (plain normal latents) or a finite t > 0; errors name `--truncation`."""
    if truncation is None:
        return
    if isinstance(truncation, bool) or not isinstance(truncation, (int, float)) or \
            not math.isfinite(truncation) or truncation <= 0:
        raise ValueError(f"--truncation must be a finite number > 0 (latents in [-t, t]), "
                         f"got {truncation!r}")


def sample_latents(key: jax.Array, indices: jax.Array, *, latent_dim: int,
                   truncation: float | None = None) -> jax.Array:
    """(N,) int indices -> (N, latent_dim) float32 latents; row n is drawn from
    fold_in(key, indices[n]) only: standard normal, or truncated to [-t, t] when t is given."""
    check_key(key)
    check_truncation(truncation)

    def one(i):
        k = jax.random.fold_in(key, i)
        if truncation is None:
            return jax.random.normal(k, (latent_dim,))
        return jax.random.truncated_normal(k, -truncation, truncation, (latent_dim,))
    return jax.vmap(one)(indices)


def sample_generator(run, state: TrainState, z, labels, *, use_ema: bool = True):
    """The EMA (default) or raw generator in inference mode (batch-norm running statistics).
    z: (N, latent_dim) float32; labels: (N,) int32 or None -> samples, float32 in [-1, 1]."""
    if not use_ema:  # same inference path as the EMA generator, with the raw parameters
        state = state.replace(ema_params=state.g_params)
    return sample_ema(run, state, z, labels)


# Samples one call may make: sample indices are int32, and a call dispatches up to one more
# batch of (at most 2 ** 20) indices past its last sample.
MAX_SAMPLES = int(np.iinfo(np.int32).max) - 2 ** 20


def labels_for(per_class: dict | int, num_classes: int) -> np.ndarray:
    """Class-sorted (N,) int32 labels: `per_class` samples of every class (an int >= 1) or
    per_class[c] samples of class c (a {class: count >= 0} dict; missing classes get none)."""
    if not num_classes:
        raise ValueError("--per-class needs a conditional model; this run is unconditional "
                         "(use --num)")
    if isinstance(per_class, dict):
        counts = np.zeros(num_classes, np.int64)
        for c, n in per_class.items():
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < num_classes:
                raise ValueError(f"per-class counts: class must be an int in [0, {num_classes}), got {c!r}")
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
                raise ValueError(f"per-class counts: count of class {c} must be an int >= 0, got {n!r}")
            counts[c] = n
    elif isinstance(per_class, (int, np.integer)) and not isinstance(per_class, bool):
        if per_class < 1:
            raise ValueError(f"--per-class must be >= 1, got {per_class}")
        counts = np.full(num_classes, per_class, np.int64)
    else:
        raise TypeError(f"--per-class must be an int or a {{class: count}} dict, got {per_class!r}")
    if counts.sum() > MAX_SAMPLES:
        raise ValueError(f"--per-class asks for {counts.sum():,} samples; at most {MAX_SAMPLES:,} "
                         "(sample indices are int32)")
    return np.repeat(np.arange(num_classes, dtype=np.int32), counts)


def balance_to(real_counts: np.ndarray, target: int) -> dict[int, int]:
    """{class: synthetic samples needed} so that real + synthetic reaches `target` per class
    (0 for classes already at or above it). real_counts: (num_classes,) ints >= 0."""
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or target < 0:
        raise ValueError(f"--balance-to must be an int >= 0, got {target!r}")
    real = np.asarray(real_counts)
    if real.ndim != 1 or not np.issubdtype(real.dtype, np.integer) or (real < 0).any():
        raise ValueError(f"real_counts must be a 1-D array of ints >= 0 (one per class), got "
                         f"{real.dtype} of shape {real.shape}")
    return {c: int(max(target - int(n), 0)) for c, n in enumerate(real)}


def _resolve_labels(run, num, label, labels, first_index) -> tuple[int, np.ndarray | None]:
    """(num, (num,) int32 labels or None for unconditional models), validated; by default
    sample i (= first_index + row) gets label i % num_classes."""
    if labels is not None:
        if label is not None:
            raise ValueError("give labels or label, not both")
        if not run.num_classes:
            raise ValueError("labels need a conditional model; this run is unconditional")
        labels = np.asarray(labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or \
                ((labels < 0) | (labels >= run.num_classes)).any():
            raise ValueError(f"labels must be a 1-D int array with values in [0, {run.num_classes})")
        if num is not None and num != len(labels):
            raise ValueError(f"--num ({num}) must equal the number of labels ({len(labels)})")
        num = len(labels)
    if num is None or isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num <= 0:
        raise ValueError(f"--num must be an int > 0, got {num!r}")
    if num > MAX_SAMPLES:  # (first_index + num is checked by the caller)
        raise ValueError(f"--num must be <= {MAX_SAMPLES:,} (sample indices are int32), got "
                         f"{num:,}")
    if label is not None and not (run.num_classes and 0 <= label < run.num_classes):
        allowed = f"in [0, {run.num_classes})" if run.num_classes else "absent (unconditional model)"
        raise ValueError(f"--label must be {allowed}, got {label}")
    if not run.num_classes:
        return num, None
    if labels is None:
        labels = (np.full(num, label) if label is not None else
                  np.arange(first_index, first_index + num) % run.num_classes)
    return num, labels.astype(np.int32)


def sample_chunk(platform: str | None = None) -> int:
    """Samples per generator call, C: 16 on CPU, where a small chunk keeps the transposed
    convolutions' activations in cache (at 32x32x3 and 64x64x3, width 64: 2.3x and 1.9x the
    samples/sec of one 256-sample call; `benchmarks/NOTES.md`), 256 on accelerators (not
    measured: no GPU was lent to these sessions). platform: default `jax.default_backend()`."""
    return 16 if (platform or jax.default_backend()) == "cpu" else 256


# (id(run), truncation, use_ema, chunk) -> (run, jitted sampler); the last few
_SAMPLERS: dict = {}


def _sampler(run, truncation, use_ema, chunk):
    """jit(state, key, indices (k*chunk,), labels) -> samples for this run, the generator run
    on each chunk in turn (`lax.map`), compiled once per shape and reused across calls, seeds
    and filter rounds (state is an argument, not a baked-in constant)."""
    key = (id(run), truncation, use_ema, chunk)
    if key not in _SAMPLERS or _SAMPLERS[key][0] is not run:  # ids are reused after GC
        def sample_one_chunk(state, base, indices, labels):
            z = sample_latents(base, indices, latent_dim=run.latent_dim, truncation=truncation)
            return sample_generator(run, state, z, labels, use_ema=use_ema)

        def sample(state, base, indices, labels):
            split = lambda a: None if a is None else a.reshape(-1, chunk)  # noqa: E731
            out = jax.lax.map(lambda il: sample_one_chunk(state, base, *il),
                              (split(indices), split(labels)))
            return out.reshape(indices.shape[0], *out.shape[2:])
        while len(_SAMPLERS) >= 8:
            _SAMPLERS.pop(next(iter(_SAMPLERS)))
        _SAMPLERS[key] = (run, jax.jit(sample))
    return _SAMPLERS[key][1]


def _check_first_index(first_index, last: int) -> None:
    if isinstance(first_index, bool) or not isinstance(first_index, (int, np.integer)) or \
            not 0 <= first_index <= last:
        raise ValueError(f"first_index must be an int >= 0 (int32 range), got {first_index!r}")


def generate(run, state, *, num: int | None = None, seed: int, label: int | None = None,
             labels: np.ndarray | None = None, truncation: float | None = None,
             use_ema: bool = True, batch_size: int = 256, first_index: int = 0) -> dict:
    """{'x': (N, *shape) float32 in [-1, 1], 'y': (N,) int32 (conditional only)}.

    labels: (N,) int labels, one per sample (e.g. from `labels_for`); else `label` for every
    sample, else i % num_classes for sample i. num may be left out when labels are given.
    truncation: latents from a normal truncated to [-t, t] (t > 0); None: plain normal.
    use_ema: the EMA generator (default) or the raw generator parameters.
    first_index: row n is sample first_index + n (its latent from fold_in(key(seed), that
    index)), so later calls can continue a stream without repeating samples.
    batch_size: samples per device call and host copy, rounded up to a multiple of the chunk
    (`sample_chunk()`); it does not change any sample.
    """
    _check_first_index(first_index, np.iinfo(np.int32).max)
    num, labels = _resolve_labels(run, num, label, labels, first_index)
    check_positive_int(batch_size, "batch_size")
    if batch_size > 2 ** 20:
        raise ValueError(f"batch_size must be <= {2 ** 20} (samples per device call), got "
                         f"{batch_size}")
    chunk = sample_chunk()
    per_call = -(-batch_size // chunk) * chunk
    _check_first_index(first_index, np.iinfo(np.int32).max - num - per_call)
    check_truncation(truncation)
    if truncation is not None and getattr(run.generator, "latent_components", 0):
        raise ValueError("--truncation truncates the N(0, I) latents, which would also skew the "
                         "choice of mixture component of this run (model.latent_components > 0); "
                         "generate without it")
    base = jax.random.key(seed)
    sampler = _sampler(run, truncation, use_ema, chunk)

    # Calls of per_call samples from the chunk boundary at or before first_index; rows
    # outside [first_index, first_index + num) are computed (label 0) and dropped.
    xs = []
    for start in range(first_index - first_index % chunk, first_index + num, per_call):
        indices = np.arange(start, start + per_call, dtype=np.int32)  # fixed shape: one compile
        lo, hi = max(first_index - start, 0), min(first_index + num - start, per_call)
        call_labels = None
        if labels is not None:
            call_labels = np.zeros(per_call, np.int32)
            call_labels[lo:hi] = labels[start + lo - first_index:start + hi - first_index]
        xs.append(np.asarray(sampler(state, base, indices, call_labels))[lo:hi])
    out = {"x": np.concatenate(xs)}
    if labels is not None:
        out["y"] = labels
    return out
