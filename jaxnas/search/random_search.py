"""Random search: every proposal drawn uniformly, decision by decision (Bergstra & Bengio 2012;
the baseline of Li & Talwalkar 2019 and of NAS-Bench-201)."""

from __future__ import annotations

from jaxnas.search.base import Strategy
from jaxnas.search.registry import register_discrete_strategy


@register_discrete_strategy("random")
class RandomSearch(Strategy):
    def ask(self):
        return self.space.random(self.rng)

    def tell(self, arch, score):
        pass
