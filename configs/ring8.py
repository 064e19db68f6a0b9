"""Ring of 8 Gaussians (std 0.01, radius 1): unconditional MLP GAN.

Command:  ganaug train --config configs/ring8.py --workdir runs/ring8
Run time: 382-472 s per seed measured on 2 CPU cores with two runs sharing them
          (16,000 steps; a 4,000-step run took 64 s alone against 101-117 s shared).
Expected: 8/8 modes on every seed 0-4, 96.58 +- 0.19 % high-quality samples
          (min 95.92 %): the >= 97 % bar of PROTOCOLS.md section 1 is not met yet;
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
