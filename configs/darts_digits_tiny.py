"""The default ``jaxnas search``: a small DARTS search on the embedded 8x8 digits.

    jaxnas search --config configs/darts_digits_tiny.py

3 cells of C=8 over the 8 DARTS ops, 6 epochs of 11 steps at batch 64. On a
2-core CPU it takes about 4 minutes (about 1 minute of that compiling); the
search-val accuracy ends around 0.95 (see README for a measured run).
"""

from jaxnas.config import tiny_search


def get_config(arg=None):
    return tiny_search()
