"""Device scaling of the sharded training step: 1, 2, 4, 8 devices at a fixed per-device
batch. For each count d: the step on a d-device mesh (global batch d * b), and the same global
batch on one device; sharding overhead = t(d devices) / t(1 device, same global batch).
On a CPU the d devices are fake (`--xla_force_host_platform_device_count`) and share the same
cores, so per-device throughput falls as 1/d by construction there: only the overhead column
means something; on real accelerators both do. Without enough devices in this process (CPU),
`run` re-executes itself in a subprocess with 8 fake CPU devices.

Both steps of a pair run the same convolution products (`SAME_PRODUCTS`): on CPU the oneDNN
kernel of the default config runs only in unpartitioned programs (`models/_onednn.py`), so
a d-device step would otherwise be compared on Eigen products against a one-device step on
oneDNN's, and the overhead would include the difference between the two libraries.
"""

import dataclasses
import json
import os
import subprocess
import sys

import jax

from ganaug_jax.bench import common
from ganaug_jax.bench.train_step import (CONFIGS, TrainConfig, ganaug_runner, make_config,
                                         model_fields)

COUNTS = (1, 2, 4, 8)
# the products that run in a partitioned CPU step too (no effect on other platforms)
SAME_PRODUCTS = {"model.cpu_conv_library": "eigen"}


def measure(counts=COUNTS, per_device_batch: int = 16, reps: int = 5, iters: int = 2, *,
            base: TrainConfig = CONFIGS[0]) -> list:
    from ganaug_jax.train import sharding
    from ganaug_jax.train.build import model_kernel_grad
    env = common.environment()
    rows = []
    for d in counts:
        c = dataclasses.replace(base, batch=d * per_device_batch)
        many, compile_s, *_ = ganaug_runner(c, sharding.make_mesh(jax.devices()[:d]),
                                            **SAME_PRODUCTS)
        one, *_ = ganaug_runner(c, sharding.make_mesh(jax.devices()[:1]), **SAME_PRODUCTS)
        many(), one()
        looped = {k: (lambda f=f: [f() for _ in range(iters)]) for k, f in
                  {"sharded": many, "one": one}.items()}
        t = {k: v / iters for k, v in common.time_interleaved(looped, reps).items()}
        rows.append({"suite": "scaling", "config": base.name, "devices": d,
                     **model_fields(c), "per_device_batch": per_device_batch,
                     "global_batch": c.batch,
                     "median_s_per_iter": t["sharded"], "images_per_s": c.batch / t["sharded"],
                     "images_per_s_per_device": c.batch / t["sharded"] / d,
                     "one_device_same_batch_s": t["one"],
                     "sharding_overhead": t["sharded"] / t["one"], "compile_s": compile_s,
                     "conv_products": model_kernel_grad(make_config(c, **SAME_PRODUCTS)),
                     "reps": reps, **env, "device_count": d})
    return rows


def run(*, counts=COUNTS, per_device_batch: int = 16, reps: int = 5, base: TrainConfig = CONFIGS[0],
        json_path: str | None = None, chart: str | None = None) -> list[dict]:
    common.check_reps(reps)
    if jax.device_count() >= max(counts):
        rows = measure(counts, per_device_batch, reps, base=base)
    elif jax.devices()[0].platform == "cpu":
        code = ("import json; from ganaug_jax.bench import scaling; "
                "from ganaug_jax.bench.train_step import TrainConfig; "
                f"print(json.dumps(scaling.measure({tuple(counts)!r}, {per_device_batch}, {reps}, "
                f"base=TrainConfig(**{dataclasses.asdict(base)!r}))))")
        env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " "
                   f"--xla_force_host_platform_device_count={max(counts)}").strip())
        child = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                               text=True)
        if child.returncode:
            raise RuntimeError(f"the {max(counts)}-device scaling process failed (exit status "
                               f"{child.returncode}):\n{child.stderr.strip()}")
        rows = json.loads(child.stdout.strip().splitlines()[-1])
    else:
        counts = tuple(d for d in counts if d <= jax.device_count())
        rows = measure(counts, per_device_batch, reps, base=base)
    common.write_json_lines(rows, json_path)
    print("\n" + common.markdown_table(
        ["devices", "global batch", "img/s", "img/s per device", "overhead vs 1 device"],
        [[r["devices"], r["global_batch"], f"{r['images_per_s']:,.1f}",
          f"{r['images_per_s_per_device']:,.1f}", f"{r['sharding_overhead']:.3f}x"]
         for r in rows]), flush=True)
    if chart:
        common.bar_chart(chart, [f"{r['devices']} dev" for r in rows],
                         {"img/s": [r["images_per_s"] for r in rows],
                          "img/s per device": [r["images_per_s_per_device"] for r in rows]},
                         title=f"sharded training step, {rows[0]['device_kind']}")
    return rows
