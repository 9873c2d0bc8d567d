"""A new DARTS-family method in one file: the worked example of docs/methods.md and the README.

An annealed softmax (temperature 5 -> 0.5 over the search) with an entropy penalty on the
architecture, registered as method ``annealed``. Use it from Python:

    import annealed_method, jaxnas
    jaxnas.run_search(jaxnas.method_config("annealed", "nb201"))

or from the command line with a config file that imports it (and records the import, so that
``--resume`` registers it again):

    # configs/annealed_nb201.py
    import annealed_method
    from jaxnas.config import method_config
    def get_config(arg=None):
        c = method_config("annealed", "nb201")
        c.run.imports = "annealed_method"
        return c

    PYTHONPATH=experiments jaxnas search --config configs/annealed_nb201.py
"""

import jax
import jax.numpy as jnp

import jaxnas
from jaxnas.methods import schedule


@jaxnas.register_relaxation("softmax_tau")
def softmax_tau(alphas, key, hyper):
    """softmax(alpha / tau), tau from the method's schedule."""
    return jax.nn.softmax(alphas / hyper.get("tau", 1.0), axis=-1)


@jaxnas.register_regularizer("entropy")
def entropy(alphas):
    """Mean entropy of the edges' softmax(alpha): penalizing it pushes each edge toward one op."""
    rows = jnp.concatenate([jax.nn.softmax(a, -1) for a in alphas])
    return jnp.mean(-(rows * jnp.log(rows)).sum(-1))


@jaxnas.register_method("annealed")
def configure(cfg):
    cfg.space.relaxation = "softmax_tau"
    cfg.method.tau = schedule(5.0, 0.5, "epochs-1")
    cfg.method.regularizer, cfg.method.reg = "entropy", schedule(0.0, 1.0)
