"""DrNAS (Chen et al., ICLR 2021) in the DARTS space, with the official code's defaults.

    jaxnas search --config configs/drnas_darts.py

Dirichlet mixing weights, concentration ELU(theta)+1, l2 regularizer; in the DARTS space the
progressive search (20 cells at C=36; 25 epochs at K=6, prune to 4 ops per edge, widen to K=4, 25 more). Defaults and their sources: docs/methods.md.
The DARTS space on CIFAR-10 (DrNAS searches with 20 cells at C=36); the found genotype is retrained with
`jaxnas train --config configs/darts_cifar10_train.py --config.genotype=<run>/genotype.json`.
Published CIFAR-10 result after retraining: 2.46 +/- 0.03% test error, 4.1M params (progressive search).
"""

from jaxnas.config import method_config


def get_config(arg=None):
    return method_config("drnas", "darts")
