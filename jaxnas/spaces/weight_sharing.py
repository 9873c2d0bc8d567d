"""The default weight-sharing form of a space with a supernet: an architecture is the supernet
with one-hot alphas (Li & Talwalkar 2019), so one compiled step serves every architecture.

Softmax of the one-hot rows (0 on the chosen op, -1e9 elsewhere) is exactly one-hot in
float32, so every other op is multiplied by zero and gets no gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxnas import kernels
from jaxnas.losses import cross_entropy
from jaxnas.nn import split_model


def _with_alphas(graphdef, params, alphas, stats, onehot):
    model = nnx.merge(graphdef, params, alphas, stats, copy=True)
    for key, value in onehot.items():
        getattr(model, key)[...] = value
    return model


def onehot_supernet(space_def, space, cfg, ds, tx):
    """``(state, step, accuracy)`` of ``space_def``'s supernet driven by ``space.onehot_alphas``;
    accuracy uses the batch's BN statistics (running statistics mix all sampled paths)."""
    model = kernels.build_with(lambda: space_def.supernet(space_def.fields(cfg.space), tuple(ds.image_shape),
                                                          ds.num_classes, nnx.Rngs(cfg.seed)), cfg.run.kernels)
    op_names = tuple(model.op_names)
    graphdef, params, alphas, stats = split_model(model)

    def loss_fn(params, stats, onehot, batch):
        m = _with_alphas(graphdef, params, alphas, stats, onehot)
        return cross_entropy(m(batch["x"]), batch["y"]), nnx.state(m, nnx.BatchStat)

    @jax.jit
    def _step(state, onehot, batch):
        params, stats, opt = state
        (loss, stats), g = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, onehot, batch)
        updates, opt = tx.update(g, opt, params)
        return (optax.apply_updates(params, updates), stats, opt), loss

    @jax.jit
    def _accuracy(state, onehot, batch):
        logits = _with_alphas(graphdef, state[0], alphas, state[1], onehot)(batch["x"])
        return (jnp.argmax(logits, -1) == batch["y"]).mean()

    state = (params, stats, tx.init(params))
    return (state, lambda st, arch, batch: _step(st, space.onehot_alphas(arch, op_names), batch),
            lambda st, arch, batch: _accuracy(st, space.onehot_alphas(arch, op_names), batch))
