"""Multi-process (multi-host) training through `jax.distributed`.

Every process runs the same `ganaug train` command with its own `--process-id`; together they
see one global device list, the mesh spans all of it and the step's gradient all-reduce crosses
hosts. Process 0 writes the run's files (config, metrics, TensorBoard, sample grids); every
process takes part in the Orbax checkpoint saves, so the workdir must be on a file system all
hosts share.

    ganaug train --config configs/digits.py --workdir /shared/run \\
        --coordinator host0:1234 --num-processes 2 --process-id 0   # on host0
    ... --process-id 1                                               # on host1

With `--distributed` alone JAX finds the cluster itself (Cloud TPU pod slices, SLURM, Open MPI).
On CPU the cross-process collectives use gloo.
"""

import re

import jax

_ADDRESS = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Joins the run; must be called before JAX starts its backends (before any computation).

    Args:
      coordinator: "HOST:PORT" of process 0's coordination service, or None to let JAX
        detect the cluster (then num_processes and process_id must be None too).
      num_processes: the number of processes, >= 1.
      process_id: this process, in [0, num_processes).
    """
    explicit = (coordinator, num_processes, process_id)
    if any(v is not None for v in explicit) and any(v is None for v in explicit):
        raise ValueError("--coordinator, --num-processes and --process-id go together: give all "
                         "three, or none of them (with --distributed) to let JAX detect the cluster")
    if coordinator is not None:
        if not _ADDRESS.match(coordinator) or not 1 <= int(coordinator.rsplit(":", 1)[1]) <= 65535:
            raise ValueError(f"--coordinator must be HOST:PORT with a port in [1, 65535] (e.g. "
                             f"10.0.0.1:1234), got {coordinator!r}")
        if num_processes < 1:
            raise ValueError(f"--num-processes must be >= 1, got {num_processes}")
        if not 0 <= process_id < num_processes:
            raise ValueError(f"--process-id must be in [0, {num_processes}), got {process_id}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator, num_processes=num_processes,
                                   process_id=process_id)
    except ValueError as error:
        if coordinator is not None:
            raise
        raise ValueError(f"--distributed found no cluster to join (JAX detects Cloud TPU pod "
                         f"slices, SLURM and Open MPI; it said: {error}); elsewhere give "
                         f"--coordinator HOST:PORT --num-processes N --process-id I") from error


def is_primary() -> bool:
    """True in the process that writes the run's files (process 0; the only one when
    jax.distributed is not used)."""
    return jax.process_index() == 0
