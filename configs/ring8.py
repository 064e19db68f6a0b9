"""Ring of 8 Gaussians (std 0.01, radius 1): unconditional MLP GAN.

Command:  ganaug train --config configs/ring8.py --workdir runs/ring8
Run time: about 2 minutes on 2 CPU cores (65-117 s per seed measured, 4,000 steps with R1).
Expected: 8/8 modes on seeds 0-4, but only 57.7 +- 2.0 % high-quality samples (min 54.6 %),
          below the >= 97 % bar (PROTOCOLS.md section 1);
          measure with `python benchmarks/mode_coverage.py --mixture ring8`.
"""

from configs import default


def get_config():
    c = default.get_config()
    c.data.source = "ring8"
    c.model.architecture = "mlp"
    c.num_steps = 16_000            # seed 0 HQ: 4,000 steps 79 %, 12,000 steps 96 % (8,000 with R1 0.1: 95 %)
    c.loss.r1_gamma = 0.03          # none: G circles one blob; 0.01: 1-2 modes; 0.1: blurrier
    c.optim.g_lr = 1e-3             # 1e-4: a blurry disc after 4,000 steps; 5e-4: 29 % HQ
    c.optim.d_lr = 1e-3
    c.optim.b2 = 0.99
    c.optim.schedule = "cosine"     # decay to 0 sharpens the modes at the end
    return c
