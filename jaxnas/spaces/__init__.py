"""Search spaces: each is one ``Space`` object registered by name (``jaxnas/spaces/registry.py``).

Built in: ``darts`` (DARTS's cells), ``nb201`` (NAS-Bench-201's cells) and ``chain``
(chain-structured layer sequences). A space of your own is a ``Space`` subclass registered
with ``register_space(name)`` in a file of its own; a cell space's supernet subclasses
``CellSupernet`` (``cell_supernet.py``) and writes only its macro structure and discretization.
"""

from jaxnas.spaces.base import Arch, DiscreteSpace
from jaxnas.spaces.cell_supernet import CellSupernet, CellType, EdgeMix, onehot_rows
from jaxnas.spaces.registry import (SPACES, Space, build_network, build_supernet, discrete_space, get_space,
                                    register_space)
from jaxnas.spaces import darts, nb201, chain  # noqa: E402,F401,I001  (register the built-in spaces, in this order)

__all__ = ["SPACES", "Arch", "CellSupernet", "CellType", "DiscreteSpace", "EdgeMix", "onehot_rows", "Space", "build_network", "build_supernet", "discrete_space", "get_space",
           "register_space"]
