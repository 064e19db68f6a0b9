"""Orbax checkpoints of the whole TrainState: asynchronous saves, the last N kept, exact restore.

A checkpoint holds two Orbax items:
  * 'state': the state's leaves packed by dtype, one flat array per dtype ({'float32': (P,),
    'int32': ..., ...}, leaves in `jax.tree.leaves` order, each raveled row-major). Orbax's
    per-array work dominates a save's CPU: the 83 leaves of the 32x32x3 DCGAN state took
    142-158 ms of CPU per save, the same bytes packed into 3 arrays 66-76 ms
    (benchmarks/NOTES.md, "Run loop"), CPU that the training step does not get;
  * 'layout': JSON, each leaf's path, shape and dtype in that order, so a checkpoint can be
    read without this code and a state of another shape is named instead of mis-read.
Packing and unpacking are jitted (no host round trip) and keep the state's sharding.
"""

import collections
import logging
import math
import pathlib

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from ganaug_jax.train.state import TrainState


class CheckpointError(RuntimeError):
    """A checkpoint is missing or cannot be read."""


def _handlers() -> dict:
    # No zstd: Orbax compresses by default, which took half of a save's CPU (61-71 ms of a
    # 25 MB state against 32-35 ms; files 23.1 MB against 25.1: weights barely compress).
    return {"state": ocp.PyTreeCheckpointHandler(use_compression=False),
            "layout": ocp.JsonCheckpointHandler()}


def make_manager(workdir: str, *, keep: int, read_only: bool = False) -> ocp.CheckpointManager:
    directory = pathlib.Path(workdir).resolve() / "checkpoints"
    if not read_only:
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True)
        return ocp.CheckpointManager(directory, options=options, item_handlers=_handlers())
    # The options a reader needs; Orbax still logs a warning that the directory is read-only,
    # which is what the caller asked for: silenced.
    options = ocp.CheckpointManagerOptions(read_only=True, create=False, max_to_keep=None,
                                           save_interval_steps=0)
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        return ocp.CheckpointManager(directory, options=options, item_handlers=_handlers())
    finally:
        absl_logger.setLevel(level)


def _layout(tree) -> list[dict]:
    """[{'path', 'shape', 'dtype'}] of every leaf of `tree` (arrays or ShapeDtypeStructs)."""
    return [{"path": jax.tree_util.keystr(path), "shape": list(leaf.shape),
             "dtype": jnp.dtype(leaf.dtype).name}
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)]


@jax.jit
def _pack(state: TrainState) -> dict[str, jax.Array]:
    groups = collections.defaultdict(list)
    for leaf in jax.tree.leaves(state):
        groups[jnp.dtype(leaf.dtype).name].append(leaf.reshape(-1))
    return {dtype: jnp.concatenate(parts) for dtype, parts in groups.items()}


def _unpack(packed: dict[str, jax.Array], like):
    """The inverse of _pack into the structure, shapes and shardings of `like`."""
    leaves, treedef = jax.tree.flatten(like)

    def split(packed):
        offsets = collections.Counter()
        out = []
        for leaf in leaves:
            dtype, size = jnp.dtype(leaf.dtype).name, math.prod(leaf.shape)
            start = offsets[dtype]
            out.append(packed[dtype][start:start + size].reshape(leaf.shape))
            offsets[dtype] += size
        return jax.tree.unflatten(treedef, out)

    shardings = jax.tree.unflatten(treedef, [leaf.sharding for leaf in leaves])
    return jax.jit(split, out_shardings=shardings)(packed)


def pack(state: TrainState) -> tuple[dict[str, jax.Array], list[dict]]:
    """What a checkpoint of `state` holds: its leaves packed into one flat array per dtype
    (dispatched, not waited for) and the layout. The packed arrays are new buffers, so the
    state may be donated to the next step while they are written."""
    return _pack(state), _layout(state)


def save_packed(manager: ocp.CheckpointManager, step: int, packed: tuple) -> None:
    """Starts an asynchronous save of `pack(state)` as step `step` (returns before the write
    ends)."""
    arrays, layout = packed
    args = ocp.args.Composite(state=ocp.args.PyTreeSave(arrays),
                              layout=ocp.args.JsonSave(layout))
    manager.save(step, args=args, force=True)


def save(manager: ocp.CheckpointManager, state: TrainState) -> None:
    """Starts an asynchronous save of `state` at its step (returns before the write ends)."""
    save_packed(manager, int(state.step), pack(state))


def restore_latest(manager: ocp.CheckpointManager, like: TrainState):
    """The latest checkpoint restored into the structure, shapes and shardings of `like` (a
    TrainState of arrays or of jax.ShapeDtypeStructs), or None when there is none."""
    step = manager.latest_step()
    return None if step is None else restore(manager, step, like)


def restore(manager: ocp.CheckpointManager, step: int, like: TrainState):
    """The checkpoint of `step` restored like `like` (as restore_latest)."""
    where = f"checkpoint at step {step} in {manager.directory}"
    if (pathlib.Path(manager.directory) / str(step) / "default").exists():
        raise CheckpointError(f"{where} has one Orbax array per leaf, the format before the "
                              "packed one (ganaug_jax before 2026-12-07): resume it with that "
                              "version, or start the run again with --force")
    try:
        stored = manager.restore(step, args=ocp.args.Composite(layout=ocp.args.JsonRestore()))
        layout = stored["layout"]
        expected = _layout(like)
        if layout != expected:
            first = next((f"{a['path']}: stored {a['shape']} {a['dtype']}, this run "
                          f"{b['shape']} {b['dtype']}" for a, b in zip(layout, expected)
                          if a != b), f"{len(layout)} leaves stored, {len(expected)} here")
            raise CheckpointError(f"{where} holds a state of another layout ({first}): was "
                                  "it written with another config?")
        sharding = jax.tree.leaves(like)[0].sharding
        sizes = collections.Counter()
        for leaf in expected:
            sizes[leaf["dtype"]] += math.prod(leaf["shape"])
        abstract = {dtype: jax.ShapeDtypeStruct((size,), jnp.dtype(dtype), sharding=sharding)
                    for dtype, size in sizes.items()}
        packed = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract))))["state"]
    except CheckpointError:
        raise
    except Exception as error:  # Orbax raises many types for unreadable files
        # their first line says what failed; TensorStore's go on with the whole store spec
        lines = str(error).strip().splitlines() or [""]
        summary = lines[0] if len(lines[0]) <= 300 else lines[0][:300] + " ..."
        raise CheckpointError(
            f"{where} cannot be read ({type(error).__name__}: {summary}); delete that step's "
            "folder to fall back to an earlier checkpoint") from error
    return _unpack(packed, like)
