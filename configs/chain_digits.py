"""Chain-structured search on the embedded 8x8 digits, each architecture trained from scratch.

    jaxnas search --config configs/chain_digits.py:evolution   # or :random, :greedy

Blocks: convolutions (8/16 filters, 1x1/3x3), max/avg pooling, fully connected (64),
parallel 1x1+3x3 convolutions merged by sum or concatenation; up to 4 blocks. Each
proposal trains 2 epochs on search-train and is scored on search-val; the best is
retrained for 5 epochs on all training data and reported on test (accuracy, macro-F1).
Budget: 20 evaluations. Measured on 2 CPU cores (2026-11-29, seed 2, :evolution): 52 s in
all; best search-val 0.962 for concat(1x1,3x3)-16 > concat(1x1,3x3)-16 > concat(1x1,3x3)-8,
test accuracy 0.9805 and macro-F1 0.9807 after retraining.
"""

from jaxnas.config import search_defaults


def get_config(arg=None):
    c = search_defaults()
    c.search.strategy = arg or "evolution"
    c.data.name = "digits"
    c.space.name = "chain"
    c.space.filters, c.space.kernels, c.space.units, c.space.max_depth = "8,16", "1,3", "64", 4
    c.evaluator.kind, c.evaluator.epochs, c.evaluator.final_epochs = "train", 2, 5
    c.discrete.budget_evals, c.discrete.population, c.discrete.tournament = 20, 8, 3
    c.run.log_every = 1
    return c
