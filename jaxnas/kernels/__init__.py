"""The kernel layer: every computation that has more than one implementation, behind one setting.

Model code calls ``depthwise_conv``, ``separable``, ``batch_norm``, ``pool`` and
``materialize`` with the ``impl`` it was built with, and each function chooses here:

- ``"native"``: jaxnas's own CPU kernels (``native.py``, C++ built by ``build.py`` on first
  use) for float32 inputs; everything else takes XLA's ``dense`` form;
- ``"dense"``, ``"shift"``, ``"grouped"``: XLA's forms (``reference.py``), named for how a
  depthwise conv is computed (a dense conv with a block-diagonal or product kernel; shifted
  multiply-adds; PyTorch's literal grouped conv);
- ``"auto"`` (the default): ``native`` where JAX runs on the CPU and the kernels build, else
  ``dense``. On GPU/TPU the XLA path is taken by construction.

``use(impl)`` sets the implementation for the modules built inside it (``run.kernels`` in a
config); a module keeps the resolved name it was built with, so a compiled step never
depends on state outside its arguments.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax
import jax.numpy as jnp

from jaxnas.errors import unknown
from jaxnas.kernels import build, native, reference

IMPLS = ("auto", "native") + reference.FORMS
_SETTING = ["auto"]


def resolve(impl: str | None = None) -> str:
    """The concrete implementation ``impl`` stands for (``None``: the current setting)."""
    impl = _SETTING[-1] if impl is None else impl
    if impl not in IMPLS:
        raise unknown("kernel implementation", impl, IMPLS)
    if impl in ("auto", "native"):
        return "native" if build.available() else "dense"
    return impl


@contextlib.contextmanager
def use(impl: str) -> Iterator[str]:
    """Build the modules created inside this block with kernel implementation ``impl``."""
    resolved = resolve(impl)
    _SETTING.append(impl)
    try:
        yield resolved
    finally:
        _SETTING.pop()


def _native(impl: str, *arrays: jax.Array) -> bool:
    return impl == "native" and all(a.dtype == jnp.float32 for a in arrays) and build.available()


def _form(impl: str) -> str:
    return impl if impl in reference.FORMS else "dense"


def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int, dilation: int, padding: int,
                   impl: str) -> jax.Array:
    """Depthwise kxk conv (PyTorch ``Conv2d(C, C, k, groups=C)``, no bias): x (N, H, W, C), kernel
    (k, k, R*C) -> (N, H', W', R*C), output channel o reading input channel o % C."""
    if _native(impl, x, kernel):
        return native.depthwise_conv(x, kernel, stride, dilation, padding)
    return reference.depthwise_conv(x, kernel, stride, dilation, padding, _form(impl))


def separable(x: jax.Array, dw: jax.Array, pw: jax.Array, stride: int, dilation: int, padding: int,
              impl: str, relu: bool = False) -> jax.Array:
    """Depthwise kxk then pointwise 1x1 for E edges: x (N, H, W, C) shared or (N, H, W, E, C) one
    per edge, dw (E, k, k, C), pw (E, C, D) -> (N, H', W', E, D). With ``relu`` the block reads
    relu(x) (DARTS's ReLU before each block); the native kernels rectify inside the call, so the
    rectified input is never stored."""
    if _native(impl, x, dw, pw):
        return native.separable(x, dw, pw, stride, dilation, padding, relu)
    return reference.separable(jax.nn.relu(x) if relu else x, dw, pw, stride, dilation, padding, _form(impl))


def batch_norm(x: jax.Array, running_mean: jax.Array, running_var: jax.Array, momentum: float, eps: float,
               impl: str) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Training-mode BN without affine parameters over the last axis: ``(y, new_mean, new_var)``
    (flax's momentum convention), differentiable to any order in x."""
    if _native(impl, x):
        return native.batch_norm(x, running_mean, running_var, momentum, eps)
    return reference.batch_norm(x, running_mean, running_var, momentum, eps)


def pool(x: jax.Array, kind: str, k: int, stride: int, padding: int, impl: str) -> jax.Array:
    """kxk ``max`` or ``avg`` pooling where padding never counts (PyTorch's count_include_pad=False)."""
    if _native(impl, x):
        return native.pool(x, kind, k, stride, padding)
    return reference.pool(x, kind, k, stride, padding)


def materialize(x: jax.Array, impl: str) -> jax.Array:
    """``x`` unchanged, computed once and kept (so is its cotangent) under the native kernels.

    XLA:CPU duplicates cheap elementwise producers into every consumer: a DARTS cell node (a
    weighted sum of ~30 BN'd op outputs) was recomputed in every later node and the cell's
    concatenation. A no-op custom call stops it; elsewhere this is the identity.
    """
    if impl == "native" and build.available():
        return native.materialize(x)
    return x
