"""Greedy search: fix one decision at a time, in the space's decision order (edge by edge,
layer by layer), keeping the value that scores best, then move on.

For decision i every allowed value is tried with all other decisions as they stand
(the current architecture's own value is scored once and reused). NAS-Bench-201 starts
from all skip_connect so that every edge lies on a path to the output while it is
decided; the chain space starts empty and grows one block per decision until ``end``
scores best or the maximum depth is reached. Ties keep the earlier value.
"""

from __future__ import annotations

from jaxnas.search.base import Strategy
from jaxnas.search.registry import register_discrete_strategy


@register_discrete_strategy("greedy")
class GreedySearch(Strategy):
    def __init__(self, space, cfg, seed):
        super().__init__(space, cfg, seed)
        self.current = space.encode(space.initial())
        self.decision, self.sweep = 0, 0
        self.sweeps = max(int(cfg.greedy_sweeps), 1)
        self.scores: dict[str, float] = {}  # every architecture scored so far
        self.done = False

    def _candidates(self) -> list[str]:
        arch = self._current()
        return [self.space.encode(self.space.with_choice(arch, self.decision, v))
                for v in self.space.choices(arch, self.decision)]

    def _current(self):
        return self.space.decode(self.current) if self.current else self.space.initial()

    def _advance(self) -> None:
        """Once every value of the current decision is scored, keep the best and move on."""
        while not self.done:
            cands = self._candidates()
            if any(c not in self.scores for c in cands):
                return
            best = max(cands, key=lambda c: self.scores[c])  # max keeps the first of equals
            self.current = best
            self.decision += 1
            if self.decision >= self.space.num_decisions(self._current()):
                self.sweep += 1
                self.decision = 0
                if self.sweep >= self.sweeps:
                    self.done = True

    def ask(self):
        self._advance()
        if self.done:
            return None
        pending = [c for c in self._candidates() if c not in self.scores]
        return self.space.decode(pending[0])

    def tell(self, arch, score):
        self.scores[self.space.encode(arch)] = float(score)

    @property
    def best(self):
        return self._current()

    def state_dict(self):
        return {**super().state_dict(), "current": self.current, "decision": self.decision, "sweep": self.sweep,
                "scores": self.scores, "done": self.done}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.current, self.decision, self.sweep = state["current"], state["decision"], state["sweep"]
        self.scores, self.done = {k: float(v) for k, v in state["scores"].items()}, state["done"]
