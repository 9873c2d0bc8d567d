"""Models that dataset optimization trains: the baseline and every candidate, by one ``Spec``
(``model_spec.py``: a name and its argument; ``name`` or ``name:argument`` on the command line):

* ``cnn`` / ``cnn:32,64``: the textbook plain CNN, (3x3 conv, ReLU, 2x2 max-pool) per width, then
  one linear layer: what a user writes first;
* ``genotype:DARTS_V2`` / ``genotype:runs/x/genotype.json``: the DARTS retraining network of a
  genotype (``optimize.model.C``, ``.layers``; no auxiliary head, no drop-path);
* ``<space>:<architecture>`` for any registered space with a discrete form, e.g.
  ``chain:conv3x3-32 > maxpool > fc-64`` or an NB201 string ``nb201:|nor_conv_3x3~0|+|...|``;
* ``resnet:32`` (any 6n+2) and ``wrn:28-10``: the CIFAR ResNet of He et al. and the Wide ResNet of
  Zagoruyko & Komodakis (``resnets.py``), the networks of the reweighting benchmarks;
* any name registered with ``register_model`` (``builder(argument, in_shape, num_classes, rngs, cfg)``
  returning an ``nnx.Module`` whose call ``model(x)`` gives logits, or a tuple with the logits first).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxnas import genotype as genotype_lib
from jaxnas import kernels
from jaxnas.errors import JaxnasError
from jaxnas.optimize import model_spec
from jaxnas.nn import torch_default_init, torch_linear
from jaxnas.registry import Registry
from jaxnas.spaces import SPACES, build_network, discrete_space
from jaxnas.spaces.darts import DartsNetwork

MODELS: Registry = Registry("model")


def register_model(name: str) -> Callable:
    """Decorator: ``builder(argument: str, in_shape, num_classes, rngs, cfg) -> nnx.Module`` as model ``name``."""

    def wrap(builder):
        MODELS.add(name, builder)
        return builder

    return wrap


class PlainCNN(nnx.Module):
    """(conv 3x3 with bias, ReLU, 2x2 max-pool) per width, flatten, linear (LeCun et al. 1998 style)."""

    def __init__(self, in_shape, num_classes: int, widths=(32, 64), *, rngs: nnx.Rngs):
        h, w, c = in_shape
        convs = []
        for width in widths:
            if min(h, w) < 2:
                raise JaxnasError(f"model cnn:{','.join(map(str, widths))}: {len(widths)} poolings need images of at "
                                  f"least {2 ** len(widths)}x{2 ** len(widths)}, got {in_shape[0]}x{in_shape[1]}")
            bound = 1.0 / math.sqrt(9 * c)  # PyTorch's Conv2d bias init
            convs.append(nnx.Conv(c, width, (3, 3), padding=((1, 1), (1, 1)), kernel_init=torch_default_init,
                                  bias_init=lambda k, s, d=jnp.float32, b=bound: jax.random.uniform(k, s, d, -b, b),
                                  rngs=rngs))
            h, w, c = h // 2, w // 2, width
        self.convs = nnx.List(convs)
        self.classifier = torch_linear(h * w * c, num_classes, rngs)

    def __call__(self, x):
        for layer in self.convs:
            x = jax.nn.relu(layer(x))
            n, h, w, c = x.shape
            x = x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
        return self.classifier(x.reshape(x.shape[0], -1))


@register_model("cnn")
def _cnn(arg: str, in_shape, num_classes, rngs, cfg):
    try:
        widths = tuple(int(v) for v in arg.split(",")) if arg else (32, 64)
    except ValueError:
        raise JaxnasError(f"model cnn:{arg}: widths are comma-separated integers, e.g. cnn:32,64") from None
    if not widths or min(widths) < 1:
        raise JaxnasError(f"model cnn:{arg}: widths must be positive")
    return PlainCNN(in_shape, num_classes, widths, rngs=rngs)


class _Logits(nnx.Module):
    """A DARTS network called as ``model(x)``: logits only (no auxiliary head, no drop-path)."""

    def __init__(self, net: DartsNetwork):
        self.net = net

    def __call__(self, x):
        return self.net(x)[0]


@register_model("genotype")
def _genotype(arg: str, in_shape, num_classes, rngs, cfg):
    g = genotype_lib.load(arg or "DARTS_V2")
    m = cfg.optimize.model
    return _Logits(DartsNetwork(g, in_shape[-1], num_classes, C=m.C, layers=m.layers, auxiliary=False,
                                stem_multiplier=m.stem_multiplier, rngs=rngs))


def _space_of(name: str, cfg):
    """The config's space group when it is space ``name``'s, else just the name (the space's defaults)."""
    return cfg.space if "space" in cfg and cfg.space.name == name else ml_collections.ConfigDict({"name": name})


def build(spec: model_spec.Spec | str, in_shape, num_classes: int, rngs: nnx.Rngs, cfg,
          platform: str | None = None) -> nnx.Module:
    """The model of ``spec`` (a ``Spec``, a config group, or the short form; see the module docstring),
    built with ``cfg.run.kernels`` for backend ``platform`` (None: JAX's default); an unknown or
    malformed one is one error. A space's architecture already in ``spec.arch`` is used as it is."""
    s = model_spec.of(spec)
    impl = cfg.run.kernels
    if s.name in MODELS:
        return kernels.build_with(lambda: MODELS[s.name](s.arg, tuple(in_shape), num_classes, rngs, cfg), impl,
                                  platform)
    if s.name in SPACES:
        space = discrete_space(_space_of(s.name, cfg), tuple(in_shape))
        arch = s.arch if s.arch is not None else space.decode(s.arg)
        return build_network(space, arch, in_shape, num_classes, rngs, kernels=impl, platform=platform)
    raise JaxnasError(f"unknown model {str(s)!r}; allowed: {', '.join(f'{m}[:arg]' for m in MODELS)}, or "
                      f"<space>:<architecture> for a space: {', '.join(SPACES)}")
