"""On-device image augmentation for GANs: functional, batched, per-sample random, fused.

Image contract (checked on entry by every public function):
  * images: (N, H, W, C) NHWC batches, H, W >= 2, any C >= 1 (grayscale, RGB, multispectral);
  * dtype float32 or bfloat16; values nominally in [-1, 1] (the GAN convention). Ops compute
    in float32, return the input dtype, are range-agnostic where the maths allows, and never
    clip;
  * per-sample parameters are arrays of shape (N,) (scalars broadcast);
  * coordinates: x = column, y = row, pixel centres at integers, geometric ops about the
    image centre; rotation angles in degrees, counter-clockwise on screen;
  * borders: 'reflect' (half-sample symmetric), 'edge', 'constant' (`fill`); interpolation:
    'bilinear' or 'nearest';
  * colour: the luma is the per-pixel channel mean, defined for any C. Hue rotation is RGB only
    and the identity when C != 3; saturation, grayscale and luma flip work on any C; contrast
    is about the per-image mean over pixels and channels.

Deterministic ops take images and per-sample parameters; each has a random twin
`random_X(key, images, *, ..., p)`. `make_pipeline(ops)` composes ops (from `op(name, ...)`)
into one pure function `(key, images, p) -> images` that resamples each image once and
applies one colour transform; `diffaugment` and `ada` build the published presets, and
`make_ada_update` is StyleGAN2-ADA's adaptive-p controller. Everything works under jit,
vmap and grad, and on batches sharded over devices.

On CPU the resample + colour pass runs as an XLA FFI kernel when the package's C++ extension
was built at install time (`fast_kernels_available()`); `without_fast_kernels()` traces the
pure-JAX path instead. Both give the same results to float32 rounding.
"""

from ganaug_jax.augment._ada import AdaState, ada_init, make_ada_update
from ganaug_jax.augment._contract import BORDERS, INTERPOLATIONS
from ganaug_jax.augment._warp import fast_kernels_available, without_fast_kernels
from ganaug_jax.augment._ops import (adjust_brightness, adjust_contrast, adjust_gamma, adjust_hue,
                                     adjust_saturation, affine_transform, anisotropic_scale,
                                     crop_and_resize, cutout, flip_left_right, flip_up_down,
                                     gaussian_blur, gaussian_noise, grayscale, luma_flip, rot90,
                                     rotate, scale, shear, translate)
from ganaug_jax.augment._pipeline import Pipeline, make_pipeline
from ganaug_jax.augment._presets import ADA_PIPES, ADA_SHORTHANDS, DIFFAUGMENT_POLICIES, ada, diffaugment, preset
from ganaug_jax.augment._random import (random_anisotropic_scale, random_brightness, random_contrast,
                                        random_cutout, random_flip_left_right, random_flip_up_down,
                                        random_gamma, random_gaussian_blur, random_gaussian_noise,
                                        random_grayscale, random_hue, random_luma_flip,
                                        random_resized_crop, random_rot90, random_rotate,
                                        random_saturation, random_scale, random_shear,
                                        random_translate)
from ganaug_jax.augment._specs import OPS, Op, op

__all__ = [
    "AdaState", "ada_init", "make_ada_update", "BORDERS", "INTERPOLATIONS",
    "fast_kernels_available", "without_fast_kernels",
    "adjust_brightness", "adjust_contrast", "adjust_gamma", "adjust_hue", "adjust_saturation",
    "affine_transform", "anisotropic_scale", "crop_and_resize", "cutout", "flip_left_right",
    "flip_up_down", "gaussian_blur", "gaussian_noise", "grayscale", "luma_flip", "rot90",
    "rotate", "scale", "shear", "translate", "Pipeline", "make_pipeline", "ADA_PIPES",
    "ADA_SHORTHANDS", "DIFFAUGMENT_POLICIES", "ada", "diffaugment", "preset",
    "random_anisotropic_scale", "random_brightness", "random_contrast", "random_cutout",
    "random_flip_left_right", "random_flip_up_down", "random_gamma", "random_gaussian_blur",
    "random_gaussian_noise", "random_grayscale", "random_hue", "random_luma_flip",
    "random_resized_crop", "random_rot90", "random_rotate", "random_saturation",
    "random_scale", "random_shear", "random_translate", "OPS", "Op", "op",
]
