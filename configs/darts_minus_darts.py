"""DARTS- (Chu et al., ICLR 2021) in the DARTS space, with the official code's defaults.

    jaxnas search --config configs/darts_minus_darts.py

an auxiliary skip on every edge, its beta decayed 1 -> 0 over 50 epochs. Defaults and their sources: docs/methods.md.
The DARTS space on CIFAR-10 (8 cells, C=16 during search); the found genotype is retrained with
`jaxnas train --config configs/darts_cifar10_train.py --config.genotype=<run>/genotype.json`.
Published CIFAR-10 result after retraining: 2.59 +/- 0.08% test error.
"""

from jaxnas.config import method_config


def get_config(arg=None):
    return method_config("darts_minus", "darts")
