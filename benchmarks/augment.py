"""Augmentation throughput vs dm-pix, augmax and kornia; see ganaug_jax/bench/augment.py.

    python benchmarks/augment.py [--shapes 256x32x32x3,...] [--reps 7] [--json FILE] [--quick]
(the same suite as `ganaug bench --suite augment`)
"""

from ganaug_jax.bench.augment import main

if __name__ == "__main__":
    main()
