"""Meta-Weight-Net's published CIFAR-10 benchmarks through ``jaxnas optimize``, for a GPU user.

    python experiments/reweight_cifar.py noisy                 # 40% uniform noise, WRN-28-10, MW-Net
    python experiments/reweight_cifar.py longtail --factor 100 # long-tailed CIFAR-10, ResNet-32, MW-Net
    python experiments/reweight_cifar.py noisy --method l2rw --print-only   # the command, not run

Needs CIFAR-10 prepared for TFDS once (``pip install 'jaxnas[prepare]'``, then
``python -c "import tensorflow_datasets as tfds; tfds.builder('cifar10').download_and_prepare()"``).
The setting follows ``MW-Net.py``: 1,000 clean meta images (here: the validation split, drawn
stratified from the training set), SGD momentum 0.9, lr 0.1, weight decay 5e-4, batch 100,
random crop with 4-pixel padding and flips; noise ``uniform_mix`` at 0.4 (36% of labels wrong,
MW-Net's ``unif``), never on val or test. Where jaxnas differs: a cosine learning rate instead of
MW-Net's steps at epochs 80 and 100, crop padding with zeros (MW-Net: reflection), early stopping
on the clean validation split for both models, and the baseline trained with the same schedule.
The published numbers are printed beside the run's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

PUBLISHED = {  # MW-Net's test accuracy (%), Shu et al. 2019: 40% uniform noise on WRN-28-10; long-tailed on ResNet-32
    ("noisy", None): "89.27 +- 0.28",
    ("longtail", 200.0): "68.91", ("longtail", 100.0): "75.21", ("longtail", 50.0): "80.06",
}


def run_name(args) -> str:
    return f"mwnet-cifar10-{args.setting}{'' if args.setting == 'noisy' else int(args.factor)}-{args.method}"


def command(args) -> list[str]:
    noisy = args.setting == "noisy"
    over = {
        "data.name": "cifar10", "data.val_fraction": 1000 / 50000, "seed": args.seed,
        "data.corrupt.kind": "uniform_mix" if noisy else "longtail",
        "data.corrupt.rate": 0.4 if noisy else 0.0, "data.corrupt.factor": 1.0 if noisy else args.factor,
        "optimize.tune": "gradient", "optimize.hyper.method": args.method, "optimize.hyper.meta_batch": 100,
        "optimize.baseline.model": "wrn:28-10" if noisy else "resnet:32",
        "optimize.baseline.optimizer": "sgd", "optimize.baseline.lr": 0.1, "optimize.baseline.momentum": 0.9,
        "optimize.baseline.weight_decay": 5e-4, "optimize.baseline.batch_size": 100,
        "optimize.baseline.epochs": args.epochs, "optimize.baseline.augment": "crop_flip",
        "compare.refit": "train", "compare.seeds": args.seeds,
        "run.name": run_name(args), "run.workdir": args.workdir,
    }
    return ["optimize"] + [f"--config.{k}={v}" for k, v in over.items()] + args.extra


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("setting", choices=["noisy", "longtail"])
    p.add_argument("--factor", type=float, default=100.0, choices=[50.0, 100.0, 200.0])
    p.add_argument("--method", default="mwnet", choices=["mwnet", "l2rw", "hypergrad"])
    p.add_argument("--epochs", type=int, default=120)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", default="runs")
    p.add_argument("--print-only", action="store_true")
    args, args.extra = p.parse_known_args(argv)
    cmd = command(args)
    print("jaxnas " + " ".join(cmd))
    if args.print_only:
        return 0
    from jaxnas import cli

    code = cli.main(cmd)
    if code:
        return code
    report = json.load(open(os.path.join(args.workdir, run_name(args), "report.json")))
    published = PUBLISHED[(args.setting, None if args.setting == "noisy" else args.factor)]
    print(f"\ntest accuracy (%): jaxnas baseline {100 * report['baseline']['over_seeds']['accuracy_mean']:.2f}, "
          f"jaxnas {args.method} {100 * report['optimized']['over_seeds']['accuracy_mean']:.2f}; "
          f"MW-Net as published: {published}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
