"""FairDARTS's independent sigmoids (Chu et al., ECCV 2020; xiaomi-automl/FairDARTS ``model_search.py``);
the discretization ranks sigmoid(alpha) too."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np

from jaxnas.relaxations.registry import register_relaxation


def _sigmoid_np(a) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.asarray(a, np.float64)))).astype(np.float32)


@register_relaxation("sigmoid", strengths=_sigmoid_np)
def sigmoid(alphas: jax.Array, key: jax.Array | None, hyper: Mapping) -> jax.Array:
    """Each op's weight is sigmoid(alpha), independently of the others (no competition between ops)."""
    return jax.nn.sigmoid(alphas)
