"""Orbax checkpoints of the whole TrainState: asynchronous saves, the last N kept, exact restore."""

import pathlib

import jax
import orbax.checkpoint as ocp

from ganaug_jax.train.state import TrainState


class CheckpointError(RuntimeError):
    """A checkpoint is missing or cannot be read."""


def make_manager(workdir: str, *, keep: int, read_only: bool = False) -> ocp.CheckpointManager:
    directory = pathlib.Path(workdir).resolve() / "checkpoints"
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True,
                                           create=not read_only, read_only=read_only)
    return ocp.CheckpointManager(directory, options=options)


def save(manager: ocp.CheckpointManager, state: TrainState) -> None:
    """Starts an asynchronous save of `state` at its step (returns before the write ends)."""
    manager.save(int(state.step), args=ocp.args.StandardSave(state), force=True)


def restore_latest(manager: ocp.CheckpointManager, like: TrainState):
    """The latest checkpoint restored into the structure, shapes and shardings of `like` (a
    TrainState of arrays or of jax.ShapeDtypeStructs), or None when there is none."""
    step = manager.latest_step()
    if step is None:
        return None
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like)
    try:
        return manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as error:  # Orbax raises many types for unreadable files
        raise CheckpointError(
            f"checkpoint at step {step} in {manager.directory} cannot be read "
            f"({type(error).__name__}: {error}); delete that step's folder to fall back to an "
            "earlier checkpoint") from error
