"""beta-DARTS (Ye et al., CVPR 2022): the beta-decay regularizer on the architecture loss.

Official code: Sunshine-Ye/Beta-DARTS ``optimizers/darts/architect.py`` (``mlc_loss``: mean over edges of
logsumexp(alpha); weight ``50 * epoch / 100``).
"""

import jax
import jax.numpy as jnp

from jaxnas.methods.registry import register_method, register_regularizer, schedule


@register_regularizer("beta_decay")
def beta_decay(alphas: list[jax.Array]) -> jax.Array:
    """mean over every edge (of all cell types) of logsumexp(alpha_edge); its gradient is softmax(alpha)/E."""
    return jnp.mean(jnp.concatenate([jax.nn.logsumexp(a, axis=-1) for a in alphas]))


@register_method("betadarts")
def configure(cfg) -> None:
    """DARTS's optimizers; lambda 0 -> 50 over 100 epochs; 100 epochs on NB201, 50 in the DARTS space."""
    cfg.method.regularizer = "beta_decay"
    cfg.method.reg = schedule(0.0, 50.0, 100)
    cfg.search.epochs = 100 if cfg.space.name == "nb201" else 50
