"""Fair DARTS (Chu et al., ECCV 2020): independent sigmoids per op and the zero-one loss.

Official code: xiaomi-automl/FairDARTS ``fairdarts/model_search.py`` (sigmoid weights),
``separate_loss.py`` (``ConvSeparateLoss``: ``-MSE(sigmoid(alpha), 0.5)``, weight 10),
``train_search.py`` (defaults), ``utils.py::parse`` (discretization).

Its relaxation, ``sigmoid``, is in ``jaxnas/relaxations/sigmoid.py``; this preset names it.
"""

import jax
import jax.numpy as jnp

from jaxnas.methods.registry import register_method, register_regularizer


@register_regularizer("zero_one")
def zero_one(alphas: list[jax.Array]) -> jax.Array:
    """FairDARTS's zero-one loss (``sep_loss='l2'``): -mean((sigmoid(alpha) - 1/2)^2) over all alphas."""
    w = jnp.concatenate([jax.nn.sigmoid(a).ravel() for a in alphas])
    return -jnp.mean(jnp.square(w - 0.5))


@register_method("fairdarts")
def configure(cfg) -> None:
    """50 epochs, batch 128, lr 0.005 -> 0.001, arch Adam 3e-3 (0.9, 0.999) wd 1e-3, zero-one weight 10,
    the 7 DARTS ops without none, discretized by threshold_sparse at 0.85 (the NB201 variant keeps the
    benchmark's 5 ops and its argmax per edge)."""
    cfg.space.relaxation = "sigmoid"
    cfg.method.regularizer = "zero_one"
    cfg.method.reg.start = cfg.method.reg.end = 10.0
    cfg.search.epochs, cfg.search.batch_size = 50, 128
    cfg.optim.lr, cfg.optim.lr_min = 0.005, 0.001
    cfg.optim.arch_lr, cfg.optim.arch_beta1, cfg.optim.arch_weight_decay = 3e-3, 0.9, 1e-3
    if cfg.space.name == "darts":
        cfg.space.op_threshold = 0.85  # parse_method threshold_sparse, op_threshold 0.85
        cfg.space.ops = "max_pool_3x3,avg_pool_3x3,skip_connect,sep_conv_3x3,sep_conv_5x5,dil_conv_3x3,dil_conv_5x5"
