import json

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxnas import config as config_lib
from jaxnas import genotype as G
from jaxnas import rundir
from jaxnas.search import get_strategy
from jaxnas.spaces import build_supernet, discrete_space

from conftest import made_up_table, tiny_cfg

OPS = ("none", "skip_connect", "nor_conv_3x3")


def test_random_search_with_weight_sharing_on_nb201(tmp_path):
    table = made_up_table(str(tmp_path / "t.csv"), OPS, seed=1)
    cfg = config_lib.search_defaults()
    cfg.search.strategy, cfg.data.name = "rsws", "digits"
    cfg.search.batch_size, cfg.search.max_steps_per_epoch = 32, 6
    cfg.space.name, cfg.space.ops, cfg.space.C, cfg.space.cells_per_stage = "nb201", ",".join(OPS), 4, 1
    cfg.evaluator.kind, cfg.evaluator.table = "supernet", table
    cfg.discrete.ws_epochs, cfg.discrete.ws_eval_batches, cfg.discrete.budget_evals = 2, 2, 8
    cfg.run.workdir, cfg.run.name = str(tmp_path), "rsws"
    path = rundir.create(cfg, "search")
    out = get_strategy("rsws")(cfg, path, log=lambda *_: None)
    hist = out["history"]
    assert len(hist) == 8 and all(0.0 <= r["score"] <= 1.0 for r in hist)
    assert len({r["score"] for r in hist}) > 1  # the shared weights tell architectures apart
    result = json.load(open(f"{path}/result.json"))
    assert result["arch"] == max(hist, key=lambda r: r["score"])["arch"]
    assert "table" in result["test"]["source"]


def test_darts_space_random_and_mutation_and_onehot_alphas():
    cfg = tiny_cfg()
    cfg.space.nodes = 3
    space = discrete_space(cfg.space)
    rng = np.random.default_rng(0)
    net = build_supernet(cfg.space, (8, 8, 1), 10, nnx.Rngs(0))
    for _ in range(20):
        g = G.validate(space.random(rng))
        assert all(op != "none" for op, _ in g.normal + g.reduce)
        for cell in (g.normal, g.reduce):
            for j in range(3):
                assert cell[2 * j][1] != cell[2 * j + 1][1]  # distinct sources per node
        child = space.mutate(g, rng)
        changed = [i for i in range(space.num_decisions(g)) if space.choice(g, i) != space.choice(child, i)]
        assert len(changed) == 1
        # one-hot alphas make the supernet compute exactly g, and DARTS's rule reads g back
        for key, value in space.onehot_alphas(g, net.op_names).items():
            getattr(net, key)[...] = jnp.asarray(value)
        got = net.genotype()
        for a, b in ((got.normal, g.normal), (got.reduce, g.reduce)):
            assert sorted(map(tuple, a)) == sorted(map(tuple, b))


def test_chain_weight_sharing_slices_one_set_of_weights(tmp_path):
    from jaxnas.spaces.chain import ChainSharedWeights

    cfg = config_lib.search_defaults()
    cfg.space.name, cfg.space.filters, cfg.space.kernels, cfg.space.units = "chain", "4,8", "1,3", "16"
    cfg.space.max_depth = 3
    space = discrete_space(cfg.space, (8, 8, 1))
    ws = ChainSharedWeights(space, 10, seed=0)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 8, 8, 1)), jnp.float32)
    # conv3x3-8 at position 1 is shared by every input width that can reach it (4, 8, 12, 16 channels)
    w = ws.params["1/conv3x3-8"]["w"]
    assert w.shape == (3, 3, 16, 8)
    a, b = ("conv3x3-4", "conv3x3-8"), ("conv3x3-8", "conv3x3-8")
    assert ws.apply(ws.params, a, x).shape == ws.apply(ws.params, b, x).shape == (4, 10)
    # an architecture uses exactly the leading slice: changing the rest leaves its logits unchanged
    p2 = dict(ws.params)
    p2["1/conv3x3-8"] = {**ws.params["1/conv3x3-8"], "w": w.at[:, :, 4:, :].set(99.0)}
    np.testing.assert_array_equal(ws.apply(ws.params, a, x), ws.apply(p2, a, x))
    assert not np.allclose(ws.apply(ws.params, b, x), ws.apply(p2, b, x))


def test_rsws_on_the_chain_space(tmp_path):
    cfg = config_lib.search_defaults()
    cfg.search.strategy, cfg.data.name = "rsws", "digits"
    cfg.search.batch_size, cfg.search.max_steps_per_epoch = 32, 4
    cfg.space.name, cfg.space.filters, cfg.space.kernels, cfg.space.units = "chain", "8", "3", "32"
    cfg.space.max_depth, cfg.space.branches = 2, 0
    cfg.evaluator.kind, cfg.evaluator.epochs = "supernet", 1
    cfg.discrete.ws_epochs, cfg.discrete.ws_eval_batches, cfg.discrete.budget_evals = 2, 2, 5
    cfg.run.workdir, cfg.run.name = str(tmp_path), "rc"
    out = get_strategy("rsws")(cfg, rundir.create(cfg, "search"), log=lambda *_: None)
    assert len(out["history"]) == 5
    assert "retrained" in out["result"]["test"]["source"] and out["result"]["test"]["accuracy"] > 0.2


def test_evolution_on_the_darts_space_scored_by_a_supernet(tmp_path):
    cfg = tiny_cfg()
    cfg.search.strategy, cfg.search.batch_size, cfg.search.max_steps_per_epoch = "evolution", 32, 4
    cfg.evaluator.kind = "supernet"
    cfg.discrete.ws_epochs, cfg.discrete.ws_eval_batches, cfg.discrete.budget_evals = 1, 1, 6
    cfg.discrete.population, cfg.discrete.tournament, cfg.discrete.final_test = 3, 2, False
    cfg.run.workdir, cfg.run.name = str(tmp_path), "de"
    out = get_strategy("evolution")(cfg, rundir.create(cfg, "search"), log=lambda *_: None)
    assert len(out["history"]) == 6
    g = G.validate(out["genotype"])
    assert json.load(open(f"{tmp_path}/de/genotype.json")) == g.to_dict()
