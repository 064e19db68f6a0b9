"""Training-step throughput vs PyTorch (eager, channels-last, torch.compile), MFU, compile time,
and the run loop's efficiency; see ganaug_jax/bench/train_step.py for the protocol.

    python benchmarks/train_step.py [--json FILE] [--chart PNG] [--reps 5] [--bfloat16]
(the same suite as `ganaug bench --suite train`)
"""

import sys

from ganaug_jax import cli

if __name__ == "__main__":
    sys.exit(cli.main(["bench", "--suite", "train", *sys.argv[1:]]))
