"""The relaxation registry (``jaxnas.relaxations`` re-exports it); see the package docstring."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax
import numpy as np

from jaxnas.registry import Registry

Relaxation = Callable[[jax.Array, "jax.Array | None", Mapping], jax.Array]
RELAXATIONS: Registry = Registry("relaxation")


def softmax_np(a) -> np.ndarray:
    """softmax over the last axis in float64, returned as float32 (the discretization's strengths)."""
    a = np.asarray(a, np.float64)
    e = np.exp(a - a.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class RelaxationSpec:
    name: str
    fn: Relaxation
    hard: bool = False
    strengths: Callable[[np.ndarray], np.ndarray] = softmax_np


def register_relaxation(name: str, *, hard: bool = False, strengths: Callable | None = None):
    """Decorator registering ``relax(alphas, key, hyper) -> weights`` as ``space.relaxation=<name>``."""

    def wrap(fn: Relaxation) -> Relaxation:
        RELAXATIONS.add(name, RelaxationSpec(name, fn, hard, strengths or softmax_np))
        return fn

    return wrap


def get_relaxation(name: str) -> RelaxationSpec:
    return RELAXATIONS.lookup(name)


def relax_all(name: str, alphas: dict[str, jax.Array], key: jax.Array | None,
              hyper: Mapping | None = None) -> dict[str, jax.Array]:
    """Apply relaxation ``name`` to several alpha matrices, each with its own key (None: no keys)."""
    fn = get_relaxation(name).fn
    hyper = {} if hyper is None else hyper
    keys = [None] * len(alphas) if key is None else list(jax.random.split(key, len(alphas)))
    return {k: fn(a, sub, hyper) for (k, a), sub in zip(sorted(alphas.items()), keys)}
