"""Gradient-based and weight-sharing search on the NAS-Bench-201 supernet (CIFAR-10).

    jaxnas search --config configs/nb201_darts.py            # DARTS, first order
    jaxnas search --config configs/nb201_darts.py:second     # DARTS, second order (exact)
    jaxnas search --config configs/nb201_darts.py:rsws       # random search with weight sharing

The benchmark's protocol for DARTS: 50 epochs, batch 64, the DARTS optimizers, then
argmax per edge. The benchmark paper reports that DARTS collapses here to all
skip_connect (54.30% test accuracy) in both orders; GDAS 93.61 +/- 0.09. With
--config.evaluator.table=<your exported CSV> (columns named as in nb201_table.py) the
found cell is looked up at the end and its test accuracy written to result.json.
"""

from jaxnas.config import search_defaults


def get_config(arg=None):
    c = search_defaults()
    c.space.name, c.space.C, c.space.cells_per_stage = "nb201", 16, 5
    if arg == "rsws":
        c.search.strategy = "rsws"
        c.evaluator.kind = "supernet"
        c.discrete.ws_epochs, c.discrete.budget_evals, c.discrete.ws_eval_batches = 50, 100, 10
    else:
        c.search.order = arg or "first"
    return c
