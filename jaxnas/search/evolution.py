"""Regularized evolution (aging evolution; Real et al., AAAI 2019, Algorithm 1).

The first ``population`` proposals are random. Then each cycle samples ``tournament``
members of the population uniformly without replacement, mutates the best of them in
exactly one decision, adds the child and removes the OLDEST member (not the worst).
"""

from __future__ import annotations

from collections import deque

from jaxnas.errors import JaxnasError
from jaxnas.search.base import Strategy
from jaxnas.search.registry import register_discrete_strategy


@register_discrete_strategy("evolution")
class RegularizedEvolution(Strategy):
    def __init__(self, space, cfg, seed):
        super().__init__(space, cfg, seed)
        self.population_size, self.tournament = int(cfg.population), int(cfg.tournament)
        if self.population_size < 1 or not 1 <= self.tournament <= self.population_size:
            raise JaxnasError(f"evolution needs population >= 1 and 1 <= tournament <= population, got "
                              f"population={self.population_size}, tournament={self.tournament}")
        self.population: deque = deque()  # (encoded arch, score), oldest first
        self.told = 0

    def ask(self):
        if self.told < self.population_size:
            return self.space.random(self.rng)
        members = self.rng.choice(len(self.population), size=self.tournament, replace=False)
        parent = max((self.population[int(i)] for i in members), key=lambda m: m[1])
        return self.space.mutate(self.space.decode(parent[0]), self.rng)

    def tell(self, arch, score):
        self.population.append((self.space.encode(arch), float(score)))
        self.told += 1
        if len(self.population) > self.population_size:
            self.population.popleft()  # the oldest dies

    def state_dict(self):
        return {**super().state_dict(), "population": [list(m) for m in self.population], "told": self.told}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.population = deque((a, float(s)) for a, s in state["population"])
        self.told = int(state["told"])
