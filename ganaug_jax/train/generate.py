"""Sampling the EMA generator of a run's latest checkpoint into labelled arrays.

Sample i depends only on (seed, i): its latent is drawn from fold_in(key(seed), i) and its
label (conditional models) is the requested one or i % num_classes. Inference uses batch-norm
running statistics, so neither the batch size nor the device count changes a sample.
"""

import io
import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ganaug_jax import config as config_lib
from ganaug_jax.train import checkpoint, outputs
from ganaug_jax.train.build import build_run
from ganaug_jax.train.loop import sample_ema
from ganaug_jax.train.state import create_train_state


def load_run_state(workdir: str):
    """(config, run, state) of the latest checkpoint in workdir; clear errors when missing."""
    path = pathlib.Path(workdir)
    saved = path / "config.json"
    if not saved.is_file():
        raise ValueError(f"--workdir {workdir!r} holds no run (no config.json)")
    config = ml_collections.ConfigDict(json.loads(saved.read_text()))
    config_lib.validate(config)
    run = build_run(config)
    like = create_train_state(
        jax.random.key(config.seed), run.generator, run.discriminator, run.g_tx, run.d_tx,
        data_shape=run.source.shape, latent_dim=run.latent_dim, num_classes=run.num_classes)
    if not (path / "checkpoints").is_dir():
        raise checkpoint.CheckpointError(f"--workdir {workdir!r} has no checkpoints")
    manager = checkpoint.make_manager(path, keep=config.keep_checkpoints, read_only=True)
    try:
        state = checkpoint.restore_latest(manager, like)
    finally:
        manager.close()
    if state is None:
        raise checkpoint.CheckpointError(f"--workdir {workdir!r} has no checkpoints")
    return config, run, state


def generate(run, state, *, num: int, seed: int, label: int | None = None,
             batch_size: int = 256) -> dict:
    """{'x': samples, 'y': labels (conditional only)}: images as float32 in [-1, 1]."""
    if num <= 0:
        raise ValueError(f"--num must be > 0, got {num}")
    if label is not None and not (run.num_classes and 0 <= label < run.num_classes):
        allowed = f"in [0, {run.num_classes})" if run.num_classes else "absent (unconditional model)"
        raise ValueError(f"--label must be {allowed}, got {label}")
    base = jax.random.key(seed)

    @jax.jit
    def chunk(indices):
        z = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(base, i), (run.latent_dim,)))(indices)
        if not run.num_classes:
            return sample_ema(run, state, z, None), indices
        labels = jnp.full_like(indices, label) if label is not None else indices % run.num_classes
        return sample_ema(run, state, z, labels.astype(jnp.int32)), labels.astype(jnp.int32)

    xs, ys = [], []
    for start in range(0, num, batch_size):
        indices = np.arange(start, start + batch_size, dtype=np.int32)  # fixed shape: one compile
        x, y = chunk(indices)
        take = min(batch_size, num - start)
        xs.append(np.asarray(x)[:take])
        ys.append(np.asarray(y)[:take])
    out = {"x": np.concatenate(xs)}
    if run.num_classes:
        out["y"] = np.concatenate(ys).astype(np.int32)
    return out


def save_npz(path: str, samples: dict, *, is_image: bool) -> None:
    """Writes x (uint8 NHWC for images, float32 (N, D) for vectors) and y, atomically."""
    arrays = dict(samples)
    arrays["x"] = outputs.to_uint8(arrays["x"]) if is_image else arrays["x"].astype(np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    target = pathlib.Path(path)
    if not target.parent.is_dir():
        raise ValueError(f"--out {path!r}: directory {str(target.parent)!r} does not exist")
    outputs.atomic_write_bytes(target, buffer.getvalue())
