"""The training core: sharded step equivalence, no recompiles, exact resume through the real
CLI after SIGKILL, outputs, generation, and bad input."""

import json
import re
import os
import pathlib
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from ganaug_jax import cli
from ganaug_jax import config as config_lib
from ganaug_jax.data.sources import make_batch_fn
from ganaug_jax.train import checkpoint, outputs, sharding
from ganaug_jax.train.build import build_run, build_step
from ganaug_jax.train.generate import generate, load_run_state
from ganaug_jax.train.loop import train_and_evaluate
from ganaug_jax.train.state import create_train_state

ROOT = pathlib.Path(__file__).resolve().parents[1]


def tiny_config(source="ring8", **overrides):
    config = config_lib.load_config(str(ROOT / "configs" / "default.py"))
    return config_lib.apply_overrides(config, tiny_overrides(source, **overrides))


def tiny_overrides(source="ring8", **overrides) -> list[str]:
    """tiny_config's changes to configs/default.py, as KEY=VALUE strings."""
    base = {"data.source": source, "num_steps": 6, "batch_size": 16, "checkpoint_every": 3,
            "log_every": 2, "sample_every": 0, "model.width": 32, "model.latent_dim": 8}
    if source == "digits":
        base.update({"model.architecture": "dcgan", "model.width": 8, "model.conditional": True,
                     "augment.kind": "diffaugment", "model.depth": 0})
    base.update(overrides)
    return [f"{k}={v}" for k, v in base.items()]


def _run_steps(config, devices, steps=3):
    """Runs `steps` sharded steps on `devices`; returns the final state on the host."""
    mesh = sharding.make_mesh(devices)
    run = build_run(config)
    state = create_train_state(jax.random.key(config.seed), run.generator, run.discriminator,
                               run.g_tx, run.d_tx, data_shape=run.source.shape,
                               latent_dim=run.latent_dim, num_classes=run.num_classes)
    state = jax.device_put(state, sharding.replicated(mesh))
    step_fn = sharding.shard_step(build_step(config, run), mesh, batch_axis=1)
    batch_fn = jax.jit(make_batch_fn(run.source, batch_size=config.batch_size,
                                     n_critic=config.optim.n_critic),
                       out_shardings=sharding.batch_sharding(mesh, 1))
    arrays = jax.device_put(run.source.arrays, sharding.replicated(mesh))
    data_key = jax.random.key(1)
    for step in range(steps):
        state, metrics = step_fn(state, batch_fn(data_key, step, arrays))
    return jax.device_get(state), step_fn


@pytest.mark.parametrize("source, overrides", [
    ("ring8", {"loss.r1_gamma": 1.0, "optim.n_critic": 2, "model.latent_components": 16}),
    ("digits", {"loss.name": "hinge", "model.spectral_norm": True}),
])
def test_eight_devices_equal_one_device(source, overrides):
    config = tiny_config(source, **overrides)
    one, _ = _run_steps(config, jax.devices()[:1])
    eight, step_fn = _run_steps(config, jax.devices()[:8])
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(eight)):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        scale = max(np.abs(a).max(), 1e-6)
        assert np.abs(a - b).max() / scale <= 1e-5
    assert step_fn._cache_size() == 1  # the step compiled once for all its calls


def test_state_initialises_as_one_program_and_restores_without_one():
    """create_train_state compiles one program whose state is placed on `sharding` and equals
    initialising op by op with the same (non-partitionable) threefry, within float32 rounding
    (XLA may fuse the spectral-norm init); abstract_train_state gives the same structure,
    shapes, dtypes and sharding and compiles nothing."""
    from ganaug_jax.train import state as state_lib
    run = build_run(tiny_config("digits", **{"model.spectral_norm": True}))
    models = dict(generator=run.generator, discriminator=run.discriminator, g_tx=run.g_tx,
                  d_tx=run.d_tx, data_shape=run.source.shape, latent_dim=run.latent_dim,
                  num_classes=run.num_classes)
    rep = sharding.replicated(sharding.make_mesh())
    key = jax.random.key(7)
    programs = []  # compiled here or loaded from a persistent cache an earlier test turned on

    def on_compile(name, secs, **kwargs):
        if name.endswith("backend_compile_duration"):
            programs.append(name)

    def on_event(name, **kwargs):
        if name == "/jax/compilation_cache/cache_hits":
            programs.append(name)

    jax.monitoring.register_event_duration_secs_listener(on_compile)
    jax.monitoring.register_event_listener(on_event)
    try:
        abstract = state_lib.abstract_train_state(**models, sharding=rep)
        assert programs == []
        state = create_train_state(key, **models, ada_initial_p=0.25, sharding=rep)
        assert len(programs) == 1
    finally:
        jax.monitoring.unregister_event_duration_listener(on_compile)
        jax.monitoring.unregister_event_listener(on_event)
    with jax.threefry_partitionable(False):  # the bits create_train_state draws with
        op_by_op = state_lib._init_state(key, **models, ada_initial_p=0.25)
    assert jax.tree.structure(abstract) == jax.tree.structure(state)
    for a, x, ref in zip(jax.tree.leaves(abstract), jax.tree.leaves(state),
                         jax.tree.leaves(op_by_op), strict=True):
        assert (a.shape, a.dtype) == (x.shape, x.dtype) == (ref.shape, ref.dtype)
        assert a.sharding == x.sharding == rep
        np.testing.assert_allclose(np.asarray(x), np.asarray(ref), rtol=1e-6, atol=1e-7)
    assert float(state.ada.p) == 0.25


def test_batch_must_divide_by_device_count(tmp_path):
    config = tiny_config(batch_size=12)
    with pytest.raises(ValueError, match=r"batch_size' = 12 must be divisible by the number of devices \(8\)"):
        train_and_evaluate(config, str(tmp_path / "run"), progress=False)
    assert not (tmp_path / "run").exists()


def test_train_writes_outputs_and_generate_is_batch_independent(tmp_path):
    config = tiny_config("digits", num_steps=4, checkpoint_every=2, sample_every=2)
    workdir = tmp_path / "run"
    train_and_evaluate(config, str(workdir), progress=False)
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    assert {"d_loss", "g_loss", "d_real", "d_fake", "d_grad_norm", "g_grad_norm", "ada_p",
            "ada_rt", "images_per_sec"} <= set(rows[0])
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert (workdir / "samples_0000002.png").exists() and (workdir / "samples_0000004.png").exists()
    assert json.loads((workdir / "config.json").read_text())["num_steps"] == 4
    _, run, state = load_run_state(str(workdir))
    assert int(state.step) == 4
    big = generate(run, state, num=10, seed=5, batch_size=16)
    small = generate(run, state, num=10, seed=5, batch_size=3)
    np.testing.assert_array_equal(big["x"], small["x"])
    np.testing.assert_array_equal(big["y"], np.arange(10) % 10)
    np.testing.assert_array_equal(generate(run, state, num=4, seed=5, batch_size=4)["x"], big["x"][:4])
    assert not np.array_equal(generate(run, state, num=4, seed=6)["x"], big["x"][:4])
    only_three = generate(run, state, num=4, seed=5, label=3)
    np.testing.assert_array_equal(only_three["y"], [3, 3, 3, 3])


def test_metrics_are_fetched_one_step_late(tmp_path, monkeypatch):
    """A log step's metrics are read only after the next step is dispatched, so the host never
    waits for the device with nothing queued; the last step's are read after the loop."""
    from ganaug_jax.train import outputs
    events = []
    shard_step, write = sharding.shard_step, outputs.MetricsLog.write

    def recording_shard_step(*args, **kwargs):
        step_fn = shard_step(*args, **kwargs)

        def step(state, batch):
            events.append("step")
            return step_fn(state, batch)
        return step

    def recording_write(self, step, scalars):
        events.append(step)
        return write(self, step, scalars)
    monkeypatch.setattr(sharding, "shard_step", recording_shard_step)
    monkeypatch.setattr(outputs.MetricsLog, "write", recording_write)
    train_and_evaluate(tiny_config(num_steps=6, log_every=2, checkpoint_every=3),
                       str(tmp_path / "run"), progress=False)
    assert events == ["step"] * 3 + [2] + ["step"] * 2 + [4, "step", 6]


def test_the_sample_grid_program_is_traced_once_per_run(tmp_path, monkeypatch):
    from ganaug_jax.train import loop
    traces = []

    def counting(*args):
        traces.append(1)
        return sample_ema(*args)
    sample_ema = loop.sample_ema
    monkeypatch.setattr(loop, "sample_ema", counting)
    workdir = tmp_path / "run"
    train_and_evaluate(tiny_config(num_steps=6, sample_every=2), str(workdir), progress=False)
    assert len(list(workdir.glob("samples_*.png"))) == 3 and len(traces) == 1


def test_resume_with_a_different_config_lists_the_keys(tmp_path):
    workdir = str(tmp_path / "run")
    train_and_evaluate(tiny_config(num_steps=2, checkpoint_every=2), workdir, progress=False)
    changed = tiny_config(num_steps=4, **{"optim.g_lr": 1e-3, "seed": 5})
    with pytest.raises(ValueError, match=r"(?s)optim.g_lr: 0.0002 -> 0.001.*seed: 0 -> 5"):
        train_and_evaluate(changed, workdir, progress=False)
    state = train_and_evaluate(changed, workdir, force=True, progress=False)
    assert int(state.step) == 4
    # A run that stopped before its first checkpoint (only its config.json left) has nothing to
    # resume: a corrected config starts afresh there, without --force.
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    (stopped / "config.json").write_text(config_lib.to_json(tiny_config(**{"optim.g_lr": 50.0})))
    (stopped / "checkpoints").mkdir()
    state = train_and_evaluate(changed, str(stopped), progress=False)
    assert int(state.step) == 4
    assert config_lib.read_saved(stopped / "config.json").optim.g_lr == 1e-3


def test_num_steps_may_change_on_resume_only_under_a_constant_schedule():
    """Under optim.schedule 'cosine' num_steps is the schedule's horizon: a resumed run with
    another num_steps would train on another schedule than the run it continues."""
    for schedule, differing in (("constant", []), ("cosine", [
            "num_steps: 2 -> 4 (the horizon of optim.schedule 'cosine')"])):
        saved, current = (tiny_config(num_steps=n, **{"optim.schedule": schedule}) for n in (2, 4))
        assert config_lib.differing_keys(saved, current) == differing


@pytest.mark.parametrize("schedule, warmup", [("constant", 10), ("cosine", 10), ("cosine", 0)])
def test_d_warmup_and_horizon_span_the_same_steps_as_g(schedule, warmup):
    """D updates n_critic times per step: its learning rate at update k * n_critic is G's at
    update k (warm-up and cosine horizon alike), checked against float64 formulas; no warm-up
    means the full rate at the first update."""
    from ganaug_jax.train.build import learning_rate
    config = tiny_config(**{"optim.schedule": schedule, "optim.warmup_steps": warmup,
                            "optim.n_critic": 5})
    g = learning_rate(2e-4, config.optim, 100)
    d = learning_rate(2e-4, config.optim, 100, updates_per_step=5)
    for k in (0, 3, 9, 10, 40, 99):
        if schedule == "constant":
            want = 2e-4 * min(k / 10, 1.0)
        elif k < warmup:
            want = 2e-4 * k / warmup
        else:
            want = 2e-4 * 0.5 * (1 + np.cos(np.pi * (k - warmup) / (100 - warmup)))
        np.testing.assert_allclose([float(g(k)), float(d(5 * k))], [want, want], rtol=1e-5,
                                   atol=2e-4 * 1e-6)  # float32's cos near pi: 1e-6 of the peak


def test_lazy_r1_rows_show_the_penalty_of_the_latest_step_that_ran_it(tmp_path):
    """With loss.r1_interval k = 4, R1 runs on steps 0 and 4 only; every row shows the latest
    such penalty (not the 0.0 of the steps between), per image as with k = 1, whatever
    log_every is (a reporting key: the training is the same)."""
    r1 = {"loss.r1_gamma": 0.5, "num_steps": 8, "checkpoint_every": 8}

    def rows(name, **overrides):
        train_and_evaluate(tiny_config(**r1, **overrides), str(tmp_path / name), progress=False)
        return [json.loads(l) for l in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    every, sparse = rows("every", log_every=1, **{"loss.r1_interval": 4}), \
        rows("sparse", log_every=4, **{"loss.r1_interval": 4})
    assert [r["step"] for r in sparse] == [4, 8]
    got = [r["r1_penalty"] for r in every]
    assert got[0] > 0 and got[4] > 0 and got[0] != got[4]
    assert got[:4] == [got[0]] * 4 and got[4:] == [got[4]] * 4  # steps 1-3, 5-7 carry it
    assert [r["r1_penalty"] for r in sparse] == [got[0], got[4]]
    first = rows("interval1", log_every=1, **{"loss.r1_interval": 1})[0]["r1_penalty"]
    np.testing.assert_allclose(got[0], first, rtol=1e-5)  # same state and batch at step 0


def test_lazy_r1_rows_and_tensorboard_after_a_resume_match_a_straight_run(tmp_path):
    """Resumed at step 3 (R1 every 4 steps: steps 0 and 4), row 4 still shows step 0's R1,
    taken from the kept row 3; TensorBoard shows every row once (the checkpoint's included);
    a torn last line in metrics.jsonl (a crash while appending) is dropped on resume."""
    r1 = {"loss.r1_gamma": 0.5, "loss.r1_interval": 4, "log_every": 1, "checkpoint_every": 3}
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train_and_evaluate(tiny_config(num_steps=6, **r1), str(straight), progress=False)
    train_and_evaluate(tiny_config(num_steps=3, **r1), str(resumed), progress=False)
    with open(resumed / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "d_lo')
    train_and_evaluate(tiny_config(num_steps=6, **r1), str(resumed), progress=False)

    def rows(workdir):
        return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    want, got = rows(straight), rows(resumed)
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6]
    assert [r["r1_penalty"] for r in got] == [r["r1_penalty"] for r in want]
    assert [r["d_loss"] for r in got] == [r["d_loss"] for r in want]
    shown = _tensorboard_scalars(resumed / "tensorboard", "d_loss")
    assert [step for step, _ in shown] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([v for _, v in shown], [r["d_loss"] for r in want], rtol=1e-6)


def _tensorboard_scalars(logdir, tag):
    """(step, value) pairs TensorBoard shows for `tag`: every event file in write order,
    with its purge rule (a SessionLog START at step s hides earlier events at steps >= s)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event, SessionLog
    shown = []
    for path in sorted(logdir.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime_ns):
        data, at = path.read_bytes(), 0
        while at < len(data):  # TFRecord: u64 length, u32 crc, payload, u32 crc
            (length,) = struct.unpack_from("<Q", data, at)
            event = Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            if event.session_log.status == SessionLog.START:
                shown = [(step, v) for step, v in shown if step < event.step]
            shown += [(event.step, v.simple_value) for v in event.summary.value if v.tag == tag]
    return shown


def test_non_finite_loss_stops_and_keeps_only_checkpoints_that_lead_to_finite_losses(tmp_path, capsys):
    workdir = tmp_path / "run"
    train_and_evaluate(tiny_config(num_steps=3, checkpoint_every=3), str(workdir), progress=False)
    before = {p: p.read_bytes() for p in (workdir / "checkpoints").rglob("*") if p.is_file()}
    changes = tiny_overrides(num_steps=40, checkpoint_every=1, keep_checkpoints=100,
                             **{"optim.d_lr": 50.0, "optim.g_lr": 50.0})
    exploding = config_lib.apply_overrides(tiny_config(), changes)
    capsys.readouterr()
    assert cli.main(["train", "--config", str(ROOT / "configs" / "default.py"), "--workdir",
                     str(workdir), "--force", "--no-progress", "--no-compilation-cache",
                     *[f"--config.{c}" for c in changes]]) == 2
    message = capsys.readouterr().err.strip()  # one line naming the step and the value
    match = re.fullmatch(r"ganaug train: error: step (\d+): (d|g)_(loss|grad_norm) is "
                         r"(nan|inf|-inf); stopping .*", message)
    assert match, message
    failed = int(match.group(1))  # 1-based: the step that started from the state of failed - 1
    manager = checkpoint.make_manager(workdir, keep=100, read_only=True)
    saved = manager.all_steps()
    manager.close()
    # The state of step failed - 1 gave the non-finite loss: it is not kept; every earlier one is.
    assert 4 < failed <= 40 and sorted(saved) == [3, *range(4, failed - 1)], (failed, saved)
    for path, data in before.items():  # the checkpoint of the first run is untouched
        assert path.read_bytes() == data
    # The latest kept checkpoint leads to finite losses: the same config goes one step on from it.
    state = train_and_evaluate(config_lib.apply_overrides(exploding, [f"num_steps={failed - 1}"]),
                               str(workdir), progress=False)
    assert int(state.step) == failed - 1
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state))


class _Unreadable:
    """What reading a failed step's output raises on an accelerator, where the error surfaces
    asynchronously: when the value is read, not when the step is dispatched."""

    def __float__(self):
        raise jax.errors.JaxRuntimeError("INTERNAL: simulated device fault")


def test_a_step_failing_on_the_device_stops_the_run_with_that_error(tmp_path, monkeypatch):
    real_shard_step = sharding.shard_step

    def failing_at_step_4(*args, **kwargs):
        step_fn = real_shard_step(*args, **kwargs)

        def run_step(state, batch):
            start = int(state.step)
            state, metrics = step_fn(state, batch)
            return state, (dict(metrics, d_loss=_Unreadable()) if start == 4 else metrics)
        return run_step
    monkeypatch.setattr(sharding, "shard_step", failing_at_step_4)
    workdir = tmp_path / "run"
    with pytest.raises(jax.errors.JaxRuntimeError, match="simulated device fault") as failure:
        train_and_evaluate(tiny_config(num_steps=9, checkpoint_every=2), str(workdir),
                           progress=False)
    # The run stops with the step's own error, not the same one raised again while cleaning
    # up (which skipped closing the checkpoint manager).
    assert failure.value.__context__ is None
    # Checkpoint 4 is not kept: nothing is known of the step that started from it.
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2"]


def _tiny_state(width):
    run = build_run(tiny_config(**{"model.width": width}))
    state = create_train_state(jax.random.key(3), run.generator, run.discriminator, run.g_tx,
                               run.d_tx, data_shape=run.source.shape, latent_dim=run.latent_dim,
                               num_classes=run.num_classes)
    # distinct values in every leaf (Adam's zeros would hide a wrong offset)
    return jax.tree.map(lambda x: x + np.arange(x.size, dtype=x.dtype).reshape(x.shape) % 7,
                        state)


@pytest.mark.filterwarnings("ignore:Sharding info not provided")  # the raw read below
def test_checkpoint_packs_leaves_by_dtype_restores_bits_and_names_another_layout(tmp_path):
    """On disk: one flat array per dtype (the leaves in tree order, raveled: a NumPy
    concatenation) and the JSON layout; restored: the same bits in the same structure; a
    checkpoint of a state with other shapes: a CheckpointError naming the first leaf."""
    import orbax.checkpoint as ocp
    state = _tiny_state(32)
    manager = checkpoint.make_manager(str(tmp_path), keep=2)
    checkpoint.save(manager, state)
    manager.wait_until_finished()
    leaves = jax.tree_util.tree_leaves_with_path(state)
    raw = manager.restore(int(state.step), args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(), layout=ocp.args.JsonRestore()))
    dtypes = sorted({np.dtype(x.dtype).name for _, x in leaves})
    assert sorted(raw["state"]) == dtypes
    for dtype in dtypes:
        expected = np.concatenate([np.ravel(x) for _, x in leaves if np.dtype(x.dtype).name == dtype])
        np.testing.assert_array_equal(np.asarray(raw["state"][dtype]), expected)
    # stored uncompressed: these periodic values would shrink many times under zstd
    stored = sum(f.stat().st_size for f in (tmp_path / "checkpoints" / str(int(state.step))
                                            / "state").rglob("*") if f.is_file())
    assert stored >= sum(x.nbytes for _, x in leaves)
    assert [(e["path"], tuple(e["shape"]), e["dtype"]) for e in raw["layout"]] == [
        (jax.tree_util.keystr(p), x.shape, np.dtype(x.dtype).name) for p, x in leaves]
    restored = checkpoint.restore_latest(manager, jax.tree.map(jax.numpy.zeros_like, state))
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"holds a state of another layout \(\.g_params.*stored \[.*\] "
                             r"float32, this run \[.*\] float32\)"):
        checkpoint.restore_latest(manager, _tiny_state(16))
    manager.close()
    writer = ocp.CheckpointManager(tmp_path / "old" / "checkpoints")
    writer.save(1, args=ocp.args.StandardSave(state), force=True)  # one array per leaf
    writer.wait_until_finished()
    writer.close()
    old_format = checkpoint.make_manager(str(tmp_path / "old"), keep=2, read_only=True)
    with pytest.raises(checkpoint.CheckpointError, match=r"step 1 .* one Orbax array per leaf, "
                                                         r"the format before the packed one"):
        checkpoint.restore_latest(old_format, state)
    old_format.close()


# ---- the real CLI ----

def _cli(*args, check=True, devices=1, **kwargs):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    result = subprocess.run([sys.executable, "-m", "ganaug_jax.cli", *args], capture_output=True,
                            text=True, env=env, cwd=ROOT, **kwargs)
    if check and result.returncode:
        raise AssertionError(result.stderr[-3000:])
    return result


def _final_params(workdir):
    _, _, state = load_run_state(str(workdir))
    return jax.tree.leaves(jax.device_get(state))


TRAIN = ["train", "--config", "configs/ring8.py", "--no-progress", "--config.num_steps=40",
         "--config.checkpoint_every=10", "--config.batch_size=32", "--config.model.width=32",
         "--config.log_every=10", "--config.loss.r1_gamma=0.5"]


# `ganaug train` that kills itself (SIGKILL) once the asynchronous save of step KILL_AT has
# started: the process dies while that checkpoint is being written.
_KILLED_MID_SAVE = """
import os, signal, sys
from ganaug_jax.train import checkpoint
save = checkpoint.save_packed
def save_then_die(manager, step, packed):
    save(manager, step, packed)
    if step == int(os.environ["KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)
checkpoint.save_packed = save_then_die
from ganaug_jax import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def test_sigkill_and_resume_is_bit_identical(tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    _cli(*TRAIN, "--workdir", str(straight))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", KILL_AT="20")
    process = subprocess.run([sys.executable, "-c", _KILLED_MID_SAVE, *TRAIN, "--workdir",
                              str(interrupted)], cwd=ROOT, env=env, capture_output=True,
                             timeout=120)
    assert process.returncode == -signal.SIGKILL, process.stderr[-3000:]
    # killed mid-run, with step 20's checkpoint unfinished: only step 10 is complete. Orbax
    # creates step 20's temporary folder on its own thread, so under load the kill may come
    # before the folder does: either way nothing of step 20 may look complete.
    names = sorted(p.name for p in (interrupted / "checkpoints").iterdir())
    assert names in (["10"], ["10", "20.orbax-checkpoint-tmp"]), names
    _cli(*TRAIN, "--workdir", str(interrupted))  # resumes from the latest checkpoint
    for a, b in zip(_final_params(straight), _final_params(interrupted)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    rows = [json.loads(l)["step"] for l in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert rows == [10, 20, 30, 40]  # rows past the resumed checkpoint were re-written once
    for workdir in (straight, interrupted):  # keep_checkpoints (3 by default): the latest 3
        assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [20, 30, 40]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_together(commands: list, env: dict, timeout: float) -> None:
    """Runs the commands as concurrent processes (the peers of one jax.distributed run) and
    asserts that every one exits 0; a stuck peer stops them all and shows what they printed."""
    workers = [subprocess.Popen(command, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT) for command in commands]
    logs = []
    for worker in workers:
        try:
            logs.append(worker.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            for w in workers:
                w.kill()
            logs.append(worker.communicate()[0])
    assert all(w.wait() == 0 for w in workers), "\n".join(log[-3000:] for log in logs)


def _cli_processes(*args, processes=2, devices=2):
    """`ganaug *args` as one jax.distributed run of `processes` processes on 127.0.0.1."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    join = ["--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", str(processes)]
    run_together([[sys.executable, "-m", "ganaug_jax.cli", *args, *join, "--process-id", str(i)]
                  for i in range(processes)], env, timeout=180)


def test_two_processes_train_and_resume_like_one_process(tmp_path):
    """Multi-host through the real CLI: 2 processes x 2 CPU devices (jax.distributed, gloo)
    train 20 steps, then a second launch resumes to 40; the parameters match 1 process with
    4 devices and the same global batch, and only process 0 wrote the run's files."""
    multi, single = tmp_path / "multi", tmp_path / "single"
    train = [*TRAIN, "--config.optim.schedule=constant"]  # num_steps then leaves steps 1-20 alone
    _cli_processes(*train, "--workdir", str(multi), "--config.num_steps=20")
    assert sorted(p.name for p in (multi / "checkpoints").glob("[0-9]*")) == ["10", "20"]
    _cli_processes(*train, "--workdir", str(multi))
    _cli(*train, "--workdir", str(single), devices=4)
    for a, b in zip(_final_params(single), _final_params(multi), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
    rows = [json.loads(l) for l in (multi / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30, 40]  # one writer, no duplicated rows
    reference = [json.loads(l) for l in (single / "metrics.jsonl").read_text().splitlines()]
    for got, want in zip(rows, reference):
        np.testing.assert_allclose(got["d_loss"], want["d_loss"], rtol=1e-5)
    assert not list(multi.glob(".*tmp")) and (multi / "config.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--coordinator=127.0.0.1:1"], "--coordinator, --num-processes and --process-id go together"),
    (["--coordinator=nohost", "--num-processes=2", "--process-id=0"], "--coordinator must be HOST:PORT"),
    (["--coordinator=127.0.0.1:99999", "--num-processes=2", "--process-id=0"],
     "with a port in [1, 65535]"),
    (["--compilation-cache=/proc/cache", "--no-compilation-cache"], "not allowed with argument"),
    (["--compilation-cache=/proc/cache"], "--compilation-cache '/proc/cache' is not a writable"),
    (["--coordinator=h:1", "--num-processes=2", "--process-id=2"], "--process-id must be in [0, 2)"),
    (["--distributed"], "--distributed found no cluster to join"),  # not in a cluster here
])
def test_cli_rejects_bad_distributed_and_cache_flags(args, message, tmp_path):
    result = _cli("train", "--config", "configs/ring8.py", "--workdir", str(tmp_path / "run"),
                  *args, check=False)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", [["generate", "--workdir", "w", "--out", "o.npz"],
                                     ["evaluate", "--workdir", "w", "--out", "o"],
                                     ["bench", "--suite", "augment"]])
def test_cli_commands_without_config_refuse_overrides(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main([*command, "--config.seed=1"]) == 2
    assert f"ganaug {command[0]} takes no --config overrides, got ['seed=1']" \
        in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("args, message", [
    (["--config.model.widht=3"], "unknown config key 'model.widht'"),
    (["--config.batch_size=0"], "'batch_size' must be > 0"),
    (["--config.loss.name=wasserstein"], "'loss.name' must be one of"),
    (["--config.model.architecture=dcgan"], "'model.architecture' must be 'mlp' for data.source 'ring8'"),
    (["--config.batch_size", "0"], "'batch_size' must be > 0"),  # argparse's spaced spelling
])
def test_cli_rejects_bad_config_before_touching_disk(args, message, tmp_path):
    workdir = tmp_path / "run"
    result = _cli("train", "--config", "configs/ring8.py", "--workdir", str(workdir), *args, check=False)
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.count("error:") == 1
    assert not workdir.exists()


@pytest.mark.parametrize("args, message", [
    (["--config.augment.policy=colr"], "config key 'augment.policy': unknown DiffAugment policy 'colr'"),
    (["--config.augment.policy="], "config key 'augment.policy': policy must name at least one"),
    (["--config.augment.kind=ada", "--config.augment.ada_pipes=xyz"],
     "config key 'augment.ada_pipes': unknown ADA pipe 'xyz'"),
])
def test_cli_rejects_bad_augmentation_before_touching_disk(args, message, tmp_path, capsys):
    workdir = tmp_path / "run"
    code = cli.main(["train", "--config", str(ROOT / "configs" / "digits.py"),  # diffaugment
                     "--workdir", str(workdir), *args])
    assert code == 2 and message in capsys.readouterr().err
    assert not workdir.exists()


def test_cli_rejects_a_config_that_is_not_python(tmp_path, capsys):
    readme = str(ROOT / "README.md")
    assert cli.main(["train", "--config", readme, "--workdir", str(tmp_path / "run")]) == 2
    assert f"{readme!r} is not a Python config file" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_evaluate_checks_its_out_directory_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = cli.main(["evaluate", "--workdir", str(tmp_path / "no_run"), "--out", str(blocker)])
    err = capsys.readouterr().err
    assert code == 2 and f"--out {str(blocker)!r} is not a writable directory" in err
    assert blocker.read_text() == "x"


def test_writable_dir_until_done_removes_only_the_empty_folders_it_made(tmp_path):
    with pytest.raises(RuntimeError):
        with outputs.writable_dir_until_done(str(tmp_path / "a" / "b" / "c"), "--out") as out:
            assert out.is_dir()
            (tmp_path / "a" / "kept.txt").write_text("x")  # someone else writes into a/
            raise RuntimeError
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "kept.txt"]
    with outputs.writable_dir_until_done(str(tmp_path / "d" / "e"), "--out") as out:
        (out / "report.md").write_text("y")
    assert (tmp_path / "d" / "e" / "report.md").read_text() == "y"
    (tmp_path / "kept_empty").mkdir()
    for spelled in ("f/../g", "f/../kept_empty"):  # mkdir creates f on its way
        with pytest.raises(RuntimeError):
            with outputs.writable_dir_until_done(str(tmp_path / spelled), "--out"):
                raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "d", "kept_empty"]


def test_cli_rejects_unwritable_workdir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = _cli("train", "--config", "configs/ring8.py", "--workdir", str(blocker / "run"), check=False)
    assert result.returncode == 2 and "is not a writable directory" in result.stderr
    assert blocker.read_text() == "x"


def test_generate_missing_and_corrupt_checkpoints(tmp_path):
    result = _cli("generate", "--workdir", str(tmp_path / "none"), "--num", "4", "--out",
                  str(tmp_path / "x.npz"), check=False)
    assert result.returncode == 2 and "holds no run" in result.stderr
    workdir = tmp_path / "run"
    train_and_evaluate(tiny_config(num_steps=2, checkpoint_every=2), str(workdir), progress=False)
    saved = (workdir / "config.json").read_bytes()
    with pytest.raises(ValueError, match=r"holds a run at step 2, past config key 'num_steps' = 1"):
        train_and_evaluate(tiny_config(num_steps=1, checkpoint_every=2), str(workdir),
                           progress=False)
    assert (workdir / "config.json").read_bytes() == saved  # left as the run wrote it
    out = tmp_path / "samples.npz"
    _cli("generate", "--workdir", str(workdir), "--num", "7", "--seed", "1", "--out", str(out))
    with np.load(out) as data:
        assert data["x"].shape == (7, 2) and data["x"].dtype == np.float32 and "y" not in data
    for path in (workdir / "checkpoints" / "2").rglob("*"):
        if path.is_file() and path.stat().st_size > 0:
            path.write_bytes(b"\x00garbage" * 8)
    result = _cli("generate", "--workdir", str(workdir), "--num", "4", "--out",
                  str(tmp_path / "y.npz"), check=False)
    assert result.returncode == 2 and "cannot be read" in result.stderr
    # one line: what failed, and what to do (TensorStore's messages go on with its whole spec)
    line = next(line for line in result.stderr.splitlines() if "cannot be read" in line)
    assert line.endswith("delete that step's folder to fall back to an earlier checkpoint")
    assert not (tmp_path / "y.npz").exists()
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".npz"] == ["samples.npz"]


def test_a_corrupt_config_json_is_named_and_left_alone(tmp_path, capsys):
    workdir = tmp_path / "run"
    workdir.mkdir()
    saved = workdir / "config.json"
    saved.write_text("garbage")
    out = str(tmp_path / "x.npz")
    assert cli.main(["generate", "--workdir", str(workdir), "--num", "2", "--out", out]) == 2
    assert f"{str(saved)!r} is not a readable run config (JSON)" in capsys.readouterr().err
    (workdir / "checkpoints" / "2").mkdir(parents=True)  # a run to resume: its config is read
    code = cli.main(["train", "--config", str(ROOT / "configs" / "ring8.py"), "--workdir",
                     str(workdir), "--no-progress"])
    assert code == 2 and f"{str(saved)!r} is not a readable run config" in capsys.readouterr().err
    assert saved.read_text() == "garbage"
    assert sorted(p.name for p in workdir.rglob("*")) == ["2", "checkpoints", "config.json"]
    saved.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object, got list"):
        config_lib.read_saved(saved)


def test_seeds_beyond_int64_are_refused_by_the_command_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["generate", "--workdir", str(tmp_path), "--num", "2", "--out",
                  str(tmp_path / "x.npz"), "--seed", str(2 ** 64)])
    assert stopped.value.code == 2
    assert "argument --seed: must be an int in [0, 2**63 - 1], got 18446744073709551616" in \
        capsys.readouterr().err


def test_default_config_sets_every_known_key():
    flat = config_lib.flatten(config_lib.load_config(str(ROOT / "configs" / "default.py")))
    assert set(flat) == config_lib.KNOWN_KEYS
    for name in ("ring8", "grid25", "digits"):
        config = config_lib.load_config(str(ROOT / "configs" / f"{name}.py"))
        config_lib.validate(config)
        for key in ("seed", "num_steps", "batch_size", "checkpoint_every"):
            assert key in config


def test_a_config_outside_the_repository_imports_the_bundled_ones(tmp_path):
    from ganaug_jax import demo
    assert demo.DEFAULT_CONFIG.is_file()
    bundled = config_lib.bundled_configs()
    assert sorted(p.name for p in bundled.glob("*.py")) == sorted(
        p.name for p in (ROOT / "configs").glob("*.py"))
    mine = tmp_path / "elsewhere" / "mine.py"
    mine.parent.mkdir()
    mine.write_text("from configs import digits\n\n"
                    "def get_config():\n    c = digits.get_config()\n    c.seed = 7\n    return c\n")
    config = config_lib.load_config(str(mine))
    config_lib.validate(config)
    expected = config_lib.load_config(str(ROOT / "configs" / "digits.py"))
    expected.seed = 7
    assert config_lib.flatten(config) == config_lib.flatten(expected)
    assert str(tmp_path) not in " ".join(sys.path)  # the import paths are put back


def test_bfloat16_compute_keeps_float32_params_and_optimizer_state():
    config = tiny_config("digits", **{"model.compute_dtype": "bfloat16"})
    state, _ = _run_steps(config, jax.devices()[:1], steps=2)
    leaves = jax.tree.leaves((state.g_params, state.d_params, state.ema_params,
                              state.g_opt_state, state.d_opt_state))
    floats = [x for x in leaves if np.issubdtype(np.asarray(x).dtype, np.floating)]
    assert floats and all(np.asarray(x).dtype == np.float32 for x in floats)
    assert all(np.isfinite(np.asarray(x)).all() for x in floats)


def test_runs_saved_before_a_key_existed_resume_and_generate(tmp_path):
    """A config.json written before the BACKFILLED keys existed reads as having their old
    values: the run resumes without --force and generates; defaults agree with the table."""
    defaults = config_lib.flatten(config_lib.load_config(str(ROOT / "configs" / "default.py")))
    for key, value in config_lib.BACKFILLED.items():
        assert defaults[key] == value
    config = tiny_config("ring8", num_steps=3, checkpoint_every=3)
    workdir = tmp_path / "run"
    train_and_evaluate(config, str(workdir), progress=False)
    saved = json.loads((workdir / "config.json").read_text())
    for key in config_lib.BACKFILLED:
        section, leaf = key.split(".")
        del saved[section][leaf]
    (workdir / "config.json").write_text(json.dumps(saved))
    x = generate(*load_run_state(str(workdir))[1:], num=4, seed=0)["x"]
    assert x.shape == (4, 2)
    state = train_and_evaluate(config_lib.apply_overrides(config, ["num_steps=6"]),
                               str(workdir), progress=False)
    assert int(state.step) == 6
    changed = config_lib.apply_overrides(config, ["model.latent_components=4", "num_steps=9"])
    with pytest.raises(ValueError, match="model.latent_components: 0 -> 4"):
        train_and_evaluate(changed, str(workdir), progress=False)


def test_create_train_state_and_mixture_sample_check_their_arguments():
    from ganaug_jax.data import mixtures
    import optax
    from ganaug_jax.models import make_gan
    g, d = make_gan("mlp", data_shape=(2,), latent_dim=4, width=8)
    tx = optax.adam(1e-3)
    for bad in (0, jax.numpy.ones(2)):
        with pytest.raises(ValueError, match="key must be a PRNG key"):
            create_train_state(bad, g, d, tx, tx, data_shape=(2,), latent_dim=4, num_classes=0)
        with pytest.raises(ValueError, match="key must be a PRNG key"):
            mixtures.sample(bad, "ring8", 4)
    for n in (-1, 2.0, True):
        with pytest.raises(ValueError, match=r"n \(the number of points\) must be an int >= 0"):
            mixtures.sample(jax.random.key(0), "ring8", n)
    assert mixtures.sample(jax.random.key(0), "ring8", 0).shape == (0, 2)
    np.testing.assert_array_equal(mixtures.sample(jax.random.PRNGKey(1), "grid25", 8),
                                  mixtures.sample(jax.random.key(1), "grid25", 8))
