import json

import numpy as np
import pytest

from jaxnas import genotype as G
from jaxnas.errors import JaxnasError

OPS4 = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")


def test_darts_rule_on_hand_made_weights_with_ties_and_none():
    w = np.array([
        [0.70, 0.10, 0.10, 0.10],  # node 0 <- 0: 'none' dominates; three-way tie -> lowest op index
        [0.10, 0.20, 0.30, 0.40],  # node 0 <- 1: strength 0.4
        [0.10, 0.30, 0.30, 0.30],  # node 1 <- 0: strength 0.3, op tie -> max_pool_3x3
        [0.00, 0.05, 0.05, 0.90],  # node 1 <- 1: strength 0.9
        [0.40, 0.30, 0.20, 0.10],  # node 1 <- 2: strength 0.3, ties edge 0 -> lower source wins
    ], np.float32)
    cell = G.derive_cell(w, OPS4, nodes=2)
    # kept edges listed by descending strength, not by source index
    assert cell == (("sep_conv_3x3", 1), ("max_pool_3x3", 0), ("sep_conv_3x3", 1), ("max_pool_3x3", 0))


def test_none_is_never_selected_even_when_it_dominates_everything():
    w = np.tile(np.array([[0.97, 0.01, 0.01, 0.01]], np.float32), (5, 1))
    w[4] = [0.99, 0.0, 0.002, 0.008]
    cell = G.derive_cell(w, OPS4, nodes=2)
    assert all(op != "none" for op, _ in cell)
    assert cell[:2] == (("max_pool_3x3", 0), ("max_pool_3x3", 1))
    assert cell[2:] == (("max_pool_3x3", 0), ("max_pool_3x3", 1))  # 0.01 > 0.008 of edge from node 2


def test_derive_keeps_the_two_strongest_edges_per_node():
    names = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
             "dil_conv_3x3", "dil_conv_5x5")
    w = np.random.default_rng(0).random((14, 8)).astype(np.float32)
    w /= w.sum(1, keepdims=True)  # edge weights: distributions over the ops
    g = G.derive_from_weights(w, w, names, nodes=4)
    assert len(g.normal) == 8 and g.normal_concat == (2, 3, 4, 5) and g.reduce == g.normal
    start = 0
    for node in range(4):
        rows = w[start:start + node + 2, 1:]
        expected_sources = list(np.argsort(-rows.max(1), kind="stable")[:2])
        got = g.normal[2 * node:2 * node + 2]
        assert [src for _, src in got] == expected_sources
        assert [op for op, _ in got] == [names[1 + int(np.argmax(rows[s]))] for s in expected_sources]
        start += node + 2
    with pytest.raises(JaxnasError, match="shape"):
        G.derive_cell(w[:10], names, nodes=4)


def test_json_round_trip_and_published(tmp_path):
    path = tmp_path / "g.json"
    G.save(G.DARTS_V2, str(path))
    assert G.load(str(path)) == G.DARTS_V2
    assert G.load("DARTS") == G.DARTS_V2
    assert G.DARTS_V1.normal[0] == ("sep_conv_3x3", 1) and G.DARTS_V1.reduce[-1] == ("avg_pool_3x3", 0)
    assert G.DARTS_V2.normal[-1] == ("dil_conv_3x3", 2) and G.DARTS_V2.reduce[2] == ("skip_connect", 2)
    assert json.loads(path.read_text())["normal_concat"] == [2, 3, 4, 5]


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["normal"].__setitem__(0, ["conv_9x9", 0]), "unknown op in genotype normal cell 'conv_9x9'"),
    (lambda d: d["reduce"].__setitem__(2, ["skip_connect", 5]), "node 1 takes input 5, which does not exist"),
    (lambda d: d.pop("reduce_concat"), "missing field"),
    (lambda d: d.__setitem__("normal", [["skip_connect", 0]]), "two \\(op, input\\) pairs per node"),
    (lambda d: d.__setitem__("normal_concat", [2, 9]), "normal_concat"),
])
def test_malformed_genotypes_are_rejected(tmp_path, mutate, message):
    d = G.DARTS_V2.to_dict()
    mutate(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(JaxnasError, match=message):
        G.load(str(path))


def test_unreadable_genotype_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("Genotype(normal=[...])")
    with pytest.raises(JaxnasError, match="not valid JSON"):
        G.load(str(path))
    with pytest.raises(JaxnasError, match="neither a file nor a published name"):
        G.load("DARTS_V9")
