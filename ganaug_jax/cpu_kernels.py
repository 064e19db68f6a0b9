"""What the package's optional XLA:CPU FFI kernels share: the check that a built kernel runs,
and whether a lowering may call one that must see the whole operand.

A kernel built against an XLA FFI version this jaxlib does not accept is reported once and
left unused (the pure-JAX path runs instead), rather than failing every call.
"""

import concurrent.futures
import warnings
from typing import Callable

import jax


def kernel_runs(what: str, problem: Callable[[], str | None]) -> bool:
    """Whether `problem()` (one tiny call of the kernel; None when it ran and returned the
    right values, else what went wrong) finds nothing. It runs on its own thread, which has
    no JAX trace, so asking while tracing is fine; a failure is warned about once, naming
    `what`."""
    try:
        jax.local_devices(backend="cpu")
    except RuntimeError:  # no CPU backend (e.g. JAX_PLATFORMS=cuda): nothing to run it on
        return False

    def checked() -> str | None:
        try:
            return problem()
        except Exception as error:  # noqa: BLE001 - any failure means: do not use it
            return f"failed: {error}"

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        found = pool.submit(checked).result()
    if found is None:
        return True
    warnings.warn(f"ganaug_jax's XLA:CPU {what} {found}; using the pure-JAX path (reinstall "
                  "ganaug_jax against this jaxlib to rebuild it)")
    return False


def unpartitioned(ctx) -> bool:
    """Whether a lowering (`ctx`, a jax.interpreters.mlir LoweringRuleContext) is of one
    device's program, with no SPMD partitioning after it: a single-device jit, or the body of
    a shard_map manual over every mesh axis. A kernel that must see the whole operand (one
    that contracts over the batch) may only be lowered there."""
    context = ctx.module_context.axis_context
    if hasattr(context, "num_devices"):  # jit: partitioned over num_devices
        return context.num_devices == 1
    mesh, manual = getattr(context, "mesh", None), getattr(context, "manual_axes", None)
    return mesh is not None and manual is not None and set(mesh.axis_names) <= set(manual)
