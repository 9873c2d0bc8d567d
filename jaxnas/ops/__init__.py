"""Candidate operations (DARTS, Liu et al. 2019, Sec. 3 and cnn/operations.py) and their registry.

``registry.py`` holds the registry (``register_op``, ``get_op``, the named op sets),
``layers.py`` the layers ops are made of, and ``darts_primitives.py`` / ``nb201_convs.py`` the built-in ops,
each registered with its batched form. Registering an op of your own (with or without a
batched form) makes it usable in every space by name.
"""

from jaxnas.nn import conv, torch_default_init
from jaxnas.ops import darts_primitives, nb201_convs  # noqa: E402,F401  (register the built-in ops)
from jaxnas.ops.layers import (BN_EPS, BN_MOMENTUM, BatchNorm, DepthwiseConv, DilConv, FactorizedReduce, Identity,
                               MixedOp, Pool, ReLUConvBN, SepConv, StackedBatchNorm, Zero, batch_norm,
                               batch_norm_together)
from jaxnas.ops.registry import (DARTS_OPS, NB201_OPS, OP_SETS, OPS, OpFactory, OpSpec, get_op, register_op,
                                 resolve_op_set)

__all__ = ["BN_EPS", "BN_MOMENTUM", "BatchNorm", "DARTS_OPS", "DepthwiseConv", "DilConv", "FactorizedReduce",
           "Identity", "MixedOp", "NB201_OPS", "OPS", "OP_SETS", "OpFactory", "OpSpec", "Pool", "ReLUConvBN",
           "SepConv", "StackedBatchNorm", "Zero", "batch_norm", "batch_norm_together", "conv", "get_op", "register_op",
           "resolve_op_set", "torch_default_init"]
