"""XLA's forms of jaxnas's kernels: the specification of the native ones, and what runs on
GPU/TPU, for non-float32 inputs, or where the native kernels cannot be built.

Layouts are NHWC. A depthwise kernel is (k, k, C) (PyTorch's ``Conv2d(C, C, k, groups=C)``);
a separable block for E edges has depthwise kernels (E, k, k, C) and pointwise kernels
(E, C, D). The depthwise conv has three XLA forms (``FORMS``): ``grouped`` (PyTorch's literal
grouped conv), ``dense`` (a dense conv with a block-diagonal kernel, or for a separable
block the product kernel ``dw[.., c] * pw[c, d]``: more FLOPs, but XLA:CPU runs grouped
convolutions on a slow generic path) and ``shift`` (k*k shifted multiply-adds).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxnas.errors import unknown

FORMS = ("dense", "shift", "grouped")
POOLS = ("max", "avg")


def out_size(n: int, k: int, stride: int, dilation: int, padding: int) -> int:
    """Output length of a conv or pool along one axis."""
    return (n + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def conv(x: jax.Array, w: jax.Array, stride: int, padding: int, dilation: int = 1, groups: int = 1,
         matmul_1x1: bool = False) -> jax.Array:
    """NHWC x HWIO convolution with symmetric zero padding (PyTorch's). ``matmul_1x1``: an unpadded
    1x1 conv is computed as a matrix product over the strided pixels (2-3x faster on XLA:CPU; the
    CPU's modules set it, see ``matmul_1x1_here``); elsewhere it stays a convolution (cuDNN's on GPU).

    Its derivatives of every order are convolutions of the forward's size. For y = F(x, w) and the
    trilinear form t(x, w, g) = <g, F(x, w)>, the input gradient T_x(g, w) = d t / d x and the
    kernel gradient T_w(x, g) = d t / d w are bilinear, and each map's VJP is two of the three:

        F(x, w), cotangent r:    x: T_x(r, w)   w: T_w(x, r)
        T_x(g, w), cotangent r:  g: F(r, w)     w: T_w(r, g)
        T_w(x, g), cotangent r:  x: T_x(g, r)   g: F(x, r)

    JAX's own rules instead transpose T_w, whose "kernel" is the whole H x W cotangent, into a
    convolution with an H x W window padded by H - 1 on every side, whose cost grows with (H W)^2
    where the derivative it computes costs what the forward does. DARTS's exact second order
    differentiates every conv's T_w again. Forward-mode differentiation (``jax.jvp``) does not go
    through this function, as through the native kernels.
    """
    return _conv(x, w.astype(x.dtype), (stride, padding, dilation, groups, bool(matmul_1x1)))


def matmul_1x1_here(platform: str) -> bool:
    """Whether modules built for ``platform`` compute 1x1 convs as matrix products: on the CPU only.

    On GPU the strided-slice matmuls of two 1x1 convs that are then concatenated (FactorizedReduce)
    abort XLA:GPU's Triton GEMM fusion in jax 0.11 (``triton_tiling_propagation.cc: Check failed:
    subdim_size_accumulator == dim_size``; docs/accelerators.md), and cuDNN runs 1x1 convs well."""
    return platform == "cpu"


def _lax_conv(x: jax.Array, w: jax.Array, geometry: tuple[int, int, int, int, bool]) -> jax.Array:
    """The convolution in XLA; with the geometry's ``matmul_1x1`` an unpadded 1x1 conv as a matrix
    product over the strided pixels (the same sums, and its transposes are matrix products too)."""
    stride, padding, dilation, groups, matmul_1x1 = geometry
    if matmul_1x1 and w.shape[:2] == (1, 1) and padding == 0 and groups == 1:
        return jnp.einsum("nhwc,cd->nhwd", x[:, ::stride, ::stride, :], w[0, 0])
    return jax.lax.conv_general_dilated(x, w, (stride, stride), ((padding, padding),) * 2,
                                        rhs_dilation=(dilation, dilation), feature_group_count=groups,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x, w, geometry):
    return _lax_conv(x, w, geometry)


def _conv_fwd(x, w, geometry):
    return _lax_conv(x, w, geometry), (x, w)


def _conv_bwd(geometry, res, r):
    x, w = res
    return _conv_dx(r, w, geometry, x.shape), _conv_dw(x, r, geometry, w.shape)


_conv.defvjp(_conv_fwd, _conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_dx(g, w, geometry, x_shape):
    """T_x(g, w): the input gradient of F for the output cotangent g (XLA's transposed conv)."""
    probe = jax.ShapeDtypeStruct(x_shape, g.dtype)
    return jax.linear_transpose(lambda x: _lax_conv(x, w, geometry), probe)(g)[0]


def _conv_dx_fwd(g, w, geometry, x_shape):
    return _conv_dx(g, w, geometry, x_shape), (g, w)


def _conv_dx_bwd(geometry, x_shape, res, r):
    g, w = res
    return _conv(r, w, geometry), _conv_dw(r, g, geometry, w.shape)


_conv_dx.defvjp(_conv_dx_fwd, _conv_dx_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_dw(x, g, geometry, w_shape):
    """T_w(x, g): the kernel gradient of F for the output cotangent g."""
    probe = jax.ShapeDtypeStruct(w_shape, g.dtype)
    return jax.linear_transpose(lambda w: _lax_conv(x, w, geometry), probe)(g)[0]


def _conv_dw_fwd(x, g, geometry, w_shape):
    return _conv_dw(x, g, geometry, w_shape), (x, g)


def _conv_dw_bwd(geometry, w_shape, res, r):
    x, g = res
    return _conv_dx(g, r, geometry, x.shape), _conv(x, r, geometry)


_conv_dw.defvjp(_conv_dw_fwd, _conv_dw_bwd)


def _shift(x: jax.Array, dw: jax.Array, stride: int, dilation: int, padding: int) -> jax.Array:
    """x (N, H, W, C) shared or (N, H, W, E, C); dw (E, k, k, C) -> (N, H', W', E, C)."""
    k = dw.shape[1]
    shared = x.ndim == 4
    xp = jnp.pad(x, [(0, 0), (padding, padding), (padding, padding)] + [(0, 0)] * (x.ndim - 3))
    h_out = out_size(x.shape[1], k, stride, dilation, padding)
    w_out = out_size(x.shape[2], k, stride, dilation, padding)
    out = None
    for i in range(k):
        for j in range(k):
            patch = xp[:, i * dilation: i * dilation + stride * (h_out - 1) + 1: stride,
                       j * dilation: j * dilation + stride * (w_out - 1) + 1: stride]
            term = (patch[..., None, :] if shared else patch) * dw[:, i, j, :]
            out = term if out is None else out + term
    return out


def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int, dilation: int, padding: int,
                   form: str = "grouped") -> jax.Array:
    """Depthwise kxk conv: x (N, H, W, C), kernel (k, k, R*C) -> (N, H', W', R*C); output channel
    o reads input channel o % C (R edges sharing one input)."""
    if form not in FORMS:
        raise unknown("depthwise form", form, FORMS)
    C, RC = x.shape[-1], kernel.shape[-1]
    if RC != C:
        x = jnp.tile(x, (1, 1, 1, RC // C))
    if form == "grouped":
        return conv(x, kernel[:, :, None, :], stride, padding, dilation, groups=RC)
    if form == "shift":
        return _shift(x, kernel[None], stride, dilation, padding)[..., 0, :]
    return conv(x, kernel[:, :, :, None] * jnp.eye(RC, dtype=kernel.dtype), stride, padding, dilation)


def separable(x: jax.Array, dw: jax.Array, pw: jax.Array, stride: int, dilation: int, padding: int,
              form: str = "dense") -> jax.Array:
    """Depthwise kxk then pointwise 1x1 for E edges: x (N, H, W, C) shared by the edges or
    (N, H, W, E, C) one per edge, dw (E, k, k, C), pw (E, C, D) -> (N, H', W', E, D)."""
    if form not in FORMS:
        raise unknown("depthwise form", form, FORMS)
    E, k, _, C = dw.shape
    D = pw.shape[-1]
    if form == "shift":
        return jnp.einsum("nhwec,ecd->nhwed", _shift(x, dw, stride, dilation, padding), pw.astype(x.dtype))
    if form == "grouped":
        per_edge = [depthwise_conv(x if x.ndim == 4 else x[..., e, :], dw[e], stride, dilation, padding, "grouped")
                    for e in range(E)]
        return jnp.stack([y @ pw[e].astype(y.dtype) for e, y in enumerate(per_edge)], axis=3)
    kernel = dw[:, :, :, :, None] * pw[:, None, None, :, :]  # (E, k, k, C, D): one dense conv per edge
    if x.ndim == 4:
        y = conv(x, jnp.moveaxis(kernel, 0, 3).reshape(k, k, C, E * D), stride, padding, dilation)
        return y.reshape(y.shape[:3] + (E, D))
    return jnp.stack([conv(x[..., e, :], kernel[e], stride, padding, dilation) for e in range(E)], axis=3)


def batch_norm(x: jax.Array, running_mean: jax.Array, running_var: jax.Array, momentum: float,
               eps: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Training-mode BN without affine parameters over the last axis: ``(y, new_mean, new_var)``,
    y = (x - mean) / sqrt(var + eps) with the batch mean and biased variance, new = momentum *
    old + (1 - momentum) * batch (flax's convention). The statistics and the normalization are
    computed in float32 for a lower-precision x (bfloat16), and y is returned in x's dtype."""
    axes = tuple(range(x.ndim - 1))
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    mean = xf.mean(axes)
    var = jnp.maximum(0.0, (xf * xf).mean(axes) - mean * mean)
    y = (xf - mean) * jax.lax.rsqrt(var + eps)
    return (y.astype(x.dtype), momentum * running_mean + (1 - momentum) * mean,
            momentum * running_var + (1 - momentum) * var)


def pool(x: jax.Array, kind: str, k: int, stride: int, padding: int) -> jax.Array:
    """kxk max or average pooling where padding never counts: max pads with -inf, the average
    divides by the window's input positions (PyTorch's ``count_include_pad=False``)."""
    if kind not in POOLS:
        raise unknown("pooling kind", kind, POOLS)
    pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    window, strides = (1, k, k, 1), (1, stride, stride, 1)
    if kind == "max":
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, strides, pad)
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, pad)
    ones = jnp.ones((1,) + x.shape[1:3] + (1,), x.dtype)
    return total / jax.lax.reduce_window(ones, 0.0, jax.lax.add, window, strides, pad)



def separable_many(xs, blocks, form: str = "dense") -> list[jax.Array]:
    """Several separable blocks (``separable``'s arguments, ``blocks[i] = (dw, pw, stride, dilation,
    padding)``) over one shared input ``xs`` (N, H, W, C) or one input each (``xs[i]``, (N, H, W, E_i,
    C)); the same outputs as ``separable`` block by block. In the dense form, over one input each,
    the blocks of one geometry (kernel size, stride, dilation, padding, channels) are one grouped
    convolution with a group per edge, where ``separable`` runs a convolution per edge. A shared input
    takes ``separable``'s one convolution per block: merging blocks of different kernel sizes would
    embed the smaller kernels in the larger (more FLOPs), and measured, it compiled slower
    (docs/accelerators.md)."""
    shared = not isinstance(xs, (list, tuple))
    if form != "dense" or shared:
        return [separable(xs if shared else xs[i], *b, form=form) for i, b in enumerate(blocks)]
    groups: dict[tuple, list[int]] = {}
    for i, (dw, pw, stride, dilation, padding) in enumerate(blocks):
        groups.setdefault((dw.shape[1:], pw.shape[1:], stride, dilation, padding), []).append(i)
    out: list[jax.Array | None] = [None] * len(blocks)
    for group in groups.values():
        _, _, stride, dilation, padding = blocks[group[0]]
        dw = jnp.concatenate([blocks[i][0] for i in group])  # (E, k, k, C), every block's edges
        pw = jnp.concatenate([blocks[i][1] for i in group])  # (E, C, D)
        E, k, _, C = dw.shape
        D = pw.shape[-1]
        x = jnp.concatenate([xs[i] for i in group], axis=3) if len(group) > 1 else xs[group[0]]
        kernel = dw[:, :, :, :, None] * pw[:, None, None, :, :]  # (E, k, k, C, D)
        y = conv(x.reshape(x.shape[:3] + (E * C,)), jnp.moveaxis(kernel, 0, 3).reshape(k, k, C, E * D),
                 stride, padding, dilation, groups=E)
        y = y.reshape(y.shape[:3] + (E, D))
        start = 0
        for i in group:
            n = blocks[i][0].shape[0]
            out[i] = y[..., start:start + n, :]
            start += n
    return out
