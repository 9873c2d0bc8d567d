"""Fair DARTS (Chu et al., ECCV 2020) in the DARTS space, with the official code's defaults.

    jaxnas search --config configs/fairdarts_darts.py

independent sigmoid per op and the zero-one loss (weight 10); 50 epochs, batch 128. Defaults and their sources: docs/methods.md.
The DARTS space on CIFAR-10 (8 cells, C=16 during search); the found genotype is retrained with
`jaxnas train --config configs/darts_cifar10_train.py --config.genotype=<run>/genotype.json`.
Published CIFAR-10 result after retraining: 2.54 +/- 0.05% test error.
"""

from jaxnas.config import method_config


def get_config(arg=None):
    return method_config("fairdarts", "darts")
