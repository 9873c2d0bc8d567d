"""Search strategies, one file each, registered by name (``jaxnas/search/registry.py``).

``darts`` (``differentiable.py``: bilevel gradient search on a supernet, the step in
``bilevel.py``), and the discrete ask/tell strategies ``random``, ``greedy``,
``evolution`` and ``rsws`` (weight sharing), driven by ``discrete.py``.
"""

from jaxnas.search import differentiable, evolution, greedy, random_search, rsws  # noqa: E402,F401
from jaxnas.search.registry import (DISCRETE_STRATEGIES, STRATEGIES, get_strategy, register_discrete_strategy,
                                    register_strategy)

__all__ = ["DISCRETE_STRATEGIES", "STRATEGIES", "get_strategy", "register_discrete_strategy", "register_strategy"]
