"""DrNAS (Chen et al., ICLR 2021) in the DARTS space, with the official code's defaults.

    jaxnas search --config configs/drnas_darts.py

Dirichlet mixing weights, concentration ELU(theta)+1, l2 regularizer; 100 epochs on NB201. Defaults and their sources: docs/methods.md.
The DARTS space on CIFAR-10 (8 cells, C=16 during search); the found genotype is retrained with
`jaxnas train --config configs/darts_cifar10_train.py --config.genotype=<run>/genotype.json`.
Published CIFAR-10 result after retraining: 2.46 +/- 0.03% test error, 4.1M params (progressive search).
"""

from jaxnas.config import method_config


def get_config(arg=None):
    c = method_config("drnas", "darts")
    return c
