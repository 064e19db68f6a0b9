"""Device scaling of the sharded training step (1, 2, 4, 8 devices at a fixed per-device
batch); see ganaug_jax/bench/scaling.py.

    python benchmarks/scaling.py [--json FILE] [--reps 5]
(the same suite as `ganaug bench --suite scaling`)
"""

import sys

from ganaug_jax import cli

if __name__ == "__main__":
    sys.exit(cli.main(["bench", "--suite", "scaling", *sys.argv[1:]]))
