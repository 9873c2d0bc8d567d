"""SDARTS-RS (Chen & Hsieh, ICML 2020) in the NAS-Bench-201 space, with the official code's defaults.

    jaxnas search --config configs/sdarts_rs_nb201.py

uniform noise on the softmax weights before each weight step, eps 0.03 -> 0.3. Defaults and their sources: docs/methods.md.
The benchmark's protocol (CIFAR-10 train split halved into search-train and search-val, argmax per
edge). Published NAS-Bench-201 CIFAR-10 test accuracy of the found cell: none published by the authors (optimum 94.37).
With --config.evaluator.table=<your exported CSV> the cell is looked up at the end and its test
accuracy written to result.json; experiments/nb201_methods.py runs 3 seeds of every method.
"""

from jaxnas.config import method_config


def get_config(arg=None):
    return method_config("sdarts_rs", "nb201")
