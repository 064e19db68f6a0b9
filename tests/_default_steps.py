"""Shared by the kernel tests: two training steps of a small DCGAN built as `ganaug train`
builds it from configs/default.py, with `model.cpu_conv_library` set."""

import pathlib

import jax
import optax

from ganaug_jax import config as config_lib
from ganaug_jax.models import make_gan
from ganaug_jax.train import sharding
from ganaug_jax.train.build import Run, build_step, model_kernel_grad, step_compiler_options
from ganaug_jax.train.state import create_train_state

ROOT = pathlib.Path(__file__).resolve().parents[1]


def two_steps(devices, library: str) -> tuple[list[float], str]:
    """(d_loss, g_loss) of two steps on a mesh of `devices`, and the compiled step's HLO."""
    config = config_lib.load_config(str(ROOT / "configs" / "default.py"))
    config.model.cpu_conv_library = library
    shape, latent, n = (16, 16, 3), 16, 16
    tx = optax.adam(2e-4, b1=0.5, b2=0.999)
    g, d = make_gan("dcgan", data_shape=shape, latent_dim=latent, width=16,
                    kernel_grad=model_kernel_grad(config))
    mesh = sharding.make_mesh(devices)
    state = jax.device_put(create_train_state(jax.random.key(0), g, d, tx, tx, data_shape=shape,
                                              latent_dim=latent, num_classes=0),
                           sharding.replicated(mesh))
    batch = {"x": jax.device_put(jax.random.uniform(jax.random.key(1), (1, n, *shape),
                                                    minval=-1, maxval=1),
                                 sharding.batch_sharding(mesh, 1))}
    step = sharding.shard_step(build_step(config, Run(None, g, d, tx, tx, latent, 0)), mesh,
                               batch_axis=1, compiler_options=step_compiler_options(config, mesh))
    compiled = step.lower(state, batch).compile()
    state, first = compiled(state, batch)
    _, second = compiled(state, batch)
    return [float(m[k]) for m in (first, second) for k in ("d_loss", "g_loss")], compiled.as_text()
