"""The default ``jaxnas search``: a small DARTS search on the embedded 8x8 digits.

    jaxnas search --config configs/darts_digits_tiny.py

3 cells of C=8 over the 8 DARTS ops, 6 epochs of 11 steps at batch 64. On a
2-core CPU it took 5 min 46 s with a cold compilation cache; epoch 1 took 120 s,
most of that compiling. Search-val accuracy ended at 0.975 (seed 2).
"""

from jaxnas.config import tiny_search


def get_config(arg=None):
    return tiny_search()
