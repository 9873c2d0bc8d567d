"""Training with hyperparameters learned by hypergradients on a clean meta split: the training
steps of ``optimize.tune = gradient`` (``optimize.hyper``), over any classifier ``model(x) -> logits``.

Three methods and a reference, each a jitted ``step(params, stats, opt, rstate, batch, meta, lr) -> (params, stats,
opt, rstate, loss, weights)``; ``weights`` are the batch's example weights in units where uniform
weighting is 1, for the logs:

* ``l2rw``, Learning to Reweight (Ren et al. 2018, Alg. 1; ``mnist/reweight.py::reweight_autodiff``):
  example weights eps = 0, one virtual SGD step on sum_i eps_i l_i, the meta loss (mean
  cross-entropy on a meta batch) after it; weights max(-dL_meta/deps, 0) normalized to sum 1 (a zero
  sum stays zero), then the real step on sum_i w_i l_i. The virtual step's size cancels in the
  normalization; the official code uses 1. No state.
* ``mwnet``, Meta-Weight-Net (Shu et al. 2019, Alg. 1; ``MW-Net.py``): an MLP 1 -> 100 -> 1 (ReLU,
  sigmoid output; PyTorch ``nn.Linear`` init) maps each example's loss (detached) to its weight.
  Per step: a virtual SGD step of the classifier (the current learning rate, no momentum) on
  mean_i(V(l_i) l_i); the meta loss after it updates V by Adam (lr 1e-3, L2 weight decay 1e-4, as
  ``torch.optim.Adam(weight_decay=1e-4)``); the real step uses the updated V's weights, unnormalized.
* ``hypergrad``: the hyperparameters named in ``optimize.hyper.learn`` are parameters of the
  training loss, held apart from the weights with their own optimizer (Adam, ``optimize.hyper.lr``)
  and updated every ``optimize.hyper.every`` steps by a hypergradient of the meta loss
  (``estimators.py``: unrolled over ``steps`` batches, or implicit). The loss is
  ``sum_i a_i c_{y_i} l_i(s) / sum_i a_i c_{y_i} + exp(log_wd) / 2 ||w||^2`` with per-example weights
  a = 2 sigmoid(z) over the training split, per-class weights c = 2 sigmoid(z_c) (both 1 at the
  start), label smoothing s = 0.5 sigmoid(z_s) and weight decay exp(log_wd) as an L2 term (the
  optimizer's own decay is then off). ``learning_rate`` is a multiplier exp(log_lr) (1 at the
  start) of the trainer's schedule, in the lookahead's SGD steps and in the real step's update: its
  one-step hypergradient is -lr (grad L_meta(w')) . (grad L_train(w)), the signal of hypergradient
  descent (Baydin et al. 2018, Eq. 2 for SGD). ``augment_<name>`` learns the magnitude of a
  differentiable augmentation of the training images (``jaxnas/hyper/augments``: ``noise``,
  ``translate``, ``rotate``, ``scale``, ``brightness``, ``contrast``) applied in the training loss, the lookahead's included; the meta loss sees the
  validation images without them. What is not learned keeps the trainer's fixed value.
* ``oracle``, not a method but its ceiling, for demonstrations on a known corruption
  (``data.corrupt`` with label noise): each training example weighted 1 if its label is still the
  true one and 0 if the corruption changed it, the loss their mean over the batch's correct examples
  (0 for a batch with none). It is what a perfect example reweighting reaches: training on the
  correctly labelled part of the split, with the same schedule and number of steps. It reads the
  corruption's record, which real data does not have.

Every step is data-parallel over ``mesh`` (as the search step): the state and hyperparameters
replicated, training and meta batches split over the devices, written for the global batch.

The lookahead (``optimize.hyper.lookahead``) is plain SGD at the current learning rate, as the
official codes (``sgd``), or one step of the trainer's own optimizer from its current state
(``optimizer``: with AdamW, Adam's step; MW-Net and the one-step hypergradient), so that the
virtual step is the size of the real one.

The meta batches come from the validation split only; the test split is never seen.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxnas import parallel
from jaxnas.errors import JaxnasError
from jaxnas.hyper import augments, estimators

R, S = parallel.REPLICATED, parallel.SPLIT

METHODS = ("l2rw", "mwnet", "hypergrad", "oracle")
LOOKAHEADS = ("sgd", "optimizer")
LEARNABLE = ("example_weights", "class_weights", "weight_decay", "label_smoothing", "learning_rate")


def learnable() -> tuple[str, ...]:
    """What ``optimize.hyper.learn`` may name: ``LEARNABLE`` and ``augment_<name>`` for each registered
    augmentation (a user's own included, registered before the config is read)."""
    return LEARNABLE + tuple(f"augment_{name}" for name in augments.AUGMENTS)


def parse_learn(text: str) -> tuple[str, ...]:
    """``optimize.hyper.learn``: a comma list of ``learnable()`` names, each once."""
    names = tuple(t.strip() for t in str(text).split(",") if t.strip())
    allowed = learnable()
    if not names:
        raise JaxnasError(f"optimize.hyper.learn is empty; name one or more of: {', '.join(allowed)}")
    for n in names:
        if n not in allowed:
            raise JaxnasError(f"optimize.hyper.learn: {n!r} unknown; allowed: {', '.join(allowed)}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise JaxnasError(f"optimize.hyper.learn declares {', '.join(twice)} twice")
    return names


def check(h) -> None:
    """``optimize.hyper``'s fields, with their ranges and choices."""
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
    if h.method == "l2rw" and h.lookahead != "sgd":
        raise JaxnasError("optimize.hyper.lookahead=optimizer with method=l2rw: L2RW's weights start at 0, where an "
                          "adaptive optimizer's first step has no derivative; L2RW's lookahead is SGD (lookahead=sgd)")
    if h.method == "hypergrad":
        learn = parse_learn(h.learn)
        if h.lookahead == "optimizer" and (h.estimator != "unrolled" or h.steps != 1):
            raise JaxnasError(f"optimize.hyper.lookahead=optimizer takes one step of the trainer's optimizer: it "
                              f"needs estimator=unrolled and steps=1, got {h.estimator!r} and {h.steps}")
        if "learning_rate" in learn and h.estimator != "unrolled":
            raise JaxnasError(f"optimize.hyper.learn=learning_rate needs optimize.hyper.estimator=unrolled, got "
                              f"{h.estimator!r}: the implicit estimator's optimum does not depend on the learning "
                              f"rate, so its hypergradient is zero")


def per_example_ce(logits: jax.Array, y: jax.Array, smoothing) -> jax.Array:
    """Cross-entropy per example against labels smoothed by ``smoothing`` over the classes
    (``optax.smooth_labels``; 0: the plain one)."""
    logp = jax.nn.log_softmax(logits)
    nll = -jnp.take_along_axis(logp, y[:, None], 1)[:, 0]
    return (1 - smoothing) * nll - smoothing * logp.mean(-1)


class Hyper(NamedTuple):
    """The learned state of a method: MW-Net's network or the hyperparameters, and their optimizer."""

    params: Any
    opt: Any


def _vnet_init(hidden: int, key) -> dict:
    k1, k2, k3, k4 = jax.random.split(key, 4)
    b2 = 1.0 / math.sqrt(hidden)
    return {"w1": jax.random.uniform(k1, (1, hidden), minval=-1.0, maxval=1.0),
            "b1": jax.random.uniform(k2, (hidden,), minval=-1.0, maxval=1.0),
            "w2": jax.random.uniform(k3, (hidden, 1), minval=-b2, maxval=b2),
            "b2": jax.random.uniform(k4, (1,), minval=-b2, maxval=b2)}


def vnet(phi: dict, losses: jax.Array) -> jax.Array:
    """Meta-Weight-Net: sigmoid(W2 relu(W1 l + b1) + b2) per loss l."""
    return jax.nn.sigmoid(jax.nn.relu(losses[:, None] @ phi["w1"] + phi["b1"]) @ phi["w2"] + phi["b2"])[:, 0]


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


class Steps:
    """The jitted steps of one method for one classifier (module docstring).

    ``hp``: the trainer's fixed hyperparameters (label smoothing, weight decay); ``n_train``: the
    training split's size (per-example weights); ``cfg``: ``optimize.hyper``; ``mesh``: the devices
    the steps are split over (None: plain ``jax.jit`` on the default device); ``image_shape``: (H, W,
    C), for a learned augmentation's magnitude in its units. A learned augmentation's randomness
    comes with each training batch as ``batch["aug"]`` (``draws``)."""

    def __init__(self, graphdef, tx, hp: dict, num_classes: int, n_train: int, cfg, seed: int, mesh=None,
                 fusion_autotune: bool = False, image_shape: tuple | None = None):
        self.cfg, self.method, self.k = cfg, cfg.method, num_classes
        self.learn = parse_learn(cfg.learn) if cfg.method == "hypergrad" else ()
        self.augments = {n.removeprefix("augment_"): augments.AUGMENTS[n.removeprefix("augment_")]
                         for n in self.learn if n.startswith("augment_")}
        if self.augments and image_shape is None:
            raise ValueError("a learned augmentation needs the image shape (Steps(image_shape=...))")
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

        def ahead(inner, opt):
            """The lookahead's update ``w -> w'`` (``optimize.hyper.lookahead``): None, plain SGD at the
            current learning rate (the estimators' own, as the official codes); or one step of the
            trainer's optimizer from its current state, times the learned learning-rate multiplier."""
            if cfg.lookahead == "sgd":
                return None

            def step(w, h, b):
                updates = _finite_vjp(lambda g: tx.update(g, opt, w)[0])(jax.grad(inner)(w, h, b))
                scale = _lr_scale(h)  # h: MW-Net's network or the hyperparameters, both dicts
                return jax.tree.map(lambda p, u: p + scale * u, w, updates)
            return step

        if cfg.method == "l2rw":
            def step(params, stats, opt, rstate, batch, meta, lr):
                inner = lambda w, eps, b: jnp.sum(eps * losses(w, stats, b, smoothing)[0])  # noqa: E731
                outer = lambda w, eps, m: meta_loss(w, stats, m)  # noqa: E731
                eps0 = jnp.zeros(batch["y"].shape[0])
                _, g, _ = estimators.unrolled(inner, outer, lr=1.0)(params, eps0, batch, meta)
                w = jnp.maximum(-g, 0.0)
                total = jnp.sum(w)
                w = w / (total + (total == 0))
                params, stats, opt, loss = real_step(params, stats, opt, batch, lambda ell: jnp.sum(w * ell))
                return params, stats, opt, rstate, loss, w * w.shape[0]

            self.init = lambda: Hyper(None, None)
        elif cfg.method == "mwnet":
            vtx = optax.chain(optax.add_decayed_weights(float(cfg.mwnet_weight_decay)), optax.adam(float(cfg.mwnet_lr)))

            def step(params, stats, opt, rstate, batch, meta, lr):
                def inner(w, phi, b):
                    ell = losses(w, stats, b, smoothing)[0]
                    return jnp.mean(ell * vnet(phi, jax.lax.stop_gradient(ell)))
                outer = lambda w, phi, m: meta_loss(w, stats, m)  # noqa: E731
                _, g, _ = estimators.unrolled(inner, outer, lr=lambda _: lr, step=ahead(inner, opt))(
                    params, rstate.params, batch, meta)
                updates, vopt = vtx.update(g, rstate.opt, rstate.params)
                phi = optax.apply_updates(rstate.params, updates)
                box = {}

                def weigh(ell):
                    box["w"] = jax.lax.stop_gradient(vnet(phi, jax.lax.stop_gradient(ell)))
                    return jnp.mean(ell * box["w"])
                params, stats, opt, loss = real_step(params, stats, opt, batch, weigh)
                return params, stats, opt, Hyper(phi, vopt), loss, box["w"]

            def init():
                phi = _vnet_init(int(cfg.mwnet_hidden), jax.random.PRNGKey(seed))
                return Hyper(phi, vtx.init(phi))
            self.init = init
        elif cfg.method == "oracle":
            def step(params, stats, opt, rstate, batch, meta, lr):
                c = batch["clean"]
                count = jnp.sum(c)
                params, stats, opt, loss = real_step(params, stats, opt, batch,
                                                     lambda ell: jnp.sum(c * ell) / jnp.maximum(count, 1.0))
                return params, stats, opt, rstate, loss, c * c.shape[0] / jnp.maximum(count, 1.0)

            self.init = lambda: Hyper(None, None)
        else:
            htx = optax.adam(float(cfg.lr))
            learn = self.learn
            wd0 = float(hp["weight_decay"])

            def init():
                h = {}
                if "example_weights" in learn:
                    h["example"] = jnp.zeros(n_train)
                if "class_weights" in learn:
                    h["class"] = jnp.zeros(num_classes)
                if "weight_decay" in learn:
                    h["log_wd"] = jnp.asarray(math.log(max(wd0, 1e-8)))
                if "label_smoothing" in learn:
                    h["ls"] = jnp.asarray(_logit(min(max(2 * smoothing, 0.02), 0.98)))
                if "learning_rate" in learn:
                    h["log_lr"] = jnp.zeros(())
                for name, aug in self.augments.items():
                    h[f"aug_{name}"] = jnp.asarray(_logit(aug.start))
                return Hyper(h, htx.init(h))
            self.init = init

            def weights_of(h, batch):
                w = jnp.ones(batch["y"].shape[0])
                if "example" in h:
                    w = w * 2 * jax.nn.sigmoid(h["example"][batch["pos"]])
                if "class" in h:
                    w = w * 2 * jax.nn.sigmoid(h["class"][batch["y"]])
                return w

            def augmented(h, batch):
                x = batch["x"]
                for name, aug in self.augments.items():
                    x = aug.apply(x, augments.magnitude(aug, h[f"aug_{name}"], self.image_shape), batch["aug"][name])
                return dict(batch, x=x) if self.augments else batch

            def train_loss(w_params, h, stats, batch):
                s = 0.5 * jax.nn.sigmoid(h["ls"]) if "ls" in h else smoothing
                batch = augmented(h, batch)
                ell, new_stats = losses(w_params, stats, batch, s)
                wts = weights_of(h, batch)
                loss = jnp.sum(wts * ell) / jnp.sum(wts)
                if "log_wd" in h:
                    loss = loss + 0.5 * jnp.exp(h["log_wd"]) * sum(jnp.sum(p ** 2) for p in jax.tree.leaves(w_params))
                return loss, (new_stats, wts / jnp.mean(wts))

            def hyper_update(params, stats, opt, rstate, batches, meta, lr):
                inner = lambda w, h, b: train_loss(w, h, stats, b)[0]  # noqa: E731
                outer = lambda w, h, m: meta_loss(w, stats, m)  # noqa: E731
                est = estimators.make(cfg.estimator, inner, outer, lr=lambda h: lr * _lr_scale(h), steps=int(cfg.steps),
                                      solver=cfg.solver, iters=int(cfg.iters), alpha=float(cfg.alpha),
                                      step=ahead(inner, opt))
                first = jax.tree.map(lambda a: a[0], batches)
                mloss, g, _ = est(params, rstate.params, batches if int(cfg.steps) > 1 and cfg.estimator == "unrolled"
                                  else first, meta)
                updates, hopt = htx.update(g, rstate.opt, rstate.params)
                return Hyper(optax.apply_updates(rstate.params, updates), hopt), mloss

            def step(params, stats, opt, rstate, batch, meta, lr):
                (loss, (new_stats, wts)), g = jax.value_and_grad(train_loss, has_aux=True)(
                    params, rstate.params, stats, batch)
                updates, opt = tx.update(g, opt, params)
                if "log_lr" in rstate.params:
                    scale = _lr_scale(rstate.params)
                    updates = jax.tree.map(lambda u: u * scale, updates)
                return optax.apply_updates(params, updates), new_stats, opt, rstate, loss, wts

            self.train_loss, self.meta_loss = train_loss, meta_loss  # for benchmarks of other estimators
            self.hyper_update = _jit(hyper_update, mesh, (R, R, R, R, parallel.SPLIT_STACKED, S, R), (R, R),
                                     fusion_autotune)
            self.values = lambda rstate: _values(rstate.params, smoothing, wd0, self.augments, self.image_shape)
        self.step = _jit(step, mesh, (R, R, R, R, S, S, R), (R, R, R, R, R, S), fusion_autotune)

    @property
    def lookahead(self) -> int:
        """Training batches one hyperparameter update reads (K of the unrolled estimator, else 1)."""
        c = self.cfg
        return int(c.steps) if self.method == "hypergrad" and c.estimator == "unrolled" else 1

    def draws(self, epoch: int, i: int, batch_shape: tuple) -> dict:
        """The randomness of the learned augmentations for batch ``i`` of ``epoch`` (batch images of
        shape ``batch_shape``), ``{"aug": {name: array}}`` to add to the batch, or ``{}``; a function
        of the seed, epoch and step, so a resumed fit draws the same."""
        if not self.augments:
            return {}
        rng = np.random.default_rng([self.seed, 23, epoch, i])
        return {"aug": {name: aug.draw(rng, tuple(batch_shape)) for name, aug in self.augments.items()}}

    def updates_hyper(self, step: int) -> bool:
        return self.method == "hypergrad" and step % int(self.cfg.every) == 0


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


def _lr_scale(h: dict):
    """The learned multiplier of the learning rate (1 when it is not learned)."""
    return jnp.exp(h["log_lr"]) if "log_lr" in h else 1.0


def _values(h: dict, smoothing: float, wd: float, augs: dict, image_shape: tuple | None) -> dict:
    """The learned scalars, readable: weight decay, label smoothing, class weights, augmentation
    magnitudes (in their units for images of ``image_shape``)."""
    out = {}
    if "log_wd" in h:
        out["weight_decay"] = float(jnp.exp(h["log_wd"]))
    if "ls" in h:
        out["label_smoothing"] = float(0.5 * jax.nn.sigmoid(h["ls"]))
    if "log_lr" in h:
        out["lr_scale"] = float(jnp.exp(h["log_lr"]))
    if "class" in h:
        out["class_weights"] = [round(float(v), 4) for v in 2 * jax.nn.sigmoid(h["class"])]
    for name, aug in augs.items():
        out[f"augment_{name}"] = float(augments.magnitude(aug, h[f"aug_{name}"], image_shape))
    return out


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
