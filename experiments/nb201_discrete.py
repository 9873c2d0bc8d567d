"""Random search, greedy search and regularized evolution on NAS-Bench-201 with tabular
evaluation, many seeds each; prints mean +/- std of the found cell's test accuracy beside
the benchmark paper's numbers (Dong & Yang, ICLR 2020, Table 5: 500 runs each, CIFAR-10).

    # with the benchmark exported to CSV (one row per cell: arch string or index, the 12-epoch
    # validation accuracy as the search signal, the final test accuracy, the 12-epoch train time):
    python experiments/nb201_discrete.py --table nb201_cifar10.csv --score-column val_acc_12ep \\
        --test-column test_acc --cost-column time_12ep --budget-seconds 12000 --runs 500

    # anywhere, on a MADE-UP table (not benchmark data; checks the pipeline, not the numbers):
    python experiments/nb201_discrete.py --synthetic --runs 100 --budget-evals 100

The benchmark's own searches count a simulated time budget (the sum of the 12-epoch training
times of the cells evaluated); ``--budget-seconds`` with ``--cost-column`` does the same, and
only then is the published column printed (its figures are for a 12000 s budget). The column
names above are the ones configs/nb201_table.py and the README use. Greedy is deterministic
(one run); ``--greedy-sweeps`` passes over the 6 edges (2 find the best cell of a table whose
edges do not interact). Spreads are the sample standard deviation (ddof=1), as in the papers.
NAS-Bench-201's data is not redistributable here: export it to CSV with its own API.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
from ml_collections import ConfigDict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxnas import config as config_lib  # noqa: E402
from jaxnas.errors import JaxnasError  # noqa: E402
from jaxnas.evaluators import TableEvaluator  # noqa: E402
from jaxnas.search import DISCRETE_STRATEGIES, discrete  # noqa: E402
from jaxnas.spaces import discrete_space  # noqa: E402

import made_up_table  # noqa: E402  (experiments/made_up_table.py, beside this script)

PUBLISHED = {"random": "93.70 +/- 0.36", "evolution": "93.92 +/- 0.30", "greedy": "(not in the paper)"}
OPTIMUM = "94.37"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", default="")
    p.add_argument("--synthetic", action="store_true", help="use a made-up table (pipeline check only)")
    p.add_argument("--arch-column", default="arch")
    p.add_argument("--score-column", default="val_acc")
    p.add_argument("--test-column", default="test_acc")
    p.add_argument("--cost-column", default="")
    p.add_argument("--budget-evals", type=int, default=0)
    p.add_argument("--budget-seconds", type=float, default=0.0)
    p.add_argument("--runs", type=int, default=500)
    p.add_argument("--strategies", default="random,greedy,evolution")
    p.add_argument("--population", type=int, default=50)
    p.add_argument("--tournament", type=int, default=10)
    p.add_argument("--greedy-sweeps", type=int, default=1, help="greedy's passes over all decisions")
    args = p.parse_args()
    try:
        if args.synthetic:
            args.table = made_up_table.write(os.path.join(tempfile.mkdtemp(), "synthetic.csv"), seed=0)
            args.cost_column = args.cost_column or "train_time"
        if not args.table:
            raise JaxnasError("give --table <csv> (NAS-Bench-201 exported to CSV) or --synthetic")
        cfg = ConfigDict({"budget_evals": args.budget_evals, "budget_seconds": args.budget_seconds,
                          "population": args.population, "tournament": args.tournament,
                          "greedy_sweeps": args.greedy_sweeps})
        discrete.check_budget(cfg)
        space = discrete_space(_nb201_cfg())
        t0 = time.time()
        table = TableEvaluator(args.table, space, args.arch_column, args.score_column, args.test_column, "",
                               args.cost_column)
        best_key, best_val = table.optimum()
        print(f"table {args.table}: {len(table.rows)} cells read in {time.time() - t0:.1f} s; best by "
              f"{args.score_column}: {best_key} (test {table.rows[best_key]['test']:.2f})")
        print(f"budget: {args.budget_evals or 'unlimited'} evaluations, {args.budget_seconds or 'unlimited'} s "
              f"(cost column {args.cost_column or 'none'}); {args.runs} runs per strategy\n")
        time_budget = bool(args.budget_seconds and args.cost_column)
        print(f"{'strategy':<10} {'test accuracy (mean +/- std)':>30} {'found best':>11} {'evals':>7}   "
              f"{'published (12000 s budget)' if time_budget else ''}")
        for name in args.strategies.split(","):
            tests, hits, evals = [], 0, []
            runs = 1 if name == "greedy" else args.runs  # greedy is deterministic
            for seed in range(runs):
                strat = DISCRETE_STRATEGIES[name](space, cfg, seed)
                state = discrete.search(strat, table, space, args.budget_evals, args.budget_seconds)
                tests.append(table.rows[state["best"]]["test"])
                hits += state["best"] == best_key
                evals.append(state["evals"])
            std = np.std(tests, ddof=1) if len(tests) > 1 else 0.0
            print(f"{name:<10} {np.mean(tests):>22.2f} +/- {std:.2f} {hits / runs:>10.0%} "
                  f"{np.mean(evals):>7.0f}   {PUBLISHED.get(name, '') if time_budget else ''}")
        print(f"\noptimum of the benchmark (published): {OPTIMUM}")
    except JaxnasError as e:
        print(f"nb201_discrete: error: {e}", file=sys.stderr)
        return 2
    return 0


def _nb201_cfg():
    return config_lib.space_group("nb201")


if __name__ == "__main__":
    sys.exit(main())
