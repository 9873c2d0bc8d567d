"""Smooth DARTS (Chen & Hsieh, ICML 2020): perturb the relaxed weights before each weight step.

Official code: xiangning-chen/SmoothDARTS ``attacker/perturb.py`` (``Random_alpha``, ``Linf_PGD_alpha``),
``sota/cnn/model_search.py::clip`` (back onto the simplex), ``train_search.py`` (epsilon 0.03 -> 0.3
linearly over the epochs: ``0.03 + (0.3 - 0.03) * epoch / epochs``).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxnas.methods.registry import register_method, register_perturbation, schedule


def clip_to_simplex(w: jax.Array) -> jax.Array:
    """SDARTS's ``clip``: clamp each row to [0, 1]; a row that became all zero gets 1 at its former argmax;
    divide by the row sum."""
    top = jax.nn.one_hot(jnp.argmax(w, -1), w.shape[-1], dtype=w.dtype)
    c = jnp.clip(w, 0.0, 1.0)
    c = jnp.where(c.sum(-1, keepdims=True) == 0.0, top, c)
    return c / c.sum(-1, keepdims=True)


def _noise(weights: dict, key: jax.Array, eps) -> dict:
    keys = jax.random.split(key, len(weights))
    return {k: w + jax.random.uniform(sub, w.shape, w.dtype, -eps, eps)
            for (k, w), sub in zip(sorted(weights.items()), keys)}


@register_perturbation("random")
def random(weights: dict, key: jax.Array, eps, loss: Callable, steps: int) -> dict:
    """SDARTS-RS: uniform noise in [-eps, eps] on each weight, then back onto the simplex."""
    return {k: clip_to_simplex(w) for k, w in _noise(weights, key, eps).items()}


@register_perturbation("pgd")
def pgd(weights: dict, key: jax.Array, eps, loss: Callable, steps: int) -> dict:
    """SDARTS-ADV: an L-infinity PGD attack on the weights that raises the training loss: a random start,
    ``steps`` signed-gradient steps of 2 eps / steps, each projected on the eps-box around the weights and
    onto the simplex; kept only if it raised the loss."""
    w0 = weights
    lr = 2.0 * eps / steps

    def project(w):
        return {k: clip_to_simplex(w0[k] + jnp.clip(w[k] - w0[k], -eps, eps)) for k in w}

    def body(_, w):
        g = jax.grad(loss)(w)
        return project({k: w[k] + lr * jnp.sign(g[k]) for k in w})

    start = {k: clip_to_simplex(w) for k, w in _noise(w0, key, eps).items()}
    w = jax.lax.fori_loop(0, steps, body, start)
    keep = loss(w0) > loss(w)
    return {k: jnp.where(keep, w0[k], w[k]) for k in w}


def _configure(cfg, perturbation: str) -> None:
    cfg.method.perturbation = perturbation
    cfg.method.eps = schedule(0.03, 0.3, "epochs")
    cfg.search.epochs = 100 if cfg.space.name == "nb201" else 50


@register_method("sdarts_rs")
def configure_rs(cfg) -> None:
    """DARTS's defaults with random smoothing (50 epochs; 100 on NB201, ``nasbench201/train_search.py``)."""
    _configure(cfg, "random")


@register_method("sdarts_adv")
def configure_adv(cfg) -> None:
    """DARTS's defaults with the 7-step PGD attack (50 epochs; 100 on NB201)."""
    _configure(cfg, "pgd")
