"""The DARTS paper pipeline in one command: search, derive, retrain, test (CIFAR-10).

    python experiments/darts_paper.py --order second            # the paper's settings (GPU-days)
    python experiments/darts_paper.py --order first --tiny      # the whole pipeline on digits in minutes

Runs ``jaxnas search`` with configs/darts_cifar10.py, then ``jaxnas train`` on the
genotype it wrote, and prints the test error beside the published numbers
(docs/darts-paper.md). Extra ``--config.*`` overrides go to both stages.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys

JAXNAS = [sys.executable, "-m", "jaxnas"]
PUBLISHED = {"first": "3.00 +/- 0.14 % test error, 3.3M params", "second": "2.76 +/- 0.09 % test error, 3.3M params"}


def newest(workdir: str, kind: str) -> str:
    runs = sorted(glob.glob(os.path.join(workdir, f"*-{kind}-*")), key=os.path.getmtime)
    if not runs:
        sys.exit(f"no {kind} run found in {workdir}")
    return runs[-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--order", default="second", choices=["first", "second", "second_fd"])
    p.add_argument("--workdir", default="runs")
    p.add_argument("--tiny", action="store_true", help="digits, few epochs: check the pipeline end to end")
    args, extra = p.parse_known_args()
    here = os.path.dirname(os.path.abspath(__file__))
    configs = os.path.join(here, "..", "configs")
    common = [f"--config.run.workdir={args.workdir}"] + extra
    if args.tiny:
        search = JAXNAS + ["search", f"--config.search.order={args.order}", "--config.search.epochs=2"]
        train = JAXNAS + ["train", "--config.train.epochs=3"]
    else:
        search = JAXNAS + ["search", "--config", os.path.join(configs, f"darts_cifar10.py:{args.order}")]
        train = JAXNAS + ["train", "--config", os.path.join(configs, "darts_cifar10_train.py")]
    subprocess.run(search + common, check=True)
    search_dir = newest(args.workdir, "search")
    subprocess.run(train + ["--genotype", os.path.join(search_dir, "genotype.json")] + common, check=True)
    train_dir = newest(args.workdir, "train")
    with open(os.path.join(train_dir, "test_metrics.json")) as f:
        m = json.load(f)
    print(f"search run: {search_dir}\ntrain run:  {train_dir}")
    print(f"jaxnas DARTS ({args.order} order): {100 * (1 - m['accuracy']):.2f} % test error, "
          f"{m['params'] / 1e6:.2f}M params | published: {PUBLISHED.get(args.order, 'n/a')}")


if __name__ == "__main__":
    main()
