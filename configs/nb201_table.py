"""Discrete search on NAS-Bench-201 with tabular evaluation (a CSV you export from the benchmark).

    jaxnas search --config configs/nb201_table.py:evolution --config.evaluator.table=nb201_cifar10.csv
    jaxnas search --config configs/nb201_table.py:random    --config.evaluator.table=nb201_cifar10.csv
    jaxnas search --config configs/nb201_table.py:greedy    --config.evaluator.table=nb201_cifar10.csv

The benchmark paper's protocol: the search signal is the 12-epoch validation accuracy,
the budget a simulated 12000 s (the sum of the 12-epoch training times of the cells
evaluated), and the reported number the found cell's final test accuracy. Name your
CSV's columns with --config.evaluator.{arch,score,test,cost}_column. Published
(CIFAR-10, 500 runs): random 93.70 +/- 0.36, REA 93.92 +/- 0.30, optimum 94.37;
experiments/nb201_discrete.py runs many seeds and prints these side by side.
"""

from jaxnas.config import search_defaults


def get_config(arg=None):
    c = search_defaults()
    c.search.strategy = arg or "evolution"
    c.space.name = "nb201"
    c.evaluator.kind = "table"
    c.evaluator.arch_column, c.evaluator.score_column = "arch", "val_acc_12ep"
    c.evaluator.test_column, c.evaluator.cost_column = "test_acc", "time_12ep"
    c.discrete.budget_evals, c.discrete.budget_seconds = 0, 12000.0
    c.discrete.population, c.discrete.tournament = 50, 10  # Real et al. / NAS-Bench-201's REA
    return c
