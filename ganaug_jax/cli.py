"""The `ganaug` command. Subcommands parse their flags and call importable functions."""

import argparse
import sys
from typing import Sequence

import ganaug_jax


def _train(args, overrides) -> int:
    from ganaug_jax import config as config_lib
    from ganaug_jax.train.loop import train_and_evaluate
    config = config_lib.apply_overrides(config_lib.load_config(args.config), overrides)
    train_and_evaluate(config, args.workdir, force=args.force, progress=not args.no_progress)
    return 0


def _generate(args, overrides) -> int:
    from ganaug_jax.train.generate import generate, load_run_state, save_npz
    if overrides:
        raise ValueError(f"ganaug generate takes no --config overrides, got {overrides}")
    if not args.out.endswith(".npz"):
        raise ValueError(f"--out must name a .npz file, got {args.out!r}")
    _, run, state = load_run_state(args.workdir)
    samples = generate(run, state, num=args.num, seed=args.seed, label=args.label)
    save_npz(args.out, samples, is_image=run.source.is_image)
    print(f"wrote {args.num} samples to {args.out} (checkpoint step {int(state.step)})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ganaug",
        description="GAN-based data augmentation in JAX: augment on device, train GANs, "
                    "make labelled synthetic data, measure cost.")
    parser.add_argument("--version", action="version", version=f"ganaug_jax {ganaug_jax.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser(
        "train", help="train a GAN (resumes from the workdir's latest checkpoint)",
        description="Train a GAN. Override any config key with --config.KEY=VALUE, "
                    "e.g. --config.seed=3 --config.num_steps=500.")
    train.add_argument("--config", required=True, help="a Python config file, e.g. configs/ring8.py")
    train.add_argument("--workdir", required=True, help="run directory (checkpoints, metrics, samples)")
    train.add_argument("--force", action="store_true", help="resume even if the config differs")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(run=_train)

    gen = commands.add_parser("generate", help="sample the EMA generator of the latest checkpoint")
    gen.add_argument("--workdir", required=True)
    gen.add_argument("--num", type=int, required=True, help="number of samples")
    gen.add_argument("--seed", type=int, default=0, help="sample i depends only on (seed, i)")
    gen.add_argument("--out", required=True, help="output .npz with x (and y when conditional)")
    gen.add_argument("--label", type=int, default=None, help="class of every sample (conditional)")
    gen.set_defaults(run=_generate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = [a[len("--config."):] for a in argv if a.startswith("--config.")]
    args = parser.parse_args([a for a in argv if not a.startswith("--config.")])
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args, overrides)
    except (ValueError, RuntimeError) as error:  # bad input and stopped runs: one clear line
        print(f"ganaug {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
