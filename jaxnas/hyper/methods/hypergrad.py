"""``hypergrad``: the hyperparameters named in ``optimize.hyper.learn`` are parameters of the training
loss, held apart from the weights with their own optimizer (Adam, ``optimize.hyper.lr``) and updated
every ``optimize.hyper.every`` steps by a hypergradient of the meta loss (``jaxnas.hyper.estimators``:
unrolled over ``steps`` batches, or implicit). The loss is
``sum_i a_i c_{y_i} l_i(s) / sum_i a_i c_{y_i} + exp(log_wd) / 2 ||w||^2`` with per-example weights
a = 2 sigmoid(z) over the training split, per-class weights c = 2 sigmoid(z_c) (both 1 at the
start), label smoothing s = 0.5 sigmoid(z_s) and weight decay exp(log_wd) as an L2 term (the
optimizer's own decay is then off). ``learning_rate`` is a multiplier exp(log_lr) (1 at the start)
of the trainer's schedule, in the lookahead's SGD steps and in the real step's update: its one-step
hypergradient is -lr (grad L_meta(w')) . (grad L_train(w)), the signal of hypergradient descent
(Baydin et al. 2018, Eq. 2 for SGD). ``augment_<name>`` learns the magnitude of a differentiable
augmentation of the training images (``jaxnas/hyper/augments``) applied in the training loss, the
lookahead's included; the meta loss sees the validation images without them. What is not learned
keeps the trainer's fixed value."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from jaxnas.errors import JaxnasError
from jaxnas.hyper import augments, estimators
from jaxnas.hyper.methods.registry import Built, Context, Hyper, Method, register_hyper_method

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


def check(cfg) -> None:
    learn = parse_learn(cfg.learn)
    if cfg.lookahead == "optimizer" and (cfg.estimator != "unrolled" or cfg.steps != 1):
        raise JaxnasError(f"optimize.hyper.lookahead=optimizer takes one step of the trainer's optimizer: it "
                          f"needs estimator=unrolled and steps=1, got {cfg.estimator!r} and {cfg.steps}")
    if "learning_rate" in learn and cfg.estimator != "unrolled":
        raise JaxnasError(f"optimize.hyper.learn=learning_rate needs optimize.hyper.estimator=unrolled, got "
                          f"{cfg.estimator!r}: the implicit estimator's optimum does not depend on the learning "
                          f"rate, so its hypergradient is zero")


def lr_scale(h: dict):
    """The learned multiplier of the learning rate (1 when it is not learned)."""
    return jnp.exp(h["log_lr"]) if "log_lr" in h else 1.0


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def values(h: dict, smoothing: float, wd: float, augs: dict, image_shape: tuple | None) -> dict:
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


def build(c: Context) -> Built:
    cfg, tx, smoothing = c.cfg, c.tx, c.smoothing
    learn = parse_learn(cfg.learn)
    augs = {n.removeprefix("augment_"): augments.AUGMENTS[n.removeprefix("augment_")]
            for n in learn if n.startswith("augment_")}
    if augs and c.image_shape is None:
        raise ValueError("a learned augmentation needs the image shape (Steps(image_shape=...))")
    htx = optax.adam(float(cfg.lr))
    wd0 = float(c.hp["weight_decay"])

    def init():
        h = {}
        if "example_weights" in learn:
            h["example"] = jnp.zeros(c.n_train)
        if "class_weights" in learn:
            h["class"] = jnp.zeros(c.num_classes)
        if "weight_decay" in learn:
            h["log_wd"] = jnp.asarray(math.log(max(wd0, 1e-8)))
        if "label_smoothing" in learn:
            h["ls"] = jnp.asarray(_logit(min(max(2 * smoothing, 0.02), 0.98)))
        if "learning_rate" in learn:
            h["log_lr"] = jnp.zeros(())
        for name, aug in augs.items():
            h[f"aug_{name}"] = jnp.asarray(_logit(aug.start))
        return Hyper(h, htx.init(h))

    def weights_of(h, batch):
        w = jnp.ones(batch["y"].shape[0])
        if "example" in h:
            w = w * 2 * jax.nn.sigmoid(h["example"][batch["pos"]])
        if "class" in h:
            w = w * 2 * jax.nn.sigmoid(h["class"][batch["y"]])
        return w

    def augmented(h, batch):
        x = batch["x"]
        for name, aug in augs.items():
            x = aug.apply(x, augments.magnitude(aug, h[f"aug_{name}"], c.image_shape), batch["aug"][name])
        return dict(batch, x=x) if augs else batch

    def train_loss(w_params, h, stats, batch):
        s = 0.5 * jax.nn.sigmoid(h["ls"]) if "ls" in h else smoothing
        batch = augmented(h, batch)
        ell, new_stats = c.losses(w_params, stats, batch, s)
        wts = weights_of(h, batch)
        loss = jnp.sum(wts * ell) / jnp.sum(wts)
        if "log_wd" in h:
            loss = loss + 0.5 * jnp.exp(h["log_wd"]) * sum(jnp.sum(p ** 2) for p in jax.tree.leaves(w_params))
        return loss, (new_stats, wts / jnp.mean(wts))

    def hyper_update(params, stats, opt, rstate, batches, meta, lr):
        inner = lambda w, h, b: train_loss(w, h, stats, b)[0]  # noqa: E731
        outer = lambda w, h, m: c.meta_loss(w, stats, m)  # noqa: E731
        est = estimators.make(cfg.estimator, inner, outer, lr=lambda h: lr * lr_scale(h), steps=int(cfg.steps),
                              solver=cfg.solver, iters=int(cfg.iters), alpha=float(cfg.alpha),
                              step=c.ahead(inner, opt, lr_scale))
        first = jax.tree.map(lambda a: a[0], batches)
        mloss, g, _ = est(params, rstate.params, batches if int(cfg.steps) > 1 and cfg.estimator == "unrolled"
                          else first, meta)
        updates, hopt = htx.update(g, rstate.opt, rstate.params)
        return Hyper(optax.apply_updates(rstate.params, updates), hopt), mloss

    def step(params, stats, opt, rstate, batch, meta, lr):
        (loss, (new_stats, wts)), g = jax.value_and_grad(train_loss, has_aux=True)(params, rstate.params, stats, batch)
        updates, opt = tx.update(g, opt, params)
        if "log_lr" in rstate.params:
            scale = lr_scale(rstate.params)
            updates = jax.tree.map(lambda u: u * scale, updates)
        return optax.apply_updates(params, updates), new_stats, opt, rstate, loss, wts

    return Built(step, init, hyper_update=hyper_update, every=int(cfg.every),
                 lookahead=int(cfg.steps) if cfg.estimator == "unrolled" else 1,
                 values=lambda rstate: values(rstate.params, smoothing, wd0, augs, c.image_shape),
                 augments=augs, train_loss=train_loss)


register_hyper_method("hypergrad", Method(build, check, owns_weight_decay=lambda cfg: "weight_decay" in parse_learn(cfg.learn)))
