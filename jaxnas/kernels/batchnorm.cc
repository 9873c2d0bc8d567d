// Training-mode batch normalisation without affine parameters (the DARTS search
// network's BN) for XLA:CPU, called from JAX through the XLA FFI.
//
// XLA emits about eight fusions for each BN of a training step (statistics,
// normalisation, the backward reductions and the input gradient), and the
// search step has hundreds of BNs: they were most of its compile time. Here one
// call computes a BN forward and one its backward. x is viewed as (M, Ch): the
// last axis holds the channels, every other axis is reduced over. Rows are
// split into fixed chunks whose partial sums are added in chunk order (in
// double), so results do not depend on the number of threads.
//
//   jaxnas_bn_fwd: x (..., Ch), running mean (Ch), running var (Ch); momentum, eps
//                  -> y = (x - mean) * invstd, invstd (Ch), new running mean, new running var
//   jaxnas_bn_bwd: y, invstd, g (the cotangent of y), and the cotangents of invstd and of
//                  the new running statistics (Ch each); momentum -> dx
//   jaxnas_bn_bwd2: jaxnas_bn_bwd's inputs and a cotangent q of dx -> its VJP: the cotangents of
//                  y, invstd, g and the three per-channel cotangents
//
// The statistics are the batch mean and the biased variance E[x^2] - mean^2; the
// running statistics follow flax: new = momentum * old + (1 - momentum) * batch.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using jaxnas::ParallelFor;

constexpr int64_t kRows = 256;  // rows per chunk

// Per-channel sums over rows of f(a_row, b_row) pairs: part[t] holds chunk t's
// (sum a, sum a*b) in double; returns their totals, added in chunk order.
void ChunkSums(ffi::ThreadPool& pool, const float* A, const float* Bv, int64_t M, int64_t Ch,
               std::vector<double>* s1, std::vector<double>* s2) {
  const int64_t chunks = (M + kRows - 1) / kRows;
  std::vector<double> part(chunks * 2 * Ch);
  double* P = part.data();
  ParallelFor(pool, chunks, [=](int64_t t) {
    std::vector<float> a(Ch, 0.f), ab(Ch, 0.f);
    float* as = a.data();
    float* abs = ab.data();
    const int64_t r1 = std::min(M, (t + 1) * kRows);
    for (int64_t r = t * kRows; r < r1; ++r) {
      const float* ar = A + r * Ch;
      const float* br = Bv + r * Ch;
      for (int64_t c = 0; c < Ch; ++c) {
        as[c] += ar[c];
        abs[c] += ar[c] * br[c];
      }
    }
    for (int64_t c = 0; c < Ch; ++c) {
      P[t * 2 * Ch + c] = as[c];
      P[t * 2 * Ch + Ch + c] = abs[c];
    }
  });
  s1->assign(Ch, 0.0);
  s2->assign(Ch, 0.0);
  for (int64_t t = 0; t < chunks; ++t)
    for (int64_t c = 0; c < Ch; ++c) {
      (*s1)[c] += P[t * 2 * Ch + c];
      (*s2)[c] += P[t * 2 * Ch + Ch + c];
    }
}

// out[r, c] = a[r, c] * k1[c] + b[r, c] * k2[c] + k0[c]  (no b term where Bv is null)
void Affine2(ffi::ThreadPool& pool, const float* A, const float* Bv, const float* k1, const float* k2,
             const float* k0, float* out, int64_t M, int64_t Ch) {
  const int64_t chunks = (M + kRows - 1) / kRows;
  ParallelFor(pool, chunks, [=](int64_t t) {
    const int64_t r1 = std::min(M, (t + 1) * kRows);
    for (int64_t r = t * kRows; r < r1; ++r) {
      const float* ar = A + r * Ch;
      const float* br = Bv == nullptr ? nullptr : Bv + r * Ch;
      float* o = out + r * Ch;
      if (Bv == nullptr) {
        for (int64_t c = 0; c < Ch; ++c) o[c] = ar[c] * k1[c] + k0[c];
      } else {
        for (int64_t c = 0; c < Ch; ++c) o[c] = ar[c] * k1[c] + br[c] * k2[c] + k0[c];
      }
    }
  });
}

ffi::Error Shape(const ffi::Buffer<ffi::F32>& x, int64_t Ch, int64_t* M) {
  const int64_t total = x.element_count();
  if (Ch <= 0 || x.dimensions().size() == 0 ||
      x.dimensions()[x.dimensions().size() - 1] != Ch)
    return ffi::Error::InvalidArgument("jaxnas batch norm: the last axis must hold the channels");
  *M = total / Ch;
  if (*M == 0) return ffi::Error::InvalidArgument("jaxnas batch norm: empty batch");
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> rmean,
                   ffi::Buffer<ffi::F32> rvar, ffi::ResultBuffer<ffi::F32> y,
                   ffi::ResultBuffer<ffi::F32> invstd, ffi::ResultBuffer<ffi::F32> rmean2,
                   ffi::ResultBuffer<ffi::F32> rvar2, float momentum, float eps) {
  const int64_t Ch = rmean.element_count();
  int64_t M;
  if (auto e = Shape(x, Ch, &M); e.failure()) return e;
  const float* X = x.typed_data();
  std::vector<double> s, q;
  ChunkSums(pool, X, X, M, Ch, &s, &q);
  std::vector<float> shift(Ch);
  float* inv = invstd->typed_data();
  for (int64_t c = 0; c < Ch; ++c) {
    const double mean = s[c] / M;
    const double var = std::max(0.0, q[c] / M - mean * mean);
    inv[c] = static_cast<float>(1.0 / std::sqrt(var + eps));
    shift[c] = static_cast<float>(-mean) * inv[c];
    rmean2->typed_data()[c] = momentum * rmean.typed_data()[c] + (1.f - momentum) * static_cast<float>(mean);
    rvar2->typed_data()[c] = momentum * rvar.typed_data()[c] + (1.f - momentum) * static_cast<float>(var);
  }
  Affine2(pool, X, nullptr, inv, nullptr, shift.data(), y->typed_data(), M, Ch);
  return ffi::Error::Success();
}

// With y = (x - mean) * invstd over M rows:
//   dx = invstd * (g - mean(g) - y * mean(g * y))                    (through y)
//      - g_invstd * invstd^2 * y / M                                  (through invstd)
//      + (1 - momentum) * (g_rmean + 2 * g_rvar * y / invstd) / M     (through the running stats)
ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> y, ffi::Buffer<ffi::F32> invstd,
                    ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::F32> ginv, ffi::Buffer<ffi::F32> grmean,
                    ffi::Buffer<ffi::F32> grvar, ffi::ResultBuffer<ffi::F32> dx, float momentum) {
  const int64_t Ch = invstd.element_count();
  int64_t M;
  if (auto e = Shape(y, Ch, &M); e.failure()) return e;
  const float* Y = y.typed_data();
  const float* G = g.typed_data();
  std::vector<double> sg, sgy;
  ChunkSums(pool, G, Y, M, Ch, &sg, &sgy);
  std::vector<float> kg(Ch), ky(Ch), k0(Ch);
  for (int64_t c = 0; c < Ch; ++c) {
    const double inv = invstd.typed_data()[c];
    const double run = 1.0 - momentum;
    kg[c] = static_cast<float>(inv);
    ky[c] = static_cast<float>((-inv * sgy[c] - ginv.typed_data()[c] * inv * inv +
                                2.0 * run * grvar.typed_data()[c] / inv) / M);
    k0[c] = static_cast<float>((-inv * sg[c] + run * grmean.typed_data()[c]) / M);
  }
  Affine2(pool, G, Y, kg.data(), ky.data(), k0.data(), dx->typed_data(), M, Ch);
  return ffi::Error::Success();
}

// The VJP of Backward for a cotangent q of dx (second derivatives: DARTS's exact second order).
// With dx = inv * g + ky * y + k0 as above, S_ab the per-channel sum of a * b over rows:
//   d/dg = inv * q - (inv / M) * (S_qy * y + S_q)         d/dy = ky * q - (inv * S_qy / M) * g
//   d/dinv = S_qg - S_qy * (S_gy + 2 g_inv inv + 2 run g_var / inv^2) / M - S_q * S_g / M
//   d/dg_inv = -S_qy inv^2 / M,   d/dg_mean = run S_q / M,   d/dg_var = 2 run S_qy / (inv M)
ffi::Error Second(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> y, ffi::Buffer<ffi::F32> invstd,
                  ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::F32> ginv, ffi::Buffer<ffi::F32> grmean,
                  ffi::Buffer<ffi::F32> grvar, ffi::Buffer<ffi::F32> q, ffi::ResultBuffer<ffi::F32> dy,
                  ffi::ResultBuffer<ffi::F32> dinv, ffi::ResultBuffer<ffi::F32> dg,
                  ffi::ResultBuffer<ffi::F32> dginv, ffi::ResultBuffer<ffi::F32> dgrmean,
                  ffi::ResultBuffer<ffi::F32> dgrvar, float momentum) {
  const int64_t Ch = invstd.element_count();
  int64_t M;
  if (auto e = Shape(y, Ch, &M); e.failure()) return e;
  const float* Y = y.typed_data();
  const float* G = g.typed_data();
  const float* Q = q.typed_data();
  std::vector<double> sg, sgy, sq, sqy, sq2, sqg;
  ChunkSums(pool, G, Y, M, Ch, &sg, &sgy);
  ChunkSums(pool, Q, Y, M, Ch, &sq, &sqy);
  ChunkSums(pool, Q, G, M, Ch, &sq2, &sqg);
  std::vector<float> kq_g(Ch), ky_g(Ch), k0_g(Ch), kq_y(Ch), kg_y(Ch), zero(Ch, 0.f);
  const double run = 1.0 - momentum;
  for (int64_t c = 0; c < Ch; ++c) {
    const double inv = invstd.typed_data()[c], gi = ginv.typed_data()[c], gv = grvar.typed_data()[c];
    const double ky = (-inv * sgy[c] - gi * inv * inv + 2.0 * run * gv / inv) / M;
    kq_g[c] = static_cast<float>(inv);
    ky_g[c] = static_cast<float>(-inv * sqy[c] / M);
    k0_g[c] = static_cast<float>(-inv * sq[c] / M);
    kq_y[c] = static_cast<float>(ky);
    kg_y[c] = static_cast<float>(-inv * sqy[c] / M);
    dinv->typed_data()[c] = static_cast<float>(
        sqg[c] - sqy[c] * (sgy[c] + 2.0 * gi * inv + 2.0 * run * gv / (inv * inv)) / M - sq[c] * sg[c] / M);
    dginv->typed_data()[c] = static_cast<float>(-sqy[c] * inv * inv / M);
    dgrmean->typed_data()[c] = static_cast<float>(run * sq[c] / M);
    dgrvar->typed_data()[c] = static_cast<float>(2.0 * run * sqy[c] / (inv * M));
  }
  Affine2(pool, Q, Y, kq_g.data(), ky_g.data(), k0_g.data(), dg->typed_data(), M, Ch);
  Affine2(pool, Q, G, kq_y.data(), kg_y.data(), zero.data(), dy->typed_data(), M, Ch);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxnasBnBwd2, Second,
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
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("momentum"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxnasBnFwd, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("momentum")
                                  .Attr<float>("eps"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxnasBnBwd, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("momentum"));
