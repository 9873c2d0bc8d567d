"""The DARTS bilevel step (Liu et al. 2019, Sec. 2.3, Alg. 1; cnn/architect.py).

One jit-compiled function does an architecture update on a search-val batch and
then a weight update on a search-train batch. The architecture gradient is

* ``first``:     grad_alpha L_val(w, alpha)                              (Eq. 7 with xi = 0)
* ``second``:    grad_alpha L_val(w'(alpha), alpha), exact by autodiff through the
                 unrolled step w' = w - lr * (momentum * buf + grad_w L_train + wd * w)  (Eq. 6)
* ``second_fd``: DARTS's approximation of Eq. 7-8: grad_alpha L_val(w', alpha)
                 - lr * (grad_alpha L_train(w+) - grad_alpha L_train(w-)) / (2 eps),
                 w+- = w +- eps * grad_w' L_val(w', alpha), eps = 0.01 / ||grad_w' L_val||.

* ``single``:    single-level (SNAS): grad_alpha L_train(w, alpha) and grad_w L_train(w, alpha) from
                 one pass on the search-train batch, both updates applied.

The step is a pure function of a ``SearchState`` pytree; the model's structure
(``graphdef``) is closed over and merged inside the step. The state's PRNG key is split
every step and feeds the supernet's relaxation (sampling relaxations; softmax ignores it),
so a resumed or multi-device run draws the same architectures.

``passes="loop"`` (first order) runs the two passes as one ``lax.scan`` over one compiled
body: forward and backward in (w, alpha) on the search-val batch, then on the search-train batch,
the body keeping the alpha update of the first and the weight gradient of the second. The numbers
are the same; XLA compiles the network's forward and backward once instead of twice (about 40% less
compile time for DARTS's 8 cells on a GPU), and each pass computes the gradient it discards (as
DARTS's PyTorch ``architect`` does: its ``loss.backward()`` fills the weights' gradients too), which
moves about a sixth more bytes a step (docs/accelerators.md).

A DARTS-family method adds its parts (``jaxnas.methods.Parts``): scheduled values computed
from the step count (so they resume with it), a regularizer whose gradient is added to the
architecture gradient, a perturbation of the relaxed weights before the weight step, and an
epoch before which the architecture is not updated.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxnas.errors import unknown
from jaxnas.losses import accuracy, cross_entropy
from jaxnas.methods import Parts, op_alphas
from jaxnas.nn import check_dtype, check_passes, split_model

ORDERS = ("first", "second", "second_fd", "single")


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


def _call(model, x, key, hyper, weights):
    """The supernet's logits; ``hyper`` and ``weights`` are passed only when given, so a supernet that
    takes just ``(x, key)`` works with every method that needs neither."""
    extra = {}
    if hyper:
        extra["hyper"] = hyper
    if weights is not None:
        extra["weights"] = weights
    return model(x, key, **extra)


def _in_dtype(params, x, dtype):
    """The weights and images cast to the compute dtype (unchanged for float32: no op is traced)."""
    if jnp.dtype(dtype) == jnp.float32:
        return params, x
    return jax.tree.map(lambda v: v.astype(dtype), params), x.astype(dtype)


def make_loss_fn(graphdef, dtype=jnp.float32) -> Callable:
    """loss(params, alphas, stats, batch, key=None, hyper=None, weights=None) -> (loss, (logits, new_stats)),
    training-mode BN; ``key`` feeds the relaxation, ``hyper`` holds the scheduled values, ``weights``
    replaces the relaxed edge weights.

    ``dtype`` (``search.dtype``) is the compute dtype: with bfloat16 the weights and images are cast to
    it inside the loss (mixed precision: the parameters, alphas, gradients, optimizer states and BN
    running statistics stay float32; the relaxed edge weights and the activations are bfloat16; BN
    statistics, logits and the loss are computed in float32)."""
    low = jnp.dtype(dtype) != jnp.float32

    def loss_fn(params, alphas, stats, batch, key=None, hyper=None, weights=None):
        params, x = _in_dtype(params, batch["x"], dtype)
        model = nnx.merge(graphdef, params, alphas, stats, copy=True)
        logits = _call(model, x, key, hyper, weights)
        new_stats = nnx.state(model, nnx.BatchStat)
        if low:
            logits, new_stats = logits.astype(jnp.float32), jax.tree.map(lambda v: v.astype(jnp.float32), new_stats)
        return cross_entropy(logits, batch["y"]), (logits, new_stats)

    return loss_fn


def _tree_norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def make_hypergradient(graphdef, order: str, cfg, dtype=jnp.float32) -> Callable:
    """``hypergrad(state, lr, train_batch, val_batch, k_train=None, k_val=None, hyper=None) -> (grad_alpha,
    val_loss, val_logits, bn_stats)``; the keys feed the relaxation on the train and val batches.

    ``cfg`` holds momentum and weight_decay, used by the second-order unrolled step; ``dtype``: the
    compute dtype (``make_loss_fn``).
    """
    if order not in ORDERS:
        raise unknown("search order", order, ORDERS)
    check_dtype(order, dtype)
    loss_fn = make_loss_fn(graphdef, dtype)
    grad_w = jax.value_and_grad(loss_fn, argnums=0, has_aux=True)
    grad_a = jax.value_and_grad(loss_fn, argnums=1, has_aux=True)
    momentum, wd = cfg.momentum, cfg.weight_decay

    def unrolled(params, alphas, stats, w_opt, lr, train_batch, key, hyper):
        """w' = w - lr * (momentum * buf + grad_w L_train(w, alpha) + wd * w), no clipping (DARTS)."""
        _, g = grad_w(params, alphas, stats, train_batch, key, hyper)
        buf = optax.tree_utils.tree_get(w_opt, "trace")
        return jax.tree.map(lambda w, b, gw: w - lr * (momentum * b + gw + wd * w), params, buf, g)

    def hypergrad(state: SearchState, lr, train_batch, val_batch, k_train=None, k_val=None, hyper=None):
        p, a, s = state.params, state.alphas, state.batch_stats
        if order in ("first", "single"):
            (loss, (logits, s)), g = grad_a(p, a, s, val_batch, k_val, hyper)
            return g, loss, logits, s

        if order == "second":
            def val_of_unrolled(alphas):
                w2 = unrolled(p, alphas, s, state.w_opt, lr, train_batch, k_train, hyper)
                return loss_fn(w2, alphas, s, val_batch, k_val, hyper)

            (loss, (logits, s2)), g = jax.value_and_grad(val_of_unrolled, has_aux=True)(a)
            return g, loss, logits, s2

        w2 = unrolled(p, a, s, state.w_opt, lr, train_batch, k_train, hyper)
        (loss, (logits, s2)), (g_w, g_a) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
            w2, a, s, val_batch, k_val, hyper)
        eps = 0.01 / _tree_norm(g_w)
        w_plus = jax.tree.map(lambda w, v: w + eps * v, p, g_w)
        w_minus = jax.tree.map(lambda w, v: w - eps * v, p, g_w)
        _, g_plus = grad_a(w_plus, a, s, train_batch, k_train, hyper)
        _, g_minus = grad_a(w_minus, a, s, train_batch, k_train, hyper)
        g = jax.tree.map(lambda d, gp, gm: d - lr * (gp - gm) / (2 * eps), g_a, g_plus, g_minus)
        return g, loss, logits, s2

    return hypergrad


def _no_parts() -> Parts:
    return Parts(lambda step: {}, None, None, 7, 0)


def make_search_step(graphdef, w_tx, a_tx, schedule: Callable, order: str, cfg, parts: Parts | None = None,
                     graphdef_eval=None, dtype=jnp.float32, passes: str = "unrolled") -> Callable:
    """Build ``step(state, train_batch, val_batch) -> (state, metrics)`` (not yet jitted).

    BN running statistics follow the val pass of the architecture step and the train
    pass of the weight step (DARTS also folds in its extra unrolled/finite-difference
    passes; running statistics never enter a training-mode loss). ``parts``: a method's
    parts (``jaxnas.methods.parts``); None is plain DARTS. ``graphdef_eval``: the supernet in
    evaluation mode, for a perturbation's loss (SDARTS attacks with BN running statistics). ``dtype``:
    the compute dtype, float32 or bfloat16 (``search.dtype``; ``make_loss_fn``). ``passes``: ``unrolled``,
    or ``loop`` for the first order's two passes as one loop over one compiled body (module docstring).
    """
    parts = parts or _no_parts()
    check_passes(passes, order, parts.perturbation is not None)
    hypergrad = make_hypergradient(graphdef, order, cfg, dtype)
    loss_fn = make_loss_fn(graphdef, dtype)
    grad_w = jax.value_and_grad(loss_fn, argnums=0, has_aux=True)
    grad_both = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)
    attack_loss = loss_fn if graphdef_eval is None else make_loss_fn(graphdef_eval, dtype)

    def reg_grad(alphas, hyper):
        """The weighted regularizer and its gradient in the alphas (it depends on nothing else)."""
        if parts.regularizer is None:
            return jnp.zeros(()), jax.tree.map(jnp.zeros_like, alphas)
        value, g = jax.value_and_grad(lambda a: parts.regularizer(op_alphas(a)))(alphas)
        return hyper["reg"] * value, jax.tree.map(lambda x: hyper["reg"] * x, g)

    def arch_update(state, g_a, hyper):
        reg, g_reg = reg_grad(state.alphas, hyper)
        g_a = jax.tree.map(jnp.add, g_a, g_reg)
        a_updates, a_opt = a_tx.update(g_a, state.a_opt, state.alphas)
        return optax.apply_updates(state.alphas, a_updates), a_opt, g_a, reg

    def weights_for_step(state, alphas, stats, train_batch, key, k_pert, hyper):
        """The relaxed weights for the weight step: perturbed (SDARTS), or None (the supernet relaxes)."""
        if parts.perturbation is None:
            return None
        model = nnx.merge(graphdef, state.params, alphas, stats, copy=True)
        weights = jax.lax.stop_gradient(model.relax(key, hyper))

        def train_loss(w):
            return attack_loss(state.params, alphas, stats, train_batch, key, hyper, w)[0]

        return jax.lax.stop_gradient(parts.perturbation(weights, k_pert, hyper["eps"], train_loss, parts.pgd_steps))

    def looped(state, train_batch, val_batch, k_train, k_val, hyper):
        """The first order's architecture pass (search-val batch) and weight pass (search-train batch, the
        updated alphas and BN statistics) as two iterations of one body: each computes the loss's
        gradient in both the weights and the alphas; the first's alpha update and the second's weight
        gradient are kept. Before ``arch_start_step`` the val batch is only scored (alphas, their
        optimizer and BN statistics unchanged), as in ``step``'s warm-up."""
        arch_on = state.step >= parts.arch_start_step

        def body(carry, xs):
            alphas, a_opt, stats, arch_pass = carry
            batch, key = xs
            (loss, (logits, new_stats)), (g_w, g_a) = grad_both(state.params, alphas, stats, batch, key, hyper)
            new_alphas, new_a_opt, g_a, reg = arch_update(state, g_a, hyper)  # kept only on the first pass
            update = arch_pass & arch_on

            def pick(cond, a, b):
                return jax.tree.map(lambda x, y: jnp.where(cond, x, y), a, b)

            carry = (pick(update, new_alphas, alphas), pick(update, new_a_opt, a_opt),
                     pick(arch_pass & ~arch_on, stats, new_stats), jnp.zeros((), bool))
            zeros = jax.tree.map(jnp.zeros_like, g_a)
            return carry, (loss, logits, g_w, pick(update, g_a, zeros), jnp.where(update, reg, 0.0))

        both = jax.tree.map(lambda v, t: jnp.stack([v, t]), val_batch, train_batch)
        (alphas, a_opt, stats, _), (loss, logits, g_w, g_a, reg) = jax.lax.scan(
            body, (state.alphas, state.a_opt, state.batch_stats, jnp.ones((), bool)), (both, jnp.stack([k_val, k_train])))
        first, second = (lambda t: jax.tree.map(lambda x: x[0], t)), (lambda t: jax.tree.map(lambda x: x[1], t))
        return (alphas, a_opt, first(g_a), reg[0], loss[0], logits[0], stats, loss[1], logits[1], second(g_w))

    def step(state: SearchState, train_batch: dict, val_batch: dict):
        lr = schedule(state.step)
        hyper = parts.hyper(state.step)
        key, k_train, k_val = jax.random.split(state.key, 3)
        metrics = {}

        if passes == "loop":
            (alphas, a_opt, g_a, reg, val_loss, val_logits, stats, train_loss, train_logits,
             g_w) = looped(state, train_batch, val_batch, k_train, k_val, hyper)
            metrics.update(val_loss=val_loss, val_acc=accuracy(val_logits, val_batch["y"]))
        elif order == "single":
            (train_loss, (train_logits, stats)), (g_w, g_a) = grad_both(
                state.params, state.alphas, state.batch_stats, train_batch, k_train, hyper)
            alphas, a_opt, g_a, reg = arch_update(state, g_a, hyper)
        else:
            def arch(_):
                g, loss, logits, st = hypergrad(state, lr, train_batch, val_batch, k_train, k_val, hyper)
                return (*arch_update(state, g, hyper), loss, logits, st)

            def warm_up(_):
                """No architecture update yet (PC-DARTS's first epochs): the val batch is only scored."""
                loss, (logits, _) = loss_fn(state.params, state.alphas, state.batch_stats, val_batch, k_val, hyper)
                zeros = jax.tree.map(jnp.zeros_like, state.alphas)
                return state.alphas, state.a_opt, zeros, jnp.zeros(()), loss, logits, state.batch_stats

            if parts.arch_start_step > 0:
                out = jax.lax.cond(state.step >= parts.arch_start_step, arch, warm_up, None)
            else:
                out = arch(None)
            alphas, a_opt, g_a, reg, val_loss, val_logits, stats = out
            metrics.update(val_loss=val_loss, val_acc=accuracy(val_logits, val_batch["y"]))
            weights = weights_for_step(state, alphas, stats, train_batch, k_train,
                                       jax.random.fold_in(k_train, 1), hyper)
            (train_loss, (train_logits, stats)), g_w = grad_w(state.params, alphas, stats, train_batch, k_train,
                                                             hyper, weights)
        w_updates, w_opt = w_tx.update(g_w, state.w_opt, state.params)
        params = optax.apply_updates(state.params, w_updates)

        metrics = {
            "train_loss": train_loss, "train_acc": accuracy(train_logits, train_batch["y"]), **metrics,
            "lr": lr, "grad_norm": _tree_norm(g_w), "alpha_grad_norm": _tree_norm(g_a),
            **({"reg_loss": reg} if parts.regularizer is not None else {}),
            **hyper,
        }
        return SearchState(state.step + 1, params, alphas, stats, w_opt, a_opt, key), metrics

    return step


def make_eval_step(graphdef_eval, parts: Parts | None = None, dtype=jnp.float32) -> Callable:
    """``eval(state, batch) -> (sum of losses, number correct)`` with running BN statistics and the
    relaxation's deterministic weights at the state's scheduled values, computed in ``dtype``."""
    parts = parts or _no_parts()
    low = jnp.dtype(dtype) != jnp.float32

    def eval_step(state: SearchState, batch: dict):
        params, x = _in_dtype(state.params, batch["x"], dtype)
        model = nnx.merge(graphdef_eval, params, state.alphas, state.batch_stats)
        logits = _call(model, x, None, parts.hyper(state.step), None)
        if low:
            logits = logits.astype(jnp.float32)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])
        w = batch["mask"]
        return (losses * w).sum(), ((jnp.argmax(logits, -1) == batch["y"]) * w).sum()

    return eval_step
