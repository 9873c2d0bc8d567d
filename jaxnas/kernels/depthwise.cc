// Depthwise convolution for XLA:CPU, called from JAX through the XLA FFI.
//
// XLA:CPU runs grouped convolutions (feature_group_count > 1) on a slow generic
// path (well under 1 GFLOP/s; docs/benchmarks.md). These kernels compute a
// depthwise kxk conv in NHWC, float32, with stride, dilation and symmetric zero
// padding, vectorised over channels and split over the batch on XLA's own
// intra-op thread pool. Output channel o reads input channel o % Cin, so one call
// computes the depthwise convs of R = Cout / Cin edges that share one input.
// Every reduction runs in a fixed order, so results do not depend on threads.
// The separable kernels add each edge's pointwise (1x1) conv after the depthwise
// conv, a sample at a time, so the depthwise output is never stored.
//
//   jaxnas_dw_fwd:  x (N,H,W,Cin), k (K,K,Cout)        -> y (N,Ho,Wo,Cout)
//   jaxnas_dw_bwd:  x, k, g (N,Ho,Wo,Cout)             -> dx (N,H,W,Cin), dk (K,K,Cout)
//   jaxnas_sep_fwd: x, k (K,K,E*C), pw (E,C,D) -> the depthwise conv, then edge e's 1x1 conv
//                   pw[e] on channels [eC, eC + C): y (N,Ho,Wo,E*D)
//   jaxnas_sep_bwd: x, k, pw, g (N,Ho,Wo,E*D) -> dx, dk, dpw
//   jaxnas_sep_bwd2: x, k, pw, g, a, b, c -> the VJP of jaxnas_sep_bwd for cotangents (a, b, c)
//   Both take want_dx and want_dw (0 or 1): the outputs a derivative does not need (the weights'
//   when it is taken in the architecture only) are zeros and not computed.
//   The three separable calls take relu (0 or 1): with 1 they compute the block on relu(x), rectifying
//   each sample's input on the fly, so DARTS's ReLU before the block is never stored.
//   jaxnas_materialize: x -> x (aliased; a copy only if XLA could not reuse the buffer).
//     XLA cannot fuse through a custom call, so this keeps a value that many
//     consumers read from being recomputed inside each of them.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using jaxnas::B;
using jaxnas::kTileEdges;
using jaxnas::Load;
using jaxnas::ParallelFor;
using jaxnas::Store;
using jaxnas::V;

struct Geometry {
  int64_t N, H, W, Cin, K, Cout, Ho, Wo, s, d, p;
};

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

// Channels run in blocks of up to B (one vector register); each output block is
// accumulated in registers over all its taps and stored once.

// out[off:off+L] of Dot below in one L-float vector (L = 8 or 4: AVX or SSE registers).
template <int64_t L, typename Pairs>
inline void DotPart(float* out, int64_t off, Pairs& pairs) {
  typedef float VL __attribute__((vector_size(L * sizeof(float))));
  VL acc = {};
  pairs([&](const float* a, const float* b) {
    VL va, vb;
    std::memcpy(&va, a + off, sizeof(VL));
    std::memcpy(&vb, b + off, sizeof(VL));
    acc += va * vb;
  });
  std::memcpy(out + off, &acc, sizeof(VL));
}

// out[0:len] = sum over the (a, b) pairs that pairs(fma) passes to fma of a[0:len] * b[0:len].
// A block narrower than B (channel counts like PC-DARTS's 4 per op, or a tail) runs in 8- and
// 4-float vectors, then scalars; every lane adds its pairs in the same order as a full block.
template <typename Pairs>
inline void Dot(float* out, int64_t len, Pairs pairs) {
  if (len == B) {
    V acc = {};
    pairs([&](const float* a, const float* b) { acc += Load(a) * Load(b); });
    Store(out, acc);
    return;
  }
  int64_t off = 0;
  if constexpr (B > 8)
    for (; len - off >= 8; off += 8) DotPart<8>(out, off, pairs);
  if constexpr (B > 4)
    for (; len - off >= 4; off += 4) DotPart<4>(out, off, pairs);
  if (off == len) return;
  float acc[B] = {};
  pairs([&](const float* a, const float* b) {
    for (int64_t c = off; c < len; ++c) acc[c - off] += a[c] * b[c];
  });
  std::memcpy(out + off, acc, (len - off) * sizeof(float));
}

// Taps [lo, hi) of output position o along an axis of input size L (input o*s - p + t*d).
inline void TapRange(int64_t o, const Geometry& g, int64_t L, int64_t* lo, int64_t* hi) {
  const int64_t base = o * g.s - g.p;
  const int64_t a = base >= 0 ? 0 : (-base + g.d - 1) / g.d;
  const int64_t b = L - 1 - base < 0 ? 0 : (L - 1 - base) / g.d + 1;
  *lo = a;
  *hi = std::max(a, std::min(b, g.K));
}

// Output columns [lo, hi) whose taps all fall inside the input (no border checks needed).
inline void Interior(const Geometry& g, int64_t L, int64_t Lo, int64_t* lo, int64_t* hi) {
  *lo = std::min(Lo, (g.p + g.s - 1) / g.s);
  const int64_t top = L - 1 + g.p - (g.K - 1) * g.d;
  *hi = top < 0 ? *lo : std::max(*lo, std::min(Lo, top / g.s + 1));
}

// One B-channel block of WB adjacent outputs for NR edges: WB*NR independent register
// accumulators (latency hidden), each input vector loaded once for all NR edges.
template <int NR, int WB>
inline void FwdTile(const Geometry& g, const float* X, const float* Kw, float* Y, int64_t n,
                    int64_t ho, int64_t wo, int64_t i0, int64_t i1, int64_t j0, int64_t j1,
                    int64_t o0) {
  const int64_t C = g.Cin;
  V acc[WB][NR] = {};
  for (int64_t i = i0; i < i1; ++i) {
    const float* xrow = X + (n * g.H + ho * g.s - g.p + i * g.d) * g.W * C + (o0 % C);
    for (int64_t j = j0; j < j1; ++j) {
      const float* kp = Kw + (i * g.K + j) * g.Cout + o0;
      V kv[NR];
      for (int q = 0; q < NR; ++q) kv[q] = Load(kp + q * C);
      for (int b = 0; b < WB; ++b) {
        const V xv = Load(xrow + ((wo + b) * g.s - g.p + j * g.d) * C);
        for (int q = 0; q < NR; ++q) acc[b][q] += xv * kv[q];
      }
    }
  }
  for (int b = 0; b < WB; ++b)
    for (int q = 0; q < NR; ++q) Store(Y + ((n * g.Ho + ho) * g.Wo + wo + b) * g.Cout + o0 + q * C, acc[b][q]);
}

template <int NR>
void FwdRow(const Geometry& g, const float* X, const float* Kw, float* Y, int64_t n, int64_t ho,
            int64_t i0, int64_t i1, int64_t wlo, int64_t whi, int64_t o0) {
  for (int64_t wo = 0; wo < g.Wo;) {
    if (wo >= wlo && wo + 4 <= whi) {
      FwdTile<NR, 4>(g, X, Kw, Y, n, ho, wo, i0, i1, 0, g.K, o0);
      wo += 4;
    } else {
      int64_t j0, j1;
      TapRange(wo, g, g.W, &j0, &j1);
      FwdTile<NR, 1>(g, X, Kw, Y, n, ho, wo, i0, i1, j0, j1, o0);
      wo += 1;
    }
  }
}

// One sample of the forward pass (X, Y point at the sample; every index below has n = 0).
void ForwardSample(const Geometry& g, const float* X, const float* Kw, float* Y) {
  const int64_t n = 0, R = g.Cout / g.Cin, C = g.Cin;
  int64_t wlo, whi;
  Interior(g, g.W, g.Wo, &wlo, &whi);
  for (int64_t ho = 0; ho < g.Ho; ++ho) {
    int64_t i0, i1;
    TapRange(ho, g, g.H, &i0, &i1);
    for (int64_t c0 = 0; c0 < C; c0 += B) {
      if (C - c0 >= B) {  // full blocks: register tiles over up to kTileEdges edges at a time
        for (int64_t r0 = 0; r0 < R; r0 += kTileEdges) {
          const int64_t o0 = r0 * C + c0;
          switch (std::min<int64_t>(kTileEdges, R - r0)) {
            case 1: FwdRow<1>(g, X, Kw, Y, n, ho, i0, i1, wlo, whi, o0); break;
            case 2: FwdRow<2>(g, X, Kw, Y, n, ho, i0, i1, wlo, whi, o0); break;
            case 3: FwdRow<3>(g, X, Kw, Y, n, ho, i0, i1, wlo, whi, o0); break;
            default: FwdRow<4>(g, X, Kw, Y, n, ho, i0, i1, wlo, whi, o0); break;
          }
        }
        continue;
      }
      for (int64_t wo = 0; wo < g.Wo; ++wo) {  // a channel tail narrower than a block
        int64_t j0, j1;
        TapRange(wo, g, g.W, &j0, &j1);
        for (int64_t r = 0; r < R; ++r) {
          const int64_t o0 = r * C + c0;
          Dot(Y + ((n * g.Ho + ho) * g.Wo + wo) * g.Cout + o0, C - c0, [&](auto fma) {
            for (int64_t i = i0; i < i1; ++i) {
              const int64_t h = ho * g.s - g.p + i * g.d;
              for (int64_t j = j0; j < j1; ++j) {
                const int64_t w = wo * g.s - g.p + j * g.d;
                fma(X + ((n * g.H + h) * g.W + w) * C + c0, Kw + (i * g.K + j) * g.Cout + o0);
              }
            }
          });
        }
      }
    }
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
  ParallelFor(pool, g.N, [=](int64_t n) {
    ForwardSample(g, X + n * g.H * g.W * g.Cin, Kw, Y + n * g.Ho * g.Wo * g.Cout);
  });
  return ffi::Error::Success();
}

// Stride 1: the taps t of input position q whose output q + p - t*d lies in [0, Lo).
inline void GradTaps(int64_t q, const Geometry& g, int64_t Lo, int64_t* lo, int64_t* hi) {
  const int64_t top = q + g.p;  // t*d <= top and t*d >= top - (Lo - 1)
  const int64_t low = top - (Lo - 1);
  const int64_t a = low <= 0 ? 0 : (low + g.d - 1) / g.d;
  const int64_t b = top < 0 ? 0 : top / g.d + 1;
  *lo = a;
  *hi = std::max(a, std::min(b, g.K));
}

// Stride 1, one B-channel block of dx at WB adjacent columns: sum over taps and edges.
template <int WB>
inline void DxTile(const Geometry& g, const float* G, const float* Kw, float* DX, int64_t n,
                   int64_t h, int64_t w, int64_t i0, int64_t i1, int64_t j0, int64_t j1, int64_t c0) {
  const int64_t C = g.Cin, R = g.Cout / g.Cin;
  V acc[WB] = {};
  for (int64_t i = i0; i < i1; ++i) {
    const float* grow = G + (n * g.Ho + h + g.p - i * g.d) * g.Wo * g.Cout + c0;
    for (int64_t j = j0; j < j1; ++j) {
      const float* kp = Kw + (i * g.K + j) * g.Cout + c0;
      for (int64_t r = 0; r < R; ++r) {
        const V kv = Load(kp + r * C);
        for (int b = 0; b < WB; ++b) acc[b] += Load(grow + (w + b + g.p - j * g.d) * g.Cout + r * C) * kv;
      }
    }
  }
  for (int b = 0; b < WB; ++b) Store(DX + ((n * g.H + h) * g.W + w + b) * C + c0, acc[b]);
}

// One tap's kernel gradient for one sample, one B-channel block, NR edges: four
// interleaved partial sums over the output columns, added in a fixed order at the end.
template <int NR>
inline void DkTap(const Geometry& g, const float* X, const float* G, float* out, int64_t n,
                  int64_t i, int64_t j, int64_t ha, int64_t hb, int64_t wa, int64_t wb, int64_t o0) {
  const int64_t C = g.Cin;
  V acc[4][NR] = {};
  for (int64_t ho = ha; ho < hb; ++ho) {
    const float* xrow = X + (n * g.H + ho * g.s - g.p + i * g.d) * g.W * C + (o0 % C) + (j * g.d - g.p) * C;
    const float* grow = G + (n * g.Ho + ho) * g.Wo * g.Cout + o0;
    int64_t wo = wa;
    for (; wo + 4 <= wb; wo += 4)
      for (int b = 0; b < 4; ++b) {
        const V xv = Load(xrow + (wo + b) * g.s * C);
        for (int q = 0; q < NR; ++q) acc[b][q] += xv * Load(grow + (wo + b) * g.Cout + q * C);
      }
    for (; wo < wb; ++wo) {
      const V xv = Load(xrow + wo * g.s * C);
      for (int q = 0; q < NR; ++q) acc[0][q] += xv * Load(grow + wo * g.Cout + q * C);
    }
  }
  for (int q = 0; q < NR; ++q) Store(out + o0 + q * C, (acc[0][q] + acc[1][q]) + (acc[2][q] + acc[3][q]));
}

// One sample's input gradient: DX = the transpose of the conv with kernel Kw, applied to G.
void DxSample(const Geometry& g, const float* Kw, const float* G, float* DX) {
  const int64_t n = 0, R = g.Cout / g.Cin, C = g.Cin;
  // stride 1: columns w whose taps all land inside the output
  const int64_t wlo = std::min(g.W, std::max<int64_t>(0, (g.K - 1) * g.d - g.p));
  const int64_t whi = std::max(wlo, std::min(g.W, g.Wo - g.p));
  // dx[h, w, c] = sum over r and the taps that reach (h, w) of g[ho, wo, rC + c] * k[i, j, rC + c]
  for (int64_t h = 0; h < g.H; ++h) {
    int64_t i0 = 0, i1 = 0;
    if (g.s == 1) GradTaps(h, g, g.Ho, &i0, &i1);
    for (int64_t c0 = 0; c0 < C; c0 += B) {
      int64_t w = 0;
      if (g.s == 1 && C - c0 >= B) {
        while (w < g.W) {
          if (w >= wlo && w + 4 <= whi) {
            DxTile<4>(g, G, Kw, DX, n, h, w, i0, i1, 0, g.K, c0);
            w += 4;
          } else {
            int64_t j0, j1;
            GradTaps(w, g, g.Wo, &j0, &j1);
            DxTile<1>(g, G, Kw, DX, n, h, w, i0, i1, j0, j1, c0);
            w += 1;
          }
        }
      }
      for (; w < g.W; ++w) {  // strided convs and channel tails
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
}

// One sample's kernel-gradient part P: P[i, j, o] = sum over (ho, wo) of x[h, w, o % C] * g[ho, wo, o].
void DkSample(const Geometry& g, const float* X, const float* G, float* P) {
  const int64_t n = 0, R = g.Cout / g.Cin, C = g.Cin, KK = g.K * g.K * g.Cout;
  for (int64_t i = 0; i < g.K; ++i) {
    int64_t ha, hb;
    Valid(i, g, g.H, g.Ho, &ha, &hb);
    for (int64_t j = 0; j < g.K; ++j) {
      int64_t wa, wb;
      Valid(j, g, g.W, g.Wo, &wa, &wb);
      float* out = P + n * KK + (i * g.K + j) * g.Cout;
      for (int64_t c0 = 0; c0 < C; c0 += B) {
        if (C - c0 >= B) {
          for (int64_t r0 = 0; r0 < R; r0 += kTileEdges) {
            const int64_t o0 = r0 * C + c0;
            switch (std::min<int64_t>(kTileEdges, R - r0)) {
              case 1: DkTap<1>(g, X, G, out, n, i, j, ha, hb, wa, wb, o0); break;
              case 2: DkTap<2>(g, X, G, out, n, i, j, ha, hb, wa, wb, o0); break;
              case 3: DkTap<3>(g, X, G, out, n, i, j, ha, hb, wa, wb, o0); break;
              default: DkTap<4>(g, X, G, out, n, i, j, ha, hb, wa, wb, o0); break;
            }
          }
          continue;
        }
        for (int64_t r = 0; r < R; ++r) {
          const int64_t o0 = r * C + c0;
          Dot(out + o0, C - c0, [&](auto fma) {
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
}

// One sample of the backward pass: dx of the sample and its kernel-gradient part P.
void BackwardSample(const Geometry& g, const float* X, const float* Kw, const float* G, float* DX, float* P) {
  DxSample(g, Kw, G, DX);
  DkSample(g, X, G, P);
}

// out = the sum of the n parts of length len, added in part order (results independent of threads).
void SumParts(const float* parts, int64_t n, int64_t len, float* out) {
  std::fill(out, out + len, 0.f);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t t = 0; t < len; ++t) out[t] += parts[i * len + t];
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
  const int64_t KK = g.K * g.K * g.Cout;
  // One kernel-gradient partial per sample, summed in sample order afterwards.
  std::vector<float> partial(g.N * KK);
  float* P = partial.data();
  ParallelFor(pool, g.N, [=](int64_t n) {
    BackwardSample(g, X + n * g.H * g.W * g.Cin, Kw, G + n * g.Ho * g.Wo * g.Cout, DX + n * g.H * g.W * g.Cin,
                   P + n * KK);
  });
  SumParts(P, g.N, KK, dk->typed_data());
  return ffi::Error::Success();
}

// ---------------------------------------------------------------- separable blocks
// A depthwise conv followed by E pointwise (1x1) convs, one per edge: edge e maps
// depthwise channels [eC, eC + C) to outputs [eD, eD + D) with pw[e] (C x D). One
// sample at a time, so the depthwise output stays in cache and is never stored.

// One register tile of Pointwise: np <= 4 pixels x L outputs [j0, j0 + L), each weight vector
// loaded once for the pixels (L = B, or 8 or 4 for narrow output counts and tails).
template <int64_t L, int NP>
inline void PointwiseTile(const float* in, const float* we, float* out, int64_t p0, int64_t e, int64_t E,
                          int64_t I, int64_t O, int64_t j0) {
  typedef float VL __attribute__((vector_size(L * sizeof(float))));
  VL acc[NP] = {};
  for (int64_t i = 0; i < I; ++i) {
    VL wv;
    std::memcpy(&wv, we + i * O + j0, sizeof(VL));
    for (int q = 0; q < NP; ++q) acc[q] += in[(p0 + q) * E * I + e * I + i] * wv;
  }
  for (int q = 0; q < NP; ++q) std::memcpy(out + (p0 + q) * E * O + e * O + j0, &acc[q], sizeof(VL));
}

template <int64_t L>
inline void PointwiseTiles(const float* in, const float* we, float* out, int64_t p0, int64_t np, int64_t e,
                           int64_t E, int64_t I, int64_t O, int64_t j0) {
  switch (np) {
    case 4: PointwiseTile<L, 4>(in, we, out, p0, e, E, I, O, j0); break;
    case 3: PointwiseTile<L, 3>(in, we, out, p0, e, E, I, O, j0); break;
    case 2: PointwiseTile<L, 2>(in, we, out, p0, e, E, I, O, j0); break;
    default: PointwiseTile<L, 1>(in, we, out, p0, e, E, I, O, j0); break;
  }
}

// out[p, e*O + j] = sum_i in[p, e*I + i] * w[e, i, j] for P pixels: 4 pixels x B outputs
// per register tile, each weight vector loaded once for the 4 pixels; output counts narrower
// than B (PC-DARTS's 4 channels an op) and tails in 8- and 4-float vectors, then scalars.
void Pointwise(const float* in, const float* w, float* out, int64_t P, int64_t E, int64_t I, int64_t O) {
  for (int64_t p0 = 0; p0 < P; p0 += 4) {
    const int64_t np = std::min<int64_t>(4, P - p0);
    for (int64_t e = 0; e < E; ++e) {
      const float* we = w + e * I * O;
      int64_t j0 = 0;
      for (; O - j0 >= B; j0 += B) PointwiseTiles<B>(in, we, out, p0, np, e, E, I, O, j0);
      if constexpr (B > 8)
        for (; O - j0 >= 8; j0 += 8) PointwiseTiles<8>(in, we, out, p0, np, e, E, I, O, j0);
      if constexpr (B > 4)
        for (; O - j0 >= 4; j0 += 4) PointwiseTiles<4>(in, we, out, p0, np, e, E, I, O, j0);
      if (j0 == O) continue;
      const int64_t nj = O - j0;
      for (int64_t q = 0; q < np; ++q) {
        float acc[B] = {};
        for (int64_t i = 0; i < I; ++i) {
          const float a = in[(p0 + q) * E * I + e * I + i];
          for (int64_t j = 0; j < nj; ++j) acc[j] += a * we[i * O + j0 + j];
        }
        std::memcpy(out + (p0 + q) * E * O + e * O + j0, acc, nj * sizeof(float));
      }
    }
  }
}

// One register tile of PointwiseKernelGrad: NC <= 4 input channels x L outputs [d0, d0 + L).
template <int64_t L, int NC>
inline void KernelGradTile(const float* t, const float* gy, float* dw, int64_t P, int64_t E, int64_t C,
                           int64_t D, int64_t e, int64_t c0, int64_t d0) {
  typedef float VL __attribute__((vector_size(L * sizeof(float))));
  VL acc[NC] = {};
  for (int64_t p = 0; p < P; ++p) {
    VL gv;
    std::memcpy(&gv, gy + p * E * D + e * D + d0, sizeof(VL));
    const float* tp = t + p * E * C + e * C + c0;
    for (int q = 0; q < NC; ++q) acc[q] += tp[q] * gv;
  }
  for (int q = 0; q < NC; ++q) std::memcpy(dw + (e * C + c0 + q) * D + d0, &acc[q], sizeof(VL));
}

template <int64_t L>
inline void KernelGradTiles(const float* t, const float* gy, float* dw, int64_t P, int64_t E, int64_t C,
                            int64_t D, int64_t e, int64_t c0, int64_t nc, int64_t d0) {
  switch (nc) {
    case 4: KernelGradTile<L, 4>(t, gy, dw, P, E, C, D, e, c0, d0); break;
    case 3: KernelGradTile<L, 3>(t, gy, dw, P, E, C, D, e, c0, d0); break;
    case 2: KernelGradTile<L, 2>(t, gy, dw, P, E, C, D, e, c0, d0); break;
    default: KernelGradTile<L, 1>(t, gy, dw, P, E, C, D, e, c0, d0); break;
  }
}

// dw[e, c, d] = sum_p t[p, e*C + c] * g[p, e*D + d] over P pixels (one sample's part), with
// 4 input channels x B outputs in registers (8 or 4 for narrow output counts and tails) and the
// pixels in a fixed order.
void PointwiseKernelGrad(const float* t, const float* gy, float* dw, int64_t P, int64_t E, int64_t C,
                         int64_t D) {
  for (int64_t e = 0; e < E; ++e)
    for (int64_t c0 = 0; c0 < C; c0 += 4) {
      const int64_t nc = std::min<int64_t>(4, C - c0);
      int64_t d0 = 0;
      for (; D - d0 >= B; d0 += B) KernelGradTiles<B>(t, gy, dw, P, E, C, D, e, c0, nc, d0);
      if constexpr (B > 8)
        for (; D - d0 >= 8; d0 += 8) KernelGradTiles<8>(t, gy, dw, P, E, C, D, e, c0, nc, d0);
      if constexpr (B > 4)
        for (; D - d0 >= 4; d0 += 4) KernelGradTiles<4>(t, gy, dw, P, E, C, D, e, c0, nc, d0);
      if (d0 == D) continue;
      const int64_t nd = D - d0;
      for (int64_t q = 0; q < nc; ++q) {
        float acc[B] = {};
        for (int64_t p = 0; p < P; ++p) {
          const float a = t[p * E * C + e * C + c0 + q];
          for (int64_t d = 0; d < nd; ++d) acc[d] += a * gy[p * E * D + e * D + d0 + d];
        }
        std::memcpy(dw + (e * C + c0 + q) * D + d0, acc, nd * sizeof(float));
      }
    }
}

// ReLU fused into a separable call's input (relu = 1): the sample's input rectified into a buffer,
// so the rectified tensor is never stored; its gradient is masked by the unrectified input.
const float* Rectified(const float* x, int64_t len, bool relu, std::vector<float>* buf) {
  if (!relu) return x;
  buf->resize(len);
  for (int64_t t = 0; t < len; ++t) (*buf)[t] = x[t] > 0.f ? x[t] : 0.f;
  return buf->data();
}

// v = 0 where x <= 0 (the ReLU's derivative, 0 at 0 as in JAX).
void MaskBy(const float* x, float* v, int64_t len) {
  for (int64_t t = 0; t < len; ++t) v[t] = x[t] > 0.f ? v[t] : 0.f;
}

inline void AddTo(float* acc, const float* v, int64_t len) {
  for (int64_t t = 0; t < len; ++t) acc[t] += v[t];
}

// (E, C, D) -> (E, D, C): pointwise kernels transposed per edge.
std::vector<float> TransposePw(const float* pw, int64_t E, int64_t C, int64_t D) {
  std::vector<float> out(E * C * D);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t d = 0; d < D; ++d) out[(e * D + d) * C + c] = pw[(e * C + c) * D + d];
  return out;
}

ffi::Error SepShape(const Geometry& g, const ffi::Buffer<ffi::F32>& pw, int64_t* E, int64_t* C, int64_t* D) {
  auto pd = pw.dimensions();
  if (pd.size() != 3 || pd[0] * pd[1] != g.Cout)
    return ffi::Error::InvalidArgument("jaxnas separable: the pointwise kernels must be (E, C, D) with E*C "
                                       "depthwise channels");
  *E = pd[0];
  *C = pd[1];
  *D = pd[2];
  return ffi::Error::Success();
}

//   jaxnas_sep_fwd: x (N,H,W,Cin), k (K,K,E*C), pw (E,C,D) -> y (N,Ho,Wo,E*D)
ffi::Error SepForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> k,
                      ffi::Buffer<ffi::F32> pw, ffi::ResultBuffer<ffi::F32> y, int64_t stride,
                      int64_t dilation, int64_t padding, int64_t relu) {
  Geometry g = Shape(x, k, stride, dilation, padding);
  if (auto e = Check(g, x.dimensions().size(), k.dimensions().size()); e.failure()) return e;
  int64_t E, C, D;
  if (auto e = SepShape(g, pw, &E, &C, &D); e.failure()) return e;
  const float* X = x.typed_data();
  const float* Kw = k.typed_data();
  const float* PW = pw.typed_data();
  float* Y = y->typed_data();
  const int64_t P = g.Ho * g.Wo;
  ParallelFor(pool, g.N, [=](int64_t n) {
    std::vector<float> t(P * g.Cout), xr;
    ForwardSample(g, Rectified(X + n * g.H * g.W * g.Cin, g.H * g.W * g.Cin, relu, &xr), Kw, t.data());
    Pointwise(t.data(), PW, Y + n * P * E * D, P, E, C, D);
  });
  return ffi::Error::Success();
}

//   jaxnas_sep_bwd: x, k, pw, g (N,Ho,Wo,E*D) -> dx (N,H,W,Cin), dk (K,K,E*C), dpw (E,C,D)
// Per sample: g_t = g . pw^T and dx from it; for the weights, the depthwise output t recomputed,
// the sample's part of dpw = t^T . g and of dk from g_t. Parts are added in sample order.
// want_dx / want_dw (0 or 1): with 0 that output is zeros and not computed. An architecture
// gradient needs no weight gradients, and dx alone skips the recomputed depthwise conv, the
// kernel correlation and the pointwise kernel gradient: well over half of the call.
ffi::Error SepBackward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> k,
                       ffi::Buffer<ffi::F32> pw, ffi::Buffer<ffi::F32> gy, ffi::ResultBuffer<ffi::F32> dx,
                       ffi::ResultBuffer<ffi::F32> dk, ffi::ResultBuffer<ffi::F32> dpw, int64_t stride,
                       int64_t dilation, int64_t padding, int64_t relu, int64_t want_dx, int64_t want_dw) {
  Geometry g = Shape(x, k, stride, dilation, padding);
  if (auto e = Check(g, x.dimensions().size(), k.dimensions().size()); e.failure()) return e;
  int64_t E, C, D;
  if (auto e = SepShape(g, pw, &E, &C, &D); e.failure()) return e;
  const float* X = x.typed_data();
  const float* Kw = k.typed_data();
  const float* PW = pw.typed_data();
  const float* G = gy.typed_data();
  float* DX = dx->typed_data();
  const int64_t KK = g.K * g.K * g.Cout, WW = E * C * D, P = g.Ho * g.Wo;
  const std::vector<float> pwt = TransposePw(PW, E, C, D);  // (E, D, C)
  const float* PWT = pwt.data();
  std::vector<float> partial(want_dw ? g.N * (KK + WW) : 0);
  float* PK = partial.data();
  float* PP = PK + (want_dw ? g.N * KK : 0);
  ParallelFor(pool, g.N, [=](int64_t n) {
    std::vector<float> gt(P * g.Cout), t, xr;
    const int64_t XS = g.H * g.W * g.Cin;
    const float* Gn = G + n * P * E * D;
    Pointwise(Gn, PWT, gt.data(), P, E, D, C);
    if (want_dx) {
      DxSample(g, Kw, gt.data(), DX + n * XS);
      if (relu) MaskBy(X + n * XS, DX + n * XS, XS);
    } else {
      std::fill(DX + n * XS, DX + (n + 1) * XS, 0.f);
    }
    if (want_dw) {
      const float* Xn = Rectified(X + n * XS, XS, relu, &xr);
      t.resize(P * g.Cout);
      ForwardSample(g, Xn, Kw, t.data());
      PointwiseKernelGrad(t.data(), Gn, PP + n * WW, P, E, C, D);
      DkSample(g, Xn, gt.data(), PK + n * KK);
    }
  });
  if (want_dw) {
    SumParts(PK, g.N, KK, dk->typed_data());
    SumParts(PP, g.N, WW, dpw->typed_data());
  } else {
    std::fill(dk->typed_data(), dk->typed_data() + KK, 0.f);
    std::fill(dpw->typed_data(), dpw->typed_data() + WW, 0.f);
  }
  return ffi::Error::Success();
}

//   jaxnas_sep_bwd2: x, k, pw, g and cotangents a (like x), b (like k), c (like pw) of jaxnas_sep_bwd's
//   outputs -> the VJP of jaxnas_sep_bwd: dx, dk, dpw, dg. The block S(x, k, pw) is trilinear, so
//   <a, dx> + <b, dk> + <c, dpw> = <g, S(a, k, pw) + S(x, b, pw) + S(x, k, c)>. With D the depthwise
//   conv, P the pointwise one, t1 = D(a, k) + D(x, b), u = P^T(g, pw), u' = P^T(g, c):
//     dg = P(t1, pw) + P(D(x, k), c),   dpw = t1^T g,
//     dx = D^T(u, b) + D^T(u', k),      dk = corr(u, a) + corr(u', x).
//   One pass per sample (three depthwise convs where the six separate calls need six); parts are
//   added in sample order. want_dx / want_dw (0 or 1): with 0, dx or (dk, dpw) are zeros and not
//   computed (DARTS's exact second-order step differentiates in the architecture only, so the
//   weights it differentiates through are constants of that derivative).
ffi::Error SepSecond(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> k,
                     ffi::Buffer<ffi::F32> pw, ffi::Buffer<ffi::F32> gy, ffi::Buffer<ffi::F32> a,
                     ffi::Buffer<ffi::F32> b, ffi::Buffer<ffi::F32> c, ffi::ResultBuffer<ffi::F32> dx,
                     ffi::ResultBuffer<ffi::F32> dk, ffi::ResultBuffer<ffi::F32> dpw,
                     ffi::ResultBuffer<ffi::F32> dg, int64_t stride, int64_t dilation, int64_t padding,
                     int64_t relu, int64_t want_dx, int64_t want_dw) {
  Geometry g = Shape(x, k, stride, dilation, padding);
  if (auto e = Check(g, x.dimensions().size(), k.dimensions().size()); e.failure()) return e;
  int64_t E, C, D;
  if (auto e = SepShape(g, pw, &E, &C, &D); e.failure()) return e;
  const float *X = x.typed_data(), *Kw = k.typed_data(), *PW = pw.typed_data(), *G = gy.typed_data();
  const float *A = a.typed_data(), *Bk = b.typed_data(), *Cw = c.typed_data();
  float *DX = dx->typed_data(), *DG = dg->typed_data();
  const int64_t KK = g.K * g.K * g.Cout, WW = E * C * D, P = g.Ho * g.Wo, XS = g.H * g.W * g.Cin;
  const std::vector<float> pwt = TransposePw(PW, E, C, D), ct = TransposePw(Cw, E, C, D);
  const float *PWT = pwt.data(), *CT = ct.data();
  std::vector<float> partial(want_dw ? g.N * (2 * KK + WW) : 0);
  float* PK = partial.data();
  float* PP = PK + (want_dw ? 2 * g.N * KK : 0);
  ParallelFor(pool, g.N, [=](int64_t n) {
    const int64_t TS = P * g.Cout;
    std::vector<float> buf(4 * TS + XS + P * E * D);
    float *t0 = buf.data(), *t1 = t0 + TS, *u = t1 + TS, *u2 = u + TS, *dx2 = u2 + TS, *y2 = dx2 + XS;
    std::vector<float> xr, ar;  // with relu: x rectified, a masked (the VJP at relu(x), then masked)
    const float *Xn = Rectified(X + n * XS, XS, relu, &xr), *An = A + n * XS, *Gn = G + n * P * E * D;
    if (relu) {
      ar.assign(An, An + XS);
      MaskBy(X + n * XS, ar.data(), XS);
      An = ar.data();
    }
    float *DGn = DG + n * P * E * D, *DXn = DX + n * XS;
    ForwardSample(g, Xn, Kw, t0);
    ForwardSample(g, An, Kw, t1);
    ForwardSample(g, Xn, Bk, u);  // u is free until P^T(g, pw) below
    AddTo(t1, u, TS);
    Pointwise(t1, PW, DGn, P, E, C, D);
    Pointwise(t0, Cw, y2, P, E, C, D);
    AddTo(DGn, y2, P * E * D);
    if (want_dw) PointwiseKernelGrad(t1, Gn, PP + n * WW, P, E, C, D);
    if (!want_dx) std::fill(DXn, DXn + XS, 0.f);
    if (!want_dx && !want_dw) return;
    Pointwise(Gn, PWT, u, P, E, D, C);
    Pointwise(Gn, CT, u2, P, E, D, C);
    if (want_dx) {
      DxSample(g, Bk, u, DXn);
      DxSample(g, Kw, u2, dx2);
      AddTo(DXn, dx2, XS);
      if (relu) MaskBy(X + n * XS, DXn, XS);
    }
    if (want_dw) {
      DkSample(g, An, u, PK + n * KK);
      DkSample(g, Xn, u2, PK + (g.N + n) * KK);
    }
  });
  if (want_dw) {
    std::vector<float> dk2(KK);
    SumParts(PK, g.N, KK, dk->typed_data());
    SumParts(PK + g.N * KK, g.N, KK, dk2.data());
    AddTo(dk->typed_data(), dk2.data(), KK);
    SumParts(PP, g.N, WW, dpw->typed_data());
  } else {
    std::fill(dk->typed_data(), dk->typed_data() + KK, 0.f);
    std::fill(dpw->typed_data(), dpw->typed_data() + WW, 0.f);
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

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxnasSepFwd, SepForward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("dilation")
                                  .Attr<int64_t>("padding")
                                  .Attr<int64_t>("relu"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxnasSepBwd, SepBackward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("dilation")
                                  .Attr<int64_t>("padding")
                                  .Attr<int64_t>("relu")
                                  .Attr<int64_t>("want_dx")
                                  .Attr<int64_t>("want_dw"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxnasSepBwd2, SepSecond,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("dilation")
                                  .Attr<int64_t>("padding")
                                  .Attr<int64_t>("relu")
                                  .Attr<int64_t>("want_dx")
                                  .Attr<int64_t>("want_dw"));
