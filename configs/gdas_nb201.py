"""GDAS (Dong & Yang, CVPR 2019) in the NAS-Bench-201 space, with the official code's defaults.

    jaxnas search --config configs/gdas_nb201.py

Gumbel-max sampling of one op per edge with straight-through gradients, tau 10 -> 0.1; 250 epochs. Defaults and their sources: docs/methods.md.
The benchmark's protocol (CIFAR-10 train split halved into search-train and search-val, argmax per
edge). Published NAS-Bench-201 CIFAR-10 test accuracy of the found cell: 93.61 (optimum 94.37).
With --config.evaluator.table=<your exported CSV> the cell is looked up at the end and its test
accuracy written to result.json; experiments/nb201_methods.py runs 3 seeds of every method.
"""

from jaxnas.config import method_config


def get_config(arg=None):
    return method_config("gdas", "nb201")
