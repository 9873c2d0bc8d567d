"""Retrain a genotype on CIFAR-10 with DARTS's evaluation recipe (cnn/train.py).

    jaxnas train --config configs/darts_cifar10_train.py                        # DARTS_V2
    jaxnas train --config configs/darts_cifar10_train.py --genotype runs/<search>/genotype.json
    jaxnas train --config configs/darts_cifar10_train.py:bf16                   # bf16 compute, f32 params (GPU)

C=36, 20 cells, auxiliary head (weight 0.4), drop-path 0.2, cutout 16, batch 96,
SGD 0.025 cosine to 0 over 600 epochs, momentum 0.9, weight decay 3e-4, clip 5.
Expected (DARTS paper, Table 1): DARTS_V2 3.3M params (3,349,342 counted without
the auxiliary head) and 2.76 +/- 0.09 % test error; about 1.5 GPU-days per run
on a GTX 1080Ti in the paper.
"""

from jaxnas.config import train_defaults


def get_config(arg: str = "float32"):
    c = train_defaults()
    c.data.name = "cifar10"
    c.train.dtype = "bfloat16" if arg == "bf16" else "float32"
    return c
