// Depthwise convolution for XLA:CPU, called from JAX through the XLA FFI.
//
// XLA:CPU runs grouped convolutions (feature_group_count > 1) on a slow generic
// path (well under 1 GFLOP/s; docs/benchmarks.md). These kernels compute a
// depthwise kxk conv in NHWC, float32, with stride, dilation and symmetric zero
// padding, vectorised over channels and split over the batch on XLA's own
// intra-op thread pool. Output channel o reads input channel o % Cin, so one call
// computes the depthwise convs of R = Cout / Cin edges that share one input.
// Every reduction runs in a fixed order, so results do not depend on threads.
//
//   jaxnas_dw_fwd:  x (N,H,W,Cin), k (K,K,Cout)        -> y (N,Ho,Wo,Cout)
//   jaxnas_dw_bwd:  x, k, g (N,Ho,Wo,Cout)             -> dx (N,H,W,Cin), dk (K,K,Cout)
//   jaxnas_materialize: x -> x (aliased; a copy only if XLA could not reuse the buffer).
//     XLA cannot fuse through a custom call, so this keeps a value that many
//     consumers read from being recomputed inside each of them.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct Geometry {
  int64_t N, H, W, Cin, K, Cout, Ho, Wo, s, d, p;
};

// Runs body(i) for i in [0, n) on the caller and on XLA's pool. The caller keeps
// taking items until none are left, then waits only for items already running,
// so it never waits on a task that has not started (no deadlock on a busy pool).
template <typename F>
void ParallelFor(ffi::ThreadPool& pool, int64_t n, F body) {
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

// Output positions o in [lo, hi) along an axis whose tap t reads an input inside [0, L).
inline void Valid(int64_t t, const Geometry& g, int64_t L, int64_t Lo, int64_t* lo, int64_t* hi) {
  int64_t off = t * g.d - g.p;  // input = o * s + off
  int64_t a = off >= 0 ? 0 : (-off + g.s - 1) / g.s;
  int64_t b = L - 1 - off < 0 ? 0 : (L - 1 - off) / g.s + 1;
  *lo = a;
  *hi = std::max(a, std::min(b, Lo));
}

Geometry Shape(const ffi::Buffer<ffi::F32>& x, const ffi::Buffer<ffi::F32>& k,
               int64_t s, int64_t d, int64_t p) {
  auto xd = x.dimensions();
  auto kd = k.dimensions();
  Geometry g{xd[0], xd[1], xd[2], xd[3], kd[0], kd[2], 0, 0, s, d, p};
  g.Ho = (g.H + 2 * p - d * (g.K - 1) - 1) / s + 1;
  g.Wo = (g.W + 2 * p - d * (g.K - 1) - 1) / s + 1;
  return g;
}

ffi::Error Check(const Geometry& g, int64_t xr, int64_t kr) {
  if (xr != 4 || kr != 3 || g.Cout % g.Cin != 0 || g.Ho <= 0 || g.Wo <= 0 || g.s < 1 || g.d < 1)
    return ffi::Error::InvalidArgument("jaxnas depthwise: bad shapes or attributes");
  return ffi::Error::Success();
}

// Channels run in blocks of up to 16 (one AVX-512 register); each output block is
// accumulated in registers over all its taps and stored once.
constexpr int64_t B = 16;
typedef float V __attribute__((vector_size(B * sizeof(float))));
inline V Load(const float* p) { V v; std::memcpy(&v, p, sizeof(V)); return v; }
inline void Store(float* p, V v) { std::memcpy(p, &v, sizeof(V)); }

// acc[0:len] = sum over (a, b) pairs of a[0:len] * b[0:len]; next(i) gives the i-th pair or false.
template <typename Pairs>
inline void Dot(float* out, int64_t len, Pairs pairs) {
  if (len == B) {
    V acc = {};
    pairs([&](const float* a, const float* b) { acc += Load(a) * Load(b); });
    Store(out, acc);
  } else {
    float acc[B] = {};
    pairs([&](const float* a, const float* b) {
      for (int64_t c = 0; c < len; ++c) acc[c] += a[c] * b[c];
    });
    std::memcpy(out, acc, len * sizeof(float));
  }
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> k,
                   ffi::ResultBuffer<ffi::F32> y, int64_t stride, int64_t dilation,
                   int64_t padding) {
  Geometry g = Shape(x, k, stride, dilation, padding);
  if (auto e = Check(g, x.dimensions().size(), k.dimensions().size()); e.failure()) return e;
  const float* X = x.typed_data();
  const float* Kw = k.typed_data();
  float* Y = y->typed_data();
  const int64_t R = g.Cout / g.Cin, C = g.Cin;
  ParallelFor(pool, g.N, [=](int64_t n) {
    for (int64_t ho = 0; ho < g.Ho; ++ho) {
      for (int64_t wo = 0; wo < g.Wo; ++wo) {
        for (int64_t r = 0; r < R; ++r) {
          for (int64_t c0 = 0; c0 < C; c0 += B) {
            const int64_t o0 = r * C + c0;
            Dot(Y + ((n * g.Ho + ho) * g.Wo + wo) * g.Cout + o0, std::min(B, C - c0), [&](auto fma) {
              for (int64_t i = 0; i < g.K; ++i) {
                const int64_t h = ho * g.s - g.p + i * g.d;
                if (h < 0 || h >= g.H) continue;
                for (int64_t j = 0; j < g.K; ++j) {
                  const int64_t w = wo * g.s - g.p + j * g.d;
                  if (w < 0 || w >= g.W) continue;
                  fma(X + ((n * g.H + h) * g.W + w) * C + c0, Kw + (i * g.K + j) * g.Cout + o0);
                }
              }
            });
          }
        }
      }
    }
  });
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> k,
                    ffi::Buffer<ffi::F32> gy, ffi::ResultBuffer<ffi::F32> dx,
                    ffi::ResultBuffer<ffi::F32> dk, int64_t stride, int64_t dilation,
                    int64_t padding) {
  Geometry g = Shape(x, k, stride, dilation, padding);
  if (auto e = Check(g, x.dimensions().size(), k.dimensions().size()); e.failure()) return e;
  const float* X = x.typed_data();
  const float* Kw = k.typed_data();
  const float* G = gy.typed_data();
  float* DX = dx->typed_data();
  const int64_t R = g.Cout / g.Cin, C = g.Cin, KK = g.K * g.K * g.Cout;
  // One kernel-gradient partial per sample, summed in sample order afterwards.
  std::vector<float> partial(g.N * KK);
  float* P = partial.data();
  ParallelFor(pool, g.N, [=](int64_t n) {
    // dx[h, w, c] = sum over r and the taps that reach (h, w) of g[ho, wo, rC + c] * k[i, j, rC + c]
    for (int64_t h = 0; h < g.H; ++h) {
      for (int64_t w = 0; w < g.W; ++w) {
        for (int64_t c0 = 0; c0 < C; c0 += B) {
          Dot(DX + ((n * g.H + h) * g.W + w) * C + c0, std::min(B, C - c0), [&](auto fma) {
            for (int64_t i = 0; i < g.K; ++i) {
              const int64_t th = h + g.p - i * g.d;
              if (th < 0 || th % g.s) continue;
              const int64_t ho = th / g.s;
              if (ho >= g.Ho) continue;
              for (int64_t j = 0; j < g.K; ++j) {
                const int64_t tw = w + g.p - j * g.d;
                if (tw < 0 || tw % g.s) continue;
                const int64_t wo = tw / g.s;
                if (wo >= g.Wo) continue;
                const float* gv = G + ((n * g.Ho + ho) * g.Wo + wo) * g.Cout + c0;
                const float* kv = Kw + (i * g.K + j) * g.Cout + c0;
                for (int64_t r = 0; r < R; ++r) fma(gv + r * C, kv + r * C);
              }
            }
          });
        }
      }
    }
    // dk[i, j, o] (this sample's part) = sum over (ho, wo) of x[h, w, o % C] * g[ho, wo, o]
    for (int64_t i = 0; i < g.K; ++i) {
      int64_t ha, hb;
      Valid(i, g, g.H, g.Ho, &ha, &hb);
      for (int64_t j = 0; j < g.K; ++j) {
        int64_t wa, wb;
        Valid(j, g, g.W, g.Wo, &wa, &wb);
        for (int64_t r = 0; r < R; ++r) {
          for (int64_t c0 = 0; c0 < C; c0 += B) {
            const int64_t o0 = r * C + c0;
            Dot(P + n * KK + (i * g.K + j) * g.Cout + o0, std::min(B, C - c0), [&](auto fma) {
              for (int64_t ho = ha; ho < hb; ++ho) {
                const int64_t h = ho * g.s - g.p + i * g.d;
                for (int64_t wo = wa; wo < wb; ++wo) {
                  const int64_t w = wo * g.s - g.p + j * g.d;
                  fma(X + ((n * g.H + h) * g.W + w) * C + c0, G + ((n * g.Ho + ho) * g.Wo + wo) * g.Cout + o0);
                }
              }
            });
          }
        }
      }
    }
  });
  float* DK = dk->typed_data();
  std::fill(DK, DK + KK, 0.f);
  for (int64_t n = 0; n < g.N; ++n) {
    const float* src = P + n * KK;
    for (int64_t t = 0; t < KK; ++t) DK[t] += src[t];
  }
  return ffi::Error::Success();
}

ffi::Error Materialize(ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> y) {
  if (y->untyped_data() != x.untyped_data())
    std::memcpy(y->untyped_data(), x.untyped_data(), x.size_bytes());
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxnasMaterialize, Materialize,
                              ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxnasDwFwd, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("dilation")
                                  .Attr<int64_t>("padding"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxnasDwBwd, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("dilation")
                                  .Attr<int64_t>("padding"));
