"""Data parallelism: a 1-D `Mesh` over every device with a 'data' axis, the state replicated,
batches split along 'data', one `jax.jit` with explicit shardings and the state donated."""

from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Splits dimension `batch_axis` over the 'data' axis."""
    return NamedSharding(mesh, P(*([None] * batch_axis), DATA_AXIS))


def check_batch_divisible(batch_size: int, mesh: Mesh, name: str = "batch_size") -> None:
    devices = mesh.devices.size
    if batch_size % devices:
        raise ValueError(f"{name} = {batch_size} must be divisible by the number of devices "
                         f"({devices}); use a multiple of {devices}")


def shard_step(step: Callable, mesh: Mesh, *, batch_axis: int = 0,
               compiler_options: dict | None = None) -> Callable:
    """jit(step) with the state (argument 0) replicated and donated, the batch (argument 1)
    split along `batch_axis`, and both outputs (state, metrics) replicated; XLA
    `compiler_options` as `jax.jit` takes them."""
    rep = replicated(mesh)
    return jax.jit(step, in_shardings=(rep, batch_sharding(mesh, batch_axis)),
                   out_shardings=(rep, rep), donate_argnums=(0,),
                   compiler_options=compiler_options or None)
