import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxnas import genotype as G
from jaxnas.errors import JaxnasError
from jaxnas.nn import split_model
from jaxnas.spaces import build_supernet
from jaxnas.spaces.darts import DartsSupernet, SearchCell, edge_row, reduction_layers

from conftest import tiny_cfg


def test_darts_search_network_matches_the_original():
    cfg = tiny_cfg()
    cfg.space.C, cfg.space.layers, cfg.space.nodes, cfg.space.ops = 16, 8, 4, "darts"
    model = build_supernet(cfg.space, (32, 32, 3), 10, nnx.Rngs(0))
    graphdef, params, alphas, stats = split_model(model)
    # DARTS train_search.py logs "param size = 1.930618MB" for this network on CIFAR-10
    assert sum(x.size for x in jax.tree.leaves(params)) == 1_930_618
    assert alphas["alphas_normal"][...].shape == (14, 8) and alphas["alphas_reduce"][...].shape == (14, 8)
    assert reduction_layers(8) == (2, 5) and reduction_layers(20) == (6, 13)
    assert [c.reduction for c in model.cells] == [False, False, True, False, False, True, False, False]
    out = jax.eval_shape(lambda p, a, s, x: nnx.merge(graphdef, p, a, s)(x), params, alphas, stats,
                         jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32))
    assert out.shape == (2, 10)
    w = [np.asarray(jax.nn.softmax(alphas[k][...], -1)) for k in ("alphas_normal", "alphas_reduce")]
    assert model.genotype() == G.derive_from_weights(w[0], w[1], model.op_names, 4)
    with pytest.raises(JaxnasError, match="raw alphas"):  # alphas are not edge weights
        G.derive_from_weights(np.asarray(alphas["alphas_normal"][...]), w[1], model.op_names, 4)


def test_edge_numbering_is_node_major():
    assert [edge_row(0, 0), edge_row(0, 1), edge_row(1, 0), edge_row(1, 2), edge_row(3, 0), edge_row(3, 4)] == \
        [0, 1, 2, 4, 9, 13]


def test_cell_wiring_on_hand_picked_edges():
    ops = ("none", "skip_connect")
    cell = SearchCell(4, 3, 5, 6, reduction=False, reduction_prev=False, op_names=ops, rngs=nnx.Rngs(0))
    w = np.tile([1.0, 0.0], (14, 1))
    for node, src in [(0, 1), (1, 2), (3, 0)]:  # node0 = s1'; node1 = node0; node2 = 0; node3 = s0'
        w[edge_row(node, src)] = [0.0, 1.0]
    s0 = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
    s1 = jax.random.normal(jax.random.key(1), (2, 4, 4, 5))
    out = cell(s0, s1, jnp.asarray(w))
    p0, p1 = cell.pre0(s0), cell.pre1(s1)
    expected = jnp.concatenate([p1, p1, jnp.zeros_like(p1), p0], -1)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_reduction_cell_halves_and_next_cell_factorizes():
    net = DartsSupernet(1, 10, C=4, layers=3, nodes=2, ops="none,skip_connect,avg_pool_3x3", rngs=nnx.Rngs(0))
    assert [c.reduction for c in net.cells] == [False, True, True]
    assert type(net.cells[2].pre0).__name__ == "FactorizedReduce"
    y = net(jnp.ones((2, 8, 8, 1)))
    assert y.shape == (2, 10)


def test_evaluation_network_parameter_count_matches_darts():
    from jaxnas.nn import count_params
    from jaxnas.spaces.darts import DartsNetwork

    # built eagerly: nnx.eval_shape is slower here (NNX's rng counters under tracing cost jax a
    # progenitor search per draw), 16-38 s against 10 s
    v2 = DartsNetwork(G.DARTS_V2, 3, 10, C=36, layers=20, rngs=nnx.Rngs(0))
    # DARTS train.py logs "param size = 3.349342MB" for DARTS_V2 (auxiliary head excluded)
    assert count_params(v2) == 3_349_342
    assert count_params(v2, exclude_auxiliary=False) > count_params(v2)


def test_drop_path_keeps_the_expectation():
    from jaxnas.spaces.darts import drop_path

    x = jnp.ones((20000, 1, 1, 1)) * 3.0
    y = drop_path(x, 0.3, jax.random.key(0))
    np.testing.assert_allclose(np.unique(np.asarray(y)), [0.0, 3.0 / 0.7], rtol=1e-6)
    np.testing.assert_allclose(float(y.mean()), 3.0, rtol=0.02)


def test_evaluation_network_takes_genotypes_with_other_node_counts():
    from jaxnas.spaces.darts import DartsNetwork

    g = G.from_dict({"normal": [["sep_conv_3x3", 0], ["skip_connect", 1], ["dil_conv_3x3", 2], ["avg_pool_3x3", 0]],
                     "normal_concat": [2, 3],
                     "reduce": [["max_pool_3x3", 0], ["sep_conv_5x5", 1], ["skip_connect", 2], ["max_pool_3x3", 1]],
                     "reduce_concat": [3]})
    net = DartsNetwork(g, 1, 10, C=4, layers=3, auxiliary=False, rngs=nnx.Rngs(0))
    assert [c.multiplier for c in net.cells] == [2, 1, 1]
    logits, aux = net(jnp.ones((2, 8, 8, 1)))
    assert logits.shape == (2, 10) and aux is None


def test_a_supernet_without_normal_cells_is_refused_unless_asked_for():
    cfg = tiny_cfg()
    cfg.space.allow_no_normal_cell = False
    for layers in (1, 2):
        cfg.space.layers = layers
        with pytest.raises(JaxnasError, match=f"space.layers={layers} builds only reduction cells"):
            build_supernet(cfg.space, (8, 8, 1), 10, nnx.Rngs(0))
