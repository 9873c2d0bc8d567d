"""A chain-structured layer space: an architecture is a sequence of blocks, each one layer
(convolution, max/avg pooling, fully connected) or a parallel block of convolutions merged
by sum or concatenation. Shapes are inferred; invalid sequences (a convolution or pooling
after flattening, pooling below 1x1) are never proposed.

Block tokens (also the architecture's string form, joined by ``" > "``):
``conv3x3-32``, ``maxpool``, ``avgpool`` (2x2, stride 2), ``fc-128``,
``sum(conv1x1-32,conv3x3-32)``, ``concat(conv3x3-16,conv5x5-16)``.
A classifier (flatten, linear) always follows the last block.
"""

from __future__ import annotations

import functools
import itertools
import math
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from jaxnas.errors import JaxnasError
from jaxnas.losses import cross_entropy
from jaxnas.nn import conv, torch_linear
from jaxnas.ops import batch_norm
from jaxnas.spaces.base import DiscreteSpace
from jaxnas.spaces.registry import Space, register_space

END = "end"
_CONV = re.compile(r"^conv(\d+)x(\d+)-(\d+)$")
_FC_RE = re.compile(r"^fc-(\d+)$")
_PAR = re.compile(r"^(sum|concat)\((.+)\)$")


def _ints(text, field: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise JaxnasError(f"space.{field} must be comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise JaxnasError(f"space.{field} must be positive, got {text!r}")
    return values


def _parse(token: str) -> tuple:
    if token in ("maxpool", "avgpool"):
        return ("pool", token[:3])
    if m := _CONV.match(token):
        if m.group(1) != m.group(2):
            raise JaxnasError(f"chain block {token!r}: only square kernels")
        return ("conv", int(m.group(1)), int(m.group(3)))
    if m := _FC_RE.match(token):
        return ("fc", int(m.group(1)))
    if m := _PAR.match(token):
        branches = [_parse(b) for b in m.group(2).split(",")]
        if len(branches) < 2 or any(b[0] != "conv" for b in branches):
            raise JaxnasError(f"chain block {token!r}: a parallel block holds 2 or more convolutions")
        if m.group(1) == "sum" and len({b[2] for b in branches}) != 1:
            raise JaxnasError(f"chain block {token!r}: branches merged by sum need equal filters")
        return ("par", m.group(1), tuple((b[1], b[2]) for b in branches))
    raise JaxnasError(f"unknown chain block {token!r}; blocks look like conv3x3-32, maxpool, avgpool, fc-128, "
                      f"sum(conv1x1-32,conv3x3-32), concat(conv3x3-16,conv5x5-16)")


class Block(str):
    """One chain block: its token (the text, which it equals, hashes as and is written as), parsed once,
    when it is made, into ``kind``: ``('conv', k, f)``, ``('pool', 'max'|'avg')``, ``('fc', units)`` or
    ``('par', merge, ((k, f), ...))``. The space's choices and decoded architectures are Blocks, so
    nothing reads a token's text again."""

    kind: tuple

    def __new__(cls, token: str) -> "Block":
        if isinstance(token, Block):
            return token
        block = super().__new__(cls, token)
        block.kind = _parse(str(token))
        return block


def output_shape(shape: tuple, token: str) -> tuple | None:
    """Shape after the block ((h, w, c) or (features,)), or None if the block cannot follow."""
    kind = Block(token).kind
    flat = len(shape) == 1
    if kind[0] == "fc":
        return (kind[1],)
    if flat:
        return None
    h, w, c = shape
    if kind[0] == "pool":
        return None if min(h, w) < 2 else (h // 2, w // 2, c)
    if kind[0] == "conv":
        return (h, w, kind[2])
    merge, branches = kind[1], kind[2]
    return (h, w, branches[0][1] if merge == "sum" else sum(f for _, f in branches))


class ChainDiscrete(DiscreteSpace):
    name = "chain"

    def __init__(self, space_cfg, in_shape=None):
        if in_shape is None or len(in_shape) != 3:
            raise JaxnasError(f"the chain space needs image inputs (H, W, C), got {in_shape}")
        self.cfg, self.in_shape = space_cfg, tuple(in_shape)
        self.max_depth = int(space_cfg.max_depth)
        filters, kernels = _ints(space_cfg.filters, "filters"), _ints(space_cfg.kernels, "kernels")
        units = _ints(space_cfg.units, "units")
        pools = [p.strip() for p in str(space_cfg.pools).split(",") if p.strip()]
        merges = [m.strip() for m in str(space_cfg.merges).split(",") if m.strip()]
        for p in pools:
            if p not in ("max", "avg"):
                raise JaxnasError(f"space.pools: unknown pooling {p!r}; allowed: max, avg")
        for m in merges:
            if m not in ("sum", "concat"):
                raise JaxnasError(f"space.merges: unknown merge {m!r}; allowed: sum, concat")
        blocks = [f"conv{k}x{k}-{f}" for k in kernels for f in filters]
        blocks += [f"{p}pool" for p in pools]
        blocks += [f"fc-{u}" for u in units]
        n = int(space_cfg.branches)
        if n >= 2:
            for merge in merges:
                for ks in itertools.combinations(kernels, n):
                    blocks += [f"{merge}({','.join(f'conv{k}x{k}-{f}' for k in ks)})" for f in filters]
        self.blocks = tuple(Block(b) for b in blocks)
        if self.max_depth < 1 or not any(output_shape(self.in_shape, b) for b in self.blocks):
            raise JaxnasError(f"the chain space admits no valid architecture (max_depth={self.max_depth}, "
                              f"blocks: {', '.join(self.blocks) or 'none'}, input {self.in_shape})")

    def shapes(self, arch) -> list[tuple]:
        """Input shape and the shape after every block; an invalid architecture is an error."""
        shapes = [self.in_shape]
        for token in arch:
            out = output_shape(shapes[-1], token)
            if out is None:
                raise JaxnasError(f"chain architecture {self.encode(arch)!r}: {token!r} cannot follow shape "
                                  f"{shapes[-1]}")
            shapes.append(out)
        return shapes

    def _valid_after(self, prefix) -> list[str]:
        shape = self.shapes(prefix)[-1]
        return [b for b in self.blocks if output_shape(shape, b) is not None]

    def num_decisions(self, arch):
        return min(len(arch) + 1, self.max_depth)

    def choice(self, arch, i):
        return arch[i] if i < len(arch) else END

    def choices(self, arch, i):
        return ([END] if i >= 1 else []) + self._valid_after(arch[:i])

    def with_choice(self, arch, i, value):
        if value == END:
            return tuple(arch[:i])
        value = Block(value)
        out, shape = list(arch[:i]) + [value], self.shapes(arch[:i])[-1]
        shape = output_shape(shape, value)
        if shape is None:
            raise JaxnasError(f"chain block {value!r} cannot follow {self.encode(arch[:i])!r}")
        for token in arch[i + 1:]:  # keep the rest while it stays valid
            shape = output_shape(shape, token)
            if shape is None:
                break
            out.append(token)
        return tuple(out)

    def initial(self):
        return ()

    def encode(self, arch):
        return " > ".join(arch)

    def decode(self, text):
        arch = tuple(Block(t.strip()) for t in text.split(">") if t.strip())
        if not 1 <= len(arch) <= self.max_depth:
            raise JaxnasError(f"chain architecture {text!r} must have 1 to {self.max_depth} blocks")
        self.shapes(arch)
        return arch

    def build(self, arch, in_shape, num_classes, rngs):
        return ChainNet(arch, tuple(in_shape), num_classes, rngs=rngs)


class _ConvBNReLU(nnx.Module):
    def __init__(self, c_in, c_out, k, *, rngs):
        self.conv = conv(c_in, c_out, k, 1, (k - 1) // 2, rngs=rngs) if k % 2 else \
            nnx.Conv(c_in, c_out, (k, k), padding="SAME", use_bias=False, rngs=rngs)
        self.bn = batch_norm(c_out, True, rngs=rngs)

    def __call__(self, x):
        return jax.nn.relu(self.bn(self.conv(x)))


class _Pool(nnx.Module):
    def __init__(self, kind):
        self.kind = kind

    def __call__(self, x):
        n, h, w, c = x.shape
        x = x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)
        return x.max(axis=(2, 4)) if self.kind == "max" else x.mean(axis=(2, 4))


class _FC(nnx.Module):
    def __init__(self, d_in, d_out, *, rngs):
        self.linear = torch_linear(d_in, d_out, rngs)

    def __call__(self, x):
        return jax.nn.relu(self.linear(x.reshape(x.shape[0], -1)))


class _Parallel(nnx.Module):
    def __init__(self, c_in, merge, branches, *, rngs):
        self.merge = merge
        self.branches = nnx.List([_ConvBNReLU(c_in, f, k, rngs=rngs) for k, f in branches])

    def __call__(self, x):
        outs = [b(x) for b in self.branches]
        return sum(outs[1:], outs[0]) if self.merge == "sum" else jnp.concatenate(outs, axis=-1)


class ChainNet(nnx.Module):
    """The network of a chain architecture: its blocks, then flatten and a linear classifier."""

    def __init__(self, arch, in_shape, num_classes: int, *, rngs: nnx.Rngs):
        layers, shape = [], tuple(in_shape)
        for token in arch:
            kind = Block(token).kind
            out = output_shape(shape, token)
            if out is None:
                raise JaxnasError(f"chain block {token!r} cannot follow shape {shape}")
            if kind[0] == "conv":
                layers.append(_ConvBNReLU(shape[-1], kind[2], kind[1], rngs=rngs))
            elif kind[0] == "pool":
                layers.append(_Pool(kind[1]))
            elif kind[0] == "fc":
                layers.append(_FC(math.prod(shape), kind[1], rngs=rngs))
            else:
                layers.append(_Parallel(shape[-1], kind[1], kind[2], rngs=rngs))
            shape = out
        self.layers = nnx.List(layers)
        self.out_shape = shape
        self.classifier = torch_linear(math.prod(shape), num_classes, rngs)

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.classifier(x.reshape(x.shape[0], -1))


class ChainSharedWeights:
    """The chain space's weight-sharing supernet (for random search with weight sharing).

    Every (position, block) pair owns one set of weights sized for the largest input that
    can reach that position; an architecture uses the leading slice it needs (input
    channels of a convolution, input features of a dense layer or of the classifier), as
    elastic supernets do. BatchNorm always normalises with the batch's statistics. A
    forward pass is compiled once per distinct architecture (the sequence is static).
    """

    def __init__(self, space: ChainDiscrete, num_classes: int, seed: int):
        self.space, self.num_classes = space, num_classes
        reach = [{space.in_shape}]
        need: dict[tuple[int, str], int] = {}
        final = 0
        for i in range(space.max_depth):
            nxt = set()
            for shape in reach[i]:
                for token in space.blocks:
                    out = output_shape(shape, token)
                    if out is None:
                        continue
                    size = shape[-1] if token.kind[0] in ("conv", "par") else math.prod(shape)
                    need[(i, token)] = max(need.get((i, token), 0), size)
                    nxt.add(out)
            reach.append(nxt)
            final = max([final] + [math.prod(s) for s in nxt])
        rng = np.random.default_rng(seed)

        def dense(n_in, n_out, fan_in):
            bound = 1.0 / np.sqrt(fan_in)
            return jnp.asarray(rng.uniform(-bound, bound, (n_in, n_out)), jnp.float32)

        def conv_params(k, c_in, f):
            bound = 1.0 / np.sqrt(k * k * c_in)
            return {"w": jnp.asarray(rng.uniform(-bound, bound, (k, k, c_in, f)), jnp.float32),
                    "scale": jnp.ones((f,), jnp.float32), "bias": jnp.zeros((f,), jnp.float32)}

        params = {}
        for (i, token), size in sorted(need.items()):
            kind = token.kind
            key = f"{i}/{token}"
            if kind[0] == "conv":
                params[key] = conv_params(kind[1], size, kind[2])
            elif kind[0] == "par":
                params[key] = {f"b{j}": conv_params(k, size, f) for j, (k, f) in enumerate(kind[2])}
            elif kind[0] == "fc":
                params[key] = {"w": dense(size, kind[1], size), "b": jnp.zeros((kind[1],), jnp.float32)}
        params["head"] = {"w": dense(final, num_classes, final), "b": jnp.zeros((num_classes,), jnp.float32)}
        self.params = params

    @staticmethod
    def _conv(p, x, k):
        w = p["w"][:, :, :x.shape[-1], :]
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        mean, var = y.mean(axis=(0, 1, 2)), y.var(axis=(0, 1, 2))
        return jax.nn.relu((y - mean) * jax.lax.rsqrt(var + 1e-5) * p["scale"] + p["bias"])

    def apply(self, params, arch: tuple, x):
        """Logits of ``arch`` with the shared weights (``arch`` must be static under jit)."""
        for i, token in enumerate(arch):
            kind, p = Block(token).kind, params.get(f"{i}/{token}")
            if kind[0] == "conv":
                x = self._conv(p, x, kind[1])
            elif kind[0] == "pool":
                x = _Pool(kind[1])(x)
            elif kind[0] == "fc":
                x = x.reshape(x.shape[0], -1)
                x = jax.nn.relu(x @ p["w"][:x.shape[-1]] + p["b"])
            else:
                outs = [self._conv(p[f"b{j}"], x, k) for j, (k, _) in enumerate(kind[2])]
                x = sum(outs[1:], outs[0]) if kind[1] == "sum" else jnp.concatenate(outs, axis=-1)
        x = x.reshape(x.shape[0], -1)
        return x @ params["head"]["w"][:x.shape[-1]] + params["head"]["b"]


@register_space("chain")
class ChainSpace(Space):
    """Chain-structured layer sequences: discrete search, and weight sharing by sliced weights."""

    needs_input_shape = True

    def defaults(self):
        # comma-separated choice lists; max_depth: the most blocks; branches: convs per parallel block
        return ml_collections.ConfigDict(dict(max_depth=6, filters="16,32", kernels="1,3,5", units="64,128",
                                              pools="max,avg", merges="sum,concat", branches=2))

    def ranges(self):
        return {"max_depth": (0, 64), "branches": (0, 8)}

    def discrete(self, cfg, in_shape=None):
        return ChainDiscrete(self.fields(cfg), in_shape)

    def arch_from_dict(self, d):
        if not isinstance(d, dict) or not isinstance(d.get("arch"), str):
            raise JaxnasError(f"a chain architecture is {{\"arch\": \"block > block\"}}, got {d!r}")
        return tuple(Block(t.strip()) for t in d["arch"].split(">") if t.strip())

    def drawings(self, arch):
        names = ["input"] + [str(i + 1) for i in range(len(arch))] + ["logits"]
        edges = [(names[i], names[i + 1], b) for i, b in enumerate(arch)]
        edges.append((names[-2], "logits", "flatten, linear"))
        return [("arch", "chain architecture", edges)]

    def weight_sharing(self, space, cfg, ds, tx):
        """Shared weights sliced per architecture (``ChainSharedWeights``; one compile per architecture)."""
        ws = ChainSharedWeights(space, ds.num_classes, cfg.seed)

        def loss_fn(params, arch, batch):
            return cross_entropy(ws.apply(params, arch, batch["x"]), batch["y"])

        @functools.partial(jax.jit, static_argnums=1)
        def step(state, arch, batch):
            params, opt = state
            loss, g = jax.value_and_grad(loss_fn)(params, arch, batch)
            updates, opt = tx.update(g, opt, params)
            return (optax.apply_updates(params, updates), opt), loss

        @functools.partial(jax.jit, static_argnums=1)
        def accuracy(state, arch, batch):
            return (jnp.argmax(ws.apply(state[0], arch, batch["x"]), -1) == batch["y"]).mean()

        return (ws.params, tx.init(ws.params)), step, accuracy
