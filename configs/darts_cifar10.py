"""DARTS search on CIFAR-10 with the paper's settings (Liu et al. 2019; cnn/train_search.py).

First order (default) and second order:

    jaxnas prepare cifar10                      # once, needs TensorFlow: pip install 'jaxnas[prepare]'
    jaxnas search --config configs/darts_cifar10.py
    jaxnas search --config configs/darts_cifar10.py:second
    jaxnas search --config configs/darts_cifar10.py:second_fd   # DARTS's finite-difference variant

8 cells of C=16, 50 epochs, batch 64, train_portion 0.5 (25k images each for the
weights and the alphas), 390 steps per epoch. Expected: a genotype dominated by
separable convolutions in the normal cell and pooling/skip in the reduction cell;
retrained (issue: train), DARTS reports 3.00 +/- 0.14 % test error (first order)
and 2.76 +/- 0.09 % (second order). Search cost in the paper: 0.4 (first order)
and 1 (second order) GPU-days per run on a GTX 1080Ti.

On a GPU (deviceless figures for an H200, docs/accelerators.md; not yet run on one): the first-order
step compiles in 1.5-2 minutes on 2 CPU cores and its roofline bound is 11.9 ms a step, 3.9 minutes
for the 50 epochs. ``--config.search.dtype=bfloat16`` halves the bytes a step (bound 6.8 ms);
``--config.search.passes=loop`` compiles in about 1 minute for a sixth more bytes a step;
``--config.run.profile_step=20`` writes a profiler trace of steps 20-22 into the run directory.
"""

from jaxnas.config import search_defaults


def get_config(arg: str = "first"):
    c = search_defaults()
    c.data.name = "cifar10"
    c.search.order = arg
    return c
