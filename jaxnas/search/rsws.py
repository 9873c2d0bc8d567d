"""Random search with weight sharing (Li & Talwalkar, UAI 2019).

A supernet of the space is trained with one architecture sampled uniformly at random
per step (its alphas set so that softmax is exactly one-hot on the sampled ops: every
other op is multiplied by zero and gets no gradient). Random architectures are then
scored by their accuracy on search-val batches with the shared weights, and the best
one is retrained from scratch (or looked up in a table) for the test report.
BatchNorm uses the batch's statistics when scoring (as Li & Talwalkar and ENAS do),
because running statistics mix all sampled paths.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxnas import data as data_lib
from jaxnas.errors import JaxnasError
from jaxnas.search import register_strategy
from jaxnas.search.bilevel import cross_entropy, epoch_cosine_lr, split_model, weight_optimizer
from jaxnas.spaces import build_supernet


def _with_alphas(graphdef, params, alphas, stats, onehot):
    model = nnx.merge(graphdef, params, alphas, stats, copy=True)
    for key, value in onehot.items():
        getattr(model, key)[...] = value
    return model


def _onehot_backend(space, cfg, ds, tx):
    """Supernets with alphas (DARTS, NAS-Bench-201): an architecture = one-hot alphas (no recompiles)."""
    model = build_supernet(cfg.space, ds.image_shape, ds.num_classes, nnx.Rngs(cfg.seed))
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
        logits = _with_alphas(graphdef, state[0], alphas, state[1], onehot)(batch["x"])  # batch statistics
        return (jnp.argmax(logits, -1) == batch["y"]).mean()

    state = (params, stats, tx.init(params))
    return (state, lambda st, arch, batch: _step(st, space.onehot_alphas(arch, op_names), batch),
            lambda st, arch, batch: _accuracy(st, space.onehot_alphas(arch, op_names), batch))


def _chain_backend(space, cfg, ds, tx):
    """The chain space: shared weights sliced per architecture (one compile per architecture)."""
    from jaxnas.spaces.chain import ChainSharedWeights

    ws = ChainSharedWeights(space, ds.num_classes, cfg.seed)

    def loss_fn(params, arch, batch):
        return cross_entropy(ws.apply(params, arch, batch["x"]), batch["y"])

    @functools.partial(jax.jit, static_argnums=1)
    def step(state, arch, batch):
        params, opt = state
        loss, g = jax.value_and_grad(loss_fn)(params, arch, batch)
        updates, opt = tx.update(g, opt, params)
        return (optax.apply_updates(params, updates), opt), loss

    @functools.partial(jax.jit, static_argnums=1)
    def accuracy(state, arch, batch):
        return (jnp.argmax(ws.apply(state[0], arch, batch["x"]), -1) == batch["y"]).mean()

    return (ws.params, tx.init(ws.params)), step, accuracy


class SupernetEvaluator:
    """Trains a weight-sharing supernet on construction, then ``score(arch)`` = search-val accuracy."""

    def __init__(self, space, cfg, log=print):
        from jaxnas.loop import Progress
        from jaxnas.spaces.chain import ChainSpace

        self.space, self.cfg = space, cfg
        ds = data_lib.load_dataset(cfg.data.name, cfg.data.data_dir)
        mean, std = ds.mean_std()
        train_idx, val_idx = data_lib.search_split(len(ds.x_train), cfg.data.train_portion)
        augment = data_lib.resolve_augment(cfg.data.augment, ds.name)
        s, d = cfg.search, cfg.discrete
        if d.ws_epochs < 1 or d.ws_eval_batches < 1:
            raise JaxnasError(f"discrete.ws_epochs and discrete.ws_eval_batches must be positive, got "
                              f"{d.ws_epochs}, {d.ws_eval_batches}")
        train_b = data_lib.Batcher(ds.x_train, ds.y_train, train_idx, s.batch_size, mean, std, augment, cfg.seed, 0)
        val_b = data_lib.Batcher(ds.x_train, ds.y_train, val_idx, s.batch_size, mean, std, "none", cfg.seed, 1)
        steps = min(train_b.steps_per_epoch, s.max_steps_per_epoch or train_b.steps_per_epoch)
        tx = weight_optimizer(cfg.optim, epoch_cosine_lr(cfg.optim.lr, cfg.optim.lr_min, d.ws_epochs, steps))
        backend = _chain_backend if isinstance(space, ChainSpace) else _onehot_backend
        state, step, self._accuracy = backend(space, cfg, ds, tx)
        rng = np.random.default_rng([cfg.seed, 17])
        t0 = time.time()
        log(f"weight-sharing supernet: {d.ws_epochs} epochs x {steps} steps, one random architecture per step")
        progress = Progress(d.ws_epochs * steps, 0, "supernet", cfg.run.progress)
        for epoch in range(d.ws_epochs):
            for i in range(steps):
                state, loss = step(state, space.random(rng), train_b.batch(epoch, i))
                progress.update()
            if not np.isfinite(float(loss)):
                raise JaxnasError(f"non-finite supernet loss in epoch {epoch + 1}; lower optim.lr")
            progress.write(f"supernet epoch {epoch + 1}/{d.ws_epochs}: loss {float(loss):.4f} "
                           f"({time.time() - t0:.0f} s, ETA {progress.eta()})", log)
        progress.close()
        self.state = state
        self.batches = [val_b.batch(0, i) for i in range(min(d.ws_eval_batches, val_b.steps_per_epoch))]

    def score(self, arch) -> tuple[float, float]:
        t0 = time.time()
        acc = np.mean([float(self._accuracy(self.state, arch, b)) for b in self.batches])
        return float(acc), time.time() - t0


@register_strategy("rsws")
def run(cfg, run_dir=None, log=print, resume=False) -> dict:
    """Random search scored by a weight-sharing supernet, then the best retrained (or looked up) for test."""
    from jaxnas.search import discrete
    from jaxnas.search.random_search import RandomSearch
    from jaxnas.spaces import discrete_space

    discrete.check_budget(cfg.discrete)
    space = discrete_space(cfg.space, discrete._in_shape(cfg))
    return discrete.run(cfg, run_dir, log, resume, RandomSearch, evaluator=SupernetEvaluator(space, cfg, log))
