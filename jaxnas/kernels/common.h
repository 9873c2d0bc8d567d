// Shared by jaxnas's XLA:CPU kernels: a parallel loop on XLA's intra-op thread pool, and
// vectors of one register of the build target (GCC/Clang vector extensions): 16 floats on
// AVX-512, 8 on AVX/AVX2, 4 otherwise. One source for every target; only these widths differ.
#ifndef JAXNAS_NATIVE_COMMON_H_
#define JAXNAS_NATIVE_COMMON_H_

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>

#include "xla/ffi/api/ffi.h"

namespace jaxnas {

// Runs body(i) for i in [0, n) on the caller and on XLA's pool. The caller keeps
// taking items until none are left, then waits only for items already running,
// so it never waits on a task that has not started (no deadlock on a busy pool).
template <typename F>
void ParallelFor(xla::ffi::ThreadPool& pool, int64_t n, F body) {
  struct State {
    std::atomic<int64_t> next{0};
    int64_t done = 0;
    std::mutex mu;
    std::condition_variable cv;
  };
  auto state = std::make_shared<State>();
  auto work = [state, n, body]() {
    int64_t finished = 0;
    for (int64_t i; (i = state->next.fetch_add(1)) < n;) {
      body(i);
      ++finished;
    }
    if (finished) {
      std::lock_guard<std::mutex> lock(state->mu);
      state->done += finished;
      if (state->done == n) state->cv.notify_all();
    }
  };
  int64_t helpers = std::min<int64_t>(pool.num_threads(), n) - 1;
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule(decltype(work)(work));
  work();
  std::unique_lock<std::mutex> lock(state->mu);
  state->cv.wait(lock, [&] { return state->done == n; });
}

// Channels run in blocks of B floats (one vector register of the target the compiler builds for),
// loaded and stored unaligned. Register tiles hold kTileColumns output columns x kTileEdges edges
// accumulators: 16 of AVX-512's 32 registers, 8 of AVX2's 16 (a wider tile spills on AVX2).
#if defined(__AVX512F__)
constexpr int64_t B = 16;
constexpr int kTileEdges = 4;
#elif defined(__AVX__)
constexpr int64_t B = 8;
constexpr int kTileEdges = 2;
#else
constexpr int64_t B = 4;
constexpr int kTileEdges = 2;
#endif
typedef float V __attribute__((vector_size(B * sizeof(float))));
inline V Load(const float* p) { V v; std::memcpy(&v, p, sizeof(V)); return v; }
inline void Store(float* p, V v) { std::memcpy(p, &v, sizeof(V)); }

}  // namespace jaxnas

#endif  // JAXNAS_NATIVE_COMMON_H_
