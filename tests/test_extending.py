"""Extending jaxnas from user code: an op with a batched form, a space, a relaxation and an evaluator,
each registered here without touching jaxnas's files, and a search run through each."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

import jaxnas
from jaxnas import config as config_lib
from jaxnas.errors import JaxnasError
from jaxnas.spaces.edges import SourceEdges

from conftest import tiny_cfg


# ---------------------------------------------------------------- an op with a batched form
class ScaledReLU(nnx.Module):
    """relu(x) * s, a learnable scale per channel, subsampled by the stride (one edge)."""

    def __init__(self, C, stride):
        self.s, self.stride = nnx.Param(jnp.ones((C,))), stride

    def __call__(self, x):
        return jax.nn.relu(x[:, ::self.stride, ::self.stride]) * self.s[...]


class StackedScaledReLU(nnx.Module):
    """The same for E edges that read one state: (N, H, W, C) -> (N, H', W', E, C)."""

    def __init__(self, E, C, stride):
        self.s, self.stride = nnx.Param(jnp.ones((E, C))), stride

    def __call__(self, x):
        return jax.nn.relu(x[:, ::self.stride, ::self.stride])[..., None, :] * self.s[...]


if "test_scaled_relu" not in jaxnas.ops.OPS:
    jaxnas.register_op("test_scaled_relu", batched=lambda E, C, stride, bn, rngs: StackedScaledReLU(E, C, stride))(
        lambda C, stride, affine, rngs: ScaledReLU(C, stride))


# ---------------------------------------------------------------- an op that joins the stage-by-stage edges
class UserBlock(nnx.Module):
    """ReLU, depthwise 3x3 at dilation 3, pointwise, non-affine BN, for E edges: one block of the
    protocol ``edges.SourceEdges`` runs stage by stage (``geometry()`` and ``bn``)."""

    def __init__(self, E, C, stride, rngs):
        self.dw = nnx.Param(jax.random.normal(rngs.params(), (E, 3, 3, C)) / 3)
        self.pw = nnx.Param(jax.random.normal(rngs.params(), (E, C, C)) / 2)
        self.stride = stride
        self.bn = jaxnas.ops.StackedBatchNorm(E, C, rngs=rngs)

    def geometry(self):
        return self.dw[...], self.pw[...], self.stride, 3, 3

    def __call__(self, x):
        return self.bn(jaxnas.kernels.separable(x, *self.geometry(), "dense", relu=True))


class UserChain(nnx.Module):
    """Two such blocks (only the first strided), declared with ``blocks()``."""

    def __init__(self, E, C, stride, rngs):
        self.first, self.second = UserBlock(E, C, stride, rngs), UserBlock(E, C, 1, rngs)

    def blocks(self):
        return (self.first, self.second)

    def __call__(self, x):
        return self.second(self.first(x))


if "test_dil3_chain" not in jaxnas.ops.OPS:
    jaxnas.register_op("test_dil3_chain", batched=lambda E, C, stride, bn, rngs: UserChain(E, C, stride, rngs))(
        lambda C, stride, affine, rngs: jaxnas.ops.DilConv(C, C, 3, stride, 3, 3, affine, rngs=rngs))


# ---------------------------------------------------------------- a relaxation that samples
def gumbel_soft(alphas, key, hyper):
    """Gumbel-softmax (tau 1) when a key is given, softmax otherwise."""
    if key is None:
        return jax.nn.softmax(alphas, -1)
    return jax.nn.softmax(alphas + jax.random.gumbel(key, alphas.shape), -1)


if "test_gumbel" not in jaxnas.relaxations.RELAXATIONS:
    jaxnas.register_relaxation("test_gumbel")(gumbel_soft)


# ---------------------------------------------------------------- a toy space
TOY_OPS = ("relu", "tanh", "zero")


@dataclasses.dataclass(frozen=True)
class ToyArch:
    ops: tuple[str, str]

    def to_dict(self):
        return {"space": "test_toy", "arch": ",".join(self.ops)}

    def __str__(self):
        return ",".join(self.ops)


class ToySupernet(nnx.Module):
    """flatten -> dense -> two mixed edges over TOY_OPS (one after the other) -> classifier."""

    def __init__(self, d_in, num_classes, hidden, relaxation, rngs):
        self.op_names, self.relaxation = TOY_OPS, relaxation
        self.dense = nnx.Linear(d_in, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, num_classes, rngs=rngs)
        self.alphas = jaxnas.ArchParam(1e-3 * jax.random.normal(rngs.params(), (2, len(TOY_OPS))))

    def __call__(self, x, key=None):
        w = jaxnas.relaxations.get_relaxation(self.relaxation).fn(self.alphas[...], key, {})
        h = self.dense(x.reshape(x.shape[0], -1))
        for e in range(2):
            h = w[e, 0] * jax.nn.relu(h) + w[e, 1] * jnp.tanh(h)
        return self.out(h)

    def genotype(self):
        best = np.asarray(self.alphas[...]).argmax(-1)
        return ToyArch(tuple(TOY_OPS[i] for i in best))


class ToyDiscrete(jaxnas.DiscreteSpace):
    name = "test_toy"

    def num_decisions(self, arch):
        return 2

    def choices(self, arch, i):
        return list(TOY_OPS)

    def choice(self, arch, i):
        return arch.ops[i]

    def with_choice(self, arch, i, value):
        ops = list(arch.ops)
        ops[i] = value
        return ToyArch(tuple(ops))

    def initial(self):
        return ToyArch(("relu", "relu"))

    def encode(self, arch):
        return ",".join(arch.ops)

    def decode(self, text):
        ops = tuple(text.split(","))
        if len(ops) != 2 or any(o not in TOY_OPS for o in ops):
            raise JaxnasError(f"bad toy arch {text!r}")
        return ToyArch(ops)

    def build(self, arch, in_shape, num_classes, rngs):
        raise NotImplementedError


if "test_toy" not in jaxnas.spaces.SPACES:
    @jaxnas.register_space("test_toy")
    class ToySpace(jaxnas.Space):
        def defaults(self):
            return ml_collections.ConfigDict(dict(hidden=16, relaxation="softmax"))

        def supernet(self, cfg, in_shape, num_classes, rngs):
            return ToySupernet(int(np.prod(in_shape)), num_classes, cfg.hidden, cfg.relaxation, rngs)

        def discrete(self, cfg, in_shape=None):
            return ToyDiscrete()

        def arch_from_dict(self, d):
            return ToyDiscrete().decode(d["arch"])


# ---------------------------------------------------------------- a cell space on CellSupernet (3 nodes, 3 edges)
from jaxnas.spaces.cell_supernet import CellSupernet, CellType, EdgeMix  # noqa: E402
from jaxnas.spaces.edges import SourceEdges as _Edges, cell_states  # noqa: E402

LADDER_OPS, LADDER = ("none", "skip_connect", "avg_pool_3x3", "nor_conv_3x3"), CellType("cell", "alphas", "betas")


@dataclasses.dataclass(frozen=True)
class LadderArch:
    ops: tuple[str, str, str]  # edges 0->1, 0->2, 1->2

    def to_dict(self):
        return {"space": "test_ladder", "arch": ",".join(self.ops)}


class LadderCell(nnx.Module):
    def __init__(self, C, mixed, rngs):  # state 0 feeds edges 0, 1 (to 1, 2); state 1 feeds edge 2 (to 2)
        self.rows, self.targets = ((0, 1), (2,)), ((1, 2), (2,))
        self.sources = nnx.List([_Edges(len(r), C, 1, LADDER_OPS, rngs=rngs, mixed=mixed) for r in self.rows])

    def __call__(self, x, w, scale, skip):
        return cell_states(self.sources, [x], self.rows, self.targets, w, scale, skip)[-1]


class LadderSupernet(CellSupernet):
    def __init__(self, c_in, classes, C, cells, relaxation, partial, edge_norm, rngs):
        self.stem = nnx.Conv(c_in, C, (3, 3), rngs=rngs)
        mixed = EdgeMix.of(relaxation, partial, search_bn=False)
        self.cells = nnx.List([LadderCell(C, mixed, rngs) for _ in range(cells)])
        self.head = nnx.Linear(C, classes, rngs=rngs)
        self.init_arch((LADDER,), 3, (1, 2), LADDER_OPS, relaxation, edge_norm, rngs)

    def forward(self, x, weights, scales, skip):
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x, weights["cell"], None if scales is None else scales["cell"], skip)
        return self.head(x.mean(axis=(1, 2)))

    def genotype(self):
        return LadderArch(tuple(LADDER_OPS[i] for i in self.strengths(LADDER).argmax(-1)))


if "test_ladder" not in jaxnas.spaces.SPACES:
    @jaxnas.register_space("test_ladder")
    class LadderSpace(jaxnas.Space):
        def defaults(self):
            return ml_collections.ConfigDict(dict(C=4, cells=2, relaxation="softmax", partial_channels=1,
                                                  edge_norm=False))

        def supernet(self, cfg, in_shape, num_classes, rngs):
            return LadderSupernet(in_shape[-1], num_classes, cfg.C, cfg.cells, cfg.relaxation, cfg.partial_channels,
                                  cfg.edge_norm, rngs)

        def arch_from_dict(self, d):
            return LadderArch(tuple(d["arch"].split(",")))


# ---------------------------------------------------------------- an evaluator
class CountingEvaluator:
    """Score = number of tanh edges (a made-up signal); every call counted."""

    has_cost = False

    def __init__(self, space, cfg, log=print):
        self.space, self.calls = space, []

    def score(self, arch):
        self.calls.append(self.space.encode(arch))
        return float(sum(o == "tanh" for o in arch.ops)), 0.0

    def test(self, arch):
        return {"accuracy": self.score(arch)[0] / 2, "macro_f1": None}


if "test_counting" not in jaxnas.evaluators.EVALUATORS:
    jaxnas.register_evaluator("test_counting")(CountingEvaluator)


def _toy_cfg(**space):
    cfg = tiny_cfg()
    cfg.space = config_lib.space_group("test_toy", ml_collections.ConfigDict(space))
    cfg.search.epochs, cfg.search.max_steps_per_epoch = 2, 3
    return cfg


def test_a_user_op_runs_in_its_batched_form_in_a_darts_search():
    group = SourceEdges(2, 4, 1, ("none", "test_scaled_relu"), rngs=nnx.Rngs(0))
    assert isinstance(group.ops["1"], StackedScaledReLU)
    cfg = tiny_cfg()
    cfg.space.ops = "none,skip_connect,test_scaled_relu"
    cfg.search.epochs, cfg.search.max_steps_per_epoch = 1, 2
    result = jaxnas.run_search(cfg, log=lambda *_: None)
    state = result["state"]
    scales = [np.asarray(v[...]) for p, v in nnx.to_flat_state(state.params) if p[-1] == "s"]
    assert scales and all(s.shape[0] >= 1 for s in scales)
    assert any(not np.allclose(s, 1.0) for s in scales)  # the op's weights were trained
    assert {op for op, _ in result["genotype"].normal} <= {"skip_connect", "test_scaled_relu"}


def test_a_user_op_with_blocks_runs_stage_by_stage_with_the_builtin_ops():
    """Declaring ``blocks()`` is all a user op needs to join the stage-by-stage edges (what GPUs and
    TPUs run): its blocks are computed with sep_conv_3x3's, and the result is its own __call__'s."""
    names = ("sep_conv_3x3", "test_dil3_chain")
    x = jax.random.normal(jax.random.key(0), (2, 9, 9, 4))
    w = jax.nn.softmax(jax.random.normal(jax.random.key(1), (2, 2)), -1)
    out = {}
    for fuse in (False, True):
        with jaxnas.kernels.use("dense"):
            group = SourceEdges(2, 4, 1, names, rngs=nnx.Rngs(0), fuse=fuse)
        if fuse:
            assert set(group._chains(x)) == {"0", "1"}  # both ops ran in the stages
        out[fuse] = group(x, w)
    np.testing.assert_allclose(out[True], out[False], rtol=1e-4, atol=1e-4)


def test_a_user_space_with_a_sampling_relaxation_runs_differentiable_search_reproducibly():
    cfg = _toy_cfg(relaxation="test_gumbel")
    a = jaxnas.run_search(cfg, log=lambda *_: None)
    b = jaxnas.run_search(cfg, log=lambda *_: None)
    assert isinstance(a["genotype"], ToyArch)
    # the key lives in the state: two runs of one seed draw the same, and it advanced every step
    np.testing.assert_array_equal(np.asarray(a["state"].alphas["alphas"][...]), np.asarray(b["state"].alphas["alphas"][...]))
    assert not np.array_equal(np.asarray(a["state"].key), np.asarray(jax.random.PRNGKey(cfg.seed)))
    # the sampled weights differ from softmax's, so the relaxation changed the search
    c = jaxnas.run_search(_toy_cfg(relaxation="softmax"), log=lambda *_: None)
    assert not np.allclose(np.asarray(a["state"].alphas["alphas"][...]), np.asarray(c["state"].alphas["alphas"][...]))
    with pytest.raises(JaxnasError, match="unknown relaxation 'nope'"):
        jaxnas.run_search(_toy_cfg(relaxation="nope"), log=lambda *_: None)


def test_a_user_evaluator_scores_a_discrete_search_of_a_user_space():
    cfg = _toy_cfg()
    cfg.search.strategy, cfg.evaluator.kind = "greedy", "test_counting"
    cfg.discrete.budget_evals = 20
    result = jaxnas.run_search(cfg, log=lambda *_: None)
    assert 0 < result["result"]["evaluations"] <= 20
    assert result["genotype"] == ToyArch(("tanh", "tanh"))  # one decision at a time finds the best of this signal
    assert result["result"]["test"]["accuracy"] == 1.0
    cfg.discrete.budget_evals, cfg.discrete.budget_seconds = 0, 10.0
    with pytest.raises(JaxnasError, match="budget_seconds"):  # no costs: a time budget would never end
        jaxnas.run_search(cfg, log=lambda *_: None)


def test_the_config_takes_a_user_space_fields_from_the_space():
    cfg = config_lib.apply_overrides(config_lib.load(None), ["--config.space.name=test_toy",
                                                              "--config.space.hidden=8"])
    assert cfg.space.to_dict() == {"name": "test_toy", "hidden": 8, "relaxation": "softmax"}
    with pytest.raises(JaxnasError, match="unknown config field 'space.depth'"):
        config_lib.apply_overrides(cfg, ["--config.space.depth=3"])


def test_the_custom_search_example_runs_on_the_public_api():
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).parents[1]
    source = (root / "experiments" / "custom_search.py").read_text()
    assert "from jaxnas" not in source and "import jaxnas\n" in source  # only the public surface
    out = subprocess.run([sys.executable, "experiments/custom_search.py"], capture_output=True, text=True,
                         timeout=300, cwd=root)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "genotype (DARTS's rule on softmax of the raw alphas): normal:" in out.stdout


@pytest.mark.parametrize("space, method", [({}, None), ({"partial_channels": 2, "edge_norm": True}, None),
                                           ({}, "gdas")])
def test_a_user_cell_space_gets_the_relaxations_and_mixed_op_variants_from_the_base(space, method):
    """The ladder space above (about 50 lines on ``CellSupernet``) searches with DARTS's softmax,
    PC-DARTS's partial channels and edge normalization, and GDAS's hard sampling."""
    cfg = tiny_cfg()
    if method:  # the method's own parts (GDAS: gumbel_hard, its tau schedule)
        preset = config_lib.method_config(method, "nb201")
        cfg.method, cfg.space.relaxation = preset.method, preset.space.relaxation
    cfg.space = config_lib.space_group("test_ladder", ml_collections.ConfigDict(
        dict(space, relaxation=cfg.space.relaxation)))
    cfg.search.epochs, cfg.search.max_steps_per_epoch = 2, 3
    cfg.method.arch_start_epoch = 0
    result = jaxnas.run_search(cfg, log=lambda *_: None)
    alphas = result["state"].alphas
    assert isinstance(result["genotype"], LadderArch) and len(result["genotype"].ops) == 3
    assert np.abs(np.asarray(alphas["alphas"][...])).max() > 1e-2  # the alphas were trained, not left at init
    assert ("betas" in alphas) == bool(space.get("edge_norm"))
    net = LadderSupernet(3, 10, 4, 1, "softmax", 1, False, nnx.Rngs(0))
    net.set_op_mask({"alphas": np.array([[False, True, False, False]] * 3)})  # op masks come with the base
    assert net.genotype() == LadderArch(("skip_connect",) * 3)
    np.testing.assert_allclose(np.asarray(net.relax()["cell"]), np.eye(4)[[1, 1, 1]], atol=0)
