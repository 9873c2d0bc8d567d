"""Hypergradients: the derivative of a validation loss with respect to hyperparameters ``h`` that
shape the training of weights ``w``, through that training.

The problem is bilevel (as DARTS's, with ``h`` in place of the alphas):
``min_h L_val(w*(h), h)`` with ``w*(h) = argmin_w L_train(w, h)``. The hypergradient is
``dL_val/dh = d_h L_val + (dw*/dh)^T d_w L_val``. Three estimators of it, each a pure function that
``jax.jit`` compiles as a whole:

* ``unrolled(steps=1)``: ``w_1 = w - lr * grad_w L_train(w, h)``, differentiated exactly by autodiff
  (DARTS's exact second order, Liu et al. 2019 Eq. 6; Learning to Reweight and Meta-Weight-Net's
  lookahead). ``w`` itself is a constant.
* ``unrolled(steps=K)``: K such steps on K training batches in a ``lax.scan`` whose body is
  rematerialized (``jax.checkpoint``): the backward pass keeps one copy of the weights per step and
  recomputes each step's activations, so activation memory does not grow with K (truncated
  back-propagation through training, Shaban et al. 2019). On CPU the scan is unrolled by default
  (``unroll``), which is faster there and gives up the flat memory.
* ``implicit``: the implicit function theorem at a (near-)optimum of ``L_train``:
  ``dw*/dh = -H^{-1} d_h d_w L_train``, ``H = d_w^2 L_train``, so the hypergradient is
  ``d_h L_val - (d_h d_w L_train)^T H^{-1} d_w L_val`` (Lorraine et al. 2020, Eq. 5-6 and Alg. 1).
  ``H^{-1} d_w L_val`` is one ``jax.lax.custom_linear_solve`` (symmetric) whose solver is the
  Neumann series ``H^{-1} v ~ alpha * sum_{j<=J} (I - alpha H)^j v`` (Lorraine
  et al.'s Alg. 2; converges for ``0 < alpha < 2 / lambda_max(H)``) or conjugate gradients
  (``jax.scipy.sparse.linalg.cg``, for a positive-definite ``H``). Every product with ``H`` is a
  Hessian-vector product (forward over reverse mode); ``H`` is never formed.

Each estimator is built from ``inner_loss(w, h, batch)`` and ``outer_loss(w, h, batch)``, scalar
functions of pytrees, and returns ``hypergradient(w, h, train_batch(es), val_batch) -> (val_loss,
grad_h, w_next)``; ``w_next`` is the unrolled weights (``w`` itself for ``implicit``).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxnas.errors import JaxnasError

ESTIMATORS = ("unrolled", "implicit")
SOLVERS = ("neumann", "cg")

Loss = Callable[[Any, Any, Any], jax.Array]


def _sub(a, b, scale):
    return jax.tree.map(lambda x, y: x - scale * y, a, b)


def sgd_step(inner_loss: Loss, lr: float | Callable[[Any], jax.Array]) -> Callable:
    """``step(w, h, batch) -> w - lr * grad_w inner_loss(w, h, batch)``; ``lr`` a number or a function
    of ``h`` (a learning rate that is itself a hyperparameter)."""

    def step(w, h, batch):
        rate = lr(h) if callable(lr) else lr
        return _sub(w, jax.grad(inner_loss)(w, h, batch), rate)

    return step


def unrolled(inner_loss: Loss, outer_loss: Loss, lr: float | Callable = 0.1, steps: int = 1,
             remat: bool = True, step: Callable | None = None, unroll: int | bool | None = None) -> Callable:
    """The unrolled estimator (module docstring). ``steps == 1``: ``train_batch`` is one batch;
    ``steps > 1``: a pytree of ``steps`` batches stacked on a leading axis. ``step`` replaces plain
    SGD by any differentiable update ``step(w, h, batch) -> w'`` (momentum, weight decay).
    ``unroll``: ``lax.scan``'s (``True``: straight-line code, no loop); ``None``: ``True`` on CPU,
    where XLA runs the convolutions of a loop body about 15x slower than straight-line ones
    (experiments/bench_hypergrad.py) and the memory then grows with K, else 1 (a loop, flat memory)."""
    if not isinstance(steps, int) or steps < 1:
        raise JaxnasError(f"hypergradient steps must be an integer >= 1, got {steps!r}")
    update = step or sgd_step(inner_loss, lr)

    def through_training(h, w, train_batch):
        if steps == 1:
            return update(w, h, train_batch)
        body = jax.checkpoint(lambda w_, b: (update(w_, h, b), None)) if remat else \
            (lambda w_, b: (update(w_, h, b), None))
        return jax.lax.scan(body, w, train_batch, length=steps, unroll=_cpu_unroll(unroll))[0]

    def hypergradient(w, h, train_batch, val_batch):
        w = jax.lax.stop_gradient(w)

        def objective(h_):
            w_next = through_training(h_, w, train_batch)
            return outer_loss(w_next, h_, val_batch), w_next

        (loss, w_next), g = jax.value_and_grad(objective, has_aux=True)(h)
        return loss, g, w_next

    return hypergradient


def _cpu_unroll(unroll):
    """A loop's ``unroll``: as given, else straight-line code on CPU (XLA runs the convolutions of a
    loop body about 15x slower there) and a loop elsewhere."""
    if unroll is not None:
        return unroll
    return True if jax.default_backend() == "cpu" else 1


def neumann_solve(iters: int, alpha: float) -> Callable:
    """``solve(matvec, v)``: ``alpha * sum_{j=0}^{iters} (I - alpha * matvec)^j v`` (unrolled on CPU)."""

    def solve(matvec, v):
        def body(_, carry):
            cur, total = carry
            cur = _sub(cur, matvec(cur), alpha)
            return cur, jax.tree.map(jnp.add, total, cur)

        _, total = jax.lax.fori_loop(0, iters, body, (v, v), unroll=_cpu_unroll(None))
        return jax.tree.map(lambda t: alpha * t, total)

    return solve


def cg_solve(iters: int, tol: float = 1e-10) -> Callable:
    """``tangent_solve(matvec, v)``: at most ``iters`` conjugate-gradient iterations (``H`` positive-definite)."""

    def solve(matvec, v):
        return jax.scipy.sparse.linalg.cg(matvec, v, tol=tol, maxiter=iters)[0]

    return solve


def implicit(inner_loss: Loss, outer_loss: Loss, solver: str = "neumann", iters: int = 20,
             alpha: float = 0.01) -> Callable:
    """The implicit-function-theorem estimator (module docstring); ``w`` should be near an optimum
    of ``inner_loss(., h, train_batch)``. ``alpha``: the Neumann series' step (Lorraine et al. use
    the training learning rate)."""
    if solver not in SOLVERS:
        raise JaxnasError(f"hypergradient solver {solver!r} unknown; allowed: {', '.join(SOLVERS)}")
    if not isinstance(iters, int) or iters < 1:
        raise JaxnasError(f"hypergradient iterations must be an integer >= 1, got {iters!r}")
    tangent_solve = neumann_solve(iters, alpha) if solver == "neumann" else cg_solve(iters)

    def hypergradient(w, h, train_batch, val_batch):
        w = jax.lax.stop_gradient(w)
        grad_w_train = lambda w_, h_: jax.grad(inner_loss)(w_, h_, train_batch)  # noqa: E731
        loss, (v, direct) = jax.value_and_grad(outer_loss, argnums=(0, 1))(w, h, val_batch)

        def hvp(u):  # H u, forward over reverse
            return jax.jvp(lambda w_: grad_w_train(w_, h), (w,), (u,))[1]

        q = jax.lax.custom_linear_solve(hvp, v, tangent_solve, symmetric=True)  # H^-1 d_w L_val
        mixed = jax.grad(lambda h_: _vdot(grad_w_train(w, h_), q))(h)          # (d_h d_w L_train)^T q
        return loss, jax.tree.map(jnp.subtract, direct, mixed), w

    return hypergradient


def _vdot(a, b) -> jax.Array:
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def make(estimator: str, inner_loss: Loss, outer_loss: Loss, *, lr=0.1, steps: int = 1, solver: str = "neumann",
         iters: int = 20, alpha: float = 0.01, step: Callable | None = None) -> Callable:
    """The estimator named ``estimator`` (``ESTIMATORS``) with its settings."""
    if estimator == "unrolled":
        return unrolled(inner_loss, outer_loss, lr, steps, step=step)
    if estimator == "implicit":
        return implicit(inner_loss, outer_loss, solver, iters, alpha)
    raise JaxnasError(f"hypergradient estimator {estimator!r} unknown; allowed: {', '.join(ESTIMATORS)}")
