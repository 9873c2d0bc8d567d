import os
import re

import numpy as np
import pytest

from jaxnas import genotype as G
from jaxnas import plot, rundir
from jaxnas import config as config_lib
from jaxnas.cli import main
from jaxnas.errors import JaxnasError
from jaxnas.spaces import get_space
from jaxnas.spaces.darts import darts_cell_edges


def test_darts_cell_edges_follow_the_genotype():
    edges = darts_cell_edges(G.DARTS_V2.normal, G.DARTS_V2.normal_concat, 4)
    assert edges[:3] == [("c_{k-2}", "0", "sep_conv_3x3"), ("c_{k-1}", "0", "sep_conv_3x3"),
                         ("c_{k-2}", "1", "sep_conv_3x3")]
    assert ("0", "3", "dil_conv_3x3") in edges and ("2", "c_{k}", "") in edges and len(edges) == 12
    names = get_space("darts").edge_names("alphas_normal", 14)
    assert [names[e] for e in (0, 1, 2, 4, 13)] == ["c{k-2} -> 0", "c{k-1} -> 0", "c{k-2} -> 1", "0 -> 1", "2 -> 3"]


def _fake_search_run(tmp_path):
    cfg = config_lib.load(None)
    cfg.space.ops = "none,skip_connect,sep_conv_3x3"
    cfg.space.nodes = 2
    cfg.run.workdir, cfg.run.name = str(tmp_path), "s"
    path = rundir.create(cfg, "search")
    g = G.Genotype(normal=(("sep_conv_3x3", 0), ("skip_connect", 1), ("sep_conv_3x3", 2), ("skip_connect", 0)),
                   normal_concat=(2, 3), reduce=(("skip_connect", 0), ("sep_conv_3x3", 1), ("skip_connect", 2),
                                                 ("sep_conv_3x3", 1)), reduce_concat=(2, 3))
    G.save(g, os.path.join(path, "genotype.json"))
    rng = np.random.default_rng(0)
    for epoch in (1, 2, 3):
        w = rng.dirichlet(np.ones(3), size=5)
        rundir.append_jsonl(os.path.join(path, "alphas.jsonl"), {
            "epoch": epoch, "alphas_normal": np.log(w).tolist(), "alphas_normal_softmax": w.tolist(),
            "alphas_reduce": np.log(w).tolist(), "alphas_reduce_softmax": w.tolist()})
        rundir.append_jsonl(os.path.join(path, "metrics.jsonl"), {
            "epoch": epoch, "step": 10 * epoch, "search_val_loss": 2.0 / epoch, "search_val_acc": 0.3 * epoch})
        rundir.append_jsonl(os.path.join(path, "steps.jsonl"), {
            "epoch": epoch, "step": 10 * epoch, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.1, "val_acc": 0.4})
    return path


def test_plot_command_writes_the_cells_alphas_and_curves(tmp_path, capsys):
    path = _fake_search_run(tmp_path)
    assert main(["plot", path]) == 0
    written = capsys.readouterr().out.split()
    names = sorted(os.path.basename(p) for p in written)
    assert names == sorted(f"{b}.{ext}" for b in ("cell_normal", "cell_reduce", "alphas_normal", "alphas_reduce",
                                                  "curves") for ext in ("png", "svg"))
    for p in written:
        assert os.path.getsize(p) > 1000
    assert open(os.path.join(path, "plots", "cell_normal.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    svg = open(os.path.join(path, "plots", "cell_normal.svg")).read()
    # the normal cell's four edges carry their op names, and the reduction cell's differ
    labels = re.findall(r">(sep_conv_3x3|skip_connect)<", svg)
    assert sorted(labels) == ["sep_conv_3x3", "sep_conv_3x3", "skip_connect", "skip_connect"]
    assert "edge 4: 0 -&gt; 1" in open(os.path.join(path, "plots", "alphas_normal.svg")).read()


def test_plot_rejects_a_non_run(tmp_path, capsys):
    with pytest.raises(JaxnasError, match="not a jaxnas run directory"):
        plot.plot_run(str(tmp_path))
    assert main(["plot", str(tmp_path)]) == 2
