"""The kernel layer: every computation that has more than one implementation, behind one setting.

Model code calls ``depthwise_conv``, ``separable``, ``batch_norm``, ``pool`` and
``materialize`` with the ``impl`` it was built with, and each function chooses here:

- ``"native"``: jaxnas's own CPU kernels (``native.py``, C++ built by ``build.py`` on first
  use) for float32 inputs; everything else takes XLA's ``dense`` form;
- ``"dense"``, ``"shift"``, ``"grouped"``: XLA's forms (``reference.py``), named for how a
  depthwise conv is computed (a dense conv with a block-diagonal or product kernel; shifted
  multiply-adds; PyTorch's literal grouped conv);
- ``"auto"`` (the default): per backend, ``AUTO``: ``native`` on the CPU where the kernels
  build (else ``dense``); on GPU and TPU the XLA form chosen from the compiled programs
  (docs/accelerators.md has the table).

The choice is explicit: every builder of a network (``jaxnas.build_supernet``,
``spaces.build_network``, ``train.build_network``, ``optimize.models.build``) takes ``kernels=``
(``run.kernels`` in a config) and ``platform=`` (the backend the step is compiled for; default JAX's
default backend, ``jaxnas.targets`` passes the compile target's), resolves it once with ``build_with``
and stores the resolved name on the model as ``model.kernels``. Each module keeps the name it was
built with, so a compiled step never depends on state outside its arguments. ``use(impl, platform)``
is the convenience around it: a ``contextvars`` setting that a builder given no ``kernels=`` reads
(thread- and task-local; outside any ``use``: ``auto``).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import TypeVar

import jax
import jax.numpy as jnp

from jaxnas.errors import unknown
from jaxnas.kernels import build, native, reference

IMPLS = ("auto", "native") + reference.FORMS
# what "auto" means on each backend; GPU/TPU: docs/accelerators.md compares the forms' compiled programs
AUTO = {"cpu": "native", "cuda": "dense", "rocm": "dense", "gpu": "dense", "tpu": "dense"}
_SETTING: contextvars.ContextVar[tuple[str, str | None]] = contextvars.ContextVar("jaxnas_kernels",
                                                                                  default=("auto", None))
M = TypeVar("M")


def resolve(impl: str | None = None, platform: str | None = None) -> str:
    """The concrete implementation ``impl`` stands for on ``platform`` (``None``: the current setting,
    and its platform or JAX's default backend)."""
    current, current_platform = _SETTING.get()
    if impl is None:
        impl = current
    platform = platform or current_platform or jax.default_backend()
    if impl not in IMPLS:
        raise unknown("kernel implementation", impl, IMPLS)
    if impl == "auto":
        impl = AUTO.get(platform, "dense")
    if impl == "native":
        return "native" if platform == "cpu" and build.available() else "dense"
    return impl


def platform() -> str:
    """The backend the modules being built are for: the innermost ``use``'s platform, else JAX's
    default backend."""
    return _SETTING.get()[1] or jax.default_backend()


@contextlib.contextmanager
def use(impl: str, platform: str | None = None) -> Iterator[str]:
    """Build the modules created inside this block with kernel implementation ``impl`` for the
    backend ``platform`` ("cpu", "cuda", "tpu"; None: JAX's default backend)."""
    resolved = resolve(impl, platform)
    token = _SETTING.set((impl, platform))
    try:
        yield resolved
    finally:
        _SETTING.reset(token)


def build_with(make: Callable[[], M], impl: str | None = None, platform: str | None = None) -> M:
    """``make()`` with every module it builds using kernel implementation ``impl`` ("auto", "native",
    a form; None: the current ``use`` setting) for backend ``platform``; the model records the resolved
    name as ``model.kernels``. Every network builder goes through this."""
    if impl is None:
        impl = _SETTING.get()[0]
    platform = platform or _SETTING.get()[1]
    with use(impl, platform) as resolved:
        model = make()
    model.kernels = resolved
    return model


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


def separable_many(xs, blocks, impl: str, relu: bool = False) -> list[jax.Array]:
    """Several separable blocks at once (``blocks[i] = (dw, pw, stride, dilation, padding)``) over one
    shared input ``xs`` or one input each (a list); the outputs of ``separable`` block by block. Over
    one input each, the dense form computes the blocks of one geometry as one grouped convolution
    (``reference.separable_many``); otherwise ``separable`` runs per block."""
    shared = not isinstance(xs, (list, tuple))
    if impl != "dense":
        return [separable(xs if shared else xs[i], *b, impl, relu=relu) for i, b in enumerate(blocks)]
    if relu:
        xs = jax.nn.relu(xs) if shared else [jax.nn.relu(x) for x in xs]
    return reference.separable_many(xs, blocks, "dense")


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
    if _native(impl, x):
        return native.materialize(x)
    return x
