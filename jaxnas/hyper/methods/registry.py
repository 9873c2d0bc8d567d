"""The methods of ``optimize.tune=gradient`` (``optimize.hyper.method``): each is one
``register_hyper_method(name, Method(...))`` in a file of this package (or in a user's code before the
config is read). ``jaxnas.hyper.reweight.Steps`` builds the shared pieces of a classifier's training
(``Context``) and hands them to the method's ``build``, which returns its step (``Built``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from jaxnas.errors import JaxnasError
from jaxnas.registry import Registry


class Hyper(NamedTuple):
    """The learned state of a method (MW-Net's network, the hyperparameters) and its optimizer's."""

    params: Any
    opt: Any


class Context(NamedTuple):
    """What a method builds its step from, for one classifier.

    ``losses(params, stats, batch, smoothing) -> (per-example cross-entropy, new BN stats)``;
    ``meta_loss(params, stats, meta)``: mean plain cross-entropy on a meta batch;
    ``real_step(params, stats, opt, batch, weigh) -> (params, stats, opt, loss)``: the trainer's
    update on ``weigh(per-example losses)``; ``ahead(inner, opt[, lr_scale])``: the lookahead's update
    (``optimize.hyper.lookahead``) for ``jaxnas.hyper.estimators``, or None for plain SGD."""

    cfg: Any             # optimize.hyper
    tx: Any              # the trainer's optimizer
    hp: dict             # the trainer's fixed hyperparameters
    num_classes: int
    n_train: int         # the training split's size
    seed: int
    image_shape: tuple | None
    smoothing: float
    losses: Callable
    meta_loss: Callable
    real_step: Callable
    ahead: Callable


class Built(NamedTuple):
    """A method's steps (not yet jitted; ``Steps`` splits them over the devices).

    ``step(params, stats, opt, rstate, batch, meta, lr) -> (params, stats, opt, rstate, loss,
    weights)``, ``weights`` the batch's example weights in units where uniform weighting is 1;
    ``init() -> Hyper``; a method that learns hyperparameters apart from its step also gives
    ``hyper_update(params, stats, opt, rstate, batches, meta, lr) -> (rstate, meta_loss)``, run every
    ``every`` steps on ``lookahead`` training batches, and ``values(rstate) -> dict`` of readable
    learned values; ``augments``: the learned augmentations whose randomness each batch carries."""

    step: Callable
    init: Callable[[], Hyper]
    hyper_update: Callable | None = None
    every: int = 0
    lookahead: int = 1
    values: Callable | None = None
    augments: dict | None = None
    train_loss: Callable | None = None  # (params, h, stats, batch) -> (loss, aux): for benchmarks


def _nothing(cfg) -> None:
    return None


def _never(cfg) -> bool:
    return False


class Method(NamedTuple):
    """One method: ``build(Context) -> Built``; ``check(optimize.hyper)`` raises a ``JaxnasError`` for
    settings it cannot take; ``needs_clean``: its batches carry ``clean`` (which labels a known
    corruption left correct; only for demonstrations); ``owns_weight_decay(cfg)``: it learns the
    weight decay, so the trainer's optimizer applies none; ``summary``: the report's line, with
    ``{name}``."""

    build: Callable[[Context], Built]
    check: Callable[[Any], None] = _nothing
    needs_clean: bool = False
    owns_weight_decay: Callable[[Any], bool] = _never
    summary: str = "learned by {name} on val meta batches"


METHODS: Registry = Registry("optimize.hyper.method")


def register_hyper_method(name: str, method: Method) -> Method:
    """Register ``method`` as ``optimize.hyper.method=<name>``."""
    if not isinstance(method, Method):
        raise TypeError(f"register_hyper_method({name!r}, ...) takes a jaxnas.hyper.methods.Method, got {type(method).__name__}")
    return METHODS.add(name, method)


def needs_label_noise(name: str, got: str) -> JaxnasError:
    """The error for a method that reads which labels a known corruption left correct (``needs_clean``)
    where there is no such record; ``got``: what there was instead."""
    return JaxnasError(f"optimize.hyper.method={name} weights each training example by whether its label is still "
                       f"correct, so it needs a known label corruption: data.corrupt.kind=symmetric or uniform_mix, "
                       f"got {got}")
