"""PC-DARTS (Xu et al., ICLR 2020) in the DARTS space, with the official code's defaults.

    jaxnas search --config configs/pcdarts_darts.py

partial channels K=4 and edge normalization; arch updates from epoch 15; 50 epochs. Defaults and their sources: docs/methods.md.
The DARTS space on CIFAR-10 (8 cells, C=16 during search); the found genotype is retrained with
`jaxnas train --config configs/darts_cifar10_train.py --config.genotype=<run>/genotype.json`.
Published CIFAR-10 result after retraining: 2.57 +/- 0.07% test error, 3.6M params.
"""

from jaxnas.config import method_config


def get_config(arg=None):
    return method_config("pcdarts", "darts")
