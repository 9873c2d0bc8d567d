"""SDARTS-ADV (Chen & Hsieh, ICML 2020) in the DARTS space, with the official code's defaults.

    jaxnas search --config configs/sdarts_adv_darts.py

a 7-step PGD attack on the softmax weights before each weight step, eps 0.03 -> 0.3. Defaults and their sources: docs/methods.md.
The DARTS space on CIFAR-10 (8 cells, C=16 during search); the found genotype is retrained with
`jaxnas train --config configs/darts_cifar10_train.py --config.genotype=<run>/genotype.json`.
Published CIFAR-10 result after retraining: 2.61 +/- 0.02% test error.
"""

from jaxnas.config import method_config


def get_config(arg=None):
    return method_config("sdarts_adv", "darts")
