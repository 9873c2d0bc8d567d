"""Kernels of our own for XLA:CPU, compiled on first use and called through the XLA FFI.

- ``depthwise.cc``: the depthwise conv (XLA:CPU runs grouped convolutions on a slow
  generic path, and the dense workaround costs k*k*C*C MACs a pixel where a depthwise
  conv needs k*k*C), and the separable block of DARTS's conv ops (the depthwise conv
  of E edges, then each edge's 1x1 conv) in one call each way, which keeps XLA from
  emitting slices, matmuls and concatenations around it.
- ``batchnorm.cc``: training-mode BN, forward and backward one call each (XLA emits
  about eight fusions per BN; the search step's hundreds of BNs were most of its
  compile time).
- ``pool.cc``: max and average pooling (XLA's reduce-window and its iota-based
  max-pool gradient were a quarter of the search step's run time).

Every kernel is vectorised, threaded on XLA's intra-op pool, and adds its partial
sums in a fixed order (docs/benchmarks.md has the measurements). They are compiled
with the machine's C++ compiler against jaxlib's FFI headers into a per-user cache
the first time they are needed (a few seconds) and reused after that; nothing is
built at install time. Where they cannot be built (no compiler) or ``JAXNAS_NATIVE=0``
is set, ``available()`` is False and callers use XLA's own ops instead.

The FFI calls are opaque to XLA's SPMD partitioner: with several devices they run on
the whole (gathered) batch on each device, which gives the same numbers (BN statistics
over the global batch included) but none of the speed-up.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxnas.errors import unknown

_HERE = Path(__file__).parent
_SOURCES = [_HERE / "depthwise.cc", _HERE / "batchnorm.cc", _HERE / "pool.cc"]
_HEADERS = [_HERE / "common.h"]
_FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w"]
_TARGETS = {"jaxnas_dw_fwd": "JaxnasDwFwd", "jaxnas_dw_bwd": "JaxnasDwBwd",
            "jaxnas_materialize": "JaxnasMaterialize", "jaxnas_bn_fwd": "JaxnasBnFwd",
            "jaxnas_bn_bwd": "JaxnasBnBwd", "jaxnas_sep_fwd": "JaxnasSepFwd", "jaxnas_sep_bwd": "JaxnasSepBwd",
            "jaxnas_pool_fwd": "JaxnasPoolFwd", "jaxnas_pool_bwd": "JaxnasPoolBwd"}


def cache_dir() -> Path:
    """Where compiled kernels live: ``$JAXNAS_NATIVE_DIR``, else ``~/.cache/jaxnas/native``."""
    return Path(os.environ.get("JAXNAS_NATIVE_DIR") or
                os.path.join(os.path.expanduser("~"), ".cache", "jaxnas", "native"))


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        path = shutil.which(name) if name else None
        if path:
            return path
    return None


def build(verbose: bool = False) -> Path:
    """Compile the kernels (``depthwise.cc``, ``batchnorm.cc``, ``pool.cc``) into the cache (atomically) unless
    they are there; return the library path.

    The file name hashes the sources, jaxlib's version, the flags and the CPU, so a
    changed kernel, jaxlib or machine gets its own build.
    """
    import jaxlib

    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX)")
    include = jax.ffi.include_dir()
    key = hashlib.sha256("\0".join([*(p.read_text() for p in _SOURCES + _HEADERS), jaxlib.__version__, cxx, *_FLAGS,
                                    platform.machine(), _cpu_flags()]).encode()).hexdigest()[:16]
    path = cache_dir() / f"kernels-{key}.so"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(fd)
    try:
        cmd = [cxx, *_FLAGS, "-I", include, "-I", str(_HERE), *map(str, _SOURCES), "-o", tmp]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-2000:]}")
        if verbose:
            print(" ".join(cmd))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


_REGISTERED: list[Path] = []  # the library whose targets this process registered (XLA keeps them for good)


@functools.cache
def _load() -> bool:
    if os.environ.get("JAXNAS_NATIVE", "1") == "0":
        return False
    if _REGISTERED:
        return True
    try:
        path = build()
        lib = ctypes.cdll.LoadLibrary(str(path))
        for target, symbol in _TARGETS.items():
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
        _REGISTERED.append(path)
    except (OSError, RuntimeError, AttributeError) as e:
        warnings.warn(f"jaxnas: the native kernels are not available ({e}); using XLA's convolutions and BN",
                      RuntimeWarning, stacklevel=3)
        return False
    return True


def available() -> bool:
    """True when the kernel is built and registered, and JAX runs on the CPU."""
    return jax.default_backend() == "cpu" and _load()


def _out(n: int, k: int, stride: int, dilation: int, padding: int) -> int:
    return (n + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def reference(x: jax.Array, kernel: jax.Array, stride: int, dilation: int, padding: int) -> jax.Array:
    """What ``depthwise_conv`` computes, as XLA's grouped convolution (the specification)."""
    repeat = kernel.shape[-1] // x.shape[-1]
    return jax.lax.conv_general_dilated(
        jnp.tile(x, (1, 1, 1, repeat)), kernel[:, :, None, :], (stride, stride),
        ((padding, padding), (padding, padding)), rhs_dilation=(dilation, dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=kernel.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int, dilation: int, padding: int) -> jax.Array:
    """Depthwise kxk conv, NHWC float32: x (N, H, W, C), kernel (k, k, R*C) -> (N, H', W', R*C).

    Output channel o reads input channel o % C, so R edges that share one input run
    in one call. Zero padding ``padding`` on every side. Needs ``available()``.
    """
    N, H, W, _ = x.shape
    k = kernel.shape[0]
    out = jax.ShapeDtypeStruct((N, _out(H, k, stride, dilation, padding), _out(W, k, stride, dilation, padding),
                                kernel.shape[-1]), jnp.float32)
    return jax.ffi.ffi_call("jaxnas_dw_fwd", out, vmap_method="sequential")(
        x, kernel, stride=np.int64(stride), dilation=np.int64(dilation), padding=np.int64(padding))


def _fwd(x, kernel, stride, dilation, padding):
    return depthwise_conv(x, kernel, stride, dilation, padding), (x, kernel)


def _bwd(stride, dilation, padding, res, g):
    x, kernel = res
    return _transpose(x, kernel, g, stride, dilation, padding)


depthwise_conv.defvjp(_fwd, _bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _transpose(x, kernel, g, stride, dilation, padding):
    """``(dx, dk)`` of ``y = depthwise_conv(x, kernel)`` for the cotangent ``g`` (one pass)."""
    shapes = (jax.ShapeDtypeStruct(x.shape, jnp.float32), jax.ShapeDtypeStruct(kernel.shape, jnp.float32))
    return tuple(jax.ffi.ffi_call("jaxnas_dw_bwd", shapes, vmap_method="sequential")(
        x, kernel, g, stride=np.int64(stride), dilation=np.int64(dilation), padding=np.int64(padding)))


def _transpose_fwd(x, kernel, g, stride, dilation, padding):
    return _transpose(x, kernel, g, stride, dilation, padding), (x, kernel, g)


def _transpose_bwd(stride, dilation, padding, res, cot):
    """The conv is bilinear, so with cotangents (a, b) for (dx, dk): <a, dx> = <D(a, k), g> and
    <b, dk> = <D(x, b), g>. Hence d/dx = dx-part of the transpose at kernel b, d/dk = dk-part at
    input a, d/dg = D(a, k) + D(x, b); all built from the same two calls, so any order of
    reverse-mode derivative works (DARTS's exact second-order step needs two)."""
    x, kernel, g = res
    a, b = cot
    dx, dk = _transpose(a, b, g, stride, dilation, padding)
    dg = depthwise_conv(a, kernel, stride, dilation, padding) + depthwise_conv(x, b, stride, dilation, padding)
    return dx, dk, dg


_transpose.defvjp(_transpose_fwd, _transpose_bwd)


@jax.custom_vjp
def materialize(x: jax.Array) -> jax.Array:
    """``x`` unchanged, but computed once and kept in memory (so is its cotangent).

    XLA duplicates cheap elementwise producers into every consumer. A node of a DARTS
    cell is a weighted sum of ~30 BN'd op outputs that several later nodes and the
    cell output read, so XLA:CPU recomputed it (and the earlier nodes it contains)
    in each of them: the cell-output concatenation alone took 0.2 s a call. XLA
    cannot fuse across a custom call, so this one (a no-op on an aliased buffer) stops it.
    """
    return jax.ffi.ffi_call("jaxnas_materialize", jax.ShapeDtypeStruct(x.shape, x.dtype),
                            input_output_aliases={0: 0}, vmap_method="broadcast_all")(x)


materialize.defvjp(lambda x: (materialize(x), None), lambda _, g: (materialize(g),))


def separable_reference(x: jax.Array, kernel: jax.Array, pw: jax.Array, stride: int, dilation: int,
                        padding: int) -> jax.Array:
    """What ``_sep`` computes, from ``depthwise_conv`` and E matmuls: x (N, H, W, Cin),
    kernel (k, k, E*C), pw (E, C, D) -> (N, H', W', E*D)."""
    E, C, _ = pw.shape
    y = depthwise_conv(x, kernel, stride, dilation, padding)
    return jnp.concatenate([y[..., e * C:(e + 1) * C] @ pw[e] for e in range(E)], axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _sep(x, kernel, pw, stride, dilation, padding):
    N, H, W, _ = x.shape
    k = kernel.shape[0]
    out = jax.ShapeDtypeStruct((N, _out(H, k, stride, dilation, padding), _out(W, k, stride, dilation, padding),
                                pw.shape[0] * pw.shape[2]), jnp.float32)
    return jax.ffi.ffi_call("jaxnas_sep_fwd", out, vmap_method="sequential")(
        x, kernel, pw, stride=np.int64(stride), dilation=np.int64(dilation), padding=np.int64(padding))


def _sep_fwd(x, kernel, pw, stride, dilation, padding):
    return _sep(x, kernel, pw, stride, dilation, padding), (x, kernel, pw)


def _sep_bwd(stride, dilation, padding, res, g):
    return _sep_transpose(*res, g, stride, dilation, padding)


_sep.defvjp(_sep_fwd, _sep_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _sep_transpose(x, kernel, pw, g, stride, dilation, padding):
    """``(dx, dkernel, dpw)`` of ``_sep`` for the cotangent ``g``: one call, the depthwise output
    recomputed per sample and never stored."""
    shapes = tuple(jax.ShapeDtypeStruct(a.shape, jnp.float32) for a in (x, kernel, pw))
    return tuple(jax.ffi.ffi_call("jaxnas_sep_bwd", shapes, vmap_method="sequential")(
        x, kernel, pw, g, stride=np.int64(stride), dilation=np.int64(dilation), padding=np.int64(padding)))


def _sep_transpose_fwd(x, kernel, pw, g, stride, dilation, padding):
    return _sep_transpose(x, kernel, pw, g, stride, dilation, padding), (x, kernel, pw, g)


def _reference_transpose_vjp(reference, res, cot):
    """The VJP of ``(*primals, g) -> vjp(reference, *primals)(g)`` at ``res``: second derivatives
    (DARTS's exact second-order step) of a kernel whose transpose is a native call, taken
    through its jnp/XLA reference instead."""
    def transpose(*args):
        return jax.vjp(reference, *args[:-1])[1](args[-1])

    return jax.vjp(transpose, *res)[1](cot)


def _sep_transpose_bwd(stride, dilation, padding, res, cot):
    """Through ``separable_reference``, whose depthwise conv is itself differentiable to any order."""
    return _reference_transpose_vjp(lambda *a: separable_reference(*a, stride, dilation, padding), res, cot)


_sep_transpose.defvjp(_sep_transpose_fwd, _sep_transpose_bwd)


def separable(x: jax.Array, dw: jax.Array, pw: jax.Array, stride: int, dilation: int, padding: int) -> jax.Array:
    """Depthwise kxk then pointwise 1x1 for E edges: x (N, H, W, C) shared or (N, H, W, E, C),
    dw (E, k, k, C), pw (E, C, D) -> (N, H', W', E, D).

    One kernel call each way (``jaxnas_sep_fwd``/``_bwd``): the depthwise convs of all E edges,
    then each edge's pointwise conv on its channels, a sample at a time, so the depthwise
    output is never stored and XLA sees no slices, matmuls or concatenations.
    """
    E, k, _, C = dw.shape
    y = _sep(x.reshape(x.shape[:3] + (-1,)), jnp.moveaxis(dw, 0, 2).reshape(k, k, E * C), pw,
             stride, dilation, padding)
    return y.reshape(y.shape[:3] + (E, pw.shape[-1]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _bn(x, running_mean, running_var, momentum, eps):
    ch = (jax.ShapeDtypeStruct(running_mean.shape, jnp.float32),) * 3
    return tuple(jax.ffi.ffi_call("jaxnas_bn_fwd", (jax.ShapeDtypeStruct(x.shape, jnp.float32),) + ch,
                                  vmap_method="sequential")(
        x, running_mean, running_var, momentum=np.float32(momentum), eps=np.float32(eps)))


def _bn_fwd(x, running_mean, running_var, momentum, eps):
    out = _bn(x, running_mean, running_var, momentum, eps)
    return out, (out[0], out[1])


def _bn_bwd(momentum, eps, res, cot):
    y, invstd = res
    g, g_inv, g_mean, g_var = cot
    return _bn_transpose(y, invstd, g, g_inv, g_mean, g_var, momentum), momentum * g_mean, momentum * g_var


_bn.defvjp(_bn_fwd, _bn_bwd)


def _bn_transpose_reference(y, invstd, g, g_inv, g_mean, g_var, momentum):
    """What ``jaxnas_bn_bwd`` computes (batchnorm.cc), in jnp: the input cotangent of ``_bn``."""
    axes = tuple(range(y.ndim - 1))
    m = y.size // y.shape[-1]
    run = 1.0 - momentum
    ky = (-invstd * (g * y).sum(axes) - g_inv * invstd * invstd + 2.0 * run * g_var / invstd) / m
    k0 = (-invstd * g.sum(axes) + run * g_mean) / m
    return g * invstd + y * ky + k0


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _bn_transpose(y, invstd, g, g_inv, g_mean, g_var, momentum):
    return jax.ffi.ffi_call("jaxnas_bn_bwd", jax.ShapeDtypeStruct(y.shape, jnp.float32),
                            vmap_method="sequential")(y, invstd, g, g_inv, g_mean, g_var,
                                                      momentum=np.float32(momentum))


def _bn_transpose_fwd(y, invstd, g, g_inv, g_mean, g_var, momentum):
    args = (y, invstd, g, g_inv, g_mean, g_var)
    return _bn_transpose(*args, momentum), args


def _bn_transpose_bwd(momentum, args, cot):
    """Second derivatives (DARTS's exact second-order step) through the jnp form of the same maths."""
    return jax.vjp(lambda *a: _bn_transpose_reference(*a, momentum), *args)[1](cot)


_bn_transpose.defvjp(_bn_transpose_fwd, _bn_transpose_bwd)


def batch_norm(x: jax.Array, running_mean: jax.Array, running_var: jax.Array, momentum: float,
               eps: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Training-mode BN without affine parameters over the last axis of float32 ``x``:
    ``(y, new_running_mean, new_running_var)`` with y = (x - mean) / sqrt(var + eps), the batch
    mean and biased variance over every other axis, and new = momentum * old + (1 - momentum) *
    batch (flax's convention). Differentiable to any order in x. Needs ``available()``."""
    y, _, mean, var = _bn(x, running_mean, running_var, momentum, eps)
    return y, mean, var


POOLS = ("max", "avg")


def pool_reference(x: jax.Array, kind: str, k: int, stride: int, padding: int) -> jax.Array:
    """kxk max or average pooling with XLA's reduce-window (the specification of ``pool``): padding
    never counts (max pads with -inf; the average divides by the window's input positions, PyTorch's
    ``count_include_pad=False``)."""
    pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    window, strides = (1, k, k, 1), (1, stride, stride, 1)
    if kind == "max":
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, strides, pad)
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, pad)
    ones = jnp.ones((1,) + x.shape[1:3] + (1,), x.dtype)
    return total / jax.lax.reduce_window(ones, 0.0, jax.lax.add, window, strides, pad)


def _pool_attrs(kind, k, stride, padding):
    if kind not in POOLS:
        raise unknown("pooling kind", kind, POOLS)
    return {"kind": np.int64(POOLS.index(kind)), "k": np.int64(k), "stride": np.int64(stride),
            "padding": np.int64(padding)}


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def pool(x: jax.Array, kind: str, k: int, stride: int, padding: int) -> jax.Array:
    """``pool_reference`` in one kernel call each way: x (N, H, W, C) float32. Needs ``available()``."""
    N, H, W, C = x.shape
    out = jax.ShapeDtypeStruct((N, _out(H, k, stride, 1, padding), _out(W, k, stride, 1, padding), C), jnp.float32)
    return jax.ffi.ffi_call("jaxnas_pool_fwd", out, vmap_method="sequential")(x, **_pool_attrs(kind, k, stride, padding))


def _pool_fwd(x, kind, k, stride, padding):
    return pool(x, kind, k, stride, padding), x


def _pool_bwd(kind, k, stride, padding, x, g):
    return (_pool_transpose(x, g, kind, k, stride, padding),)


pool.defvjp(_pool_fwd, _pool_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _pool_transpose(x, g, kind, k, stride, padding):
    """dx of ``pool`` for the cotangent g: to each window's first maximum (max), or spread evenly."""
    return jax.ffi.ffi_call("jaxnas_pool_bwd", jax.ShapeDtypeStruct(x.shape, jnp.float32),
                            vmap_method="sequential")(x, g, **_pool_attrs(kind, k, stride, padding))


def _pool_transpose_fwd(x, g, kind, k, stride, padding):
    return _pool_transpose(x, g, kind, k, stride, padding), (x, g)


def _pool_transpose_bwd(kind, k, stride, padding, res, cot):
    """Second derivatives through XLA's form (``pool_reference``)."""
    return _reference_transpose_vjp(lambda x: pool_reference(x, kind, k, stride, padding), res, (cot,))


_pool_transpose.defvjp(_pool_transpose_fwd, _pool_transpose_bwd)
