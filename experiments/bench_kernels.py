"""Every native CPU kernel at the shapes of the DARTS search step, against its XLA form and the machine's peak.

    python experiments/bench_kernels.py            # batch 32, C=16: the benchmark's search step
    python experiments/bench_kernels.py --quick    # fewer shapes and repetitions
    python experiments/bench_kernels.py --partial 4   # PC-DARTS's ops: C/4 channels each (4, 8 and 16)

    JAXNAS_NATIVE_MARCH=x86-64-v3 python experiments/bench_kernels.py   # the AVX2 build, on any x86 CPU

First the machine: CPU model, vector extensions, cores, and two probes compiled here for the kernels'
target (``gcc -O3 -march=native -fopenmp``, or ``$JAXNAS_NATIVE_MARCH``; one thread per core): the FMA peak (independent vector FMA chains,
GFLOP/s) and the stream triad bandwidth (a[i] = b[i] + s * c[i] over arrays far larger than the caches,
GB/s counting 3 arrays). Then, per kernel and shape, forward, forward+backward (the gradient of the
cotangent) and ``2nd`` (the VJP of that VJP: the second derivatives exact second-order DARTS takes;
GFLOP/s only for the separable block, whose work is counted), native and XLA (``jaxnas.kernels.reference``): the median time, GFLOP/s, the minimum memory
traffic in GB/s (inputs read once and outputs written once) and both as a fraction of the peaks.
The shapes are those of the 8-cell C=16 search step at batch 32 on 32x32 images: the normal cells'
16 channels at 32x32, the reductions' 32 and 64 channels at 16x16 and 8x8, E=4 edges reading a cell
input. Output: one JSON line per measurement after a table; ``--out FILE`` writes the JSON lines.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchutil import machine

from jaxnas import hugepages

PROBE_C = r"""
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#define LANES 64
double fma_gflops(long iters) {
  double best = 0;
  for (int rep = 0; rep < 3; rep++) {
    double t0 = omp_get_wtime();
    float sink = 0;
    #pragma omp parallel reduction(+:sink)
    {
      float a[8][LANES], b = 0.999999f, c = 1e-7f;
      for (int j = 0; j < 8; j++) for (int l = 0; l < LANES; l++) a[j][l] = (float)(j + l);
      for (long i = 0; i < iters; i++)
        for (int j = 0; j < 8; j++)
          #pragma omp simd
          for (int l = 0; l < LANES; l++) a[j][l] = a[j][l] * b + c;
      for (int j = 0; j < 8; j++) for (int l = 0; l < LANES; l++) sink += a[j][l];
    }
    double t = omp_get_wtime() - t0;
    double flops = 2.0 * 8 * LANES * (double)iters * omp_get_max_threads();
    if (flops / t / 1e9 > best && sink != 12345.f) best = flops / t / 1e9;
  }
  return best;
}
double triad_gbs(long n) {
  float *a = aligned_alloc(64, n * 4), *b = aligned_alloc(64, n * 4), *c = aligned_alloc(64, n * 4);
  #pragma omp parallel for
  for (long i = 0; i < n; i++) { a[i] = 0; b[i] = 1; c[i] = 2; }
  double best = 0;
  for (int rep = 0; rep < 5; rep++) {
    double t0 = omp_get_wtime();
    #pragma omp parallel for simd
    for (long i = 0; i < n; i++) a[i] = b[i] + 0.5f * c[i];
    double t = omp_get_wtime() - t0;
    if (3.0 * n * 4 / t / 1e9 > best) best = 3.0 * n * 4 / t / 1e9;
  }
  free(a); free(b); free(c);
  return best;
}
"""


def probes() -> dict:
    """FMA peak (GFLOP/s) and triad bandwidth (GB/s) of this machine, all cores."""
    d = tempfile.mkdtemp()
    src, lib = os.path.join(d, "probe.c"), os.path.join(d, "probe.so")
    with open(src, "w") as f:
        f.write(PROBE_C)
    try:
        march = f"-march={os.environ.get('JAXNAS_NATIVE_MARCH') or 'native'}"  # the kernels' target: same vectors
        subprocess.run(["gcc", "-O3", march, "-fopenmp", "-shared", "-fPIC", src, "-o", lib], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"probe not built ({e}); fractions of peak left out", file=sys.stderr)
        return {}
    so = ctypes.CDLL(lib)
    so.fma_gflops.restype = so.triad_gbs.restype = ctypes.c_double
    so.fma_gflops.argtypes, so.triad_gbs.argtypes = [ctypes.c_long], [ctypes.c_long]
    return {"fma_gflops": round(so.fma_gflops(20_000_000), 1), "triad_gbs": round(so.triad_gbs(64 * 1024 * 1024), 1)}


def cases(quick: bool, partial: int = 1) -> list[dict]:
    """(kernel, shape) pairs of the search step: (N, H, C) per cell type; E edges read one cell input.
    ``partial``: PC-DARTS's K, the ops seeing C/K channels."""
    N = 32
    sizes = [(32, 16)] if quick else [(32, 16), (16, 32), (8, 64)]
    sizes = [(H, C // partial) for H, C in sizes]
    out = []
    for H, C in sizes:
        for k, dil, stride in ((3, 1, 1), (5, 1, 1), (3, 2, 1), (3, 1, 2)) if not quick else ((3, 1, 1), (3, 1, 2)):
            out.append(dict(kernel="separable", N=N, H=H, C=C, E=4, k=k, dilation=dil, stride=stride))
        out.append(dict(kernel="depthwise", N=N, H=H, C=C, E=4, k=3, dilation=1, stride=1))
        out.append(dict(kernel="batch_norm", N=N, H=H, C=C, E=4))
        for kind in ("max", "avg"):
            out.append(dict(kernel="pool", kind=kind, N=N, H=H, C=C, stride=1))
    return out


def bench_case(case: dict, reps: int, peak: dict) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxnas.kernels import native, reference
    from jaxnas.kernels.reference import out_size

    rng = np.random.default_rng(0)
    N, H, C = case["N"], case["H"], case["C"]
    x = jnp.asarray(rng.normal(size=(N, H, H, C)).astype(np.float32))
    kind = case["kernel"]
    flops2 = 0
    if kind in ("separable", "depthwise"):
        k, s, d, E = case["k"], case["stride"], case["dilation"], case["E"]
        pad = d * (k - 1) // 2
        Ho = out_size(H, k, s, d, pad)
        if kind == "separable":
            dw = jnp.asarray(rng.normal(size=(E, k, k, C)).astype(np.float32))
            pw = jnp.asarray(rng.normal(size=(E, C, C)).astype(np.float32))
            args = (x, dw, pw)
            fns = {"native": lambda a, b, c: native.separable(a, b, c, s, d, pad),
                   "xla": lambda a, b, c: reference.separable(a, b, c, s, d, pad, "dense")}
            flops = 2 * N * Ho * Ho * E * C * (k * k + C)
            nbytes = 4 * (x.size + dw.size + pw.size + N * Ho * Ho * E * C)
            # the second-order chain: forward, backward (recompute, P^T, pw grad, dx, dk) and
            # jaxnas_sep_bwd2 (three depthwise convs, four pointwise passes and a pw grad, two dx, two dk)
            flops2 = 2 * N * Ho * Ho * E * C * (11 * k * k + 8 * C)
        else:
            kern = jnp.asarray(rng.normal(size=(k, k, E * C)).astype(np.float32))
            args = (x, kern)
            fns = {"native": lambda a, b: native.depthwise_conv(a, b, s, d, pad),
                   "xla": lambda a, b: reference.depthwise_conv(a, b, s, d, pad, "dense")}
            flops = 2 * N * Ho * Ho * E * C * k * k
            nbytes = 4 * (x.size + kern.size + N * Ho * Ho * E * C)
    elif kind == "batch_norm":
        xe = jnp.asarray(rng.normal(size=(N, H, H, case["E"] * C)).astype(np.float32))
        m, v = jnp.zeros(xe.shape[-1]), jnp.ones(xe.shape[-1])
        args = (xe,)
        fns = {"native": lambda a: native.batch_norm(a, m, v, 0.1, 1e-5)[0],
               "xla": lambda a: reference.batch_norm(a, m, v, 0.1, 1e-5)[0]}
        flops = 7 * xe.size  # mean, var and normalize: about 7 flops an element
        nbytes = 4 * 2 * xe.size
    else:
        s = case["stride"]
        args = (x,)
        fns = {"native": lambda a: native.pool(a, case["kind"], 3, s, 1),
               "xla": lambda a: reference.pool(a, case["kind"], 3, s, 1)}
        Ho = out_size(H, 3, s, 1, 1)
        flops = 9 * N * Ho * Ho * C
        nbytes = 4 * (x.size + N * Ho * Ho * C)

    def vjp_of(fn):
        """(*args, g) -> the VJP of fn at args for the cotangent g."""
        return lambda *a: jax.vjp(fn, *a[:-1])[1](a[-1])

    rows = []
    for impl, fn in fns.items():
        ct = jnp.asarray(rng.normal(size=jax.eval_shape(fn, *args).shape).astype(np.float32))
        for mode in ("fwd", "fwd+bwd", "2nd"):
            if mode == "fwd":
                f, call = jax.jit(fn), args
            elif mode == "fwd+bwd":  # the VJP with a random cotangent as an argument (a constant lets XLA fold it)
                f, call = jax.jit(lambda g, *a, fn=fn: jax.vjp(fn, *a)[1](g)), (ct, *args)
            else:  # second derivatives (exact second-order DARTS): the VJP of that VJP for random cotangents
                first = vjp_of(fn)
                q = tuple(jnp.asarray(rng.normal(size=o.shape).astype(np.float32))
                          for o in jax.eval_shape(first, *args, ct))
                f, call = jax.jit(lambda q, *a, first=first: jax.vjp(first, *a)[1](q)), (q, *args, ct)
            for _ in range(3):
                jax.block_until_ready(f(*call))
            times = []
            for _ in range(reps):
                t = time.perf_counter()
                jax.block_until_ready(f(*call))
                times.append(time.perf_counter() - t)
            med = statistics.median(times)
            fl, by = {"fwd": (flops, nbytes), "fwd+bwd": (3 * flops, 3 * nbytes),  # backward ~ 2x forward
                      "2nd": (flops2, 9 * nbytes)}[mode]
            row = {**case, "impl": impl, "mode": mode, "ms": round(1e3 * med, 3)}
            if fl:  # only counted where the work is known (the second-order chain: the separable block)
                row.update(gflops=round(fl / med / 1e9, 2), gbs=round(by / med / 1e9, 2))
            if peak and fl:
                row["pct_fma_peak"] = round(100 * row["gflops"] / peak["fma_gflops"], 1)
                row["pct_triad"] = round(100 * row["gbs"] / peak["triad_gbs"], 1)
            rows.append(row)
    return rows


def main() -> None:
    hugepages.reexec()  # as the jaxnas command does (jaxnas/hugepages.py)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reps", type=int, default=0, help="timed repetitions (default 20, 5 with --quick)")
    p.add_argument("--partial", type=int, default=1, help="PC-DARTS's K: the ops see C/K channels")
    p.add_argument("--out", default="")
    args = p.parse_args()
    from jaxnas.kernels import build

    if not build.available():
        print("error: the native kernels are not available on this machine (see jaxnas/kernels/build.py)",
              file=sys.stderr)
        sys.exit(2)
    peak = probes()
    print(json.dumps({"machine": machine(), **peak}), flush=True)
    rows = []
    for case in cases(args.quick, args.partial):
        rows += bench_case(case, args.reps or (5 if args.quick else 20), peak)
    print(f"{'kernel':10s} {'shape':>24s} {'impl':>6s} {'mode':>8s} {'ms':>9s} {'GFLOP/s':>8s} {'GB/s':>7s} "
          f"{'%FMA':>6s} {'%triad':>7s}")
    for r in rows:
        shape = f"N{r['N']} H{r['H']} C{r['C']}" + (f" E{r['E']}" if "E" in r else "") + \
            (f" k{r['k']}d{r['dilation']}s{r['stride']}" if "k" in r else "") + (f" {r['kind']}" if "kind" in r else "")
        nan = float("nan")
        print(f"{r['kernel']:10s} {shape:>24s} {r['impl']:>6s} {r['mode']:>8s} {r['ms']:9.3f} {r.get('gflops', nan):8.2f} "
              f"{r.get('gbs', nan):7.2f} {r.get('pct_fma_peak', nan):6.1f} {r.get('pct_triad', nan):7.1f}")
    if args.out:
        with open(args.out, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
