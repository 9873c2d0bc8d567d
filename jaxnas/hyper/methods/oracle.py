"""``oracle``: not a method but the ceiling of every example reweighting, for demonstrations on a
known label corruption (``data.corrupt`` with label noise). Each training example is weighted 1 if
its label is still the true one and 0 if the corruption changed it; the loss is their mean over the
batch's correct examples (0 for a batch with none). That is training on the correctly labelled part
of the split with the same network, schedule and number of steps: what perfect example weights
reach. It reads the corruption's record (``batch["clean"]``), which real data does not have."""

from __future__ import annotations

import jax.numpy as jnp

from jaxnas.hyper.methods.registry import Built, Context, Hyper, Method, register_hyper_method


def build(c: Context) -> Built:
    def step(params, stats, opt, rstate, batch, meta, lr):
        clean = batch["clean"]
        count = jnp.maximum(jnp.sum(clean), 1.0)
        params, stats, opt, loss = c.real_step(params, stats, opt, batch, lambda ell: jnp.sum(clean * ell) / count)
        return params, stats, opt, rstate, loss, clean * clean.shape[0] / count

    return Built(step, lambda: Hyper(None, None))


register_hyper_method("oracle", Method(build, needs_clean=True,
                                 summary="weighted by the known corruption (oracle: correct labels 1, changed labels 0; "
                                         "not learned)"))
