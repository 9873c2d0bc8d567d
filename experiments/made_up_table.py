"""A MADE-UP NAS-Bench-201-style table, for tests and demos of the table evaluator; never benchmark data.

``write(path, ops, seed, noise)`` scores every cell over ``ops`` as 80% plus a random per-(edge, op)
effect and small pairwise noise, and writes the columns the table evaluator reads. Used by
``experiments/nb201_discrete.py --synthetic``, ``experiments/nb201_methods.py`` and the tests.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Sequence

import numpy as np

from jaxnas.spaces import nb201


def write(path: str, ops: Sequence[str] = nb201.NB201_OPS, seed: int = 0, noise: float = 0.2) -> str:
    """Write a MADE-UP tabular benchmark over the cells with these ops (for tests and demos, not
    NAS-Bench-201 data): score = 80 + a per-(edge, op) effect + small pairwise noise, in percent,
    with columns arch, index, val_acc, test_acc, f1, train_time."""
    rng = np.random.default_rng(seed)
    effect = rng.normal(0, 2.0, size=(len(nb201.EDGES), len(ops)))
    pair = rng.normal(0, noise, size=(len(nb201.EDGES), len(ops), len(nb201.EDGES), len(ops)))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "index", "val_acc", "test_acc", "f1", "train_time"])
        for combo in itertools.product(range(len(ops)), repeat=len(nb201.EDGES)):
            arch = nb201.NB201Arch(tuple(ops[i] for i in combo))
            val = 80 + sum(effect[e, o] for e, o in enumerate(combo)) + \
                sum(pair[e, o, e2, o2] for e, o in enumerate(combo) for e2, o2 in enumerate(combo) if e2 > e)
            test = val + rng.normal(0, 0.1)
            w.writerow([arch.to_str(), nb201.index_of(arch), f"{val:.4f}", f"{test:.4f}", f"{test / 100:.4f}",
                        f"{100 + 10 * sum(ops[o].startswith('nor_conv') for o in combo):.1f}"])
    return path
