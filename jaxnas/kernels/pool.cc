// kxk max and average pooling (NHWC, float32, stride, symmetric padding) for
// XLA:CPU, called from JAX through the XLA FFI.
//
// XLA:CPU runs pooling as reduce-window and the max-pool gradient as an iota-based
// select and scatter; in the DARTS search step that took about 1.4 s of thread time
// a step (docs/benchmarks.md). Here each direction is one call, vectorised over
// channels and split over the batch; every sum runs in a fixed order.
//
//   jaxnas_pool_fwd: x (N,H,W,C); kind (0 max, 1 average), k, stride, padding -> y (N,Ho,Wo,C)
//   jaxnas_pool_bwd: x, g (N,Ho,Wo,C); the same attributes -> dx (N,H,W,C)
//   jaxnas_pool_jvp: x, t (N,H,W,C); k, stride, padding -> t at each window's first maximum of x
//                    (N,Ho,Wo,C): the max pool's derivative at x in direction t, which is also
//                    the derivative of jaxnas_pool_bwd in g (second derivatives, exact DARTS)
//
// Padding never counts: a max ignores padded positions (XLA pads with -inf), an
// average divides by the number of input positions in its window (PyTorch's
// count_include_pad=False, which DARTS uses). The max-pool gradient goes to the
// first maximum of each window in row-major order, as XLA's select-and-scatter.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "common.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using jaxnas::B;
using jaxnas::Load;
using jaxnas::ParallelFor;
using jaxnas::Store;
using jaxnas::V;

typedef int32_t M __attribute__((vector_size(B * sizeof(int32_t))));  // lane masks: 0 or -1
inline V Splat(float a) { return V{} + a; }

// L-float vectors (L = B, or 8 and 4 for channel blocks narrower than B: PC-DARTS's 4 channels an
// op, and tails), with their lane masks.
template <int64_t L>
struct Lanes {
  typedef float F __attribute__((vector_size(L * sizeof(float))));
  typedef int32_t I __attribute__((vector_size(L * sizeof(int32_t))));
  static F Ld(const float* p) {
    F v;
    std::memcpy(&v, p, sizeof(F));
    return v;
  }
  static void St(float* p, F v) { std::memcpy(p, &v, sizeof(F)); }
};

// Calls vec(std::integral_constant<int64_t, L>{}, off) over [0, len) in runs of B, 8 and 4 lanes,
// and returns where the scalar rest starts.
template <typename Vec>
inline int64_t VectorRuns(int64_t len, Vec vec) {
  int64_t off = 0;
  for (; len - off >= B; off += B) vec(std::integral_constant<int64_t, B>{}, off);
  if constexpr (B > 8)
    for (; len - off >= 8; off += 8) vec(std::integral_constant<int64_t, 8>{}, off);
  if constexpr (B > 4)
    for (; len - off >= 4; off += 4) vec(std::integral_constant<int64_t, 4>{}, off);
  return off;
}

struct Pool {
  int64_t N, H, W, C, Ho, Wo, k, s, p;
  bool max;
  // the window of output (ho, wo): rows [i0, i1), columns [j0, j1) of the input
  void Window(int64_t ho, int64_t wo, int64_t* i0, int64_t* i1, int64_t* j0, int64_t* j1) const {
    *i0 = std::max<int64_t>(0, ho * s - p);
    *i1 = std::min(H, ho * s - p + k);
    *j0 = std::max<int64_t>(0, wo * s - p);
    *j1 = std::min(W, wo * s - p + k);
  }
};

ffi::Error Make(const ffi::Buffer<ffi::F32>& x, int64_t kind, int64_t k, int64_t s, int64_t p, Pool* g) {
  auto d = x.dimensions();
  if (d.size() != 4 || k < 1 || s < 1 || p < 0 || p >= k || (kind != 0 && kind != 1))
    return ffi::Error::InvalidArgument("jaxnas pool: bad shapes or attributes");
  *g = Pool{d[0], d[1], d[2], d[3], 0, 0, k, s, p, kind == 0};
  g->Ho = (g->H + 2 * p - k) / s + 1;
  g->Wo = (g->W + 2 * p - k) / s + 1;
  if (g->Ho <= 0 || g->Wo <= 0) return ffi::Error::InvalidArgument("jaxnas pool: window larger than the input");
  return ffi::Error::Success();
}

// One output position, channels [c0, c0 + len): the max or the average over its window.
inline void Reduce(const Pool& g, const float* X, float* out, int64_t i0, int64_t i1, int64_t j0,
                   int64_t j1, int64_t c0, int64_t len) {
  const float inv = 1.f / static_cast<float>((i1 - i0) * (j1 - j0));
  const int64_t rest = VectorRuns(len, [&](auto lanes, int64_t off) {
    using Ln = Lanes<decltype(lanes)::value>;
    typename Ln::F acc = typename Ln::F{} + (g.max ? -std::numeric_limits<float>::infinity() : 0.f);
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = j0; j < j1; ++j) {
        const typename Ln::F v = Ln::Ld(X + (i * g.W + j) * g.C + c0 + off);
        acc = g.max ? ((v > acc) | (v != v) ? v : acc) : acc + v;  // NaN propagates, as in XLA
      }
    Ln::St(out + off, g.max ? acc : acc * inv);
  });
  for (int64_t c = rest; c < len; ++c) {
    float acc = g.max ? -std::numeric_limits<float>::infinity() : 0.f;
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = j0; j < j1; ++j) {
        const float v = X[(i * g.W + j) * g.C + c0 + c];
        acc = g.max ? (v > acc || v != v ? v : acc) : acc + v;
      }
    out[c] = g.max ? acc : acc * inv;
  }
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> y, int64_t kind,
                   int64_t k, int64_t stride, int64_t padding) {
  Pool g;
  if (auto e = Make(x, kind, k, stride, padding, &g); e.failure()) return e;
  const float* X = x.typed_data();
  float* Y = y->typed_data();
  ParallelFor(pool, g.N, [=](int64_t n) {
    const float* Xn = X + n * g.H * g.W * g.C;
    for (int64_t ho = 0; ho < g.Ho; ++ho)
      for (int64_t wo = 0; wo < g.Wo; ++wo) {
        int64_t i0, i1, j0, j1;
        g.Window(ho, wo, &i0, &i1, &j0, &j1);
        float* out = Y + ((n * g.Ho + ho) * g.Wo + wo) * g.C;
        for (int64_t c0 = 0; c0 < g.C; c0 += B)
          Reduce(g, Xn, out + c0, i0, i1, j0, j1, c0, std::min(B, g.C - c0));
      }
  });
  return ffi::Error::Success();
}

// One output position's cotangent, channels [c0, c0 + len), scattered into dx: to the first
// maximum of each channel's window (max), or spread evenly over the window (average).
inline void Scatter(const Pool& g, const float* X, const float* G, float* DX, int64_t i0, int64_t i1,
                    int64_t j0, int64_t j1, int64_t c0, int64_t len) {
  if (!g.max) {
    const float inv = 1.f / static_cast<float>((i1 - i0) * (j1 - j0));
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = j0; j < j1; ++j) {
        float* d = DX + (i * g.W + j) * g.C + c0;
        for (int64_t c = 0; c < len; ++c) d[c] += G[c] * inv;
      }
    return;
  }
  const int64_t rest = VectorRuns(len, [&](auto lanes, int64_t off) {
    using Ln = Lanes<decltype(lanes)::value>;
    typename Ln::F best = typename Ln::F{} - std::numeric_limits<float>::infinity();
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = j0; j < j1; ++j) {
        const typename Ln::F v = Ln::Ld(X + (i * g.W + j) * g.C + c0 + off);
        best = (v > best) | (v != v) ? v : best;
      }
    const typename Ln::F gv = Ln::Ld(G + off), zero = {};
    typename Ln::I done = {};
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = j0; j < j1; ++j) {
        const typename Ln::F v = Ln::Ld(X + (i * g.W + j) * g.C + c0 + off);
        const typename Ln::I hit = (v == best) & ~done;
        float* d = DX + (i * g.W + j) * g.C + c0 + off;
        Ln::St(d, Ln::Ld(d) + (hit ? gv : zero));
        done |= hit;
      }
  });
  if (rest == len) return;
  float best[B];
  bool done[B];
  for (int64_t c = rest; c < len; ++c) {
    best[c] = -std::numeric_limits<float>::infinity();
    done[c] = false;
  }
  for (int64_t i = i0; i < i1; ++i)
    for (int64_t j = j0; j < j1; ++j) {
      const float* v = X + (i * g.W + j) * g.C + c0;
      for (int64_t c = rest; c < len; ++c) best[c] = std::max(best[c], v[c]);
    }
  for (int64_t i = i0; i < i1; ++i)
    for (int64_t j = j0; j < j1; ++j) {
      const float* v = X + (i * g.W + j) * g.C + c0;
      float* d = DX + (i * g.W + j) * g.C + c0;
      for (int64_t c = rest; c < len; ++c) {
        const bool hit = !done[c] && v[c] == best[c];
        d[c] += hit ? G[c] : 0.f;
        done[c] = done[c] || hit;
      }
    }
}

ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> gy,
                    ffi::ResultBuffer<ffi::F32> dx, int64_t kind, int64_t k, int64_t stride, int64_t padding) {
  Pool g;
  if (auto e = Make(x, kind, k, stride, padding, &g); e.failure()) return e;
  const float* X = x.typed_data();
  const float* G = gy.typed_data();
  float* DX = dx->typed_data();
  ParallelFor(pool, g.N, [=](int64_t n) {
    const float* Xn = X + n * g.H * g.W * g.C;
    float* DXn = DX + n * g.H * g.W * g.C;
    std::fill(DXn, DXn + g.H * g.W * g.C, 0.f);
    for (int64_t ho = 0; ho < g.Ho; ++ho)
      for (int64_t wo = 0; wo < g.Wo; ++wo) {
        int64_t i0, i1, j0, j1;
        g.Window(ho, wo, &i0, &i1, &j0, &j1);
        const float* gv = G + ((n * g.Ho + ho) * g.Wo + wo) * g.C;
        for (int64_t c0 = 0; c0 < g.C; c0 += B)
          Scatter(g, Xn, gv + c0, DXn, i0, i1, j0, j1, c0, std::min(B, g.C - c0));
      }
  });
  return ffi::Error::Success();
}

// One output position, channels [c0, c0 + len): T at the first maximum of X in each channel's window.
inline void Gather(const Pool& g, const float* X, const float* T, float* out, int64_t i0, int64_t i1,
                   int64_t j0, int64_t j1, int64_t c0, int64_t len) {
  const int64_t rest = VectorRuns(len, [&](auto lanes, int64_t off) {
    using Ln = Lanes<decltype(lanes)::value>;
    typename Ln::F best = typename Ln::F{} - std::numeric_limits<float>::infinity(), acc = {};
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = j0; j < j1; ++j) {
        const typename Ln::F v = Ln::Ld(X + (i * g.W + j) * g.C + c0 + off);
        best = (v > best) | (v != v) ? v : best;
      }
    typename Ln::I done = {};
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = j0; j < j1; ++j) {
        const typename Ln::F v = Ln::Ld(X + (i * g.W + j) * g.C + c0 + off);
        const typename Ln::I hit = (v == best) & ~done;
        acc = hit ? Ln::Ld(T + (i * g.W + j) * g.C + c0 + off) : acc;
        done |= hit;
      }
    Ln::St(out + off, acc);
  });
  for (int64_t c = rest; c < len; ++c) {
    float best = -std::numeric_limits<float>::infinity(), acc = 0.f;
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = j0; j < j1; ++j) best = std::max(best, X[(i * g.W + j) * g.C + c0 + c]);
    bool done = false;
    for (int64_t i = i0; i < i1 && !done; ++i)
      for (int64_t j = j0; j < j1 && !done; ++j)
        if (X[(i * g.W + j) * g.C + c0 + c] == best) {
          acc = T[(i * g.W + j) * g.C + c0 + c];
          done = true;
        }
    out[c] = acc;
  }
}

ffi::Error Jvp(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> t, ffi::ResultBuffer<ffi::F32> y,
               int64_t k, int64_t stride, int64_t padding) {
  Pool g;
  if (auto e = Make(x, 0, k, stride, padding, &g); e.failure()) return e;
  const float* X = x.typed_data();
  const float* T = t.typed_data();
  float* Y = y->typed_data();
  ParallelFor(pool, g.N, [=](int64_t n) {
    const int64_t off = n * g.H * g.W * g.C;
    for (int64_t ho = 0; ho < g.Ho; ++ho)
      for (int64_t wo = 0; wo < g.Wo; ++wo) {
        int64_t i0, i1, j0, j1;
        g.Window(ho, wo, &i0, &i1, &j0, &j1);
        float* out = Y + ((n * g.Ho + ho) * g.Wo + wo) * g.C;
        for (int64_t c0 = 0; c0 < g.C; c0 += B)
          Gather(g, X + off, T + off, out + c0, i0, i1, j0, j1, c0, std::min(B, g.C - c0));
      }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxnasPoolJvp, Jvp,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("k")
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("padding"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxnasPoolFwd, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("kind")
                                  .Attr<int64_t>("k")
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("padding"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxnasPoolBwd, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("kind")
                                  .Attr<int64_t>("k")
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("padding"));
