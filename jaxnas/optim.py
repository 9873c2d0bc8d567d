"""Optimizers and learning-rate schedules as DARTS configures them in PyTorch (search and retraining)."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax


def epoch_cosine_lr(lr: float, lr_min: float, epochs: int, steps_per_epoch: int) -> Callable:
    """DARTS's schedule: CosineAnnealingLR(T_max=epochs, eta_min) stepped once per epoch."""

    def schedule(count):
        epoch = jnp.minimum(count // steps_per_epoch, epochs)
        return lr_min + 0.5 * (lr - lr_min) * (1.0 + jnp.cos(math.pi * epoch / epochs))

    return schedule


def global_norm(tree) -> jax.Array:
    """The L2 norm of all of ``tree``'s leaves together, as one reduction over their concatenation
    (``optax.tree.norm`` reduces each leaf apart: one GPU kernel per parameter array, about 500 in
    the 8-cell DARTS supernet)."""
    leaves = [jnp.ravel(x).astype(jnp.float32) for x in jax.tree.leaves(tree)]
    if not leaves:
        return jnp.zeros((), jnp.float32)
    flat = jnp.concatenate(leaves) if len(leaves) > 1 else leaves[0]
    return jnp.sqrt(jnp.sum(flat * flat))


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """``optax.clip_by_global_norm`` (the same rule: scale by max_norm / norm when norm >= max_norm)
    with the norm taken by ``global_norm``."""

    def update(updates, state, params=None):
        del params
        norm = global_norm(updates)
        keep = norm < max_norm
        return jax.tree.map(lambda t: jax.lax.select(keep, t, (t / norm.astype(t.dtype)) * max_norm), updates), state

    return optax.GradientTransformation(optax.init_empty_state, update)


def weight_optimizer(cfg, schedule: Callable) -> optax.GradientTransformation:
    """SGD as in DARTS/PyTorch: clip the raw gradient norm, coupled L2 decay, momentum (Nesterov's with
    ``nesterov``, as PyTorch's ``SGD(nesterov=True)``: GDAS)."""
    return optax.chain(
        clip_by_global_norm(cfg.grad_clip),
        optax.add_decayed_weights(cfg.weight_decay),
        optax.sgd(schedule, momentum=cfg.momentum, nesterov=bool(cfg.get("nesterov", False))),
    )


def alpha_optimizer(cfg) -> optax.GradientTransformation:
    """Adam with coupled L2 weight decay (PyTorch ``Adam(weight_decay=...)``, not AdamW)."""
    return optax.chain(
        optax.add_decayed_weights(cfg.arch_weight_decay),
        optax.adam(cfg.arch_lr, b1=cfg.arch_beta1, b2=cfg.arch_beta2),
    )
