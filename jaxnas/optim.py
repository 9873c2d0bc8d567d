"""Optimizers and learning-rate schedules as DARTS configures them in PyTorch (search and retraining)."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax.numpy as jnp
import optax


def epoch_cosine_lr(lr: float, lr_min: float, epochs: int, steps_per_epoch: int) -> Callable:
    """DARTS's schedule: CosineAnnealingLR(T_max=epochs, eta_min) stepped once per epoch."""

    def schedule(count):
        epoch = jnp.minimum(count // steps_per_epoch, epochs)
        return lr_min + 0.5 * (lr - lr_min) * (1.0 + jnp.cos(math.pi * epoch / epochs))

    return schedule


def weight_optimizer(cfg, schedule: Callable) -> optax.GradientTransformation:
    """SGD as in DARTS/PyTorch: clip the raw gradient norm, coupled L2 decay, momentum (Nesterov's with
    ``nesterov``, as PyTorch's ``SGD(nesterov=True)``: GDAS)."""
    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip),
        optax.add_decayed_weights(cfg.weight_decay),
        optax.sgd(schedule, momentum=cfg.momentum, nesterov=bool(cfg.get("nesterov", False))),
    )


def alpha_optimizer(cfg) -> optax.GradientTransformation:
    """Adam with coupled L2 weight decay (PyTorch ``Adam(weight_decay=...)``, not AdamW)."""
    return optax.chain(
        optax.add_decayed_weights(cfg.arch_weight_decay),
        optax.adam(cfg.arch_lr, b1=cfg.arch_beta1, b2=cfg.arch_beta2),
    )
