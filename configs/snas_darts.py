"""SNAS (Xie et al., ICLR 2019) in the DARTS space, with the official code's defaults.

    jaxnas search --config configs/snas_darts.py

Gumbel-softmax relaxation, tau 1 -> 0.03, single-level; 150 epochs. Defaults and their sources: docs/methods.md.
The DARTS space on CIFAR-10 (8 cells, C=16 during search); the found genotype is retrained with
`jaxnas train --config configs/darts_cifar10_train.py --config.genotype=<run>/genotype.json`.
Published CIFAR-10 result after retraining: 2.85 +/- 0.02% test error, 2.8M params (moderate).
"""

from jaxnas.config import method_config


def get_config(arg=None):
    return method_config("snas", "darts")
