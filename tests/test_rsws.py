import json

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxnas import config as config_lib
from jaxnas import genotype as G
from jaxnas import rundir
from jaxnas.search import get_strategy
from jaxnas.spaces import build_supernet, discrete_space, nb201

from conftest import tiny_cfg

OPS = ("none", "skip_connect", "nor_conv_3x3")


def test_random_search_with_weight_sharing_on_nb201(tmp_path):
    table = nb201.synthetic_table(str(tmp_path / "t.csv"), OPS, seed=1)
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
