"""Training with hyperparameters learned by hypergradients on a clean meta split: the training
steps of ``optimize.tune = gradient`` (``optimize.hyper``), over any classifier ``model(x) -> logits``.

The methods are registrations in ``jaxnas/hyper/methods`` (one file each): ``l2rw`` (Learning to
Reweight), ``mwnet`` (Meta-Weight-Net), ``hypergrad`` (declared hyperparameters updated by an
estimator of ``jaxnas/hyper/estimators``) and ``oracle`` (perfect example weights from a known
corruption, the ceiling of reweighting). ``Steps`` builds what they share for one classifier (the
per-example losses, the meta loss, the trainer's real step and the lookahead) and jits the method's
steps over the devices.

The lookahead (``optimize.hyper.lookahead``) is plain SGD at the current learning rate, as the
official codes (``sgd``), or one step of the trainer's own optimizer from its current state
(``optimizer``: with AdamW, Adam's step; MW-Net and the one-step hypergradient), so that the
virtual step is the size of the real one.

Every step is data-parallel over ``mesh`` (as the search step): the state and hyperparameters
replicated, training and meta batches split over the devices, written for the global batch.
The meta batches come from the validation split only; the test split is never seen.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxnas import parallel
from jaxnas.errors import JaxnasError
from jaxnas.hyper import estimators
from jaxnas.hyper.methods import METHODS, Context

R, S = parallel.REPLICATED, parallel.SPLIT

LOOKAHEADS = ("sgd", "optimizer")


def check(h) -> None:
    """``optimize.hyper``'s fields, with their ranges and choices, and the method's own checks."""
    if h.method not in METHODS:
        raise JaxnasError(f"optimize.hyper.method={h.method!r} unknown; allowed: {', '.join(METHODS)}")
    if h.estimator not in estimators.ESTIMATORS:
        raise JaxnasError(f"optimize.hyper.estimator={h.estimator!r} unknown; allowed: "
                          f"{', '.join(estimators.ESTIMATORS)}")
    if h.solver not in estimators.SOLVERS:
        raise JaxnasError(f"optimize.hyper.solver={h.solver!r} unknown; allowed: {', '.join(estimators.SOLVERS)}")
    for name in ("steps", "iters", "every", "meta_batch", "mwnet_hidden"):
        v = h[name]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise JaxnasError(f"optimize.hyper.{name} must be an integer >= 1, got {v!r}")
    for name in ("lr", "alpha", "mwnet_lr"):
        v = h[name]
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise JaxnasError(f"optimize.hyper.{name} must be a finite number > 0, got {v!r}")
    if not isinstance(h.mwnet_weight_decay, (int, float)) or not math.isfinite(h.mwnet_weight_decay) \
            or h.mwnet_weight_decay < 0:
        raise JaxnasError(f"optimize.hyper.mwnet_weight_decay must be a finite number >= 0, got "
                          f"{h.mwnet_weight_decay!r}")
    if h.lookahead not in LOOKAHEADS:
        raise JaxnasError(f"optimize.hyper.lookahead={h.lookahead!r} unknown; allowed: {', '.join(LOOKAHEADS)}")
    METHODS[h.method].check(h)


def per_example_ce(logits: jax.Array, y: jax.Array, smoothing) -> jax.Array:
    """Cross-entropy per example against labels smoothed by ``smoothing`` over the classes
    (``optax.smooth_labels``; 0: the plain one)."""
    logp = jax.nn.log_softmax(logits)
    nll = -jnp.take_along_axis(logp, y[:, None], 1)[:, 0]
    return (1 - smoothing) * nll - smoothing * logp.mean(-1)


class Steps:
    """The jitted steps of one method for one classifier (``jaxnas/hyper/methods``).

    ``hp``: the trainer's fixed hyperparameters (label smoothing, weight decay); ``n_train``: the
    training split's size (per-example weights); ``cfg``: ``optimize.hyper``; ``mesh``: the devices
    the steps are split over (None: plain ``jax.jit`` on the default device); ``image_shape``: (H, W,
    C), for a learned augmentation's magnitude in its units. A learned augmentation's randomness
    comes with each training batch as ``batch["aug"]`` (``draws``)."""

    def __init__(self, graphdef, tx, hp: dict, num_classes: int, n_train: int, cfg, seed: int, mesh=None,
                 fusion_autotune: bool = False, image_shape: tuple | None = None):
        method = METHODS.lookup(cfg.method)
        self.needs_clean = method.needs_clean
        self.image_shape, self.seed = (tuple(image_shape) if image_shape is not None else None), seed
        smoothing = float(hp["label_smoothing"])

        def forward(params, stats, x):
            model = nnx.merge(graphdef, params, stats, copy=True)
            out = model(x)
            return (out[0] if isinstance(out, tuple) else out), nnx.state(model, nnx.BatchStat)

        def losses(params, stats, batch, s):
            logits, new_stats = forward(params, stats, batch["x"])
            return per_example_ce(logits, batch["y"], s), new_stats

        def meta_loss(params, stats, meta):  # mean plain cross-entropy on clean meta data
            return jnp.mean(losses(params, stats, meta, 0.0)[0])

        def real_step(params, stats, opt, batch, weigh):
            """The weight update on the batch's loss weighted by ``weigh(per_example_losses)``."""
            def loss_fn(p):
                ell, new_stats = losses(p, stats, batch, smoothing)
                return weigh(ell), new_stats
            (loss, new_stats), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, opt = tx.update(g, opt, params)
            return optax.apply_updates(params, updates), new_stats, opt, loss

        def ahead(inner, opt, lr_scale=lambda h: 1.0):
            """The lookahead's update ``w -> w'`` (``optimize.hyper.lookahead``): None, plain SGD at the
            current learning rate (the estimators' own, as the official codes); or one step of the
            trainer's optimizer from its current state, times ``lr_scale(h)`` (a method's learned
            learning-rate multiplier)."""
            if cfg.lookahead == "sgd":
                return None

            def step(w, h, b):
                updates = _finite_vjp(lambda g: tx.update(g, opt, w)[0])(jax.grad(inner)(w, h, b))
                scale = lr_scale(h)
                return jax.tree.map(lambda p, u: p + scale * u, w, updates)
            return step

        built = method.build(Context(cfg, tx, hp, num_classes, n_train, seed, self.image_shape, smoothing, losses,
                                     meta_loss, real_step, ahead))
        self.init, self.values, self.every = built.init, built.values, built.every
        self.augments, self.lookahead = built.augments or {}, built.lookahead
        self.train_loss, self.meta_loss = built.train_loss, meta_loss  # for benchmarks of other estimators
        self.hyper_update = None if built.hyper_update is None else _jit(
            built.hyper_update, mesh, (R, R, R, R, parallel.SPLIT_STACKED, S, R), (R, R), fusion_autotune)
        self.step = _jit(built.step, mesh, (R, R, R, R, S, S, R), (R, R, R, R, R, S), fusion_autotune)

    def draws(self, epoch: int, i: int, batch_shape: tuple) -> dict:
        """The randomness of the learned augmentations for batch ``i`` of ``epoch`` (batch images of
        shape ``batch_shape``), ``{"aug": {name: array}}`` to add to the batch, or ``{}``; a function
        of the seed, epoch and step, so a resumed fit draws the same."""
        if not self.augments:
            return {}
        rng = np.random.default_rng([self.seed, 23, epoch, i])
        return {"aug": {name: aug.draw(rng, tuple(batch_shape)) for name, aug in self.augments.items()}}

    def updates_hyper(self, step: int) -> bool:
        """Whether training step ``step`` is preceded by a hyperparameter update."""
        return self.hyper_update is not None and self.every > 0 and step % self.every == 0


def _finite_vjp(fn):
    """``fn`` with its reverse-mode derivative's non-finite entries set to 0. For an optimizer's update
    of a gradient ``g`` (Adam: ``m / (sqrt(v) + eps)``), an entry where ``g_i = 0`` and ``v_i = 0``
    has the derivative ``0 * inf``; such a coordinate's gradient does not depend on the hyperparameters
    (every example's loss is flat in it), so its contribution is 0."""

    @jax.custom_vjp
    def f(g):
        return fn(g)

    def fwd(g):
        return jax.vjp(fn, g)

    def bwd(vjp, ct):
        (dg,) = vjp(ct)
        return (jax.tree.map(lambda a: jnp.where(jnp.isfinite(a), a, 0.0), dg),)

    f.defvjp(fwd, bwd)
    return f


def _jit(fn, mesh, in_specs, out_specs, fusion_autotune):
    return jax.jit(fn) if mesh is None else parallel.jit_sharded(fn, mesh, in_specs, out_specs, fusion_autotune)


def weight_summary(weights: np.ndarray, seen: np.ndarray, clean: np.ndarray | None) -> dict:
    """Per epoch: mean/std of the last weight each training example got; where the corruption is
    known, histograms of the weights of clean and corrupted examples (10 bins over [0, max]) and the
    AUROC of weight against "label is correct" (0.5: no discrimination)."""
    w = weights[seen]
    out = {"weight_mean": float(w.mean()) if len(w) else 0.0, "weight_std": float(w.std()) if len(w) else 0.0,
           "weight_zero_fraction": float(np.mean(w <= 1e-12)) if len(w) else 0.0}
    if clean is not None and len(w):
        c = clean[seen]
        top = float(max(w.max(), 1e-12))
        edges = np.linspace(0.0, top, 11)
        out["hist_edges"] = [round(float(e), 5) for e in edges]
        out["hist_clean"] = np.histogram(w[c], edges)[0].tolist()
        out["hist_noisy"] = np.histogram(w[~c], edges)[0].tolist()
        if c.any() and (~c).any():
            from sklearn.metrics import roc_auc_score

            out["auroc_clean"] = float(roc_auc_score(c, w))
    return out
