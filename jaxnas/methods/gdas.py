"""GDAS (Dong & Yang, CVPR 2019): one sampled op per edge, straight-through gradients to every alpha.

Official code: D-X-Y/AutoDL-Projects ``xautodl/models/cell_searchs/search_model_gdas.py`` (the
sampler), ``search_cells.py::forward_gdas`` (only the sampled op runs), ``exps/NAS-Bench-201-algos/GDAS.py``
(tau from 10 to 0.1 linearly over epochs - 1).
"""

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from jaxnas.methods.registry import register_method, schedule
from jaxnas.relaxations import register_relaxation


@register_relaxation("gumbel_hard", hard=True)
def gumbel_hard(alphas: jax.Array, key: jax.Array | None, hyper: Mapping) -> jax.Array:
    """Gumbel-max with a straight-through estimator (GDAS Eq. 3-5): ``probs = softmax((log_softmax(alpha)
    + g) / tau)``, ``hard = onehot(argmax probs) - stop_gradient(probs) + probs``: one-hot in value,
    softmax's gradient. Without a key, the one-hot of argmax(alpha) (the discretized cell)."""
    if key is None:
        return jax.nn.one_hot(jnp.argmax(alphas, -1), alphas.shape[-1], dtype=alphas.dtype)
    tau = hyper.get("tau", 1.0)
    logits = (jax.nn.log_softmax(alphas, -1) + jax.random.gumbel(key, alphas.shape, alphas.dtype)) / tau
    probs = jax.nn.softmax(logits, -1)
    onehot = jax.nn.one_hot(jnp.argmax(probs, -1), alphas.shape[-1], dtype=alphas.dtype)
    return onehot - jax.lax.stop_gradient(probs) + probs


@register_method("gdas")
def configure(cfg) -> None:
    """GDAS.config (NB201) / GDAS-NASNet-CIFAR.config (DARTS space): 250 epochs, SGD nesterov lr 0.025
    cosine to 0.001, wd 5e-4; Adam 3e-4 (0.5, 0.999) wd 1e-3; tau 10 -> 0.1; batch 64 / 256."""
    cfg.space.relaxation = "gumbel_hard"
    cfg.method.tau = schedule(10.0, 0.1, "epochs-1")
    cfg.search.epochs = 250
    cfg.search.batch_size = 64 if cfg.space.name == "nb201" else 256
    cfg.optim.lr, cfg.optim.lr_min, cfg.optim.weight_decay, cfg.optim.nesterov = 0.025, 0.001, 5e-4, True
    cfg.optim.arch_lr, cfg.optim.arch_weight_decay = 3e-4, 1e-3
