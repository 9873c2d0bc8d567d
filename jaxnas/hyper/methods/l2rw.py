"""Learning to Reweight (Ren et al. 2018, Alg. 1; ``uber-research/learning-to-reweight-examples``,
``mnist/reweight.py::reweight_autodiff``): example weights eps = 0, one virtual SGD step on
sum_i eps_i l_i, the meta loss (mean cross-entropy on a meta batch) after it; weights
max(-dL_meta/deps, 0) normalized to sum 1 (a zero sum stays zero), then the real step on
sum_i w_i l_i. The virtual step's size cancels in the normalization; the official code uses 1. No
state."""

from __future__ import annotations

import jax.numpy as jnp

from jaxnas.errors import JaxnasError
from jaxnas.hyper import estimators
from jaxnas.hyper.methods.registry import Built, Context, Hyper, Method, register_hyper_method


def check(cfg) -> None:
    if cfg.lookahead != "sgd":
        raise JaxnasError("optimize.hyper.lookahead=optimizer with method=l2rw: L2RW's weights start at 0, where an "
                          "adaptive optimizer's first step has no derivative; L2RW's lookahead is SGD (lookahead=sgd)")


def build(c: Context) -> Built:
    def step(params, stats, opt, rstate, batch, meta, lr):
        inner = lambda w, eps, b: jnp.sum(eps * c.losses(w, stats, b, c.smoothing)[0])  # noqa: E731
        outer = lambda w, eps, m: c.meta_loss(w, stats, m)  # noqa: E731
        eps0 = jnp.zeros(batch["y"].shape[0])
        _, g, _ = estimators.unrolled(inner, outer, lr=1.0)(params, eps0, batch, meta)
        w = jnp.maximum(-g, 0.0)
        total = jnp.sum(w)
        w = w / (total + (total == 0))
        params, stats, opt, loss = c.real_step(params, stats, opt, batch, lambda ell: jnp.sum(w * ell))
        return params, stats, opt, rstate, loss, w * w.shape[0]

    return Built(step, lambda: Hyper(None, None))


register_hyper_method("l2rw", Method(build, check))
