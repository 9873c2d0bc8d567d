"""Meta-Weight-Net (Shu et al. 2019, Alg. 1; ``xjtushujun/meta-weight-net``, ``MW-Net.py``): an MLP
1 -> 100 -> 1 (ReLU, sigmoid output; PyTorch ``nn.Linear`` init) maps each example's loss
(detached) to its weight. Per step: a virtual step of the classifier (``optimize.hyper.lookahead``:
SGD at the current learning rate, no momentum, as the official code) on mean_i(V(l_i) l_i); the meta
loss after it updates V by Adam (lr 1e-3, L2 weight decay 1e-4, as
``torch.optim.Adam(weight_decay=1e-4)``); the real step uses the updated V's weights, unnormalized."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from jaxnas.hyper import estimators
from jaxnas.hyper.methods.registry import Built, Context, Hyper, Method, register_hyper_method


def vnet_init(hidden: int, key) -> dict:
    """PyTorch's ``nn.Linear`` initialization of the 1 -> hidden -> 1 network."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    b2 = 1.0 / math.sqrt(hidden)
    return {"w1": jax.random.uniform(k1, (1, hidden), minval=-1.0, maxval=1.0),
            "b1": jax.random.uniform(k2, (hidden,), minval=-1.0, maxval=1.0),
            "w2": jax.random.uniform(k3, (hidden, 1), minval=-b2, maxval=b2),
            "b2": jax.random.uniform(k4, (1,), minval=-b2, maxval=b2)}


def vnet(phi: dict, losses: jax.Array) -> jax.Array:
    """Meta-Weight-Net: sigmoid(W2 relu(W1 l + b1) + b2) per loss l."""
    return jax.nn.sigmoid(jax.nn.relu(losses[:, None] @ phi["w1"] + phi["b1"]) @ phi["w2"] + phi["b2"])[:, 0]


def build(c: Context) -> Built:
    cfg = c.cfg
    vtx = optax.chain(optax.add_decayed_weights(float(cfg.mwnet_weight_decay)), optax.adam(float(cfg.mwnet_lr)))

    def step(params, stats, opt, rstate, batch, meta, lr):
        def inner(w, phi, b):
            ell = c.losses(w, stats, b, c.smoothing)[0]
            return jnp.mean(ell * vnet(phi, jax.lax.stop_gradient(ell)))
        outer = lambda w, phi, m: c.meta_loss(w, stats, m)  # noqa: E731
        _, g, _ = estimators.unrolled(inner, outer, lr=lambda _: lr, step=c.ahead(inner, opt))(
            params, rstate.params, batch, meta)
        updates, vopt = vtx.update(g, rstate.opt, rstate.params)
        phi = optax.apply_updates(rstate.params, updates)
        box = {}

        def weigh(ell):
            box["w"] = jax.lax.stop_gradient(vnet(phi, jax.lax.stop_gradient(ell)))
            return jnp.mean(ell * box["w"])
        params, stats, opt, loss = c.real_step(params, stats, opt, batch, weigh)
        return params, stats, opt, Hyper(phi, vopt), loss, box["w"]

    def init():
        phi = vnet_init(int(cfg.mwnet_hidden), jax.random.PRNGKey(c.seed))
        return Hyper(phi, vtx.init(phi))

    return Built(step, init)


register_hyper_method("mwnet", Method(build))
