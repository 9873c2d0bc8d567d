"""The DARTS bilevel step (Liu et al. 2019, Sec. 2.3, Alg. 1; cnn/architect.py).

One jit-compiled function does an architecture update on a search-val batch and
then a weight update on a search-train batch. The architecture gradient is

* ``first``:     grad_alpha L_val(w, alpha)                              (Eq. 7 with xi = 0)
* ``second``:    grad_alpha L_val(w'(alpha), alpha), exact by autodiff through the
                 unrolled step w' = w - lr * (momentum * buf + grad_w L_train + wd * w)  (Eq. 6)
* ``second_fd``: DARTS's approximation of Eq. 7-8: grad_alpha L_val(w', alpha)
                 - lr * (grad_alpha L_train(w+) - grad_alpha L_train(w-)) / (2 eps),
                 w+- = w +- eps * grad_w' L_val(w', alpha), eps = 0.01 / ||grad_w' L_val||.

The step is a pure function of a ``SearchState`` pytree; the model's structure
(``graphdef``) is closed over and merged inside the step. The state's PRNG key is split
every step and feeds the supernet's relaxation (sampling relaxations; softmax ignores it),
so a resumed or multi-device run draws the same architectures.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxnas.errors import unknown
from jaxnas.losses import accuracy, cross_entropy
from jaxnas.nn import split_model

ORDERS = ("first", "second", "second_fd")


class SearchState(NamedTuple):
    step: jax.Array          # number of completed bilevel steps
    params: Any              # nnx.State of nnx.Param: network weights
    alphas: Any              # nnx.State of ArchParam: architecture parameters
    batch_stats: Any         # nnx.State of nnx.BatchStat: BN running statistics
    w_opt: Any               # weight optimizer state
    a_opt: Any               # alpha optimizer state
    key: jax.Array           # PRNG key (raw uint32[2]) of the relaxation's draws


def init_state(model: nnx.Module, w_tx, a_tx, seed: int = 0) -> tuple[Any, SearchState]:
    """``(graphdef, state)`` of a supernet: its weights, alphas and BN statistics, both optimizer
    states, step 0 and the PRNG key of ``seed``."""
    graphdef, params, alphas, stats = split_model(model)
    state = SearchState(jnp.zeros((), jnp.int32), params, alphas, stats, w_tx.init(params), a_tx.init(alphas),
                        jax.random.PRNGKey(seed))
    return graphdef, state


def make_loss_fn(graphdef) -> Callable:
    """loss(params, alphas, stats, batch, key=None) -> (loss, (logits, new_stats)), training-mode BN;
    ``key`` feeds the relaxation."""

    def loss_fn(params, alphas, stats, batch, key=None):
        model = nnx.merge(graphdef, params, alphas, stats, copy=True)
        logits = model(batch["x"], key)
        return cross_entropy(logits, batch["y"]), (logits, nnx.state(model, nnx.BatchStat))

    return loss_fn


def _tree_norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def make_hypergradient(graphdef, order: str, cfg) -> Callable:
    """``hypergrad(state, lr, train_batch, val_batch, k_train=None, k_val=None) -> (grad_alpha, val_loss,
    val_logits, bn_stats)``; the keys feed the relaxation on the train and val batches.

    ``cfg`` holds momentum and weight_decay, used by the second-order unrolled step.
    """
    if order not in ORDERS:
        raise unknown("search order", order, ORDERS)
    loss_fn = make_loss_fn(graphdef)
    grad_w = jax.value_and_grad(loss_fn, argnums=0, has_aux=True)
    grad_a = jax.value_and_grad(loss_fn, argnums=1, has_aux=True)
    momentum, wd = cfg.momentum, cfg.weight_decay

    def unrolled(params, alphas, stats, w_opt, lr, train_batch, key):
        """w' = w - lr * (momentum * buf + grad_w L_train(w, alpha) + wd * w), no clipping (DARTS)."""
        _, g = grad_w(params, alphas, stats, train_batch, key)
        buf = optax.tree_utils.tree_get(w_opt, "trace")
        return jax.tree.map(lambda w, b, gw: w - lr * (momentum * b + gw + wd * w), params, buf, g)

    def hypergrad(state: SearchState, lr, train_batch, val_batch, k_train=None, k_val=None):
        p, a, s = state.params, state.alphas, state.batch_stats
        if order == "first":
            (loss, (logits, s)), g = grad_a(p, a, s, val_batch, k_val)
            return g, loss, logits, s

        if order == "second":
            def val_of_unrolled(alphas):
                w2 = unrolled(p, alphas, s, state.w_opt, lr, train_batch, k_train)
                return loss_fn(w2, alphas, s, val_batch, k_val)

            (loss, (logits, s2)), g = jax.value_and_grad(val_of_unrolled, has_aux=True)(a)
            return g, loss, logits, s2

        w2 = unrolled(p, a, s, state.w_opt, lr, train_batch, k_train)
        (loss, (logits, s2)), (g_w, g_a) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
            w2, a, s, val_batch, k_val)
        eps = 0.01 / _tree_norm(g_w)
        w_plus = jax.tree.map(lambda w, v: w + eps * v, p, g_w)
        w_minus = jax.tree.map(lambda w, v: w - eps * v, p, g_w)
        _, g_plus = grad_a(w_plus, a, s, train_batch, k_train)
        _, g_minus = grad_a(w_minus, a, s, train_batch, k_train)
        g = jax.tree.map(lambda d, gp, gm: d - lr * (gp - gm) / (2 * eps), g_a, g_plus, g_minus)
        return g, loss, logits, s2

    return hypergrad


def make_search_step(graphdef, w_tx, a_tx, schedule: Callable, order: str, cfg) -> Callable:
    """Build ``step(state, train_batch, val_batch) -> (state, metrics)`` (not yet jitted).

    BN running statistics follow the val pass of the architecture step and the train
    pass of the weight step (DARTS also folds in its extra unrolled/finite-difference
    passes; running statistics never enter a training-mode loss).
    """
    hypergrad = make_hypergradient(graphdef, order, cfg)
    grad_w = jax.value_and_grad(make_loss_fn(graphdef), argnums=0, has_aux=True)

    def step(state: SearchState, train_batch: dict, val_batch: dict):
        lr = schedule(state.step)
        key, k_train, k_val = jax.random.split(state.key, 3)
        g_a, val_loss, val_logits, stats = hypergrad(state, lr, train_batch, val_batch, k_train, k_val)
        a_updates, a_opt = a_tx.update(g_a, state.a_opt, state.alphas)
        alphas = optax.apply_updates(state.alphas, a_updates)

        (train_loss, (train_logits, stats)), g_w = grad_w(state.params, alphas, stats, train_batch, k_train)
        w_updates, w_opt = w_tx.update(g_w, state.w_opt, state.params)
        params = optax.apply_updates(state.params, w_updates)

        metrics = {
            "train_loss": train_loss, "train_acc": accuracy(train_logits, train_batch["y"]),
            "val_loss": val_loss, "val_acc": accuracy(val_logits, val_batch["y"]),
            "lr": lr, "grad_norm": _tree_norm(g_w), "alpha_grad_norm": _tree_norm(g_a),
        }
        return SearchState(state.step + 1, params, alphas, stats, w_opt, a_opt, key), metrics

    return step


def make_eval_step(graphdef_eval) -> Callable:
    """``eval(state, batch) -> (sum of losses, number correct)`` with running BN statistics."""

    def eval_step(state: SearchState, batch: dict):
        model = nnx.merge(graphdef_eval, state.params, state.alphas, state.batch_stats)
        logits = model(batch["x"])
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])
        w = batch["mask"]
        return (losses * w).sum(), ((jnp.argmax(logits, -1) == batch["y"]) * w).sum()

    return eval_step
