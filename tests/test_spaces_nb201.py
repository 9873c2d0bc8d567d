import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxnas.errors import JaxnasError
from jaxnas.spaces import nb201
from jaxnas.nn import count_params

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ISSUE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"


def test_string_round_trip_and_edge_order():
    a = nb201.from_str(ISSUE)
    assert a.ops == ("nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_3x3", "nor_conv_1x1")
    assert a.to_str() == ISSUE and nb201.parse(a.to_str()) == a
    assert nb201.EDGES == ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))


def test_index_order_matches_the_benchmark_anchors():
    # the benchmark's indices 0 and 1 (product order shuffled with random.seed(88))
    assert nb201.from_index(0).to_str() == ("|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|"
                                            "skip_connect~1|skip_connect~2|")
    assert nb201.from_index(1).to_str() == ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|"
                                            "nor_conv_3x3~1|skip_connect~2|")
    for i in (0, 1, 777, 15624):
        assert nb201.index_of(nb201.from_index(i)) == i
        assert nb201.parse(str(i)) == nb201.from_index(i)
    assert len({nb201.from_index(i) for i in range(0, 15625, 7)}) == len(range(0, 15625, 7))


@pytest.mark.parametrize("text, message", [
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|", "expected 3 nodes"),
    ("|conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown NAS-Bench-201 op 'conv_9x9'"),
    ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "node 1 input 0 is 'none~1'"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 needs 2 inputs"),
])
def test_malformed_strings_are_named(text, message):
    with pytest.raises(JaxnasError, match=message):
        nb201.from_str(text)
    with pytest.raises(JaxnasError, match="out of range"):
        nb201.from_index(15625)


def _count(arch_str):
    net = nb201.NB201Network(nb201.from_str(arch_str), 3, 10, rngs=nnx.Rngs(0))
    return count_params(net)


def test_parameter_counts_equal_the_benchmarks():
    # published: 0.073M for cells without convs, 1.531M for all nor_conv_3x3 (10 classes)
    no_conv = "|none~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|skip_connect~1|avg_pool_3x3~2|"
    all_3x3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    assert _count(no_conv) == 73306 and f"{_count(no_conv) / 1e6:.6f}".startswith("0.073")
    assert _count(all_3x3) == 1531546 and f"{_count(all_3x3) / 1e6:.6f}".startswith("1.531")
    # hand count: skeleton 73,306 + 5 cells per stage of (9C^2 + 2C) per 3x3 conv and (C^2 + 2C) per 1x1
    per = lambda k: sum(5 * (k * k * c * c + 2 * c) for c in (16, 32, 64))  # noqa: E731
    assert _count(ISSUE) == 73306 + 4 * per(3) + per(1)
    assert _count(BEST) == 73306 + 5 * per(3)


def test_cell_wiring_by_hand():
    """skip on 0->1 and 1->3, none elsewhere: the cell output equals its input."""
    arch = nb201.from_str("|skip_connect~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|")
    cell = nb201.InferCell(arch, 4, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 5, 4)), jnp.float32)
    np.testing.assert_array_equal(cell(x), x)
    arch2 = nb201.from_str("|skip_connect~0|+|skip_connect~0|skip_connect~1|+|avg_pool_3x3~0|none~1|skip_connect~2|")
    cell2 = nb201.InferCell(arch2, 4, rngs=nnx.Rngs(0))
    from jaxnas.kernels import reference

    np.testing.assert_allclose(cell2(x), reference.pool(x, "avg", 3, 1, 1) + 2 * x, rtol=1e-6)


def test_supernet_argmax_discretization_and_onehot_equals_discrete():
    from jaxnas import config as config_lib
    from jaxnas.spaces import build_supernet, discrete_space

    cfg = config_lib.search_defaults()
    cfg.space.name, cfg.space.C, cfg.space.cells_per_stage = "nb201", 4, 1
    net = build_supernet(cfg.space, (8, 8, 1), 10, nnx.Rngs(0))
    assert net.op_names == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    a = np.zeros((6, 5), np.float32)
    a[np.arange(6), [3, 3, 1, 4, 2, 0]] = 1.0
    net.alphas[...] = jnp.asarray(a)
    g = net.genotype()
    assert g.to_str() == "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"
    space = discrete_space(cfg.space)
    net.alphas[...] = jnp.asarray(space.onehot_alphas(g, net.op_names)["alphas"])
    w = jax.nn.softmax(net.alphas[...], -1)
    assert float(w.max(-1).min()) == 1.0 and float(w.sum()) == 6.0  # exactly one-hot


def test_supernet_cell_wiring_on_hand_picked_edges():
    from jaxnas.spaces.nb201 import EDGES, SearchCell

    cell = SearchCell(3, ("none", "skip_connect"), rngs=nnx.Rngs(0))
    w = np.tile([1.0, 0.0], (len(EDGES), 1))
    for edge in [(1, 0), (2, 1), (3, 0), (3, 2)]:  # node1 = x; node2 = node1; node3 = x + node2
        w[EDGES.index(edge)] = [0.0, 1.0]
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
    np.testing.assert_allclose(cell(x, jnp.asarray(w)), 2 * x, rtol=1e-6)
