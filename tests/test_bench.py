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
    assert 0.0 < seconds < 60.0
