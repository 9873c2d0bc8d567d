"""GDAS's straight-through Gumbel-max sampler (Dong & Yang, CVPR 2019, Eq. 3-5; AutoDL-Projects
``search_model_gdas.py``), ``hard=True``: one op per edge runs (``edges.SourceEdges``)."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from jaxnas.relaxations.registry import register_relaxation


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
