"""Host placement (data/streaming.py): the streamed batches are the device path's batches, bit
for bit and sharded alike; the reader thread always stops; a training run with
data.placement='host' ends where the device run ends, also after a resume; two processes each
read only their own rows of a global batch."""

import json
import pathlib
import sys
import textwrap
import threading

import jax
import numpy as np
import pytest
from scipy import stats

from ganaug_jax.data import streaming
from ganaug_jax.data.sources import Source, batch_indices, draw_from_arrays, make_batch_fn
from ganaug_jax.data.streaming import HostStream
from ganaug_jax.train import checkpoint, sharding
from ganaug_jax.train.loop import train_and_evaluate
from test_train import free_port, run_together, tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _arrays(n=37):
    rng = np.random.default_rng(0)
    return {"x": rng.normal(size=(n, 4, 4, 1)).astype(np.float32),
            "y": rng.integers(0, 10, n).astype(np.int32)}


def _device_batches(arrays, mesh, key, steps, *, batch_size, n_critic):
    source = Source("test", arrays["x"].shape[1:], 10, arrays, draw_from_arrays)
    batch_fn = jax.jit(make_batch_fn(source, batch_size=batch_size, n_critic=n_critic),
                       out_shardings=sharding.batch_sharding(mesh, 1))
    placed = jax.device_put(arrays, sharding.replicated(mesh))
    return [batch_fn(key, step, placed) for step in steps]


def _assert_same_batch(host, device):
    assert set(host) == set(device)
    for name in device:
        a, b = host[name], device[name]
        assert a.shape == b.shape and a.dtype == b.dtype
        assert a.sharding.is_equivalent_to(b.sharding, a.ndim)
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()  # bit for bit
        for sa, sb in zip(a.addressable_shards, b.addressable_shards):
            assert sa.device == sb.device and sa.index == sb.index
            assert np.asarray(sa.data).tobytes() == np.asarray(sb.data).tobytes()


def _no_reader_thread():
    return not any(t.name == "ganaug-host-stream" for t in threading.enumerate())


@pytest.mark.parametrize("n_critic", [1, 2])
def test_host_batches_equal_device_batches_on_eight_devices(n_critic):
    arrays, key = _arrays(), jax.random.key(3)
    mesh = sharding.make_mesh(jax.devices()[:8])
    steps = range(5, 10)  # a stream started mid-run, as after a resume
    device = _device_batches(arrays, mesh, key, steps, batch_size=16, n_critic=n_critic)
    with HostStream(key, arrays, sharding=sharding.batch_sharding(mesh, 1), batch_size=16,
                    n_critic=n_critic, start=5, stop=10, prefetch=2) as stream:
        for step, expected in zip(steps, device):
            _assert_same_batch(stream.batch(step), expected)
    index = streaming.host_indices(key, 7, num_records=37, batch_size=16, n_critic=n_critic)
    np.testing.assert_array_equal(index, _documented_indices(key, 7, 37, 16, n_critic))
    assert index.shape == (n_critic, 16) and len(np.unique(np.asarray(index))) > 1


def _documented_indices(key, step, num_records, batch_size, n_critic):
    """The indices as sources.py documents them, written out with jax.random directly:
    step_keys = split(fold_in(data_key, step), n_critic); draw_indices(k, B, N) =
    randint(k, (B,), 0, N) (uniform with replacement); one row per critic step."""
    keys = jax.random.split(jax.random.fold_in(key, step), n_critic)
    return np.stack([np.asarray(jax.random.randint(keys[i], (batch_size,), 0, num_records))
                     for i in range(n_critic)])


def test_batch_indices_follow_the_documented_draws_and_change_with_the_step():
    key = jax.random.key(11)
    seen = []
    for step in (0, 1, 2, 1000):
        for n_critic in (1, 3):
            got = np.asarray(batch_indices(key, step, num_records=37, batch_size=9,
                                           n_critic=n_critic))
            assert got.dtype == np.int32 and got.shape == (n_critic, 9)
            np.testing.assert_array_equal(got, _documented_indices(key, step, 37, 9, n_critic))
            np.testing.assert_array_equal(streaming.host_indices(  # the host (jitted) path
                key, step, num_records=37, batch_size=9, n_critic=n_critic), got)
        assert not np.array_equal(got[0], got[1])  # critic steps draw different records
        seen.append(got)
    for a, b in zip(seen, seen[1:]):  # 9 of 37 records: equal rows have probability 37^-27
        assert not np.array_equal(a, b)
    other = np.asarray(batch_indices(jax.random.key(12), 1000, num_records=37, batch_size=9,
                                     n_critic=3))
    assert not np.array_equal(other, seen[-1])  # and with the data key


def test_batch_indices_cover_records_uniformly():
    # 63 steps x 2 critic steps x 16 = 2016 draws over 37 records (~54 each). Uniform with
    # replacement (draw_indices' docstring): Pearson chi-square with 36 dof, reject at p < 1e-4.
    key = jax.random.key(13)
    draws = jax.vmap(lambda s: batch_indices(key, s, num_records=37, batch_size=16,
                                             n_critic=2))(np.arange(63))
    draws = np.asarray(draws).ravel()
    assert draws.min() >= 0 and draws.max() < 37
    counts = np.bincount(draws, minlength=37)
    assert counts.sum() == 2016 and stats.chisquare(counts).pvalue > 1e-4


class _Records:
    """A TFDS-data-source-like random-access sequence of {'image', 'label'} records that logs
    what it reads."""

    def __init__(self, arrays, *, fail_at=None):
        self.arrays, self.reads, self.fail_at = arrays, [], fail_at

    def __len__(self):
        return len(self.arrays["y"])

    def __getitem__(self, key):
        return self.__getitems__([key])[0]

    def __getitems__(self, keys):
        if self.fail_at is not None and len(self.reads) >= self.fail_at:
            raise OSError("record file went away")
        self.reads.append(list(keys))
        return [{"image": self.arrays["x"][i], "label": self.arrays["y"][i]} for i in keys]


def _to_contract(records):
    return {"x": records["image"], "y": records["label"].astype(np.int32)}


def test_record_sequence_with_transform_equals_device_path():
    arrays, key = _arrays(), jax.random.key(4)
    mesh = sharding.make_mesh(jax.devices()[:8])
    device = _device_batches(arrays, mesh, key, range(3), batch_size=8, n_critic=2)
    records = _Records(arrays)
    with HostStream(key, records, sharding=sharding.batch_sharding(mesh, 1), batch_size=8,
                    n_critic=2, start=0, stop=3, transform=_to_contract) as stream:
        for step in range(3):
            _assert_same_batch(stream.batch(step), device[step])
    assert [len(r) for r in records.reads] == [16, 16, 16]  # one read of n_critic * B per step


def test_grain_map_dataset_as_records():
    grain = pytest.importorskip("grain")
    arrays, key = _arrays(), jax.random.key(5)
    mesh = sharding.make_mesh(jax.devices()[:8])
    device = _device_batches(arrays, mesh, key, range(2), batch_size=8, n_critic=1)
    records = grain.MapDataset.source(_Records(arrays)).map(_to_contract)
    for step in range(2):
        got = streaming.host_batch(key, step, records, batch_size=8, n_critic=1)
        np.testing.assert_array_equal(got["x"], device[step]["x"])
        np.testing.assert_array_equal(got["y"], device[step]["y"])


def test_reader_thread_stops_on_close_on_error_and_on_exit():
    arrays, key = _arrays(), jax.random.key(6)
    spec = dict(sharding=sharding.batch_sharding(sharding.make_mesh(jax.devices()[:8]), 1),
                batch_size=8, n_critic=1)
    stream = HostStream(key, arrays, start=0, stop=1000, prefetch=1, **spec)
    stream.batch(0)  # the reader is now blocked on a full buffer
    stream.close()
    stream.close()  # idempotent
    assert _no_reader_thread()
    with pytest.raises(RuntimeError, match="after close"):
        stream.batch(1)

    failing = HostStream(key, _Records(arrays, fail_at=2), start=0, stop=10,
                         transform=_to_contract, **spec)
    failing.batch(0), failing.batch(1)
    with pytest.raises(OSError, match="record file went away"):
        failing.batch(2)
    assert _no_reader_thread()

    with pytest.raises(KeyError):
        with HostStream(key, arrays, start=0, stop=1000, **spec) as stream:
            stream.batch(0)
            raise KeyError("the training step failed")
    assert _no_reader_thread()
    with HostStream(key, arrays, start=4, stop=8, **spec) as stream:
        with pytest.raises(ValueError, match="reads steps 4..7 in order; asked for step 5"):
            stream.batch(5)


# ---- whole runs ----

def _config(**overrides):
    # Adaptive ADA adjusting p every 3 D updates: the step-2 checkpoint falls inside an interval.
    return tiny_config("digits", **{"num_steps": 4, "checkpoint_every": 2, "augment.kind": "ada",
                                    "augment.ada_interval": 3, "augment.ada_speed_images": 64,
                                    "augment.ada_initial_p": 0.25, "model.conditional": False,
                                    **overrides})


def _checkpoint(workdir, step, like):
    """The checkpoint of `step` in workdir, restored like `like`, on the host."""
    manager = checkpoint.make_manager(workdir, keep=3, read_only=True)
    try:
        return jax.device_get(checkpoint.restore(manager, step, like))
    finally:
        manager.close()


def _assert_same_leaves(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


def test_host_placement_trains_bit_identically_and_resumes(tmp_path):
    """Also the exact resume of the ADA controller's accumulators between two adjustments."""
    device, host = tmp_path / "device", tmp_path / "host"
    final_device = train_and_evaluate(_config(), str(device), progress=False)
    # Host placement, stopped at step 2: equal to the device run's step-2 checkpoint.
    at_two = train_and_evaluate(_config(num_steps=2, **{"data.placement": "host"}), str(host),
                                progress=False)
    assert int(at_two.step) == 2 and _no_reader_thread()
    assert int(at_two.ada.calls) == 2 and float(at_two.ada.count) == 32  # mid-interval
    _assert_same_leaves(jax.tree.leaves(jax.device_get(at_two)),
                        jax.tree.leaves(_checkpoint(device, 2, at_two)))
    # Resumed to step 4 (the stream restarts at step 2): equal to the device run that never stopped.
    final_host = train_and_evaluate(_config(**{"data.placement": "host"}), str(host),
                                    progress=False)
    assert int(final_host.step) == 4 and _no_reader_thread()
    assert float(final_host.ada.p) != 0.25  # p moved at the third D update
    _assert_same_leaves(jax.tree.leaves(jax.device_get(final_host)),
                        jax.tree.leaves(jax.device_get(final_device)))
    metrics = [json.loads(line) for line in (host / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in metrics] == [2, 4]


def test_host_placement_needs_records(tmp_path):
    with pytest.raises(ValueError, match="'data.placement' = 'host' streams the records"):
        train_and_evaluate(tiny_config(**{"data.placement": "host"}), str(tmp_path / "run"),
                           progress=False)
    assert not (tmp_path / "run").exists()


# ---- two processes (multi-host simulation on 127.0.0.1, CPU collectives over gloo) ----

_WORKER = textwrap.dedent("""
    import json, sys
    import jax
    import numpy as np
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    port, pid, data, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                               process_id=pid, initialization_timeout=60)
    from ganaug_jax.data.streaming import HostStream
    from ganaug_jax.train import sharding

    reads = []  # every index array a column is read with

    class Column:
        def __init__(self, array):
            self.array = array
        def __len__(self):
            return len(self.array)
        def __getitem__(self, index):
            reads.append(np.asarray(index).tolist())
            return self.array[index]

    with np.load(data) as arrays:
        records = {name: Column(arrays[name]) for name in ("x", "y")}
    assert jax.device_count() == 8 and jax.local_device_count() == 4
    mesh = sharding.make_mesh()
    blocks = {}
    with HostStream(jax.random.key(7), records, sharding=sharding.batch_sharding(mesh, 1),
                    batch_size=16, n_critic=2, start=0, stop=3) as stream:
        for step in range(3):
            for name, value in stream.batch(step).items():
                assert value.shape[:2] == (2, 16)
                shards = sorted(value.addressable_shards, key=lambda s: s.index[1].start)
                blocks[f"{name}{step}"] = np.concatenate([np.asarray(s.data) for s in shards], 1)
                blocks[f"{name}{step}_start"] = np.array(shards[0].index[1].start)
    np.savez(out, **blocks)
    with open(out + ".json", "w") as file:
        json.dump(reads, file)
    jax.distributed.shutdown()
""")


def test_two_processes_read_only_their_rows(tmp_path):
    """Multi-host simulation: 2 processes x 4 CPU devices; each reads only the columns of the
    global batch its devices hold, and together they form the single-process batch."""
    script, data = tmp_path / "worker.py", tmp_path / "records.npz"
    script.write_text(_WORKER)
    arrays, key = _arrays(), jax.random.key(7)
    np.savez(data, **arrays)
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    port = free_port()
    outs = [str(tmp_path / f"p{i}.npz") for i in range(2)]
    run_together([[sys.executable, str(script), str(port), str(i), str(data), outs[i]]
                  for i in range(2)], env, timeout=60)

    mesh = sharding.make_mesh(jax.devices()[:8])
    device = _device_batches(arrays, mesh, key, range(3), batch_size=16, n_critic=2)
    for i, out in enumerate(outs):
        with np.load(out) as blocks:
            reads = json.loads(pathlib.Path(out + ".json").read_text())
            for step in range(3):
                index = np.asarray(batch_indices(key, step, num_records=37, batch_size=16,
                                                 n_critic=2))
                own = index[:, 8 * i:8 * (i + 1)].reshape(-1).tolist()
                assert reads[2 * step] == own and reads[2 * step + 1] == own  # x, then y
                for name in ("x", "y"):
                    assert int(blocks[f"{name}{step}_start"]) == 8 * i
                    expected = np.asarray(device[step][name])[:, 8 * i:8 * (i + 1)]
                    assert blocks[f"{name}{step}"].tobytes() == expected.tobytes()
            assert len(reads) == 6


def test_a_failing_cleanup_step_leaves_the_others_to_run(tmp_path, monkeypatch):
    """The run loop's cleanup (stream, checkpoint manager, log) goes on past a step that
    raises: here Orbax's final wait, as when the last checkpoint's write fails."""
    real_make_manager, closed = checkpoint.make_manager, []

    class FailingWait:
        def __init__(self, manager):
            self._manager = manager

        def __getattr__(self, name):
            return getattr(self._manager, name)

        def wait_until_finished(self):
            self._manager.wait_until_finished()
            raise OSError("simulated: the checkpoint write failed")

        def close(self):
            closed.append(True)
            self._manager.close()
    monkeypatch.setattr(checkpoint, "make_manager",
                        lambda *a, **kw: FailingWait(real_make_manager(*a, **kw)))
    with pytest.raises(OSError, match="the checkpoint write failed"):
        train_and_evaluate(_config(num_steps=2, **{"data.placement": "host"}),
                           str(tmp_path / "run"), progress=False)
    assert closed == [True] and _no_reader_thread()  # both came after the failing wait
