"""Host placement: batches read on the host, a few steps ahead, and sent to the devices.

`data.placement = 'device'` (the default, data/sources.py) places a data set on the devices once
and gathers every batch inside the jitted step. Data that does not fit in device memory stays
on the host and is streamed: `HostStream` reads the records of each step in a background
thread, `prefetch` steps ahead, and places them with the batch sharding (dimension 1, the batch,
split over the mesh's 'data' axis) so the transfer overlaps the training step.

Same batches as the device path. The record indices of a step come from
`sources.batch_indices`, the very random calls `make_batch_fn` makes with `draw_from_arrays`,
evaluated on the host's CPU device (threefry gives the same bits on every backend). A step's
batch is a pure function of (data key, step) on both paths, so a run may switch placement and
resuming at step s simply starts the stream at s: there is no iterator state to save.

Multi-host. Every process computes the (n_critic, B) indices of the global batch (a few
integers), keeps the columns of its own devices (`local_rows`), reads only those records and
assembles the global `jax.Array` with `jax.make_array_from_process_local_data`.

Records: a mapping name -> array read by fancy indexing (numpy arrays, `np.memmap` for data
on disk), or any random-access sequence of {name: array} records with `__len__` and
`__getitem__` (a `tfds.data_source(...)` split, a `grain.MapDataset`), read with `__getitems__`
where the source has it; `transform` then maps the raw records to the model's contract
(e.g. uint8 'image' -> float32 'x' in [-1, 1]).

Why a thread and not Grain (`grain` 0.2.18 is light: a 5 MB wheel that adds only
`portpicker` here, and imports without TensorFlow). What Grain would add does not apply: its
`IndexSampler` / `DataLoader` shuffle records without replacement per epoch, so they cannot
give the device path's batches (uniform draws with replacement from jax.random); its
checkpointable iterator state is not needed when batches are a function of the step; its
multiprocessing workers pay off for per-record Python decoding, while a step here is one
vectorised read. What remains, a map over steps with a prefetch buffer, is the thread below,
whose `close()` joins it (Grain's thread-pool prefetcher shuts down without waiting). A Grain
`MapDataset` over a TFDS source can still be passed as `records`.
"""

import queue
import threading
from collections.abc import Callable, Mapping

import jax
import numpy as np

from ganaug_jax.data.sources import batch_indices

BATCH_AXIS = 1  # batches are (n_critic, B, ...): the batch dimension is split over 'data'

_host_indices = jax.jit(batch_indices, static_argnames=("num_records", "batch_size", "n_critic"))


def num_records(records) -> int:
    """The number of records in a mapping of equal-length columns or a random-access sequence."""
    if isinstance(records, Mapping):
        lengths = {name: len(column) for name, column in records.items()}
        if not lengths or len(set(lengths.values())) != 1:
            raise ValueError(f"records must be non-empty columns of one length, got {lengths}")
        return next(iter(lengths.values()))
    return len(records)


def read_records(records, index: np.ndarray) -> dict:
    """{name: (len(index), ...) numpy array}: the records at `index` (a flat int array)."""
    if isinstance(records, Mapping):
        return {name: np.asarray(column[index]) for name, column in records.items()}
    keys = [int(i) for i in index]
    getitems = getattr(records, "__getitems__", None)
    rows = getitems(keys) if getitems is not None else [records[i] for i in keys]
    return {name: np.stack([np.asarray(row[name]) for row in rows]) for name in rows[0]}


def local_rows(sharding: jax.sharding.Sharding, global_shape: tuple, *,
               axis: int = BATCH_AXIS) -> slice:
    """The contiguous range of dimension `axis` held by this process's devices under
    `sharding` (all of it on one process)."""
    spans = sorted({index[axis].indices(global_shape[axis])[:2]
                    for index in sharding.addressable_devices_indices_map(global_shape).values()})
    for (_, stop), (start, _) in zip(spans, spans[1:]):
        if start > stop:
            raise ValueError(f"this process's devices hold the non-contiguous rows {spans} of "
                             f"the batch; order the mesh's devices by process")
    return slice(spans[0][0], max(stop for _, stop in spans))


def host_indices(data_key: jax.Array, step: int, *, num_records: int, batch_size: int,
                 n_critic: int) -> np.ndarray:
    """(n_critic, B) int32 numpy: `sources.batch_indices` computed on this host's CPU."""
    cpu = jax.local_devices(backend="cpu")[0]
    index = _host_indices(jax.device_put(data_key, cpu), step, num_records=num_records,
                          batch_size=batch_size, n_critic=n_critic)
    return np.asarray(index)


def host_batch(data_key: jax.Array, step: int, records, *, batch_size: int, n_critic: int,
               rows: slice = slice(None), transform: Callable | None = None) -> dict:
    """This process's part of a step's batch as numpy: {name: (n_critic, len(rows), ...)}, the
    global batch's columns `rows` (all of them by default)."""
    index = host_indices(data_key, step, num_records=num_records(records),
                         batch_size=batch_size, n_critic=n_critic)[:, rows]
    flat = read_records(records, index.reshape(-1))
    if transform is not None:
        flat = transform(flat)
    return {name: value.reshape(index.shape + value.shape[1:]) for name, value in flat.items()}


class HostStream:
    """Batches of steps start, start + 1, ..., stop - 1, read by a background thread up to
    `prefetch` steps ahead and placed on the devices with `sharding` (which splits dimension 1).

    `batch(step)` returns them in order. Close it (or use it as a context manager): close()
    stops and joins the thread. An error in the reader is raised by the next `batch` call.
    """

    def __init__(self, data_key: jax.Array, records, *, sharding: jax.sharding.Sharding,
                 batch_size: int, n_critic: int, start: int, stop: int, prefetch: int = 2,
                 transform: Callable | None = None):
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch}")
        self._key = jax.device_put(data_key, jax.local_devices(backend="cpu")[0])
        self._records, self._transform = records, transform
        self._sharding, self._batch_size, self._n_critic = sharding, batch_size, n_critic
        self._rows = local_rows(sharding, (n_critic, batch_size))
        self._next, self._stop = start, stop
        self._queue = queue.Queue(maxsize=prefetch)
        self._stopping = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._produce, args=(start, stop), daemon=True,
                                        name="ganaug-host-stream")
        self._thread.start()

    def read(self, step: int) -> dict:
        """The batch of `step` as global jax.Arrays (called by the reader thread)."""
        local = host_batch(self._key, step, self._records, batch_size=self._batch_size,
                           n_critic=self._n_critic, rows=self._rows, transform=self._transform)
        return {name: jax.make_array_from_process_local_data(
                    self._sharding, value, (self._n_critic, self._batch_size) + value.shape[2:])
                for name, value in local.items()}

    def _produce(self, start: int, stop: int) -> None:
        try:
            for step in range(start, stop):
                if self._stopping.is_set() or not self._put(self.read(step)):
                    return
        except BaseException as error:  # handed to the consumer, raised by batch()
            self._put(error)

    def _put(self, item) -> bool:
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def batch(self, step: int) -> dict:
        """The next batch; `step` must be the step it was read for (checks the order)."""
        if self._closed:
            raise RuntimeError("HostStream.batch called after close()")
        if step != self._next or step >= self._stop:
            raise ValueError(f"HostStream reads steps {self._next}..{self._stop - 1} in order; "
                             f"asked for step {step}")
        while True:
            try:
                item = self._queue.get(timeout=0.1)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("the HostStream reader thread stopped") from None
        if isinstance(item, BaseException):
            self.close()
            raise item
        self._next += 1
        return item

    def close(self) -> None:
        """Stops the reader thread and waits for it; idempotent."""
        self._closed = True
        self._stopping.set()
        while self._thread.is_alive():
            try:  # make room so a blocked put returns and sees the stop flag
                self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=0.05)
        while not self._queue.empty():
            self._queue.get_nowait()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
