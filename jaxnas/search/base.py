"""The ask/tell interface of discrete strategies, with JSON-serialisable state."""

from __future__ import annotations

import abc

import numpy as np

from jaxnas.spaces.base import Arch, DiscreteSpace


def rng_state(rng: np.random.Generator) -> dict:
    return rng.bit_generator.state


def rng_from_state(state: dict) -> np.random.Generator:
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    return rng


class Strategy(abc.ABC):
    """Proposes architectures (``ask``) and learns from their scores (``tell``; higher is better).

    ``ask`` returns None when the strategy has nothing left to propose (greedy's last
    decision made). ``state_dict``/``load_state_dict`` round-trip through JSON, random
    generator included, so a resumed search proposes what the uninterrupted one would.
    """

    def __init__(self, space: DiscreteSpace, cfg, seed: int):
        self.space, self.cfg = space, cfg
        self.rng = np.random.default_rng(seed)

    @abc.abstractmethod
    def ask(self) -> Arch | None:
        """The next architecture to score, or None when there is nothing left to propose."""

    @abc.abstractmethod
    def tell(self, arch: Arch, score: float) -> None:
        """Report the score of an architecture this strategy proposed."""

    def state_dict(self) -> dict:
        return {"rng": rng_state(self.rng)}

    def load_state_dict(self, state: dict) -> None:
        self.rng = rng_from_state(state["rng"])
