"""DrNAS (Chen et al., ICLR 2021): mixing weights sampled from a Dirichlet over each edge's ops.

Official code: xiangning-chen/DrNAS ``utils.py::process_step_vector`` (``Dirichlet(ELU(theta) + 1).rsample()``
on every forward pass), ``201-space/search_model.py`` (the KL regularizer), ``architect.py``
(``reg_type='l2'``: Adam weight decay ``reg_scale``; ``'kl'``: no weight decay).

Its relaxation, ``dirichlet``, is in ``jaxnas/relaxations/dirichlet.py``; this preset names it.
"""

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma, gammaln

from jaxnas.methods.registry import register_method, register_regularizer
from jaxnas.relaxations.dirichlet import concentration


def kl_to_uniform(conc: jax.Array) -> jax.Array:
    """KL(Dir(conc) || Dir(1)) per row: lnG(a0) - sum lnG(a_i) - lnG(K) + sum (a_i - 1)(psi(a_i) - psi(a0))."""
    a0 = conc.sum(-1)
    k = conc.shape[-1]
    return (gammaln(a0) - gammaln(conc).sum(-1) - gammaln(float(k))
            + ((conc - 1.0) * (digamma(conc) - digamma(a0)[..., None])).sum(-1))


@register_regularizer("dirichlet_kl")
def dirichlet_kl(alphas: list[jax.Array]) -> jax.Array:
    """DrNAS's ``reg_type='kl'``: sum over edges of KL(Dir(ELU(theta) + 1) || Dir(1)) (times ``reg_scale``)."""
    return sum(jnp.sum(kl_to_uniform(concentration(a))) for a in alphas)


@register_method("drnas")
def configure(cfg) -> None:
    """NB201 (``201-space/train_search.py``): 100 epochs, batch 64, lr 0.025 -> 0.001, arch Adam 3e-4
    (0.5, 0.999), l2 regularizer = Adam weight decay 1e-3, no partial channels. DARTS space
    (``DARTS-space/train_search.py``): the search network of 20 cells at C=36, batch 64, lr 0.1 cosine to 0
    over 50 epochs, arch lr 6e-4, progressive: 25 epochs at K=6 with the 8 ops, then each edge pruned to
    its 4 best ops and the ops widened to K=4 for 25 more (``ks=[6, 4]``, ``num_keeps=[7, 4]``)."""
    cfg.space.relaxation = "dirichlet"
    cfg.optim.arch_weight_decay = 1e-3
    if cfg.space.name == "nb201":
        cfg.search.epochs = 100
    else:
        cfg.search.epochs = 50
        cfg.space.C, cfg.space.layers, cfg.space.partial_channels = 36, 20, 6
        cfg.method.stages = (dict(epochs=25, partial=6, keep=8), dict(epochs=25, partial=4, keep=4))
        cfg.optim.lr, cfg.optim.lr_min, cfg.optim.arch_lr = 0.1, 0.0, 6e-4
