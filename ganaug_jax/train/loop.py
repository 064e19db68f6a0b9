"""The run loop: `train_and_evaluate(config, workdir)` trains, logs, samples and checkpoints.

Restarting with the same workdir resumes from the latest checkpoint and ends bit-identical
(on CPU) to a run that never stopped: batches and randomness derive from (seed, step).
"""

import collections
import contextlib
import functools
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ganaug_jax import config as config_lib
from ganaug_jax.data import mixtures
from ganaug_jax.data.sources import make_batch_fn, with_absolute_paths
from ganaug_jax.data.streaming import HostStream
from ganaug_jax.train import checkpoint, outputs, sharding
from ganaug_jax.train.distributed import is_primary
from ganaug_jax.train.build import build_run, build_step, step_compiler_options
from ganaug_jax.train.state import TrainState, abstract_train_state, create_train_state


class NonFiniteLossError(RuntimeError):
    """A loss or gradient norm (or, at the end, a value of the final state) became NaN or
    infinite; the checkpoints kept are left as they were."""


def check_workdir(workdir: str, config: ml_collections.ConfigDict, *, force: bool) -> pathlib.Path:
    """Creates the workdir, checks it is writable and that an earlier run there that left
    checkpoints used the same config (keys in config.RESUMABLE_KEYS may differ; a run stopped
    before its first checkpoint leaves nothing to resume, and its config is replaced). Writes
    nothing else."""
    path = outputs.ensure_writable_dir(workdir, "--workdir")
    saved = path / "config.json"
    checkpoints = path / "checkpoints"
    resumable = checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())
    # (a run saved before paths were saved absolute: its relative path resolves from here)
    if saved.exists() and resumable:
        differing = config_lib.differing_keys(with_absolute_paths(config_lib.read_saved(saved)),
                                              with_absolute_paths(config))
        if differing and not force:
            raise ValueError(
                f"--workdir {workdir!r} holds a run with a different config; differing keys:\n  "
                + "\n  ".join(differing) + "\nuse another workdir, or --force to resume anyway")
    return path


def _fixed_latents(run, seed: int, count: int):
    key = jax.random.fold_in(jax.random.key(seed), 0x5A3)  # the sample grid's own stream
    z = jax.random.normal(key, (count, run.latent_dim), jnp.float32)
    labels = jnp.arange(count, dtype=jnp.int32) % run.num_classes if run.num_classes else None
    return z, labels


def sample_ema(run, state: TrainState, z, labels):
    """EMA generator in inference mode (batch norm uses running statistics)."""
    return run.generator.apply({"params": state.ema_params, "batch_stats": state.g_stats},
                               z, labels, train=False)


def _write_samples(path, sampler, run, state, config, latents):
    # every process runs the sampling program (it spans all devices); process 0 writes the PNG
    samples = np.asarray(sampler(state, *latents))
    if not is_primary():
        return
    if run.source.is_image:
        rows = run.num_classes or int(np.sqrt(len(samples)))
        if run.num_classes:  # one row per class: sample i has label i % classes
            order = np.argsort(np.arange(len(samples)) % run.num_classes, kind="stable")
            samples = samples[order]
        pixels = outputs.image_grid(samples, rows)
    else:
        means, _ = mixtures.mixture(config.data.source)
        pixels = outputs.scatter_plot(samples, means)
    outputs.save_png(path, pixels)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, force: bool = False,
                       progress: bool = True) -> TrainState:
    """Trains to config.num_steps (resuming from workdir's latest checkpoint); returns the state.

    Under jax.distributed every process calls this with the same arguments; the mesh spans
    every process's devices and only process 0 writes config, metrics and samples. A relative
    data path is saved in config.json as absolute."""
    config_lib.validate(config)
    config = with_absolute_paths(config)
    mesh = sharding.make_mesh()
    sharding.check_batch_divisible(config.batch_size, mesh, "config key 'batch_size'")
    run = build_run(config)
    if config.data.placement == "host" and not run.source.arrays:
        raise ValueError(f"config key 'data.placement' = 'host' streams the records of a data "
                         f"set; data.source {config.data.source!r} is generated on the devices: "
                         f"use 'device'")
    path = check_workdir(workdir, config, force=force)

    rep = sharding.replicated(mesh)
    shapes = dict(data_shape=run.source.shape, latent_dim=run.latent_dim,
                  num_classes=run.num_classes)
    manager = checkpoint.make_manager(path, keep=config.keep_checkpoints)
    latest = manager.latest_step()
    if latest is not None and latest > config.num_steps:  # before config.json is rewritten
        manager.close()
        raise ValueError(f"--workdir {workdir!r} holds a run at step {latest}, past config key "
                         f"'num_steps' = {config.num_steps}: raise num_steps to train on, or use "
                         "another workdir")
    if latest is None:  # a new run
        state = create_train_state(
            jax.random.key(config.seed), run.generator, run.discriminator, run.g_tx, run.d_tx,
            ada_initial_p=config.augment.ada_initial_p, sharding=rep, **shapes)
    else:
        state = checkpoint.restore_latest(manager, abstract_train_state(
            run.generator, run.discriminator, run.g_tx, run.d_tx, sharding=rep, **shapes))
    primary = is_primary()
    if primary:
        outputs.atomic_write_text(path / "config.json", config_lib.to_json(config))

    step_fn = sharding.shard_step(build_step(config, run), mesh, batch_axis=1,
                                  compiler_options=step_compiler_options(config, mesh))
    batch_fn = jax.jit(make_batch_fn(run.source, batch_size=config.batch_size,
                                     n_critic=config.optim.n_critic),
                       out_shardings=sharding.batch_sharding(mesh, 1))
    # 'device': the data set is placed once and batches are gathered on the devices; 'host': it
    # stays on the host and a HostStream reads the same batches ahead (started in the try).
    arrays = jax.device_put(run.source.arrays, rep) if config.data.placement == "device" else None
    stream = None
    data_key = jax.random.fold_in(jax.random.key(config.seed), 0xDA7A)
    # ~100 images, a whole number per class (one row each), or 2,500 points for a scatter plot
    grid = -(-100 // run.num_classes) * run.num_classes if run.num_classes else 100
    latents = _fixed_latents(run, config.seed, grid if run.source.is_image else 2500)

    start = int(state.step)
    # One sampling program per run (it was traced and compiled again at every sample grid,
    # 0.2-0.3 s each), compiled now with the other start-up work rather than mid-run.
    sampler = jax.jit(functools.partial(sample_ema, run))
    if start < config.num_steps:
        jax.block_until_ready(sampler(state, *latents))
    log = outputs.MetricsLog(path, resume_step=start) if primary else None
    images_per_step = config.batch_size * config.optim.n_critic
    bar = _progress(start, config.num_steps, progress and primary)
    pending = None  # (step, metrics) of the previous step, fetched one step late
    to_log = None  # (step, metrics) of a log step, fetched once the next step is dispatched
    # (step, packed state) of checkpoint steps, each saved once the losses and gradient norms
    # computed from that state (the next step's) are known to be finite.
    to_save = collections.deque()
    last_time, last_step = time.perf_counter(), start
    # Lazy R1 (loss.r1_interval k > 1) runs on steps where step % k == 0 and reports 0 on the
    # others: a row shows the penalty of the latest step that ran it (none yet: no entry).
    r1_interval = config.loss.r1_interval if config.loss.r1_gamma > 0 else 1
    last_r1 = None
    if r1_interval > 1 and log is not None and log.rows:  # resumed: the last row kept shows
        row = log.rows[-1]                               # the latest R1 before its step
        if "r1_penalty" in row and (start - 1) // r1_interval * r1_interval < row["step"]:
            last_r1 = row["r1_penalty"]                  # (no R1 step since it)

    def write_log(done, metrics):
        nonlocal last_time, last_step
        scalars = jax.device_get(metrics)
        now = time.perf_counter()
        rate = (done - last_step) * images_per_step / max(now - last_time, 1e-9)
        last_time, last_step = now, done
        if log is not None:
            log.write(done, dict(scalars, images_per_sec=rate))
        bar.update(done, rate, scalars)
    try:
        if config.data.placement == "host":  # resuming at step s starts the stream at s
            stream = HostStream(data_key, run.source.arrays,
                                sharding=sharding.batch_sharding(mesh, 1),
                                batch_size=config.batch_size, n_critic=config.optim.n_critic,
                                start=start, stop=config.num_steps)
        for step in range(start, config.num_steps):
            batch = stream.batch(step) if stream is not None else batch_fn(data_key, step, arrays)
            state, metrics = step_fn(state, batch)
            # The device is busy with this step while the host checks, saves and logs the last.
            if pending is not None:
                _check_finite(*pending)
                _save_checked(manager, to_save, good_through=pending[0])
            if to_log is not None:
                write_log(*to_log)
                to_log = None
            pending = (step, metrics)  # computed from the state of step `step`
            if r1_interval > 1:
                if step % r1_interval == 0:
                    last_r1 = metrics["r1_penalty"]
                metrics = {k: v for k, v in metrics.items() if k != "r1_penalty"}
                if last_r1 is not None:
                    metrics["r1_penalty"] = last_r1
            done = step + 1
            if done % config.checkpoint_every == 0 or done == config.num_steps:
                to_save.append((done, checkpoint.pack(state)))  # before the next step donates it
            if done % config.log_every == 0 or done == config.num_steps:
                to_log = (done, metrics)
            if config.sample_every and done % config.sample_every == 0 or done == config.num_steps:
                _write_samples(path / f"samples_{done:07d}.png", sampler, run, state, config,
                               latents)
        if to_log is not None:
            write_log(*to_log)
        if pending is not None:
            _check_finite(*pending)
            _save_checked(manager, to_save, good_through=pending[0])
        if to_save:  # the final state: no step computes its losses, so its parameters are checked
            _check_finite_packed(*to_save[-1])
            _save_checked(manager, to_save, good_through=config.num_steps)
    finally:
        # Every step of the cleanup runs even when one before it raises (callbacks: last first).
        with contextlib.ExitStack() as cleanup:
            cleanup.callback(bar.close)
            if log is not None:
                cleanup.callback(log.close)
            cleanup.callback(manager.close)
            cleanup.callback(manager.wait_until_finished)
            if stream is not None:
                cleanup.callback(stream.close)
            # Another error stopped the run: save the states already checked. Not across
            # processes, where such an error is usually one process's own and the others are
            # in the next step's collectives: Orbax's save would wait for them forever.
            if (pending is not None and to_save and jax.process_count() == 1
                    and _known_finite(pending[1])):
                _save_checked(manager, to_save, good_through=pending[0])
    return state


_ADVICE = ("stopping (the last good checkpoint is kept). Lower the learning rates or add a "
           "penalty (loss.r1_gamma, loss.gp_weight).")


# An infinite gradient norm (squares past float32's range) also overflows Adam's second moments.
_CHECKED = ("d_loss", "g_loss", "d_grad_norm", "g_grad_norm")


def _check_finite(step: int, metrics) -> None:
    """metrics: of the step that starts from the state of `step` (0-based); read in one
    device_get."""
    for name, value in jax.device_get({name: metrics[name] for name in _CHECKED}).items():
        if not np.isfinite(value := float(value)):
            raise NonFiniteLossError(f"step {step + 1}: {name} is {value}; {_ADVICE}")


def _known_finite(metrics) -> bool:
    """Whether the checked metrics can be read and are finite. Only called while another
    error stops the run: one raised in reading them (the step failed on the device) would
    replace that error and skip the cleanup, so it counts as not finite."""
    try:
        _check_finite(0, metrics)
    except Exception:  # noqa: BLE001 -- the error already stopping the run is the one to show
        return False
    return True


def _check_finite_packed(step: int, packed: tuple) -> None:
    """Every floating value of a packed state (`checkpoint.pack`: parameters, statistics,
    optimizer moments) is finite. Reads this process's first replica (the replicas of the
    state are one SPMD program's outputs, the same bits)."""
    arrays, _ = packed
    for array in arrays.values():
        local = np.asarray(array.addressable_data(0))
        if jnp.issubdtype(local.dtype, jnp.floating) and not np.isfinite(local).all():
            raise NonFiniteLossError(f"step {step}: the state holds non-finite values; {_ADVICE}")


def _save_checked(manager, to_save: collections.deque, *, good_through: int) -> None:
    """Starts the saves of the queued (step, packed state) up to step `good_through`, the
    states whose losses were checked."""
    while to_save and to_save[0][0] <= good_through:
        checkpoint.save_packed(manager, *to_save.popleft())


class _progress:
    """A tqdm bar showing images/sec and the main losses (silent when disabled)."""

    def __init__(self, start: int, total: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True,
                            disable=None)  # None: only on a terminal, not into pipes and logs
        self.position = start

    def update(self, step: int, rate: float, scalars: dict) -> None:
        if self.bar is None:
            return
        self.bar.update(step - self.position)
        self.position = step
        self.bar.set_postfix(img_s=f"{rate:,.0f}", d=f"{float(scalars['d_loss']):.3f}",
                             g=f"{float(scalars['g_loss']):.3f}",
                             p=f"{float(scalars['augment_p']):.2f}")  # the p in use (ADA or fixed)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
