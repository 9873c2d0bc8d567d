"""SNAS (Xie et al., ICLR 2019): a concrete (Gumbel-softmax) relaxation trained single-level.

Official code: SNAS-Series/SNAS (``utils.Temp_Scheduler``: temperature 1 -> 0.03 linearly over the
epochs; weights and alphas both trained on the training data).
"""

from collections.abc import Mapping

import jax

from jaxnas.methods.registry import register_method, schedule
from jaxnas.relaxations import register_relaxation


@register_relaxation("gumbel_soft")
def gumbel_soft(alphas: jax.Array, key: jax.Array | None, hyper: Mapping) -> jax.Array:
    """The concrete distribution (SNAS Eq. 3): ``softmax((alpha + g) / tau)``, g ~ Gumbel(0, 1), a soft
    sample per edge. Without a key, softmax(alpha)."""
    if key is None:
        return jax.nn.softmax(alphas, -1)
    tau = hyper.get("tau", 1.0)
    return jax.nn.softmax((alphas + jax.random.gumbel(key, alphas.shape, alphas.dtype)) / tau, -1)


@register_method("snas")
def configure(cfg) -> None:
    """150 epochs, tau 1 -> 0.03, single-level, Adam 3e-4 (0.5, 0.999) wd 1e-3, DARTS's weight optimizer.
    The held-out 10% is monitored only (SNAS trains on all 50k images and monitors on the test set)."""
    cfg.space.relaxation = "gumbel_soft"
    cfg.method.tau = schedule(1.0, 0.03, "epochs")
    cfg.search.order = "single"
    cfg.search.epochs = 150
    cfg.data.train_portion = 0.9
