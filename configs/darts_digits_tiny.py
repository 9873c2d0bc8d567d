"""The default ``jaxnas search``: a small DARTS search on the embedded 8x8 digits.

    jaxnas search --config configs/darts_digits_tiny.py

3 cells of C=8 over the 8 DARTS ops, 6 epochs of 11 steps at batch 64. On a
2-core CPU (2026-11-30, jaxnas's native CPU kernels, warm caches) epoch 1 took 17 s,
most of that compiling, later epochs 1.9-2.4 s. Search-val accuracy ended at 0.978
(seed 2).
"""

from jaxnas.config import tiny_search


def get_config(arg=None):
    return tiny_search()
