"""beta-DARTS (Ye et al., CVPR 2022) in the DARTS space, with the official code's defaults.

    jaxnas search --config configs/betadarts_darts.py

DARTS plus lambda_t * mean_edges logsumexp(alpha), lambda 0 -> 50 over 100 epochs. Defaults and their sources: docs/methods.md.
The DARTS space on CIFAR-10 (8 cells, C=16 during search); the found genotype is retrained with
`jaxnas train --config configs/darts_cifar10_train.py --config.genotype=<run>/genotype.json`.
Published CIFAR-10 result after retraining: 2.53 +/- 0.08% test error.
"""

from jaxnas.config import method_config


def get_config(arg=None):
    return method_config("betadarts", "darts")
