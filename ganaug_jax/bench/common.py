"""What every benchmark shares (PROTOCOLS.md section 4): the environment line, compile timing,
interleaved median timing, the measured matmul peak, JSON lines, markdown tables and a bar
chart."""

import datetime
import gc
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import ganaug_jax

MIN_REPS = 5


def check_reps(reps: int, name: str = "reps") -> None:
    """PROTOCOLS.md section 4: a median of at least MIN_REPS timed repetitions."""
    if reps < MIN_REPS:
        raise ValueError(f"{name} must be >= {MIN_REPS} (every number is the median of at least "
                         f"{MIN_REPS} timed repetitions), got {reps}")


def cpu_model() -> str:
    """The host CPU's model name (Linux /proc/cpuinfo, else platform.processor()), so that
    JSON lines from several machines can be told apart when joined."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def environment() -> dict:
    """Device kind and count, versions and the date: the fields every JSON line carries."""
    device = jax.devices()[0]
    env = {"device_kind": device.device_kind, "platform": device.platform,
           "device_count": jax.device_count(), "jax_version": jax.__version__,
           "ganaug_jax_version": ganaug_jax.__version__, "cpu_count": os.cpu_count(),
           "cpu_model": cpu_model(),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    try:
        import torch
        env["torch_version"] = torch.__version__
    except ImportError:
        pass
    return env


def timed_compile(compile_fn: Callable[[], Any]) -> tuple[Any, float]:
    """(compile_fn(), its wall seconds), timed after a full garbage collection.

    A process that has imported the peers (torch, kornia) holds ~300k Python objects; a
    full collection of them costs 0.25-0.3 s on a 2-core CPU and is triggered by whichever
    trace allocates next. Collecting first charges each compile for its own work only.
    """
    gc.collect()
    start = time.perf_counter()
    result = compile_fn()
    return result, time.perf_counter() - start


def time_interleaved(runners: dict[str, Callable[[], None]], reps: int) -> dict[str, float]:
    """Median wall seconds of each runner over `reps` repetitions, interleaved (rep 1: every
    runner once, rep 2: ...) so that on a shared machine all see the same conditions. Each
    runner must block until its results are ready (`jax.block_until_ready`)."""
    check_reps(reps)
    times = {name: [] for name in runners}
    for _ in range(reps):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def matmul_peak_flops(dtype=jnp.float32, *, n: int | None = None, reps: int = MIN_REPS) -> float:
    """Measured matmul peak of the default device in `dtype` (float32 or bfloat16, at JAX's
    default precision, as the training step runs: float32 products use TF32 tensor cores on
    NVIDIA GPUs since Ampere): FLOP/s of a jitted n x n matmul of random values (median), the
    denominator of MFU. n: 2048 on CPU, 8192 on accelerators, where a
    2048 product lasts tens of microseconds and launch overhead would count as compute."""
    if n is None:
        n = 2048 if jax.devices()[0].platform == "cpu" else 8192
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    matmul = jax.jit(jnp.matmul)
    jax.block_until_ready(matmul(a, b))
    seconds = time_interleaved({"mm": lambda: jax.block_until_ready(matmul(a, b))}, reps)["mm"]
    return 2 * n**3 / seconds


def write_json_lines(rows: Sequence[dict], path: str | None) -> None:
    """Prints each row as one JSON line; appends them to `path` too when given."""
    lines = [json.dumps(row, sort_keys=True) for row in rows]
    for line in lines:
        print(line, flush=True)
    if path:
        with open(path, "a") as f:
            f.write("".join(line + "\n" for line in lines))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def bar_chart(path: str, groups: Sequence[str], series: dict[str, Sequence[float]], *,
              title: str) -> None:
    """Grouped bars (one group per config, one bar per series; NaN draws as 0), as a PNG."""
    from ganaug_jax.train import outputs
    values = [[float(np.nan_to_num(series[name][i])) for name in series]
              for i in range(len(groups))]
    zeros = [[0.0] * len(series) for _ in groups]
    outputs.save_png(path, outputs.bar_chart(list(groups), values, zeros, title=title,
                                             series=list(series), width=120 * len(groups) + 80))
