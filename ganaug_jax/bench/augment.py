"""Throughput of one per-sample GAN augmentation pipeline: ganaug_jax vs dm-pix, augmax, kornia.

Pipeline (every parameter drawn per sample): horizontal flip with probability 0.5; rotation
U(-15, 15) degrees, bilinear; translation U(-1/8, 1/8) of the size per axis; additive
brightness U(-0.2, 0.2) of the [0, 1] range; contrast factor U(0.8, 1.2); saturation factor
U(0.8, 1.2). Images are float32 NHWC in [-1, 1] for ganaug_jax (brightness U(-0.4, 0.4) there,
the same shift); the peers whose colour ops assume [0, 1] (dm-pix, augmax, kornia) get their
own rescaled copy, made once outside the timed region.
Each peer runs in its own idiom and fastest path:
  * dm-pix: one key per image, `jax.vmap` over `jax.random.split` keys, all under one `jax.jit`;
    one call per op as its API offers them: `rotate`, then the translation through
    `affine_transform` (two resamples), border 'nearest' (dm-pix's default and fast path; its
    reflect modes fall back to map_coordinates). Row 'dm-pix-fused' hand-fuses rotation and
    translation into one `affine_transform`, the best a dm-pix user can do;
  * augmax: `jax.jit(jax.vmap(chain))(keys, images)`; augmax 0.4.1 has no random translation,
    so `RandomTranslate` below adds one in augmax's own coordinate convention (it fuses into
    augmax's geometric chain); its border is zero fill (not configurable); its colour op is
    `ColorJitter` on HSV (GIMP-style brightness/contrast on V; its saturation term is a no-op
    in 0.4.1, so augmax does slightly less work than the others);
  * kornia (only if `import kornia` works): NCHW torch tensors, `AugmentationSequential`,
    eager, and `torch.compile` with `--torch-compile`; rotation and translation in one
    `RandomAffine` (one warp, border 'border' = 'edge'; kornia 0.9's `RandomRotation` has
    zero fill only); its `ColorJitter` brightness is a factor (x * U(0.8, 1.2)), not a shift:
    the same cost, another transform.
  * ganaug_jax: `ganaug_pipeline()`, border 'edge' (= dm-pix's 'nearest'), one fused resample
    and colour pass (the XLA:CPU kernel where it was built); row 'ganaug_jax (pure JAX)' is
    the same pipeline traced under `augment.without_fast_kernels()`, timed in the same loop.

Protocol (PROTOCOLS.md section 4): random inputs (never zeros); compile time measured
separately (`.lower().compile()`, after a full garbage collection: `common.timed_compile`),
then one warm-up call; `jax.block_until_ready` before every
clock read; each timed call uses a fresh key, split before the clock starts; the libraries
are interleaved repetition by repetition (rep 1: floor, ganaug, dm-pix, augmax, kornia;
rep 2: ...) so that on a shared, noisy CPU they see the same conditions; medians of >= 5
repetitions (a library whose warm-up call exceeds --slow-s seconds at a shape runs only 5).
The memory floor is one jitted read-and-write of the batch; fraction_of_floor = floor
time / pipeline time, both timed in the interleaved loop (cold caches after each peer); the
floor and ganaug_jax are then timed again back to back (warm caches), the stricter
back_to_back_fraction_of_floor.
Output: one JSON line per (library, shape) on stdout (appended to --json FILE if given), then
a markdown table. No assertions on timings.

    python benchmarks/augment.py [--shapes 256x32x32x3,...] [--reps 7] [--json FILE] [--quick]
    ganaug bench --suite augment [--quick] [--json FILE]
"""

import os

# torch's OpenMP workers spin after each parallel region by default, stealing the cores from
# the JAX libraries timed next in the same process; passive waiting keeps the run fair.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime  # noqa: E402
import importlib.util  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import ganaug_jax  # noqa: E402
from ganaug_jax import augment as A  # noqa: E402
from ganaug_jax.bench import common  # noqa: E402

SHAPES = ((256, 32, 32, 3), (64, 64, 64, 3), (32, 224, 224, 3))
PURE = "ganaug_jax (pure JAX)"  # the same pipeline traced without the XLA:CPU kernel
MAX_DEGREES, MAX_FRACTION, MAX_DELTA, FACTOR_RANGE = 15.0, 0.125, 0.2, (0.8, 1.2)


def ganaug_pipeline():
    """The benchmarked pipeline in ganaug_jax: `pipeline(key, images, p)`, all ops at p = 1."""
    return A.make_pipeline([A.op("flip_left_right", probability=lambda p: p / 2),
                            A.op("rotate", max_degrees=MAX_DEGREES),
                            A.op("translate", max_fraction=MAX_FRACTION),
                            # +-0.2 of the [0, 1] range, as the peers on their [0, 1] copies
                            A.op("brightness", max_delta=2 * MAX_DELTA),
                            A.op("contrast", factor_range=FACTOR_RANGE),
                            A.op("saturation", factor_range=FACTOR_RANGE)],
                           border="edge", interpolation="bilinear")


def dm_pix_pipeline(fused_affine=False):
    """dm-pix, one call per op as its API offers them (rotate, then a translation through
    affine_transform), border 'nearest' (dm-pix's default and fast path). With
    fused_affine=True, rotation and translation are hand-fused into one affine_transform."""
    import dm_pix as pix

    def one(key, image):
        k_flip, k_rot, k_shift, k_b, k_c, k_s = jax.random.split(key, 6)
        image = pix.random_flip_left_right(k_flip, image, probability=0.5)
        theta = jax.random.uniform(k_rot, (), minval=-1.0, maxval=1.0) * math.radians(MAX_DEGREES)
        size = jnp.array(image.shape[:2], jnp.float32)
        shift = jax.random.uniform(k_shift, (2,), minval=-1.0, maxval=1.0) * MAX_FRACTION * size
        offset = -jnp.concatenate([shift, jnp.zeros(1)])
        if fused_affine:
            c, s = jnp.cos(theta), jnp.sin(theta)
            matrix = jnp.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])  # as dm_pix.rotate
            centre = (jnp.array(image.shape, jnp.float32) - 1.0) / 2.0
            image = pix.affine_transform(image, matrix, offset=centre - matrix @ centre + offset,
                                         order=1, mode="nearest")
        else:
            image = pix.rotate(image, theta, order=1, mode="nearest")
            image = pix.affine_transform(image, jnp.eye(3), offset=offset, order=1, mode="nearest")
        image = pix.random_brightness(k_b, image, MAX_DELTA)
        image = pix.random_contrast(k_c, image, *FACTOR_RANGE)
        return pix.random_saturation(k_s, image, *FACTOR_RANGE)

    return lambda key, images: jax.vmap(one)(jax.random.split(key, images.shape[0]), images)


def augmax_pipeline():
    import augmax

    class RandomTranslate(augmax.GeometricTransformation):
        """Shift by U(-max_fraction, max_fraction) of the size per axis (as augmax.Translate)."""

        def __init__(self, max_fraction):
            super().__init__()
            self.max_fraction = max_fraction

        def transform_coordinates(self, rng, coordinates, invert=False):
            h, w = coordinates.current_shape
            dy, dx = jax.random.uniform(rng, (2,), minval=-1.0, maxval=1.0) * self.max_fraction * jnp.array([h, w])
            dy, dx = (-dy, -dx) if invert else (dy, dx)
            coordinates.push_transform(jnp.array([[1.0, 0.0, -dy], [0.0, 1.0, -dx], [0.0, 0.0, 1.0]]))

    chain = augmax.Chain(augmax.HorizontalFlip(p=0.5), augmax.Rotate((-MAX_DEGREES, MAX_DEGREES)),
                         RandomTranslate(MAX_FRACTION),
                         augmax.ColorJitter(brightness=MAX_DELTA, contrast=0.2, saturation=0.2,
                                            hue=0.0, p=1.0))
    return lambda key, images: jax.vmap(chain)(jax.random.split(key, images.shape[0]), images)


def kornia_runner(images01, compile_it):
    """(zero-argument callable running kornia's pipeline on a NCHW copy, device), or None."""
    try:
        import kornia.augmentation as K
        import torch
    except ImportError:
        return None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.from_numpy(np.asarray(images01).transpose(0, 3, 1, 2).copy()).to(device)
    aug = K.AugmentationSequential(
        K.RandomHorizontalFlip(p=0.5),
        # rotation and translation in one warp, 'border': the edge mode of the others
        K.RandomAffine(degrees=MAX_DEGREES, translate=(MAX_FRACTION, MAX_FRACTION), p=1.0,
                       padding_mode="border"),
        K.ColorJitter(brightness=MAX_DELTA, contrast=0.2, saturation=0.2, p=1.0))
    fn = torch.compile(aug) if compile_it else aug

    def run():
        with torch.no_grad():
            fn(x)
        if device == "cuda":
            torch.cuda.synchronize()
    return run, "torch-" + device


def version(module_name):
    try:
        return __import__(module_name).__version__
    except (ImportError, AttributeError):
        return None


def bench_shape(shape, reps, slow_s, torch_compile):
    """Compiles, warms up and times every library at `shape`. Returns {library: result}."""
    n = shape[0]
    root = jax.random.key(0)
    images = jax.random.uniform(jax.random.key(1), shape, jnp.float32, -1.0, 1.0)
    images01 = jax.block_until_ready((images + 1.0) / 2.0)
    # One key per call, split up front: indexing a key array is itself an eager JAX op
    # (0.2-0.4 ms on a 2-core CPU) that would otherwise be timed with every library.
    keys = list(jax.random.split(root, reps + 1))
    floor = jax.jit(lambda x: x * 1.0001 + 1e-4)
    p = jnp.float32(1.0)  # traced, as in training (ADA changes p without recompiling)
    jax_fns = {"floor": (lambda key, x: floor(x), (images,)),
               "ganaug_jax": (ganaug_pipeline(), (images, p)),
               PURE: (ganaug_pipeline(), (images, p)),
               "dm-pix": (dm_pix_pipeline(), (images01,)),
               "dm-pix-fused": (dm_pix_pipeline(fused_affine=True), (images01,)),
               "augmax": (augmax_pipeline(), (images01,))}
    runners, compile_s, warm_s = {}, {}, {}
    if not A.fast_kernels_available():
        del jax_fns[PURE]  # ganaug_jax is the pure-JAX path already
    for name, (fn, args) in jax_fns.items():
        with A.without_fast_kernels() if name == PURE else contextlib.nullcontext():
            compiled, compile_s[name] = common.timed_compile(
                lambda f=fn, a=args: jax.jit(f).lower(keys[0], *a).compile())
        runners[name] = lambda key, c=compiled, a=args: jax.block_until_ready(c(key, *a))
    kornia, kornia_device = kornia_runner(images01, torch_compile) or (None, None)
    if kornia is not None:
        runners["kornia"] = lambda key: kornia()
        # kornia "compile": first call (includes torch.compile tracing when enabled)
        _, compile_s["kornia"] = common.timed_compile(kornia)
    for name, run in runners.items():  # warm-up
        start = time.perf_counter()
        run(keys[0])
        warm_s[name] = time.perf_counter() - start
    lib_reps = {name: reps if warm_s[name] <= slow_s else min(reps, 5) for name in runners}
    times = {name: [] for name in runners}
    for rep in range(reps):  # interleaved: every library once per repetition
        for name, run in runners.items():
            if rep < lib_reps[name]:
                start = time.perf_counter()
                run(keys[rep + 1])
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    # Back to back (warm caches, no other library in between): the floor and ganaug_jax again.
    hot = {}
    for name in ("floor", "ganaug_jax"):
        runs = []
        for rep in range(reps):
            start = time.perf_counter()
            runners[name](keys[rep + 1])
            runs.append(time.perf_counter() - start)
        hot[name] = statistics.median(runs)
    return {name: {"compile_s": compile_s[name], "median_s": medians[name],
                   "reps": len(times[name]), "capped": lib_reps[name] < reps,
                   "images_per_s": n / medians[name],
                   "fraction_of_floor": medians["floor"] / medians[name],
                   "ratio_vs_ganaug": medians[name] / medians["ganaug_jax"],
                   **({"back_to_back_median_s": hot[name],
                       "back_to_back_fraction_of_floor": hot["floor"] / hot[name]}
                      if name in hot else {}),
                   **({"device_kind": kornia_device} if name == "kornia" else {})}
            for name in runners}


def run(*, shapes=SHAPES, reps: int = 7, json_path: str | None = None, quick: bool = False,
        slow_s: float = 60.0, torch_compile: bool = False, chart: str | None = None) -> list:
    """Benchmarks every shape; prints JSON lines and the markdown table; returns the rows."""
    common.check_reps(reps)
    missing = [name for name in ("dm_pix", "augmax") if importlib.util.find_spec(name) is None]
    if missing:
        raise ValueError(f"the augment suite compares against dm-pix and augmax; missing "
                         f"{', '.join(missing)}: pip install 'ganaug_jax[bench]'")
    shapes = list(shapes)
    if quick:
        reps, shapes = 5, shapes[:1]
    device = jax.devices()[0]
    versions = {"floor": jax.__version__, "ganaug_jax": ganaug_jax.__version__,
                PURE: ganaug_jax.__version__,
                "dm-pix": version("dm_pix"), "dm-pix-fused": version("dm_pix"),
                "augmax": version("augmax"),
                "kornia": version("kornia")}
    print(f"# augment suite: device_kind={device.device_kind} device_count={jax.device_count()} "
          f"jax={jax.__version__} dtype=float32 reps={reps}" + (" (quick)" if quick else ""),
          flush=True)
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    rows, all_lines = [], []
    env = common.environment()
    for shape in shapes:
        results = bench_shape(shape, reps, slow_s, torch_compile)
        lines = []
        for name, r in results.items():
            line = {"suite": "augment", "library": name, "shape": list(shape),
                    "dtype": "float32", **env, "library_version": versions[name], **r,
                    "date": date}
            if name == "floor":
                line["bandwidth_gb_s"] = 2 * np.prod(shape) * 4 / r["median_s"] / 1e9
            lines.append(line)
        rows.append((shape, results))
        all_lines += lines
        common.write_json_lines(lines, json_path)  # each shape's rows as soon as they are known

    has_kornia = any("kornia" in r for _, r in rows)
    has_pure = any(PURE in r for _, r in rows)
    header = ["shape", "ganaug_jax img/s"] + (["pure JAX img/s"] if has_pure else [])
    header += ["dm-pix img/s", "dm-pix fused img/s", "augmax img/s"]
    header += ["kornia img/s", "ganaug/kornia"] if has_kornia else []
    header += ["ganaug/dm-pix", "ganaug/dm-pix fused", "ganaug/augmax", "% of memory floor",
               "% of floor, back to back", "compile s"]
    table = []
    for shape, r in rows:
        def ips(name):
            return f"{r[name]['images_per_s']:,.0f}" + (" (5 reps)" if r[name]["capped"] else "")
        cells = ["x".join(map(str, shape)), ips("ganaug_jax")] + ([ips(PURE)] if has_pure else [])
        cells += [ips("dm-pix"), ips("dm-pix-fused"), ips("augmax")]
        if has_kornia:
            cells += ([ips("kornia"), f"{r['kornia']['ratio_vs_ganaug']:.2f}x"] if "kornia" in r
                      else ["n/a", "n/a"])
        cells += [f"{r['dm-pix']['ratio_vs_ganaug']:.2f}x",
                  f"{r['dm-pix-fused']['ratio_vs_ganaug']:.2f}x",
                  f"{r['augmax']['ratio_vs_ganaug']:.2f}x",
                  f"{100 * r['ganaug_jax']['fraction_of_floor']:.1f}%",
                  f"{100 * r['ganaug_jax']['back_to_back_fraction_of_floor']:.1f}%",
                  f"{r['ganaug_jax']['compile_s']:.2f}"]
        table.append(cells)
    print("\n" + common.markdown_table(header, table), flush=True)
    if chart:
        names = [n for n in ("ganaug_jax", PURE, "dm-pix", "dm-pix-fused", "augmax", "kornia")
                 if any(n in r for _, r in rows)]
        common.bar_chart(chart, ["x".join(map(str, s)) for s, _ in rows],
                         {n: [r[n]["images_per_s"] if n in r else float("nan") for _, r in rows]
                          for n in names},
                         title=f"augmentation images/sec, {device.device_kind}")
    return all_lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", help="comma-separated NxHxWxC, e.g. 256x32x32x3,64x64x64x3")
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions (>= 5)")
    parser.add_argument("--json", help="append one JSON line per measurement to this file")
    parser.add_argument("--quick", action="store_true", help="first shape only, 5 reps")
    parser.add_argument("--slow-s", type=float, default=60.0,
                        help="a library slower than this per call at a shape runs only 5 reps")
    parser.add_argument("--torch-compile", action="store_true", help="torch.compile kornia")
    parser.add_argument("--chart", help="draw a PNG bar chart here")
    args = parser.parse_args()
    shapes = ([tuple(int(d) for d in s.split("x")) for s in args.shapes.split(",")]
              if args.shapes else SHAPES)
    run(shapes=shapes, reps=args.reps, json_path=args.json, quick=args.quick,
        slow_s=args.slow_s, torch_compile=args.torch_compile, chart=args.chart)


if __name__ == "__main__":
    main()
