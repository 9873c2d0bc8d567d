"""Every DARTS-family method on NAS-Bench-201, several seeds, the found cells looked up in a table.

    # the benchmark's protocol (one GPU; CIFAR-10 from TFDS, a table exported from NAS-Bench-201)
    python experiments/nb201_methods.py --table nb201_cifar10.csv --data-dir ~/tensorflow_datasets

    # the reduced CPU run (docs/methods.md): the embedded digits, a 1-cell-per-stage supernet at C=8,
    # 4 epochs, looked up in a MADE-UP table (experiments/made_up_table.py): it checks the pipeline, not the paper
    python experiments/nb201_methods.py --reduced

Each method runs ``configs/<method>_nb201.py`` (the official defaults) for each seed; the found cell
is looked up in ``--table`` (columns ``arch`` and ``test_acc``, as ``configs/nb201_table.py``) and the
mean +- std (ddof=1) printed beside the published CIFAR-10 test accuracy. The supernet's BN is
non-affine with running statistics tracked (AutoDL's ``track_running_stats=True``); they are used only
for the epoch-end search-val score, never by the architecture step. Results go to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import jax

from jaxnas import cli
from jaxnas import config as config_lib
from jaxnas.errors import JaxnasError
from jaxnas.methods import METHODS
from jaxnas.search import get_strategy

import made_up_table  # experiments/made_up_table.py, beside this script

# NAS-Bench-201 CIFAR-10 test accuracy of the found cells, as published (DrNAS README; GDAS, beta-DARTS and
# DARTS- from their papers; see docs/methods.md)
PUBLISHED = {"darts": "54.30 +- 0.00", "gdas": "93.61", "snas": "92.77 +- 0.83", "pcdarts": "93.41 +- 0.30",
             "drnas": "94.36 +- 0.00", "betadarts": "94.36", "darts_minus": "93.80", "fairdarts": "-",
             "sdarts_rs": "-", "sdarts_adv": "-"}
OPTIMUM = 94.37


def config_for(method: str, seed: int, args) -> object:
    cfg = config_lib.method_config(method, "nb201")
    cfg.seed = seed
    cfg.data.name, cfg.data.data_dir = args.data, args.data_dir
    cfg.evaluator.table = args.table
    cfg.run.progress = False
    if args.reduced:
        cfg.space.C, cfg.space.cells_per_stage = 8, 1
        cfg.search.epochs, cfg.search.batch_size, cfg.search.max_steps_per_epoch = args.epochs or 4, 32, 12
        cfg.search.eval_examples = 256
        cfg.method.arch_start_epoch = min(cfg.method.arch_start_epoch, 1)
    elif args.epochs:
        cfg.search.epochs = args.epochs
    return cfg


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="all", help="comma-separated method names, or all")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--table", default="", help="CSV with columns arch and test_acc (required without --reduced)")
    p.add_argument("--data", default="cifar10")
    p.add_argument("--data-dir", default="")
    p.add_argument("--epochs", type=int, default=0, help="override every method's epochs (0: its own)")
    p.add_argument("--reduced", action="store_true", help="the CPU run: digits, small supernet, made-up table")
    p.add_argument("--out", default="nb201_methods.json")
    args = p.parse_args()
    names = list(METHODS) if args.methods == "all" else args.methods.split(",")
    try:
        for n in names:
            METHODS.lookup(n)
        seeds = [int(s) for s in args.seeds.split(",")]
    except (JaxnasError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if args.reduced:
        args.data = "digits"
        if not args.table:
            args.table = made_up_table.write(os.path.join(tempfile.mkdtemp(), "made_up_nb201.csv"))
            print(f"looking cells up in a MADE-UP table ({args.table}): the numbers below test the pipeline only")
    elif not args.table:
        print("error: --table is required (a NAS-Bench-201 CSV with arch and test_acc columns)", file=sys.stderr)
        sys.exit(2)

    cli._setup_jax("")  # the persistent compilation cache: seeds after the first skip compiling
    print(f"{jax.device_count()} x {jax.devices()[0].device_kind}, seeds {seeds}", flush=True)
    results = {}
    for name in names:
        accs, cells, t0 = [], [], time.time()
        for seed in seeds:
            try:
                out = get_strategy("darts")(config_for(name, seed, args), None, log=lambda *_: None)
            except JaxnasError as e:
                print(f"error: {name} seed {seed}: {e}", file=sys.stderr)
                sys.exit(2)
            accs.append(float(out["result"]["test"]["accuracy"]))
            cells.append(out["result"]["arch"])
        mean = statistics.mean(accs)
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        results[name] = {"test_acc": accs, "mean": mean, "std": std, "cells": cells,
                         "seconds": round(time.time() - t0, 1), "published": PUBLISHED.get(name, "-")}
        print(f"{name:12s} {mean:6.2f} +- {std:5.2f}   published {PUBLISHED.get(name, '-'):>15s}   "
              f"{results[name]['seconds']:.0f}s   {cells[0]}", flush=True)
    print(f"optimum of NAS-Bench-201 CIFAR-10: {OPTIMUM}")
    with open(args.out, "w") as f:
        json.dump({"args": vars(args), "results": results}, f, indent=2)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
