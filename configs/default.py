"""Every configuration key of `ganaug train`, with its default.

Variants import this file and override a few fields. Command-line overrides use the same
names: `ganaug train --config configs/ring8.py --workdir runs/x --config.seed=3`.
Run time: 2-D ring of 8 Gaussians for 4,000 steps, about a minute on 2 CPU cores.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0                    # everything random derives from it (and the step)
    c.num_steps = 4000            # generator updates
    c.batch_size = 256            # global batch of real samples per D step; divides by devices
    c.checkpoint_every = 1000     # steps between checkpoints (and one at the end)
    c.keep_checkpoints = 3        # checkpoints kept (the latest N)
    c.log_every = 100             # steps between metrics.jsonl / TensorBoard rows
    c.sample_every = 1000         # steps between PNG sample grids (0: only at the end)

    c.data = ml_collections.ConfigDict()
    c.data.source = "ring8"       # 'ring8', 'grid25' (2-D mixtures); images: 'digits'
                                  # (scikit-learn), 'tfds:NAME', a .npz path or an image folder
    c.data.data_dir = ""          # TFDS data directory ('' : TFDS's default)
    c.data.resolution = 0         # images resized to R x R (0: as stored; must suit the model)
    c.data.channels = 0           # 1 or 3 (0: as stored)
    c.data.test_fraction = 0.25   # held-out real test split (never trained on); 0: the data
                                  # set's own 'test' split
    c.data.split_seed = 0         # seed of the train/test split (keep it fixed across runs)
    c.data.per_class = 0          # > 0: k training images per class (low-data regime)
    c.data.class_counts = ""      # e.g. '3:5,5:5,8:5': per-class counts (imbalanced regime)
    c.data.subset_seed = 0        # seed of the per_class / class_counts selection
    c.data.placement = "device"   # 'device': the data set is placed on the devices once and
                                  # batches are gathered there; 'host': it stays in host memory
                                  # and batches stream to the devices (data that does not fit)

    c.model = ml_collections.ConfigDict()
    c.model.architecture = "mlp"  # 'mlp' (vectors) or 'dcgan' (images)
    c.model.latent_dim = 64
    c.model.latent_components = 0 # > 0: G's latent prior is a mixture of this many learned
                                  # Gaussians (DeLiGAN); 0: a plain N(0, I)
    c.model.latent_component_std = 0.25  # std of each mixture component
    c.model.width = 256           # hidden units (mlp) or channels of the last hidden layer (dcgan)
    c.model.depth = 3             # hidden layers (mlp); 0 lets dcgan derive it from the resolution
    c.model.spectral_norm = False # on every discriminator layer
    c.model.minibatch_std = 0     # > 0 (dcgan): D sees the batch std over groups of this size
    c.model.conditional = False   # class-conditional G and projection D (needs labelled data)
    c.model.conditioning = "concat"  # 'concat' (embedding concatenated to z) or 'cbn'
    c.model.compute_dtype = "float32"  # or 'bfloat16' (params and optimizer stay float32)
    c.model.conv_impl = "custom_vjp"  # dcgan stride-2 convs: hand-written gradients, or 'xla'
                                      # (plain autodiff); same values, see models/convs.py
    c.model.cpu_conv_library = "onednn"  # on CPU, the step's convolutions run on oneDNN
                                         # (fastest; 'eigen' where its kernel is not built),
                                         # XLA's Eigen path, or 'ynnpack' (jax's default)

    c.loss = ml_collections.ConfigDict()
    c.loss.name = "non_saturating"  # minimax, non_saturating, wgan, hinge, lsgan
    c.loss.gp_weight = 0.0        # WGAN-GP gradient penalty weight (10 with loss.name='wgan')
    c.loss.r1_gamma = 0.0         # R1 penalty gamma (penalty * gamma / 2)
    c.loss.r1_interval = 1        # lazy regularisation: every k steps, scaled by k
    c.loss.real_label = 1.0       # < 1: one-sided label smoothing
    c.loss.instance_noise_std = 0.0   # initial std of instance noise on D inputs
    c.loss.instance_noise_steps = 0   # steps over which it anneals linearly to 0
    c.loss.feature_matching = 0.0     # weight of the feature-matching term in G's loss
    c.loss.mode_seeking = 0.0         # weight of MSGAN's mode-seeking term in G's loss

    c.optim = ml_collections.ConfigDict()
    c.optim.g_lr = 2e-4
    c.optim.d_lr = 2e-4           # two time-scale update rule: set it apart from g_lr
    c.optim.b1 = 0.5
    c.optim.b2 = 0.999
    c.optim.schedule = "constant"  # 'constant' or 'cosine' (decay to 0 over num_steps)
    c.optim.warmup_steps = 0
    c.optim.n_critic = 1          # D steps per G step (each on its own real batch)
    c.optim.reuse_fake = False    # G update reuses the last D update's fakes (classic DCGAN
                                  # loop, one G forward less); not with loss.mode_seeking
    c.optim.ema_half_life_images = 10_000  # EMA generator; 0 disables averaging

    c.augment = ml_collections.ConfigDict()
    c.augment.kind = "none"       # 'none', 'diffaugment' (every op, p = 1) or 'ada'
    c.augment.policy = "color,translation,cutout"  # DiffAugment policy
    c.augment.ada_pipes = "bgc"   # StyleGAN2-ADA pipes
    c.augment.ada_target = 0.6
    c.augment.ada_speed_images = 500_000
    c.augment.ada_interval = 4
    c.augment.ada_initial_p = 0.0
    c.augment.ada_fixed_p = -1.0  # >= 0: a constant p instead of the adaptive one
    return c
