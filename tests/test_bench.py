"""Benchmark plumbing (no timing assertions): the analytic FLOP count against XLA's cost
analysis, the `ganaug bench` output contract, compile timing, and the CLI's persistent
compilation cache."""

import gc
import json
import os
import pathlib
import subprocess
import sys
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from ganaug_jax.bench import common, train_step
from ganaug_jax.models import make_gan

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("c", [train_step.CONFIGS[2], train_step.CONFIGS[4]],
                         ids=lambda c: c.name)
def test_forward_macs_match_xla_cost_analysis(c):
    """The analytic per-image forward multiply-adds behind MFU, against the FLOPs XLA counts
    for one image through each network (XLA also counts the elementwise ops: a few %)."""
    shape = (c.resolution, c.resolution, c.channels)
    g, d = make_gan("dcgan", data_shape=shape, num_classes=c.num_classes,
                    latent_dim=c.latent_dim, width=c.width)
    y = jnp.zeros((1,), jnp.int32) if c.num_classes else None
    z, x = jnp.zeros((1, c.latent_dim)), jnp.zeros((1, *shape))
    g_vars, d_vars = g.init(jax.random.key(0), z, y, train=False), d.init(jax.random.key(1), x, y,
                                                                          train=False)

    def flops(fn, *args):
        cost = jax.jit(fn).lower(*args).compile().cost_analysis()
        return (cost[0] if isinstance(cost, list) else cost)["flops"]

    g_flops = flops(lambda v, z: g.apply(v, z, y, train=False), g_vars, z)
    d_flops = flops(lambda v, x: d.apply(v, x, y, train=False), d_vars, x)
    g_macs, d_macs = train_step.forward_macs(c, exclude_padding=True)
    assert 1.0 <= g_flops / (2 * g_macs) < 1.06
    assert 1.0 <= d_flops / (2 * d_macs) < 1.06
    g_all, d_all = train_step.forward_macs(c)  # every tap, padding included (MFU's count)
    assert g_macs < g_all < 1.4 * g_macs and d_macs < d_all < 1.4 * d_macs
    assert train_step.model_flops(c) == 2 * c.batch * (3 * g_all + 8 * d_all)


def test_torch_peer_has_the_same_parameter_counts():
    torch_dcgan = pytest.importorskip("ganaug_jax.bench.torch_dcgan")  # needs torch
    for c in train_step.CONFIGS:
        shape = (c.resolution, c.resolution, c.channels)
        g, d = make_gan("dcgan", data_shape=shape, num_classes=c.num_classes,
                        latent_dim=c.latent_dim, width=c.width)
        y = jnp.zeros((1,), jnp.int32) if c.num_classes else None
        n_g = sum(a.size for a in jax.tree.leaves(
            g.init(jax.random.key(0), jnp.zeros((1, c.latent_dim)), y, train=False)["params"]))
        n_d = sum(a.size for a in jax.tree.leaves(
            d.init(jax.random.key(0), jnp.zeros((1, *shape)), y, train=False)["params"]))
        tg = torch_dcgan.Generator(c.resolution, c.channels, c.width, c.latent_dim, c.num_classes)
        td = torch_dcgan.Discriminator(c.resolution, c.channels, c.width, c.num_classes)
        assert (torch_dcgan.parameter_count(tg), torch_dcgan.parameter_count(td)) == (n_g, n_d)


def test_torch_peer_computes_d_weight_gradients_in_the_d_step_only():
    """The G step backpropagates through D for its input gradient; D's weight gradients are
    computed once per iteration (D step), as in ganaug_jax and in the analytic FLOP count."""
    torch_dcgan = pytest.importorskip("ganaug_jax.bench.torch_dcgan")
    iteration, g, d = torch_dcgan.make_iteration(resolution=8, channels=1, width=4, batch=4,
                                                 latent_dim=8)
    calls = {name: 0 for name, _ in d.named_parameters()}
    for name, parameter in d.named_parameters():
        parameter.register_hook(lambda grad, n=name: calls.__setitem__(n, calls[n] + 1))
    g_before = [p.detach().clone() for p in g.parameters()]
    iteration()
    assert calls == {name: 1 for name in calls} and len(calls) == 4
    assert all(p.requires_grad for p in d.parameters())  # unfrozen for the next D step
    assert all(not bool((a == b).all()) for a, b in zip(g_before, g.parameters()))  # G trained


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "ganaug_jax.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def test_bench_generate_writes_json_lines_table_and_chart(tmp_path):
    out = tmp_path / "bench.jsonl"
    result = _cli("bench", "--suite", "generate", "--quick", "--json", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["what"] for r in rows] == ["sample", "sample", "export npz", "export folder",
                                          "export tfds"]
    for r in rows:
        assert {"device_kind", "device_count", "jax_version", "dtype", "date"} <= set(r)
        assert r["samples_per_s"] > 0 and r["reps"] >= 5
    assert [r["batch"] for r in rows[:2]] == [16, 64]
    assert "| what | batch | samples/sec |" in result.stdout
    chart = tmp_path / "bench_generate.png"
    assert Image.open(chart).size[0] > 100
    assert not list(tmp_path.glob("ganaug_bench_*"))  # export scratch space cleaned up


def test_bench_rejects_bad_arguments(tmp_path):
    result = _cli("bench", "--reps", "3", cwd=tmp_path)
    assert result.returncode == 2 and "--reps must be >= 5" in result.stderr
    result = _cli("bench", "--chart", "x.png", cwd=tmp_path)
    assert result.returncode == 2 and "--chart names one suite's chart" in result.stderr
    (tmp_path / "afile").write_text("x")  # results that cannot be written: refused up front
    for flag in ("--json", "--chart"):
        result = _cli("bench", "--suite", "train", "--quick", flag, "afile/r.out", cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert f"{flag} '{tmp_path / 'afile'}' is not a writable directory" in result.stderr
        assert "img/s" not in result.stdout  # nothing was timed


def test_generate_suite_rejects_an_unknown_export_format_before_it_runs(monkeypatch):
    from ganaug_jax.bench import generate

    def no_compute(*args, **kwargs):
        raise AssertionError("ran before checking formats")
    monkeypatch.setattr(common, "environment", no_compute)
    monkeypatch.setattr(generate, "make_run_state", no_compute)
    with pytest.raises(ValueError, match=r"formats must be a subset of \['npz', 'folder', "
                                         r"'tfds'\], got \('npz', 'zip'\)"):
        generate.run(formats=["npz", "zip"])


@pytest.mark.parametrize("suite", ["augment", "train_step", "generate", "scaling"])
def test_every_suite_rejects_fewer_than_five_reps_before_it_runs(suite, monkeypatch):
    import importlib
    module = importlib.import_module(f"ganaug_jax.bench.{suite}")

    def no_compute(*args, **kwargs):
        raise AssertionError("ran before checking reps")
    monkeypatch.setattr(common, "environment", no_compute)
    monkeypatch.setattr(common, "matmul_peak_flops", no_compute)
    for worker in ("bench_shape", "bench_config", "measure", "make_run_state"):
        if hasattr(module, worker):
            monkeypatch.setattr(module, worker, no_compute)
    with pytest.raises(ValueError, match="reps must be >= 5"):
        module.run(reps=4)


def test_augment_suite_names_the_missing_peers_before_it_runs(monkeypatch):
    import importlib.util
    from ganaug_jax.bench import augment
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "augmax" else find_spec(name, *a))
    monkeypatch.setattr(augment, "bench_shape", lambda *a, **k: pytest.fail("ran"))
    with pytest.raises(ValueError, match=r"missing augmax: pip install 'ganaug_jax\[bench\]'"):
        augment.run(quick=True)


def test_train_suite_reads_the_bundled_default_config(monkeypatch, tmp_path):
    """An installed package has no checkout: the suite's configs come from bundled_configs()."""
    from ganaug_jax import config as config_lib
    default = (config_lib.bundled_configs() / "default.py").read_text()
    (tmp_path / "default.py").write_text(default.replace("c.seed = 0", "c.seed = 1234"))
    assert "c.seed = 0" in default
    monkeypatch.setattr(config_lib, "bundled_configs", lambda: tmp_path)
    assert train_step.make_config(train_step.CONFIGS[0]).seed == 1234


def test_scaling_suite_shows_the_child_process_error(monkeypatch):
    from ganaug_jax.bench import scaling
    jax.devices()  # this process's backend starts with the flags it had; the child's fails
    monkeypatch.setenv("XLA_FLAGS", "--xla_no_such_flag_for_this_test")
    with pytest.raises(RuntimeError, match=r"(?s)scaling process failed .*no_such_flag"):
        scaling.run(counts=(16,), per_device_batch=2, reps=5, base=TINY)  # > the 8 here


CACHE_PROBE = """
import json, sys
import jax
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
from ganaug_jax import cli
code = cli.main(sys.argv[1:])
print(json.dumps({"code": code, "hits": events.count("/jax/compilation_cache/cache_hits"),
                  "misses": events.count("/jax/compilation_cache/cache_misses")}))
"""


def test_second_run_of_a_config_loads_compiled_programs_from_the_cache(tmp_path):
    cache = tmp_path / "cache"
    args = ["train", "--config", str(ROOT / "configs" / "ring8.py"), "--no-progress",
            "--compilation-cache", str(cache), "--config.num_steps=2", "--config.batch_size=16",
            "--config.sample_every=0", "--config.log_every=1", "--config.checkpoint_every=2"]

    def probe(workdir, devices):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
        result = subprocess.run([sys.executable, "-c", CACHE_PROBE, *args, "--workdir",
                                 str(tmp_path / workdir)], capture_output=True, text=True,
                                timeout=600, env=env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr

    first, _ = probe("a", 1)
    assert first["code"] == 0 and first["hits"] == 0 and first["misses"] > 0
    assert any(cache.iterdir())
    second, _ = probe("b", 1)  # a fresh run of the same config in another workdir
    assert second["code"] == 0 and second["misses"] == 0 and second["hits"] >= first["misses"]
    # 8 CPU devices: off (XLA:CPU collectives hang when loaded from the cache)
    many, _ = probe("c", 8)
    assert many["code"] == 0 and many["hits"] == 0 and many["misses"] == 0


def test_timed_compile_collects_garbage_before_the_clock_starts():
    class Node:
        pass

    cycle = Node()
    cycle.self = cycle  # only a cycle collection frees it
    alive = weakref.ref(cycle)
    del cycle
    gc.disable()  # no automatic collection between here and the call
    try:
        result, seconds = common.timed_compile(lambda: alive() is None)
    finally:
        gc.enable()
    assert result is True  # the cycle was gone when the timed function ran
    assert isinstance(seconds, float) and seconds >= 0.0  # a duration, not a bound on it


TINY = train_step.TrainConfig("16x16x1 w8 b8", 16, 1, 8, 8, latent_dim=8)


def test_augment_suite_rows_agree_with_their_table_and_chart(tmp_path, capsys):
    from ganaug_jax.bench import augment as bench_augment
    out, chart = tmp_path / "augment.jsonl", tmp_path / "augment.png"
    lines = bench_augment.run(shapes=[(8, 16, 16, 3)], reps=5, json_path=str(out),
                              chart=str(chart))
    assert [json.loads(line) for line in out.read_text().splitlines()] == lines
    rows = {r["library"]: r for r in lines}
    assert {"floor", "ganaug_jax", "dm-pix", "dm-pix-fused", "augmax"} <= set(rows)
    floor, ganaug = rows["floor"]["median_s"], rows["ganaug_jax"]["median_s"]
    for r in lines:
        assert {"device_kind", "device_count", "jax_version", "library_version", "date",
                "compile_s"} <= set(r)
        assert r["shape"] == [8, 16, 16, 3] and r["dtype"] == "float32" and r["reps"] == 5
        assert r["images_per_s"] == pytest.approx(8 / r["median_s"])
        assert r["fraction_of_floor"] == pytest.approx(floor / r["median_s"])
        assert r["ratio_vs_ganaug"] == pytest.approx(r["median_s"] / ganaug)
    table = capsys.readouterr().out.split("| shape |")[1]
    for peer in ("dm-pix", "dm-pix-fused", "augmax"):
        assert f"| {rows[peer]['ratio_vs_ganaug']:.2f}x |" in table
    assert f"| {100 * floor / ganaug:.1f}% |" in table
    assert Image.open(chart).size[0] > 100


def test_train_suite_rows_count_flops_and_parameters_the_same_way(tmp_path, capsys):
    out = tmp_path / "train.jsonl"
    rows = train_step.run(configs=[TINY], reps=5, iters=1, peers=False, baseline=False,
                          json_path=str(out), chart=str(tmp_path / "train.png"))
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows
    assert [r["runner"] for r in rows] == ["ganaug_jax", "ganaug_jax reuse_fake"]
    g, d = make_gan("dcgan", data_shape=(16, 16, 1), num_classes=0, latent_dim=8, width=8)
    count = lambda m, *a: sum(x.size for x in jax.tree.leaves(  # noqa: E731
        m.init(jax.random.key(0), *a, None, train=False)["params"]))
    params = (count(g, jnp.zeros((1, 8))), count(d, jnp.zeros((1, 16, 16, 1))))
    for r in rows:
        assert (r["params_g"], r["params_d"]) == params
        assert (r["batch"], r["resolution"], r["channels"], r["dtype"]) == (8, 16, 1, "float32")
        assert r["images_per_s"] == pytest.approx(8 / r["median_s_per_iter"])
        assert r["model_flops_per_iter"] == train_step.model_flops(TINY)
        assert r["mfu"] == pytest.approx(r["achieved_flop_s"] / r["peak_flop_s"])
        assert (r["peak_dtype"], r["matmul_precision"]) == ("float32", "default")
        assert "ratio_vs_pytorch_eager" not in r  # no peers asked for
    # the reused fakes save one G forward: XLA counts fewer FLOPs for that step
    assert rows[1]["xla_flops_per_iter"] < rows[0]["xla_flops_per_iter"]
    assert "| 16x16x1 w8 b8 |" in capsys.readouterr().out


def test_train_suite_with_bfloat16_divides_by_the_bfloat16_peak(monkeypatch):
    asked, configs = [], []
    monkeypatch.setattr(common, "matmul_peak_flops",
                        lambda dtype, **kw: asked.append(jnp.dtype(dtype)) or 1e12)
    monkeypatch.setattr(train_step, "bench_config", lambda c, **kw: configs.append(kw) or [])
    train_step.run(configs=[TINY], reps=5, peers=False, bfloat16=True)
    assert asked == [jnp.dtype(jnp.bfloat16)]
    assert (configs[0]["peak"], configs[0]["bfloat16"]) == (1e12, True)


def test_matmul_peak_multiplies_in_the_dtype_it_is_given(monkeypatch):
    seen = []
    real_jit = jax.jit

    def recording_jit(f, **kwargs):
        def run(a, b):
            seen.append((a.dtype, a.shape))
            return real_jit(f, **kwargs)(a, b)
        return run
    monkeypatch.setattr(jax, "jit", recording_jit)
    for dtype in (jnp.float32, jnp.bfloat16):
        flops = common.matmul_peak_flops(dtype, n=64)
        assert np.isfinite(flops) and flops > 0
    assert set(seen) == {(jnp.dtype(jnp.float32), (64, 64)), (jnp.dtype(jnp.bfloat16), (64, 64))}
    seen.clear()
    common.matmul_peak_flops()
    assert set(seen) == {(jnp.dtype(jnp.float32), (2048, 2048))}  # CPU: 2048


def test_loop_efficiency_counts_every_image_after_the_first_log_row(tmp_path):
    out = tmp_path / "loop.jsonl"
    with pytest.raises(ValueError, match=r"runs must be >= 5 .* got 1"):
        train_step.loop_efficiency(TINY, runs=1)  # refused before any work
    row = train_step.loop_efficiency(TINY, steps=12, log_every=4, checkpoint_every=4, runs=1,
                                     reps=5, json_path=str(out), quick=True)
    assert row["quick"] is True
    assert json.loads(out.read_text()) == row
    assert len(row["loop_interval_images_per_s"]) == 2  # the rows after the first of 3
    (each,) = row["loop_images_per_s_each"]
    assert row["loop_images_per_s"] == each
    # the whole tail (final checkpoint, closing) is charged: slower than the logged intervals
    interval_s = sum(4 * 8 / r for r in row["loop_interval_images_per_s"])
    assert each < 8 * 8 / interval_s
    assert row["loop_fraction_of_bare"] == pytest.approx(each / row["bare_step_images_per_s"])
    # the like-for-like figure: the bare step over as many steps as the run counts (12 - 4)
    assert row["bare_window_steps"] == 8
    (window,) = row["bare_window_images_per_s_each"]
    assert row["bare_window_images_per_s"] == window
    assert row["loop_fraction_of_bare_window"] == pytest.approx(each / window)
    assert (row["batch"], row["resolution"], row["dtype"]) == (8, 16, "float32")


def test_scaling_suite_rows(tmp_path):
    from ganaug_jax.bench import scaling
    rows = scaling.run(counts=(2,), per_device_batch=4, reps=5, base=TINY,
                       json_path=str(tmp_path / "scaling.jsonl"))
    assert [(r["devices"], r["device_count"], r["global_batch"]) for r in rows] == [(2, 2, 8)]
    for r in rows:
        assert r["images_per_s"] == pytest.approx(r["global_batch"] / r["median_s_per_iter"])
        assert r["images_per_s_per_device"] == pytest.approx(r["images_per_s"] / r["devices"])
        assert r["sharding_overhead"] == pytest.approx(
            r["median_s_per_iter"] / r["one_device_same_batch_s"])
        assert (r["resolution"], r["channels"], r["dtype"]) == (16, 1, "float32")
        # the one-device step runs the products a partitioned CPU step can run (not oneDNN's)
        assert r["conv_products"] == "conv"


def _gpu_check():
    import importlib.util
    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_spends_no_device_time_without_a_gpu(tmp_path, capsys):
    with pytest.raises(SystemExit, match="JAX sees no GPU"):
        _gpu_check().main(["env", "--out", str(tmp_path)])
    assert "jax devices: [CpuDevice(id=0)" in capsys.readouterr().out


def test_gpu_check_script_limits_every_step_of_the_driver():
    import re
    script = (pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh").read_text()
    limits = re.search(r"declare -A LIMIT=\((.*?)\)\n", script, re.S).group(1)
    assert re.findall(r"\[(\w+)\]=\d+", limits) == list(_gpu_check().STEPS)
