"""Ring of 8 Gaussians (std 0.01, radius 1): unconditional MLP GAN.

Command:  ganaug train --config configs/ring8.py --workdir runs/ring8
Run time: about 1-2 minutes on 2 CPU cores.
Expected: 8/8 modes and >= 97 % high-quality samples (PROTOCOLS.md section 1) for every seed;
          measure with `python benchmarks/mode_coverage.py --mixture ring8`.
"""

from configs import default


def get_config():
    c = default.get_config()
    c.data.source = "ring8"
    c.model.architecture = "mlp"
    return c
