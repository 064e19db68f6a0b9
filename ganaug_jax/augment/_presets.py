"""Preset pipelines: DiffAugment policies and StyleGAN2-ADA pipes.

DiffAugment (Zhao et al. 2020), images in [-1, 1], every op on every sample (call with p=1):
  color: brightness U(-0.5, 0.5), saturation U(0, 2), contrast U(0.5, 1.5);
  translation: whole-pixel shifts up to 1/8 of the size, zero fill;
  cutout: a box of half the size at a random whole-pixel offset, zero fill.
StyleGAN2-ADA (Karras et al. 2020), each op applied with probability p (p/2 for the flips,
3p/4 for rot90 with k in {1, 2, 3}, 1 - sqrt(1 - p) for each of the two rotations):
  blit: xflip, rot90, integer translation round(U(-1/8, 1/8) * size);
  geom: scale 2**N(0, 0.2), rotation U(-180, 180), anisotropic scale 2**N(0, 0.2), rotation,
        fractional translation N(0, 1/8) * size;
  color: brightness N(0, 0.2), contrast 2**N(0, 0.5) about 0, luma flip, hue U(-180, 180),
         saturation 2**N(0, 1) (luma: the channel mean, StyleGAN2-ADA's (1, 1, 1) / sqrt(3));
  filter: four frequency bands each scaled by 2**N(0, 1); noise: |N(0, 0.1)| std;
  cutout: a half-size box at a uniform centre.
Geometric ops use reflect borders and bilinear sampling (StyleGAN2-ADA upsamples 2x with
sym6 wavelets before sampling; bilinear is cheaper and slightly blurrier).
"""

import jax.numpy as jnp

from ganaug_jax.augment import _specs
from ganaug_jax.augment._pipeline import Pipeline, make_pipeline

DIFFAUGMENT_POLICIES = {
    "color": lambda: [_specs.brightness(max_delta=0.5),
                      _specs.saturation(factor_range=(0.0, 2.0)),
                      _specs.contrast(factor_range=(0.5, 1.5))],
    "translation": lambda: [_specs.translate(max_fraction=0.125, mode="randint")],
    "cutout": lambda: [_specs.cutout(size=0.5, mode="randint")],
}


def _ada_rotation_probability(p):
    return 1.0 - jnp.sqrt(jnp.maximum(1.0 - p, 0.0))


ADA_PIPES = {
    "blit": lambda: [_specs.flip_left_right(probability=lambda p: p / 2),
                     _specs.rot90(probability=lambda p: 3 * p / 4),
                     _specs.translate(max_fraction=0.125, mode="round")],
    "geom": lambda: [_specs.scale(log2_std=0.2),
                     _specs.rotate(max_degrees=180.0, probability=_ada_rotation_probability),
                     _specs.anisotropic_scale(log2_std=0.2),
                     _specs.rotate(max_degrees=180.0, probability=_ada_rotation_probability),
                     _specs.translate(max_fraction=0.125, mode="normal")],
    "color": lambda: [_specs.brightness(std=0.2), _specs.contrast(log2_std=0.5, about="zero"),
                      _specs.luma_flip(probability=lambda p: p / 2),
                      _specs.hue(max_degrees=180.0), _specs.saturation(log2_std=1.0)],
    "filter": lambda: [_specs.ada_filter(log2_std=1.0)],
    "noise": lambda: [_specs.noise(std=0.1)],
    "cutout": lambda: [_specs.cutout(size=0.5, mode="uniform")],
}

# StyleGAN2-ADA's shorthands, in its pipe order.
ADA_SHORTHANDS = {
    "b": ["blit"], "bg": ["blit", "geom"], "bgc": ["blit", "geom", "color"],
    "bgcf": ["blit", "geom", "color", "filter"],
    "bgcfn": ["blit", "geom", "color", "filter", "noise"],
    "bgcfnc": ["blit", "geom", "color", "filter", "noise", "cutout"],
}


def _split(spec: str, name: str) -> list:
    if not isinstance(spec, str):
        raise ValueError(f"{name} must be a comma-separated string of names, got {spec!r}")
    parts = [part.strip() for part in spec.split(",") if part.strip()]
    if not parts:
        raise ValueError(f"{name} must name at least one item, got {spec!r}")
    return parts


def diffaugment(*, policy: str = "color,translation,cutout") -> Pipeline:
    """DiffAugment pipeline for a comma-separated policy of 'color', 'translation', 'cutout'."""
    ops = []
    for part in _split(policy, "policy"):
        if part not in DIFFAUGMENT_POLICIES:
            raise ValueError(f"unknown DiffAugment policy {part!r} in policy {policy!r}; "
                             f"expected a comma-separated subset of {sorted(DIFFAUGMENT_POLICIES)}")
        ops += DIFFAUGMENT_POLICIES[part]()
    return make_pipeline(ops, border="constant", interpolation="bilinear", fill=0.0)


def ada(*, pipes: str = "bgc") -> Pipeline:
    """StyleGAN2-ADA pipeline: a shorthand ('bgc', 'bgcfnc', ...) or comma-separated pipe names
    from 'blit', 'geom', 'color', 'filter', 'noise', 'cutout'."""
    parts = _split(pipes, "pipes")
    names = ADA_SHORTHANDS.get(pipes) or parts
    ops = []
    for name in names:
        if name not in ADA_PIPES:
            raise ValueError(f"unknown ADA pipe {name!r} in pipes {pipes!r}; expected a shorthand "
                             f"from {sorted(ADA_SHORTHANDS)} or names from {sorted(ADA_PIPES)}")
        ops += ADA_PIPES[name]()
    return make_pipeline(ops, border="reflect", interpolation="bilinear")


def preset(name: str) -> Pipeline:
    """A pipeline from 'diffaugment:POLICY' (e.g. 'diffaugment:color,translation') or 'ada:PIPES'."""
    if not isinstance(name, str):
        raise ValueError(f"name must be a string 'diffaugment:POLICY' or 'ada:PIPES', got {name!r}")
    family, _, spec = name.partition(":")
    if family == "diffaugment":
        return diffaugment(policy=spec or "color,translation,cutout")
    if family == "ada":
        return ada(pipes=spec or "bgc")
    raise ValueError(f"unknown preset {name!r}; expected 'diffaugment:POLICY' or 'ada:PIPES'")
