"""Grid of 25 Gaussians ({-4, -2, 0, 2, 4}^2, std 0.05): unconditional MLP GAN.

Command:  ganaug train --config configs/grid25.py --workdir runs/grid25
Run time: about 1-2 minutes on 2 CPU cores.
Expected: 25/25 modes and >= 95 % high-quality samples for every seed;
          measure with `python benchmarks/mode_coverage.py --mixture grid25`.
"""

from configs import default


def get_config():
    c = default.get_config()
    c.data.source = "grid25"
    c.model.architecture = "mlp"
    return c
