"""Relaxations: how a supernet turns architecture parameters into the weights of each edge's ops.

A relaxation is ``relax(alphas, key, hyper) -> weights``, alphas (edges, ops) to weights of the
same shape, registered by name with ``register_relaxation``; a space's supernet applies the
one named by ``space.relaxation``. ``key`` is a PRNG key for sampling relaxations (from the
search state, so resume and several devices draw the same); it is None when the network is
evaluated, and a relaxation then returns its deterministic weights. ``hyper`` maps the names
of the method's scheduled values (``tau``, ...; ``jaxnas.methods.schedules``) to scalars.

Two declarations travel with a relaxation:

* ``hard=True``: its weights are straight-through one-hot rows (GDAS). A mixed op then runs
  only the ops that some edge selected and lets each other op contribute its weight as a
  scalar, which is exactly 0 in value but passes the gradient on to every alpha (GDAS's
  ``hardwts[i]`` trick, ``search_cells.py::forward_gdas``).
* ``strengths(alphas) -> array``: the edge/op strengths the discretization ranks (numpy);
  softmax(alpha) by default, sigmoid(alpha) for FairDARTS.

Every relaxation lives here, one registration per file: ``softmax`` (DARTS), ``gumbel_hard``
(GDAS), ``gumbel_soft`` (SNAS), ``dirichlet`` (DrNAS), ``sigmoid`` (FairDARTS). A method names
the one it uses in its preset (``jaxnas.methods``); one of your own is a ``register_relaxation``
in a file of your own.
"""

from jaxnas.relaxations.registry import (RELAXATIONS, Relaxation, RelaxationSpec, get_relaxation, register_relaxation,
                                         relax_all, softmax_np)
from jaxnas.relaxations import softmax, gumbel_hard, gumbel_soft, dirichlet, sigmoid  # noqa: E402,F401,I001  (register the built-in ones)

__all__ = ["RELAXATIONS", "Relaxation", "RelaxationSpec", "get_relaxation", "register_relaxation", "relax_all",
           "softmax_np"]
