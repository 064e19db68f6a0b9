// ParallelFor over XLA's intra-op thread pool, shared by the package's XLA:CPU FFI kernels.
#ifndef GANAUG_JAX_CSRC_PARALLEL_FOR_H_
#define GANAUG_JAX_CSRC_PARALLEL_FOR_H_

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>

#include "xla/ffi/api/ffi.h"

namespace ganaug {

// Runs work(i) for i in [0, count) on the calling thread and XLA's intra-op pool, and
// returns when every item has run. Late pool tasks find no work and touch nothing.
template <typename Work>
void ParallelFor(xla::ffi::ThreadPool& pool, int64_t count, Work work) {
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    std::mutex mutex;
    std::condition_variable finished;
  };
  auto state = std::make_shared<State>();
  auto run = [state, count, &work]() {
    for (int64_t i; (i = state->next.fetch_add(1)) < count;) {
      work(i);
      if (state->done.fetch_add(1) + 1 == count) {
        std::lock_guard<std::mutex> lock(state->mutex);
        state->finished.notify_all();
      }
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads() - 1, count - 1);
  for (int64_t t = 0; t < helpers; ++t) {
    // Each task owns a copy of `state`; `work` is only called while items remain, i.e.
    // before this function returns.
    pool.Schedule([state, count, run]() { run(); });
  }
  run();
  std::unique_lock<std::mutex> lock(state->mutex);
  state->finished.wait(lock, [&] { return state->done.load() == count; });
}

}  // namespace ganaug

#endif  // GANAUG_JAX_CSRC_PARALLEL_FOR_H_
