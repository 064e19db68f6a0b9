"""Training-step throughput: ganaug_jax's real step vs a PyTorch DCGAN of the same architecture.

One iteration = D update on a real and a fake batch, then G update (n_critic = 1, Adam
2e-4 / (0.5, 0.999), non-saturating loss); images/sec = real images per iteration / median
iteration time. ganaug_jax runs the step `ganaug train` runs (`train.build.build_step` from a
config, jitted over the device mesh by `sharding.shard_step`, EMA generator included):
  * 'ganaug_jax': the defaults (conv_impl 'custom_vjp'; the G update draws fresh latents);
  * 'ganaug_jax reuse_fake': optim.reuse_fake=True, the classic loop's algorithm (the G
    update reuses the D update's fakes), i.e. exactly the work the PyTorch peer does;
  * 'ganaug_jax xla convs' (--baseline): conv_impl 'xla', plain autodiff (before issue 5).
Peers (when torch imports): PyTorch eager (NCHW), eager channels-last, torch.compile.
Equal parameter counts are asserted. The ADA config runs the 'bgc' pipe with adaptive p in
front of D for ganaug_jax, p starting at ADA_P (0.5; at the config default 0.0 nearly every
sample would pass through unchanged and the row would not show the augmentation's cost); its
PyTorch peer has no augmentation (there is no equivalent), so that row's ratio includes the
augmentation's cost.

Model FLOPs per iteration (analytic, multiply-adds x 2, convolutions and dense layers):
B * (3 F_G + 8 F_D) for per-image forward costs F_G, F_D: D update = forward and backward
(2x) on 2B images; G update = D forward and input gradient on B, G forward and backward.
'xla_flops' is XLA's cost analysis of ganaug_jax's compiled step (it counts what the step
really computes, e.g. the G forward of the D update). MFU = model FLOPs/s over the measured
matmul peak of the device in the step's compute dtype (`common.matmul_peak_flops`: float32,
or bfloat16 with `bfloat16=True`).
"""

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from ganaug_jax.bench import common


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    name: str
    resolution: int
    channels: int
    width: int
    batch: int
    num_classes: int = 0
    ada: bool = False
    latent_dim: int = 100


def model_fields(c: TrainConfig, dtype: str = "float32") -> dict:
    """The JSON fields naming a config's image shape, model and dtype (every row carries them)."""
    return {"resolution": c.resolution, "channels": c.channels, "width": c.width,
            "num_classes": c.num_classes, "dtype": dtype}


ADA_P = 0.5  # the ADA config's initial augmentation probability
CONFIGS = (
    TrainConfig("32x32x3 w64 b64", 32, 3, 64, 64),
    TrainConfig("32x32x3 w64 b256", 32, 3, 64, 256),
    TrainConfig("32x32x1 w32 b128", 32, 1, 32, 128),
    TrainConfig("64x64x3 w64 b64", 64, 3, 64, 64),
    TrainConfig("32x32x3 w64 b64 cond", 32, 3, 64, 64, num_classes=10),
    TrainConfig("32x32x3 w64 b64 ada", 32, 3, 64, 64, ada=True),
)


def forward_macs(c: TrainConfig, *, exclude_padding: bool = False) -> tuple[int, int]:
    """Per-image forward multiply-adds (generator, discriminator) of the DCGAN pair, counting
    every kernel tap (the usual convention, used for MFU), or with `exclude_padding` only the
    taps that land inside the image (what XLA's cost analysis counts)."""
    stages = (c.resolution // 4).bit_length() - 1
    hidden = [c.width * 2**(stages - 1 - i) for i in range(stages)]
    base = c.resolution // 2**stages
    z_dim = c.latent_dim * (2 if c.num_classes else 1)
    g = z_dim * base * base * hidden[0]
    res = base
    for c_in, c_out in zip(hidden, hidden[1:] + [c.channels]):
        res *= 2  # each output pixel: 2 taps per axis of a 4x4 stride-2 kernel, 1 at the borders
        taps = 2 * res - 2 * exclude_padding
        g += taps * taps * c_in * c_out
    d, res, c_in = 0, c.resolution, c.channels
    for i in range(stages):
        res //= 2  # 4 taps per axis, 3 at the borders
        taps = 4 * res - 2 * exclude_padding
        d += taps * taps * c_in * c.width * 2**i
        c_in = c.width * 2**i
    features = res * res * c_in
    d += features * (2 if c.num_classes else 1)
    return g, d


def model_flops(c: TrainConfig) -> float:
    g, d = forward_macs(c)
    return 2.0 * c.batch * (3 * g + 8 * d)


def make_config(c: TrainConfig, **overrides):
    """The ganaug_jax config of a benchmark row (configs/default.py plus these keys)."""
    from ganaug_jax import config as config_lib
    config = config_lib.load_config(str(config_lib.bundled_configs() / "default.py"))
    config.model.architecture = "dcgan"
    config.model.latent_dim = c.latent_dim
    config.model.width = c.width
    config.model.depth = 0
    config.model.conditional = c.num_classes > 0
    config.batch_size = c.batch
    if c.ada:
        config.augment.kind = "ada"
        config.augment.ada_initial_p = ADA_P
    for key, value in overrides.items():
        section, leaf = key.split(".")
        config[section][leaf] = value
    return config


def ganaug_runner(c: TrainConfig, mesh=None, **overrides):
    """(run(n=1) -> None, compile seconds, param counts (G, D), XLA flops) for ganaug_jax's
    step; run(n) dispatches n steps back to back and blocks once, at the end."""
    from ganaug_jax.models import make_gan
    from ganaug_jax.train import sharding
    from ganaug_jax.train.build import (Run, build_step, make_optimizer, model_kernel_grad,
                                        step_compiler_options)
    from ganaug_jax.train.state import create_train_state
    config = make_config(c, **overrides)
    m = config.model
    shape = (c.resolution, c.resolution, c.channels)
    generator, discriminator = make_gan(
        "dcgan", data_shape=shape, num_classes=c.num_classes, latent_dim=m.latent_dim,
        width=m.width, conv_impl=m.conv_impl, kernel_grad=model_kernel_grad(config),
        dtype=jnp.bfloat16 if m.compute_dtype == "bfloat16" else jnp.float32)
    g_tx = make_optimizer(config.optim.g_lr, config.optim, config.num_steps)
    d_tx = make_optimizer(config.optim.d_lr, config.optim, config.num_steps,
                          updates_per_step=config.optim.n_critic)
    run = Run(None, generator, discriminator, g_tx, d_tx, m.latent_dim, c.num_classes)
    mesh = sharding.make_mesh() if mesh is None else mesh
    sharding.check_batch_divisible(c.batch, mesh)
    state = create_train_state(jax.random.key(0), generator, discriminator, g_tx, d_tx,
                               data_shape=shape, latent_dim=m.latent_dim,
                               num_classes=c.num_classes, sharding=sharding.replicated(mesh),
                               ada_initial_p=config.augment.ada_initial_p)
    batch = {"x": jax.random.uniform(jax.random.key(1), (1, c.batch, *shape), jnp.float32,
                                     -1.0, 1.0)}
    if c.num_classes:
        batch["y"] = jax.random.randint(jax.random.key(2), (1, c.batch), 0, c.num_classes)
    batch = jax.device_put(batch, sharding.batch_sharding(mesh, 1))
    compiled, compile_s = common.timed_compile(lambda: sharding.shard_step(
        build_step(config, run), mesh, batch_axis=1,
        compiler_options=step_compiler_options(config, mesh)).lower(state, batch).compile())
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    box = [state]

    def run_steps(n: int = 1):
        """n steps dispatched back to back, blocking once at the end."""
        for _ in range(n):
            box[0], metrics = compiled(box[0], batch)
        jax.block_until_ready((box[0], metrics))

    count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))  # noqa: E731
    return run_steps, compile_s, (count(state.g_params), count(state.d_params)), cost.get("flops")


def bench_config(c: TrainConfig, *, reps: int, iters: int, peers: bool, torch_compile: bool,
                 baseline: bool, bfloat16: bool, peak: float) -> list[dict]:
    """Times every runner at config `c`; returns one row per runner."""
    dtype_overrides = {"model.compute_dtype": "bfloat16"} if bfloat16 else {}
    runners, compile_s, info = {}, {}, {}
    variants = {"ganaug_jax": {}, "ganaug_jax reuse_fake": {"optim.reuse_fake": True}}
    if baseline:
        variants["ganaug_jax xla convs"] = {"model.conv_impl": "xla"}
    from ganaug_jax.train import sharding
    one_device = sharding.make_mesh(jax.devices()[:1])  # the peer's hardware (and the MFU peak's)
    from ganaug_jax.train.build import model_kernel_grad
    for name, overrides in variants.items():
        run, compile_s[name], counts, xla_flops = ganaug_runner(c, one_device, **overrides,
                                                                **dtype_overrides)
        products = model_kernel_grad(make_config(c, **overrides, **dtype_overrides))
        runners[name], info[name] = run, {"params": counts, "xla_flops": xla_flops,
                                          "conv_products": products}
    if peers:
        try:
            import torch  # noqa: F401
        except ImportError:
            peers = False
    if peers:
        from ganaug_jax.bench import torch_dcgan
        device = "cuda" if jax.devices()[0].platform == "gpu" else "cpu"
        torch_variants = {"pytorch eager": {}, "pytorch channels_last": {"channels_last": True}}
        if torch_compile:
            torch_variants["torch.compile"] = {"compile_it": True}
        for name, kw in torch_variants.items():
            run, g, d = torch_dcgan.make_iteration(
                resolution=c.resolution, channels=c.channels, width=c.width, batch=c.batch,
                latent_dim=c.latent_dim, num_classes=c.num_classes, device=device,
                bfloat16=bfloat16, **kw)
            counts = (torch_dcgan.parameter_count(g), torch_dcgan.parameter_count(d))
            if counts != info["ganaug_jax"]["params"]:
                raise AssertionError(f"{name} at {c.name}: parameter counts (G, D) {counts} != "
                                     f"ganaug_jax's {info['ganaug_jax']['params']}")
            # eager: warm-up; compile: tracing and code generation
            _, compile_s[name] = common.timed_compile(run)
            runners[name], info[name] = run, {"params": counts}
    for run in runners.values():  # warm-up (ganaug_jax: first call after compilation)
        run()
    looped = {name: (lambda r=run: [r() for _ in range(iters)]) for name, run in runners.items()}
    seconds = {k: v / iters for k, v in common.time_interleaved(looped, reps).items()}
    flops = model_flops(c)
    env = common.environment()
    rows = []
    for name, s in seconds.items():
        rows.append({
            "suite": "train", "config": c.name, "runner": name, "batch": c.batch,
            **model_fields(c, "bfloat16" if bfloat16 else "float32"),
            "augment": "ada bgc" if c.ada else "none",
            "augment_initial_p": ADA_P if c.ada else 0.0, "reps": reps,
            "iters_per_rep": iters, "median_s_per_iter": s, "images_per_s": c.batch / s,
            "compile_s": compile_s[name], "params_g": info[name]["params"][0],
            "params_d": info[name]["params"][1], "model_flops_per_iter": flops,
            "xla_flops_per_iter": info[name].get("xla_flops"),
            # how ganaug_jax's convolution products ran (convs.KERNEL_GRADS; 'onednn': oneDNN)
            **({"conv_products": info[name]["conv_products"]}
               if "conv_products" in info[name] else {}),
            "achieved_flop_s": flops / s, "peak_flop_s": peak, "mfu": flops / s / peak,
            "peak_dtype": "bfloat16" if bfloat16 else "float32",
            "matmul_precision": jax.config.jax_default_matmul_precision or "default",
            **({"ratio_vs_pytorch_eager": seconds["pytorch eager"] / s}
               if "pytorch eager" in seconds else {}),
            **({"ratio_vs_torch_compile": seconds["torch.compile"] / s}
               if "torch.compile" in seconds else {}),
            **env})
    return rows


def table(rows: list[dict]) -> str:
    runners = list(dict.fromkeys(r["runner"] for r in rows))
    configs = list(dict.fromkeys(r["config"] for r in rows))
    by = {(r["config"], r["runner"]): r for r in rows}
    header = ["config"] + [f"{n} img/s" for n in runners]
    ours = [n for n in runners if n.startswith("ganaug_jax")]
    has_eager = any(n == "pytorch eager" for n in runners)
    has_compile = any(n == "torch.compile" for n in runners)
    header += [f"{n} / eager" for n in ours] * has_eager
    header += [f"{n} / compile" for n in ours] * has_compile
    header += ["ganaug_jax MFU", "compile s (ganaug_jax)"]
    lines = []
    for cfg in configs:
        row = [cfg] + [f"{by[cfg, n]['images_per_s']:,.1f}" if (cfg, n) in by else "n/a"
                       for n in runners]
        if has_eager:
            row += [f"{by[cfg, n]['ratio_vs_pytorch_eager']:.2f}x" for n in ours]
        if has_compile:
            row += [f"{by[cfg, n]['ratio_vs_torch_compile']:.2f}x" for n in ours]
        main = by[cfg, "ganaug_jax"]
        row += [f"{100 * main['mfu']:.1f}%", f"{main['compile_s']:.1f}"]
        lines.append(row)
    return common.markdown_table(header, lines)


def run(*, configs=CONFIGS, reps: int = 7, iters: int = 2, peers: bool = True,
        torch_compile: bool = True, baseline: bool = True, bfloat16: bool = False,
        json_path: str | None = None, chart: str | None = None) -> list[dict]:
    """Benchmarks every config; prints JSON lines and a markdown table; returns the rows."""
    common.check_reps(reps)
    peak = common.matmul_peak_flops(jnp.bfloat16 if bfloat16 else jnp.float32)
    env = common.environment()
    print(f"# train suite: device_kind={env['device_kind']} device_count={env['device_count']} "
          f"jax={env['jax_version']} torch={env.get('torch_version')} "
          f"dtype={'bfloat16' if bfloat16 else 'float32'} reps={reps} iters={iters} "
          f"measured {'bfloat16' if bfloat16 else 'float32'} matmul peak {peak / 1e9:.1f} "
          f"GFLOP/s", flush=True)
    rows = []
    for c in configs:
        new = bench_config(c, reps=reps, iters=iters, peers=peers, torch_compile=torch_compile,
                           baseline=baseline, bfloat16=bfloat16, peak=peak)
        common.write_json_lines(new, json_path)
        rows += new
    print("\n" + table(rows), flush=True)
    if chart:
        runners = list(dict.fromkeys(r["runner"] for r in rows))
        configs_ = list(dict.fromkeys(r["config"] for r in rows))
        by = {(r["config"], r["runner"]): r["images_per_s"] for r in rows}
        common.bar_chart(chart, configs_, {n: [by.get((c, n), np.nan) for c in configs_]
                                           for n in runners},
                         title=f"training images/sec, {env['device_kind']}")
    return rows


def loop_efficiency(c: TrainConfig = CONFIGS[0], *, steps: int = 60, log_every: int = 10,
                    checkpoint_every: int = 20, runs: int = 5, reps: int = 5,
                    json_path: str | None = None, quick: bool = False) -> dict:
    """`train_and_evaluate` (metrics fetched one step late, async checkpoints every
    `checkpoint_every` steps, batches gathered on device) vs the bare jitted step at the same
    config. The bare step is timed (median of `reps`) before the first loop run and after each
    of `runs` loop runs. A loop run's images/sec counts every image trained after its first
    log row (the first interval holds compilation) over the wall time from that row until
    `train_and_evaluate` returns (the final checkpoint written and every file closed); the
    loop's rate is the median over runs, the bare step's the mean of its timings: the
    measurement of record (`loop_fraction_of_bare`). Beside it, after each loop run, the
    bare step is also timed as the loop is: as many steps as a loop run counts, dispatched
    back to back, over their wall time (`bare_window_*`, median over runs), so the loop's own
    costs can be told from the difference between a median of single steps and a wall rate.
    runs and reps: >= 5 each (PROTOCOLS.md section 4) unless `quick` (a smoke run, marked so
    in its row)."""
    if not quick:
        common.check_reps(runs, "runs")
    common.check_reps(reps)
    import time
    import json
    import shutil
    import tempfile

    from ganaug_jax.train.loop import train_and_evaluate
    root = pathlib.Path(tempfile.mkdtemp(prefix="ganaug_loop_"))
    try:
        rng = np.random.default_rng(0)
        data = root / "data.npz"
        np.savez(data, x=rng.integers(0, 256, (2048, c.resolution, c.resolution, c.channels),
                                      dtype=np.uint8),
                 y=rng.integers(0, max(c.num_classes, 1), 2048).astype(np.int32))
        bare_run, *_ = ganaug_runner(c)
        bare_run()
        bare = [common.time_interleaved({"step": bare_run}, reps)["step"]]
        config = make_config(c, **{"data.source": str(data), "data.resolution": c.resolution,
                                   "data.channels": c.channels})
        config.num_steps, config.log_every = steps, log_every
        config.checkpoint_every, config.sample_every = checkpoint_every, 0
        run_rates, rates, windows = [], [], []
        for i in range(runs):
            train_and_evaluate(config, str(root / f"run{i}"), progress=False)
            end = time.time()
            bare.append(common.time_interleaved({"step": bare_run}, reps)["step"])
            logged = [json.loads(line) for line in
                      (root / f"run{i}" / "metrics.jsonl").read_text().splitlines()]
            window_steps = steps - logged[0]["step"]
            images = window_steps * config.batch_size * config.optim.n_critic
            run_rates.append(images / (end - logged[0]["wall_time"]))
            rates += [row["images_per_sec"] for row in logged[1:]]
            start = time.perf_counter()
            bare_run(window_steps)
            windows.append(time.perf_counter() - start)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    bare_rate = c.batch / float(np.mean(bare))
    loop_rate = float(np.median(run_rates))
    window_rates = [window_steps * c.batch / s for s in windows]
    window_rate = float(np.median(window_rates))
    row = {"suite": "train", "what": "loop efficiency", "config": c.name, "batch": c.batch,
           **model_fields(c), "steps": steps,
           "runs": runs, "quick": quick, "log_every": log_every,
           "checkpoint_every": checkpoint_every,
           "loop_images_per_s": loop_rate, "bare_step_images_per_s": bare_rate,
           "loop_images_per_s_each": run_rates, "loop_interval_images_per_s": rates,
           "bare_step_images_per_s_each": [c.batch / s for s in bare],
           "loop_fraction_of_bare": loop_rate / bare_rate,
           "bare_window_steps": window_steps, "bare_window_images_per_s": window_rate,
           "bare_window_images_per_s_each": window_rates,
           "loop_fraction_of_bare_window": loop_rate / window_rate, **common.environment()}
    common.write_json_lines([row], json_path)
    print(f"\nloop {loop_rate:,.1f} img/s vs bare step {bare_rate:,.1f} img/s: "
          f"{100 * loop_rate / bare_rate:.1f}% ({c.name}, {runs} runs of {steps} steps, "
          f"checkpoints every {checkpoint_every}); the bare step {window_steps} steps back to "
          f"back, as the loop counts them: {window_rate:,.1f} img/s, the loop "
          f"{100 * loop_rate / window_rate:.1f}% of it", flush=True)
    return row
