"""Generation throughput: samples/sec of the EMA generator (`train.generate.generate`, the
path `ganaug generate` runs: per-index latents, fixed-shape jitted batches, host copy) over a
batch-size sweep, and the throughput of each export format (npz, PNG folder, TFDS on disk),
each timed from float samples in memory to files renamed into place.

Model: the class-conditional DCGAN of the train suite's first config (32x32x3, width 64,
latent 100, 10 classes), randomly initialised (speed does not depend on training).
"""

import dataclasses
import pathlib
import shutil
import tempfile
import time

import jax
import numpy as np

from ganaug_jax.bench import common
from ganaug_jax.bench.train_step import TrainConfig, model_fields

MODEL = TrainConfig("32x32x3 w64 cond", 32, 3, 64, 0, num_classes=10)
BATCHES = (16, 64, 256, 1024)


@dataclasses.dataclass(frozen=True)
class _Run:  # the parts of train.build.Run that generation reads
    generator: object
    latent_dim: int
    num_classes: int


def make_run_state(c: TrainConfig = MODEL):
    from ganaug_jax.models import make_gan
    from ganaug_jax.train.build import make_optimizer
    from ganaug_jax.train.state import create_train_state
    from ganaug_jax.bench.train_step import make_config
    config = make_config(c)
    shape = (c.resolution, c.resolution, c.channels)
    g, d = make_gan("dcgan", data_shape=shape, num_classes=c.num_classes,
                    latent_dim=c.latent_dim, width=c.width)
    tx = make_optimizer(1e-4, config.optim, 1)
    state = create_train_state(jax.random.key(0), g, d, tx, tx, data_shape=shape,
                               latent_dim=c.latent_dim, num_classes=c.num_classes)
    return _Run(g, c.latent_dim, c.num_classes), state


def run(*, batches=BATCHES, num: int = 2048, export_num: int = 1000, reps: int = 5,
        formats=None, json_path: str | None = None, chart: str | None = None) -> list[dict]:
    """Samples/sec of the EMA generator at each batch size, then the throughput of each
    export format in `formats` (default: every one of exports.FORMATS); prints JSON lines
    and a table."""
    common.check_reps(reps)
    from ganaug_jax.data import exports
    formats = exports.FORMATS if formats is None else tuple(formats)
    if not set(formats) <= set(exports.FORMATS):
        raise ValueError(f"formats must be a subset of {list(exports.FORMATS)}, got {formats}")
    from ganaug_jax.train.generate import generate
    env = common.environment()
    print(f"# generate suite: device_kind={env['device_kind']} device_count="
          f"{env['device_count']} jax={env['jax_version']} reps={reps}", flush=True)
    g_run, state = make_run_state()
    rows = []
    runners, compile_s = {}, {}
    for b in batches:
        _, compile_s[b] = common.timed_compile(  # compiles this batch shape
            lambda b=b: generate(g_run, state, num=b, seed=0, batch_size=b))
        runners[b] = lambda b=b: generate(g_run, state, num=num, seed=1, batch_size=b)
    seconds = common.time_interleaved({str(b): f for b, f in runners.items()}, reps)
    for b in batches:
        s = seconds[str(b)]
        rows.append({"suite": "generate", "what": "sample", "batch": b, "num": num,
                     **model_fields(MODEL), "model": MODEL.name, "median_s": s,
                     "samples_per_s": num / s, "compile_s": compile_s[b], "reps": reps, **env})
    common.write_json_lines(rows, json_path)  # the sampling rows before the exports run

    samples = generate(g_run, state, num=export_num, seed=2, batch_size=256)
    samples = exports.to_export_arrays(samples, is_image=True)
    manifest = exports.make_manifest(checkpoint_step=0, seed=2, config_json="{}",
                                     generator="ema", truncation=None,
                                     num_classes=MODEL.num_classes)
    root = pathlib.Path(tempfile.mkdtemp(prefix="ganaug_bench_"))
    try:
        targets = {fmt: root / ("out.npz" if fmt == "npz" else fmt) for fmt in formats}
        times = {fmt: [] for fmt in targets}
        for _ in range(reps):
            for fmt, target in targets.items():
                start = time.perf_counter()
                exports.export(fmt, target, samples, manifest, overwrite=True)
                times[fmt].append(time.perf_counter() - start)
        exported = []
        for fmt, ts in times.items():
            s = float(np.median(ts))
            exported.append({"suite": "generate", "what": f"export {fmt}", "num": export_num,
                             "shape": list(samples["x"].shape[1:]), "dtype": "uint8",
                             "median_s": s, "samples_per_s": export_num / s, "reps": reps,
                             **env})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    common.write_json_lines(exported, json_path)
    rows += exported
    print("\n" + common.markdown_table(
        ["what", "batch", "samples/sec", "compile s"],
        [[r["what"], r.get("batch", "-"), f"{r['samples_per_s']:,.0f}",
          f"{r['compile_s']:.2f}" if "compile_s" in r else "-"] for r in rows]), flush=True)
    if chart:
        labels = [f"b{r['batch']}" if r["what"] == "sample" else r["what"] for r in rows]
        common.bar_chart(chart, labels, {"samples/sec": [r["samples_per_s"] for r in rows]},
                         title=f"generation samples/sec, {env['device_kind']}")
    return rows
