"""SDARTS-RS (Chen & Hsieh, ICML 2020) in the DARTS space, with the official code's defaults.

    jaxnas search --config configs/sdarts_rs_darts.py

uniform noise on the softmax weights before each weight step, eps 0.03 -> 0.3. Defaults and their sources: docs/methods.md.
The DARTS space on CIFAR-10 (8 cells, C=16 during search); the found genotype is retrained with
`jaxnas train --config configs/darts_cifar10_train.py --config.genotype=<run>/genotype.json`.
Published CIFAR-10 result after retraining: 2.67 +/- 0.03% test error.
"""

from jaxnas.config import method_config


def get_config(arg=None):
    return method_config("sdarts_rs", "darts")
