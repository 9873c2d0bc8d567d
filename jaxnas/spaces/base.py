"""What a space offers to discrete strategies (random, greedy, evolution, weight sharing).

An architecture is an immutable value; its ``encode`` string is canonical (equal
architectures, equal strings), so it keys caches, tables and JSON histories.
Decisions are numbered: decision ``i`` has a list of allowed ``choices`` given the
rest of the architecture, which is how greedy search walks the space one decision
at a time and how evolution mutates exactly one decision.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from jaxnas.errors import JaxnasError

Arch = Any


class DiscreteSpace(abc.ABC):
    """Abstract base: a space defines the abstract methods (decisions, encoding, network);
    sampling and mutation follow from them. NAS-Bench-201, chain and DARTS implement all."""

    name = "space"

    @abc.abstractmethod
    def num_decisions(self, arch: Arch) -> int:
        """How many decisions ``arch`` has (for the chain space: its length + 1, up to the maximum)."""

    @abc.abstractmethod
    def choices(self, arch: Arch, i: int) -> list:
        """The values decision ``i`` may take given the rest of ``arch`` (the current one included)."""

    @abc.abstractmethod
    def choice(self, arch: Arch, i: int):
        """The value decision ``i`` has in ``arch``."""

    @abc.abstractmethod
    def with_choice(self, arch: Arch, i: int, value) -> Arch:
        """``arch`` with decision ``i`` set to ``value`` (the rest kept where still valid)."""

    @abc.abstractmethod
    def initial(self) -> Arch:
        """Greedy search's starting point."""

    @abc.abstractmethod
    def encode(self, arch: Arch) -> str:
        """The canonical string of ``arch``."""

    @abc.abstractmethod
    def decode(self, text: str) -> Arch:
        """Parse ``encode``'s string (a malformed one is a JaxnasError naming it)."""

    @abc.abstractmethod
    def build(self, arch: Arch, in_shape, num_classes: int, rngs):
        """The discrete network of ``arch``, trained from scratch by the training evaluator."""

    def random(self, rng: np.random.Generator) -> Arch:
        """Uniform over each decision in turn (given the earlier ones)."""
        arch = self.initial()
        i = 0
        while i < self.num_decisions(arch):
            options = self.choices(arch, i)
            arch = self.with_choice(arch, i, options[rng.integers(len(options))])
            i += 1
        return arch

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """Change exactly one decision to another allowed value (Real et al. 2019)."""
        order = rng.permutation(self.num_decisions(arch))
        for i in order:
            current = self.choice(arch, int(i))
            options = [c for c in self.choices(arch, int(i)) if c != current]
            if options:
                return self.with_choice(arch, int(i), options[rng.integers(len(options))])
        raise JaxnasError(f"{self.name}: architecture {self.encode(arch)} has no decision that can change")

    def onehot_alphas(self, arch: Arch, op_names) -> dict[str, np.ndarray]:
        """Alphas that make this space's supernet compute exactly ``arch`` (weight-sharing evaluation)."""
        raise JaxnasError(f"space {self.name!r} has no supernet to share weights with")
