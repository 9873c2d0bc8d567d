"""jaxnas's CPU kernels as differentiable JAX functions: each is an XLA FFI call (the C++ in
this folder, built and registered by ``build.py``) with a custom VJP.

- ``depthwise_conv`` and ``separable`` (``depthwise.cc``): the depthwise conv, and the separable
  block of DARTS's conv ops (the depthwise conv of E edges, then each edge's 1x1 conv) in one
  call each way, so XLA sees no slices, matmuls or concatenations around it.
- ``batch_norm`` (``batchnorm.cc``): training-mode BN, forward and backward one call each.
- ``pool`` (``pool.cc``): max and average pooling.
- ``materialize``: a no-op call XLA cannot fuse through.

Every kernel is vectorised, threaded on XLA's intra-op pool, and adds its partial sums in a
fixed order. Second derivatives (DARTS's exact second-order step) are native calls too: the
depthwise conv and the separable block are (tri)linear, so their transposes' VJPs are the same
kernels at other arguments (fused into one call for the block, ``jaxnas_sep_bwd2``); BN's is
``jaxnas_bn_bwd2``; the pool's is a gather at the window maxima (``jaxnas_pool_jvp``). Third and
higher derivatives go through the calls' compositions or the jnp forms. Call these only where
``build.available()``; ``jaxnas.kernels`` chooses. The FFI calls are opaque to XLA's SPMD
partitioner: with several devices they run on the whole (gathered) batch on each device,
which gives the same numbers (BN statistics over the global batch included) but no speed-up.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from jaxnas.errors import unknown
from jaxnas.kernels import build, reference
from jaxnas.kernels.reference import out_size


def _ffi_call(target: str, *args, **kwargs):
    """``jax.ffi.ffi_call`` of one of jaxnas's targets, registering them first in this process (a call
    that comes before any ``available()`` check, or a cached executable, still finds its handler)."""
    if not build.available():
        raise RuntimeError(f"the native CPU kernels are not available here; {target} cannot run "
                           f"(use jaxnas.kernels.use('dense') or check jaxnas.kernels.build.available())")
    return jax.ffi.ffi_call(target, *args, **kwargs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int, dilation: int, padding: int) -> jax.Array:
    """Depthwise kxk conv, NHWC float32: x (N, H, W, C), kernel (k, k, R*C) -> (N, H', W', R*C).

    Output channel o reads input channel o % C, so R edges that share one input run
    in one call. Zero padding ``padding`` on every side. Needs ``available()``.
    """
    N, H, W, _ = x.shape
    k = kernel.shape[0]
    out = jax.ShapeDtypeStruct((N, out_size(H, k, stride, dilation, padding), out_size(W, k, stride, dilation, padding),
                                kernel.shape[-1]), jnp.float32)
    return _ffi_call("jaxnas_dw_fwd", out, vmap_method="sequential")(
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
    return tuple(_ffi_call("jaxnas_dw_bwd", shapes, vmap_method="sequential")(
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
    return _ffi_call("jaxnas_materialize", jax.ShapeDtypeStruct(x.shape, x.dtype),
                            input_output_aliases={0: 0}, vmap_method="broadcast_all")(x)


materialize.defvjp(lambda x: (materialize(x), None), lambda _, g: (materialize(g),))


def _attrs(stride, dilation, padding, relu, wants=None):
    out = {"stride": np.int64(stride), "dilation": np.int64(dilation), "padding": np.int64(padding),
           "relu": np.int64(relu)}
    if wants is not None:
        out.update(want_dx=np.int64(wants[0]), want_dw=np.int64(wants[1]))
    return out


# The separable block's rules take symbolic zeros (``jax.custom_vjp(..., symbolic_zeros=True)``): the
# forward rule learns which inputs the derivative is taken in, and the backward call computes only
# their cotangents. An architecture gradient (DARTS's first-order step, and the derivative through the
# unrolled weight step of its exact second order) treats the weights as constants, so the backward
# call then skips the weight gradients (the recomputed depthwise conv, its kernel correlation and the
# pointwise kernel gradient). Which inputs are perturbed is static; it travels from the forward rule
# to the backward rule in the residuals' tree structure: ``()`` for yes, ``None`` for no.

def _flags(*perturbed: bool) -> tuple:
    return tuple(() if p else None for p in perturbed)


def _unflag(flags: tuple) -> tuple[bool, ...]:
    return tuple(f is not None for f in flags)


def _dense(ct, like):
    """A cotangent as an array (symbolic zeros instantiated), or zeros when ``ct`` is None."""
    if ct is None or isinstance(ct, SymbolicZero):
        return jnp.zeros(like.shape, like.dtype)
    return ct


def _sep_out(x, kernel, pw, stride, dilation, padding) -> jax.ShapeDtypeStruct:
    N, H, W, _ = x.shape
    k = kernel.shape[0]
    return jax.ShapeDtypeStruct((N, out_size(H, k, stride, dilation, padding), out_size(W, k, stride, dilation, padding),
                                 pw.shape[0] * pw.shape[2]), jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def _sep(x, kernel, pw, stride, dilation, padding, relu):
    """The separable block on x, or on relu(x) (``relu``: rectified per sample inside the call, so the
    rectified tensor is never stored)."""
    return _ffi_call("jaxnas_sep_fwd", _sep_out(x, kernel, pw, stride, dilation, padding),
                     vmap_method="sequential")(x, kernel, pw, **_attrs(stride, dilation, padding, relu))


def _sep_fwd(x, kernel, pw, stride, dilation, padding, relu):
    y = _sep(x.value, kernel.value, pw.value, stride, dilation, padding, relu)
    return y, ((x.value, kernel.value, pw.value), _flags(x.perturbed, kernel.perturbed or pw.perturbed))


def _sep_bwd(stride, dilation, padding, relu, res, g):
    (x, kernel, pw), flags = res
    want_dx, want_dw = _unflag(flags)
    g = _dense(g, _sep_out(x, kernel, pw, stride, dilation, padding))
    dx, dk, dpw = _sep_transpose(x, kernel, pw, g, stride, dilation, padding, relu, want_dx, want_dw)
    return (dx if want_dx else None, dk if want_dw else None, dpw if want_dw else None)


_sep.defvjp(_sep_fwd, _sep_bwd, symbolic_zeros=True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7, 8, 9))
def _sep_transpose(x, kernel, pw, g, stride, dilation, padding, relu, want_dx, want_dw):
    """``(dx, dkernel, dpw)`` of ``_sep`` for the cotangent ``g``: one call, the depthwise output
    recomputed per sample and never stored. ``dx`` is zeros unless ``want_dx``, the weights' parts
    zeros unless ``want_dw`` (and not computed)."""
    shapes = tuple(jax.ShapeDtypeStruct(a.shape, jnp.float32) for a in (x, kernel, pw))
    return tuple(_ffi_call("jaxnas_sep_bwd", shapes, vmap_method="sequential")(
        x, kernel, pw, g, **_attrs(stride, dilation, padding, relu, (want_dx, want_dw))))


def _sep_transpose_fwd(x, kernel, pw, g, stride, dilation, padding, relu, want_dx, want_dw):
    args = (x.value, kernel.value, pw.value, g.value)
    flags = _flags(x.perturbed, kernel.perturbed or pw.perturbed, g.perturbed)
    return _sep_transpose(*args, stride, dilation, padding, relu, want_dx, want_dw), (args, flags)


def _sep_second_calls(x, kernel, pw, g, a, b, c, stride, dilation, padding, relu):
    """The VJP of ``_sep_transpose`` for cotangents (a, b, c) of (dx, dkernel, dpw), from the block's own
    calls. It is trilinear in (x, kernel, pw), so <a, dx> + <b, dk> + <c, dpw> is
    <g, S(a, k, p) + S(x, b, p) + S(x, k, c)>: three forward and three transpose calls. With ``relu``
    it is that VJP at relu(x) for the masked a, its x-part masked again (the mask is piecewise constant)."""
    if relu:
        mask = x > 0
        out = _sep_second_calls(jax.nn.relu(x), kernel, pw, g, jnp.where(mask, a, 0), b, c, stride, dilation,
                                padding, False)
        return (jnp.where(mask, out[0], 0),) + out[1:]
    geometry, full = (stride, dilation, padding, False), (True, True)
    ta = _sep_transpose(a, kernel, pw, g, *geometry, *full)
    tb = _sep_transpose(x, b, pw, g, *geometry, *full)
    tc = _sep_transpose(x, kernel, c, g, *geometry, *full)
    dg = _sep(a, kernel, pw, *geometry) + _sep(x, b, pw, *geometry) + _sep(x, kernel, c, *geometry)
    return tb[0] + tc[0], ta[1] + tc[1], ta[2] + tb[2], dg


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8, 9, 10, 11, 12))
def _sep_second(x, kernel, pw, g, a, b, c, stride, dilation, padding, relu, want_dx, want_dw):
    """``_sep_second_calls`` in one kernel call (``jaxnas_sep_bwd2``: three depthwise convs a sample
    where the six calls run six), with dx zeros unless ``want_dx`` and (dkernel, dpw) zeros unless
    ``want_dw``; its own derivatives (third order) go through the six calls."""
    shapes = tuple(jax.ShapeDtypeStruct(t.shape, jnp.float32) for t in (x, kernel, pw, g))
    return tuple(_ffi_call("jaxnas_sep_bwd2", shapes, vmap_method="sequential")(
        x, kernel, pw, g, a, b, c, **_attrs(stride, dilation, padding, relu, (want_dx, want_dw))))


def _sep_second_fwd(*args):
    return _sep_second(*args), args[:7]


def _sep_second_bwd(stride, dilation, padding, relu, want_dx, want_dw, res, cot):
    wanted = (want_dx, want_dw, want_dw, True)
    cot = tuple(t if w else jnp.zeros_like(t) for t, w in zip(cot, wanted))
    return jax.vjp(lambda *t: _sep_second_calls(*t, stride, dilation, padding, relu), *res)[1](cot)


_sep_second.defvjp(_sep_second_fwd, _sep_second_bwd)


def _sep_transpose_bwd(stride, dilation, padding, relu, want_dx, want_dw, res, cot):
    """Second derivatives of the block (DARTS's exact second-order step): one native call, computing
    the cotangents of the perturbed inputs only. An output the forward call left at zero (not
    wanted) passes no cotangent back."""
    (x, kernel, pw, g), flags = res
    x_in, w_in, g_in = _unflag(flags)
    a = _dense(cot[0] if want_dx else None, x)
    b = _dense(cot[1] if want_dw else None, kernel)
    c = _dense(cot[2] if want_dw else None, pw)
    dx, dk, dpw, dg = _sep_second(x, kernel, pw, g, a, b, c, stride, dilation, padding, relu, x_in, w_in)
    return (dx if x_in else None, dk if w_in else None, dpw if w_in else None, dg if g_in else None)


_sep_transpose.defvjp(_sep_transpose_fwd, _sep_transpose_bwd, symbolic_zeros=True)


def separable(x: jax.Array, dw: jax.Array, pw: jax.Array, stride: int, dilation: int, padding: int,
              relu: bool = False) -> jax.Array:
    """Depthwise kxk then pointwise 1x1 for E edges: x (N, H, W, C) shared or (N, H, W, E, C),
    dw (E, k, k, C), pw (E, C, D) -> (N, H', W', E, D); of relu(x) with ``relu``.

    One kernel call each way (``jaxnas_sep_fwd``/``_bwd``): the depthwise convs of all E edges,
    then each edge's pointwise conv on its channels, a sample at a time, so the depthwise
    output is never stored and XLA sees no slices, matmuls or concatenations.
    """
    E, k, _, C = dw.shape
    y = _sep(x.reshape(x.shape[:3] + (-1,)), jnp.moveaxis(dw, 0, 2).reshape(k, k, E * C), pw,
             stride, dilation, padding, bool(relu))
    return y.reshape(y.shape[:3] + (E, pw.shape[-1]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _bn(x, running_mean, running_var, momentum, eps):
    ch = (jax.ShapeDtypeStruct(running_mean.shape, jnp.float32),) * 3
    return tuple(_ffi_call("jaxnas_bn_fwd", (jax.ShapeDtypeStruct(x.shape, jnp.float32),) + ch,
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
    return _ffi_call("jaxnas_bn_bwd", jax.ShapeDtypeStruct(y.shape, jnp.float32),
                            vmap_method="sequential")(y, invstd, g, g_inv, g_mean, g_var,
                                                      momentum=np.float32(momentum))


def _bn_transpose_fwd(y, invstd, g, g_inv, g_mean, g_var, momentum):
    args = (y, invstd, g, g_inv, g_mean, g_var)
    return _bn_transpose(*args, momentum), args


def _bn_transpose_bwd(momentum, args, cot):
    """Second derivatives (DARTS's exact second-order step): one native call."""
    return _bn_second(*args, cot, momentum)


def _bn_second_reference(y, invstd, g, g_inv, g_mean, g_var, q, momentum):
    """What ``jaxnas_bn_bwd2`` computes, in jnp: the VJP of ``_bn_transpose_reference`` for q."""
    return jax.vjp(lambda *a: _bn_transpose_reference(*a, momentum), y, invstd, g, g_inv, g_mean, g_var)[1](q)


@functools.partial(jax.custom_vjp, nondiff_argnums=(7,))
def _bn_second(y, invstd, g, g_inv, g_mean, g_var, q, momentum):
    shapes = tuple(jax.ShapeDtypeStruct(t.shape, jnp.float32) for t in (y, invstd, g, g_inv, g_mean, g_var))
    return tuple(_ffi_call("jaxnas_bn_bwd2", shapes, vmap_method="sequential")(
        y, invstd, g, g_inv, g_mean, g_var, q, momentum=np.float32(momentum)))


def _bn_second_fwd(*args):
    return _bn_second(*args), args[:7]


def _bn_second_bwd(momentum, res, cot):
    """Third and higher derivatives through the jnp form."""
    return jax.vjp(lambda *a: _bn_second_reference(*a, momentum), *res)[1](cot)


_bn_second.defvjp(_bn_second_fwd, _bn_second_bwd)


_bn_transpose.defvjp(_bn_transpose_fwd, _bn_transpose_bwd)


def batch_norm(x: jax.Array, running_mean: jax.Array, running_var: jax.Array, momentum: float,
               eps: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Training-mode BN without affine parameters over the last axis of float32 ``x``:
    ``(y, new_running_mean, new_running_var)`` with y = (x - mean) / sqrt(var + eps), the batch
    mean and biased variance over every other axis, and new = momentum * old + (1 - momentum) *
    batch (flax's convention). Differentiable to any order in x. Needs ``available()``."""
    y, _, mean, var = _bn(x, running_mean, running_var, momentum, eps)
    return y, mean, var


def _pool_attrs(kind, k, stride, padding):
    if kind not in reference.POOLS:
        raise unknown("pooling kind", kind, reference.POOLS)
    return {"kind": np.int64(reference.POOLS.index(kind)), "k": np.int64(k), "stride": np.int64(stride),
            "padding": np.int64(padding)}


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def pool(x: jax.Array, kind: str, k: int, stride: int, padding: int) -> jax.Array:
    """``pool_reference`` in one kernel call each way: x (N, H, W, C) float32. Needs ``available()``."""
    N, H, W, C = x.shape
    out = jax.ShapeDtypeStruct((N, out_size(H, k, stride, 1, padding), out_size(W, k, stride, 1, padding), C), jnp.float32)
    return _ffi_call("jaxnas_pool_fwd", out, vmap_method="sequential")(x, **_pool_attrs(kind, k, stride, padding))


def _pool_fwd(x, kind, k, stride, padding):
    return pool(x, kind, k, stride, padding), x


def _pool_bwd(kind, k, stride, padding, x, g):
    return (_pool_transpose(x, g, kind, k, stride, padding),)


pool.defvjp(_pool_fwd, _pool_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _pool_transpose(x, g, kind, k, stride, padding):
    """dx of ``pool`` for the cotangent g: to each window's first maximum (max), or spread evenly."""
    return _ffi_call("jaxnas_pool_bwd", jax.ShapeDtypeStruct(x.shape, jnp.float32),
                            vmap_method="sequential")(x, g, **_pool_attrs(kind, k, stride, padding))


def _pool_transpose_fwd(x, g, kind, k, stride, padding):
    return _pool_transpose(x, g, kind, k, stride, padding), (x, g)


def _pool_transpose_bwd(kind, k, stride, padding, res, cot):
    """The transpose is linear in g, and its dependence on x is piecewise constant (the window's
    first maximum) or none (average): d/dx = 0, d/dg = the pool's derivative at x in direction cot."""
    x, _ = res
    return jnp.zeros_like(x), _pool_jvp(x, cot, kind, k, stride, padding)


_pool_transpose.defvjp(_pool_transpose_fwd, _pool_transpose_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _pool_jvp(x, t, kind, k, stride, padding):
    """The derivative of ``pool`` at x in direction t: t at each window's first maximum of x (max), or
    the average of t (average, linear)."""
    if kind == "avg":
        return pool(t, kind, k, stride, padding)
    N, H, W, C = x.shape
    out = jax.ShapeDtypeStruct((N, out_size(H, k, stride, 1, padding), out_size(W, k, stride, 1, padding), C), jnp.float32)
    attrs = _pool_attrs(kind, k, stride, padding)
    del attrs["kind"]
    return _ffi_call("jaxnas_pool_jvp", out, vmap_method="sequential")(x, t, **attrs)


def _pool_jvp_fwd(x, t, kind, k, stride, padding):
    return _pool_jvp(x, t, kind, k, stride, padding), x


def _pool_jvp_bwd(kind, k, stride, padding, x, cot):
    """Linear in t with the pool's transpose; piecewise constant in x."""
    return jnp.zeros_like(x), _pool_transpose(x, cot, kind, k, stride, padding)


_pool_jvp.defvjp(_pool_jvp_fwd, _pool_jvp_bwd)
