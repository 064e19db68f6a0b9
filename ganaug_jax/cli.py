"""The `ganaug` command. Subcommands parse their flags and call importable functions."""

import argparse
import sys
from typing import Sequence

import ganaug_jax


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ganaug",
        description="GAN-based data augmentation in JAX: augment on device, train GANs, "
                    "make labelled synthetic data, measure cost.")
    parser.add_argument("--version", action="version", version=f"ganaug_jax {ganaug_jax.__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
