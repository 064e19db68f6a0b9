"""Generation throughput (EMA generator over a batch sweep) and export-format throughput; see
ganaug_jax/bench/generate.py.

    python benchmarks/generate.py [--json FILE] [--chart PNG] [--reps 5]
(the same suite as `ganaug bench --suite generate`)
"""

import sys

from ganaug_jax import cli

if __name__ == "__main__":
    sys.exit(cli.main(["bench", "--suite", "generate", *sys.argv[1:]]))
