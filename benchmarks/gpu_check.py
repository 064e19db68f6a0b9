"""The GPU rows of issues 2 and 5, one step per process (benchmarks/gpu_check.sh runs them, each
under its own time limit, on the device machine).

    python benchmarks/gpu_check.py STEP --out DIR [--quick]

STEP:
  env         versions, devices, nvidia-smi; fails unless JAX sees a GPU (without --quick)
  augment     the augmentation suite (ganaug_jax, pure JAX, dm-pix, augmax, kornia on CUDA,
              the memory floor): images/sec and the fraction of the device's bandwidth floor
  train       the train suite's four configs of issue 5 in float32 against PyTorch eager,
              channels-last and torch.compile on CUDA, with the plain-XLA convolutions, MFU
  train_bf16  the same four with bfloat16 compute, MFU against the bfloat16 matmul peak
  loop        the run loop against the bare step
  variants    the conditional and the ADA configs in float32
  generate    EMA-generator samples/sec over the batch sweep, npz and PNG-folder exports (the
              TFDS export needs tensorflow-datasets, which the device image lacks)
Every measurement is appended to DIR/gpu.jsonl as soon as it is known (per train config,
augment shape and generate phase); charts go to DIR/gpu_<step>.png. --quick: the suites'
small sweeps (for checking this script on a CPU).
"""

import argparse
import importlib.metadata
import pathlib
import subprocess
import sys


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def env(out: pathlib.Path, quick: bool) -> None:
    import jax
    names = ["jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "torch",
             "dm-pix", "augmax", "kornia", "ml_collections", "tensorboardX"]
    print(f"python {sys.version.split()[0]}; " + ", ".join(f"{n} {_version(n)}" for n in names))
    print("jax devices:", jax.devices(), "kind:", jax.devices()[0].device_kind)
    try:
        import torch
        print("torch cuda:", torch.cuda.is_available(),
              torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
    except ImportError:
        print("torch: missing")
    try:
        print(subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout)
    except (OSError, subprocess.TimeoutExpired) as error:
        print("nvidia-smi:", error)
    if jax.devices()[0].platform != "gpu" and not quick:
        raise SystemExit("JAX sees no GPU: nothing here would measure one (check the jax CUDA "
                         "plugin's version against jaxlib's above)")


def augment(out: pathlib.Path, quick: bool) -> None:
    from ganaug_jax.bench import augment as suite
    suite.run(reps=7, quick=quick, json_path=str(out / "gpu.jsonl"),
              chart=str(out / "gpu_augment.png"))


def train(out: pathlib.Path, quick: bool, *, bfloat16: bool = False, variants: bool = False,
          name: str = "train") -> None:
    """The four configs of issue 5 (CONFIGS[:4]), or with `variants` the conditional and
    ADA ones (CONFIGS[4:])."""
    from ganaug_jax.bench import train_step
    configs = train_step.CONFIGS[4:] if variants else train_step.CONFIGS[:4]
    train_step.run(configs=configs[:1] if quick else configs, reps=5, iters=1 if quick else 2,
                   torch_compile=not quick, baseline=not (quick or bfloat16), bfloat16=bfloat16,
                   json_path=str(out / "gpu.jsonl"), chart=str(out / f"gpu_{name}.png"))


def loop(out: pathlib.Path, quick: bool) -> None:
    from ganaug_jax.bench import train_step
    train_step.loop_efficiency(steps=30 if quick else 60, runs=1 if quick else 5,
                               json_path=str(out / "gpu.jsonl"), quick=quick)


def generate(out: pathlib.Path, quick: bool) -> None:
    from ganaug_jax.bench import generate as suite
    suite.run(batches=(16, 64) if quick else suite.BATCHES, num=256 if quick else 2048,
              export_num=200 if quick else 1000, formats=("npz", "folder"),
              json_path=str(out / "gpu.jsonl"), chart=str(out / "gpu_generate.png"))


STEPS = {"env": env, "augment": augment, "train": train,
         "train_bf16": lambda out, quick: train(out, quick, bfloat16=True, name="train_bf16"),
         "loop": loop, "generate": generate,
         "variants": lambda out, quick: train(out, quick, variants=True, name="variants")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=list(STEPS))
    parser.add_argument("--out", required=True, help="folder for gpu.jsonl and the charts")
    parser.add_argument("--quick", action="store_true", help="small sweeps (checking on a CPU)")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    STEPS[args.step](out, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
