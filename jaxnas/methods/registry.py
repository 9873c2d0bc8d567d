"""The parts a DARTS-family method composes, their registries, and the method presets.

A method is a few parts over the one bilevel step (``jaxnas.search.bilevel``):

* a relaxation (``jaxnas.relaxations``, chosen by ``space.relaxation``);
* the mixed-op variants of the supernet (``space.partial_channels``, ``space.edge_norm``,
  ``space.aux_skip``: ``jaxnas.spaces.edges.SourceEdges``);
* a regularizer added to the architecture loss: ``reg(alphas) -> scalar`` over the op alphas,
  weighted by the scheduled ``reg`` value (``method.regularizer``);
* a perturbation of the relaxed weights before each weight step: ``perturb(weights, key, eps,
  loss, steps) -> weights`` (``method.perturbation``);
* schedules by epoch of ``tau`` (the relaxation's temperature), ``reg``, ``skip`` (DARTS-'s
  beta) and ``eps`` (SDARTS's radius); the order ``single`` (single-level) and the epoch
  where architecture updates start (``method.arch_start_epoch``).

``register_method(name)`` registers ``configure(cfg)``, which sets a search config to a
method's official defaults for the space ``cfg.space.name``; ``jaxnas.config.method_config``
builds one.
Each method of the family is one file in this package.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from jaxnas.errors import JaxnasError
from jaxnas.methods import progressive
from jaxnas.registry import Registry

REGULARIZERS: Registry = Registry("regularizer")
PERTURBATIONS: Registry = Registry("perturbation")
METHODS: Registry = Registry("method")

HYPER = ("tau", "reg", "skip", "eps")  # the scheduled values, one config group each


def register_regularizer(name: str):
    """Decorator registering ``reg(alphas: list of (edges, ops) arrays) -> scalar`` as
    ``method.regularizer=<name>``; the loss adds ``hyper['reg'] * reg(alphas)``."""
    return lambda fn: REGULARIZERS.add(name, fn)


def register_perturbation(name: str):
    """Decorator registering ``perturb(weights, key, eps, loss, steps) -> weights`` as
    ``method.perturbation=<name>``: ``weights`` the relaxed edge weights (a dict of arrays),
    ``loss(weights)`` the training loss with them."""
    return lambda fn: PERTURBATIONS.add(name, fn)


def register_method(name: str):
    """Decorator registering ``configure(cfg)``: set a search config to the method's defaults."""
    return lambda fn: METHODS.add(name, fn)


SPANS = ("epochs", "epochs-1", "fixed")  # a schedule's ``over``: the search's epochs, one fewer, or ``span``


def schedule(start: float, end: float, over: str | int = "epochs") -> dict:
    """A linear schedule by epoch e (0-based): start + (end - start) * min(e / span, 1), where the span is
    the search's epochs (``over="epochs"``), one fewer (``"epochs-1"``), or a fixed number of epochs
    (``over=50``, held as ``over="fixed", span=50``)."""
    fixed = not isinstance(over, str)
    return dict(start=float(start), end=float(end), over="fixed" if fixed else over, span=int(over) if fixed else 0)


def method_defaults() -> ml_collections.ConfigDict:
    """The ``method`` group of a search config: plain DARTS (no part added)."""
    return ml_collections.ConfigDict(dict(
        name="darts",              # the preset this config came from (a label)
        regularizer="none",        # none or a registered regularizer (beta_decay, dirichlet_kl, zero_one)
        perturbation="none",       # none or a registered perturbation (random, pgd)
        pgd_steps=7,               # SDARTS-ADV's attack steps
        arch_start_epoch=0,        # epochs of weight training before the first architecture update
        stages=(),                 # progressive search: {epochs, partial, keep} per stage (DrNAS;
                                   # methods/progressive.py); their K (partial) replace space.partial_channels
        tau=schedule(1.0, 1.0),    # relaxation temperature (GDAS, SNAS)
        reg=schedule(0.0, 0.0),    # weight of the regularizer
        skip=schedule(1.0, 1.0),   # DARTS-'s auxiliary-skip beta (with space.aux_skip)
        eps=schedule(0.0, 0.0)))   # SDARTS's perturbation radius


def _span(sched, epochs: int) -> int:
    """The epochs a schedule runs over, in a search of ``epochs``."""
    if sched.over not in SPANS:
        raise JaxnasError(f"a schedule's 'over' must be one of {', '.join(SPANS)}, got {sched.over!r}")
    if sched.over == "fixed" and sched.span < 1:
        raise JaxnasError(f"a schedule with over='fixed' needs span >= 1 epochs, got span={sched.span}")
    return {"epochs": epochs, "epochs-1": epochs - 1}.get(sched.over, sched.span)


# What each scheduled value allows (both its start and its end): the relaxations divide by tau
# (GDAS, SNAS), a perturbation radius is a norm; every value must be finite.
HYPER_RANGES = {"tau": (0.0, "open"), "eps": (0.0, "closed")}


def check(m, epochs: int | None = None) -> None:
    """One error naming the first bad field of a ``method`` group; with ``epochs`` (the search's
    length), also what depends on it: the stages and the epoch the architecture starts moving."""
    import math

    if m.regularizer != "none":
        REGULARIZERS.lookup(m.regularizer)
    if m.perturbation != "none":
        PERTURBATIONS.lookup(m.perturbation)
    for name in HYPER:
        _span(m[name], 2)
        for end in ("start", "end"):
            value = float(m[name][end])
            if not math.isfinite(value):
                raise JaxnasError(f"method.{name}.{end} must be a finite number, got {value!r}")
            if name in HYPER_RANGES:
                low, kind = HYPER_RANGES[name]
                if value < low or (kind == "open" and value == low):
                    raise JaxnasError(f"method.{name}.{end} must be {'>' if kind == 'open' else '>='} {low}, "
                                      f"got {value!r}")
    if m.regularizer != "none" and (float(m.reg.start), float(m.reg.end)) == (0.0, 0.0):
        raise JaxnasError(f"method.regularizer={m.regularizer!r} has weight 0 (method.reg.start = method.reg.end "
                          f"= 0): set method.reg")
    if m.perturbation != "none" and (float(m.eps.start), float(m.eps.end)) == (0.0, 0.0):
        raise JaxnasError(f"method.perturbation={m.perturbation!r} has radius 0 (method.eps): set method.eps")
    if epochs is None:
        return
    for name in HYPER:
        _span(m[name], epochs)
    if m.arch_start_epoch >= epochs:
        raise JaxnasError(f"method.arch_start_epoch={m.arch_start_epoch} is not below search.epochs={epochs}: the "
                          f"architecture would never be updated and the genotype would be the initial alphas'; "
                          f"lower method.arch_start_epoch or raise search.epochs")
    progressive.stages(m.stages, epochs)


class Parts(NamedTuple):
    """What the bilevel step needs of a method, resolved for one run."""

    hyper: Callable[[jax.Array], dict]           # step -> the scheduled values this method sets
    regularizer: Callable | None                 # alphas list -> scalar
    perturbation: Callable | None
    pgd_steps: int
    arch_start_step: int


def parts(m, epochs: int, steps_per_epoch: int) -> Parts:
    """The parts named in the ``method`` group ``m`` for a run of ``epochs`` x ``steps_per_epoch``.

    Only the schedules that differ from the defaults are computed (and passed to the supernet and
    logged): plain DARTS has none, so a supernet that takes just ``(x, key)`` runs it."""
    check(m, epochs)
    base = method_defaults()
    specs = {name: (float(m[name].start), float(m[name].end), _span(m[name], epochs)) for name in HYPER
             if (float(m[name].start), float(m[name].end)) != (base[name].start, base[name].end)}

    def hyper(step: jax.Array) -> dict:
        epoch = (step // steps_per_epoch).astype(jnp.float32)
        out = {}
        for name, (start, end, span) in specs.items():
            t = jnp.minimum(epoch / span, 1.0) if span > 0 else 0.0
            out[name] = jnp.asarray(start + (end - start) * t, jnp.float32)
        return out

    reg = None if m.regularizer == "none" else REGULARIZERS.lookup(m.regularizer)
    pert = None if m.perturbation == "none" else PERTURBATIONS.lookup(m.perturbation)
    return Parts(hyper, reg, pert, int(m.pgd_steps), int(m.arch_start_epoch) * steps_per_epoch)


def op_alphas(alphas: Any) -> list[jax.Array]:
    """The op-choice alpha matrices of an ``nnx.State`` of architecture parameters (those named
    ``alphas*``; PC-DARTS's edge betas are left out), in name order."""
    return [var[...] for key, var in sorted(alphas.items(), key=lambda kv: str(kv[0])) if str(key).startswith("alphas")]
