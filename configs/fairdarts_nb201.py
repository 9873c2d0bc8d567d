"""Fair DARTS (Chu et al., ECCV 2020) in the NAS-Bench-201 space, with the official code's defaults.

    jaxnas search --config configs/fairdarts_nb201.py

independent sigmoid per op and the zero-one loss (weight 10); 50 epochs, batch 128. Defaults and their sources: docs/methods.md.
The benchmark's protocol (CIFAR-10 train split halved into search-train and search-val, argmax per
edge). Published NAS-Bench-201 CIFAR-10 test accuracy of the found cell: none published (optimum 94.37).
With --config.evaluator.table=<your exported CSV> the cell is looked up at the end and its test
accuracy written to result.json; experiments/nb201_methods.py runs 3 seeds of every method.
"""

from jaxnas.config import method_config


def get_config(arg=None):
    return method_config("fairdarts", "nb201")
