"""GDAS (Dong & Yang, CVPR 2019) in the DARTS space, with the official code's defaults.

    jaxnas search --config configs/gdas_darts.py

Gumbel-max sampling of one op per edge with straight-through gradients, tau 10 -> 0.1; 250 epochs. Defaults and their sources: docs/methods.md.
The DARTS space on CIFAR-10 (8 cells, C=16 during search); the found genotype is retrained with
`jaxnas train --config configs/darts_cifar10_train.py --config.genotype=<run>/genotype.json`.
Published CIFAR-10 result after retraining: 2.93% test error, 3.4M params (GDAS; GDAS-FRC 2.82%).
"""

from jaxnas.config import method_config


def get_config(arg=None):
    return method_config("gdas", "darts")
