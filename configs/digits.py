"""Class-conditional DCGAN with DiffAugment on scikit-learn's handwritten digits (8x8, 10 classes).

Command:  ganaug train --config configs/digits.py --workdir runs/digits
Run time: about 1-2 minutes on 2 CPU cores (52-108 s measured).
Expected: a classifier trained on the real digits labels >= 90 % of the EMA generator's
          class-conditional samples with their conditioning class (measured: 100.0 %, 99.8 %,
          100.0 % for seeds 0-2 with `python benchmarks/digits_quality.py --seeds 0 1 2`).
"""

from configs import default


def get_config():
    c = default.get_config()
    c.data.source = "digits"
    c.num_steps = 3000
    c.batch_size = 128
    c.checkpoint_every = 1000
    c.sample_every = 1000
    c.model.architecture = "dcgan"
    c.model.conditional = True
    c.model.conditioning = "concat"  # measured: 'cbn' learned the classes far slower here
    c.model.width = 64
    c.model.depth = 0             # derived from the resolution
    c.model.spectral_norm = False
    c.loss.name = "non_saturating"
    c.optim.g_lr = 2e-4
    c.optim.d_lr = 2e-4
    c.optim.b1 = 0.5
    c.optim.b2 = 0.999
    c.optim.ema_half_life_images = 20_000
    c.augment.kind = "diffaugment"
    c.augment.policy = "color,translation"
    return c
