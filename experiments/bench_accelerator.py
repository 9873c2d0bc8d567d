"""What a GPU or TPU user can expect before any run on one: each step compiled for the target here.

    python experiments/bench_accelerator.py --target h200                  # every step at the papers' sizes
    python experiments/bench_accelerator.py --target tpu-v5e --steps darts-first,retrain
    python experiments/bench_accelerator.py --target h200 --size test     # the CI sizes, in minutes
    python experiments/bench_accelerator.py --target h200 --lower-only    # FLOPs of every step, no compile

Needs the target's plugin (``pip install -e '.[accel]'``, Python >= 3.12). Each step compiles in its own
process (``python -m jaxnas.targets``); one JSON line per step gives the compile time, XLA's memory
(arguments + temporaries), FLOPs and bytes per step, the roofline lower bound of one step at the
target's peak (``jaxnas.targets.Report.roofline_s``) and the implied lower bound of a 50-epoch
CIFAR-10 search: DARTS searches on 25,000 train + 25,000 val images at batch 64, 391 steps an epoch
(retraining: 50,000 images at batch 96, 521 steps). These are bounds from the compiled program,
not timings: no device ran them.

Steps: darts-first, darts-first-loop (its passes as one loop, ``search.passes=loop``), darts-second
(DARTS's 8-cell supernet, C=16, batch 64), nb201-first (N=5,
C=16), method-<name> for each DARTS-family preset (its own order), retrain (DARTS_V2, C=36, 20
cells, batch 96).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

EPOCHS = 50
STEPS = {"search": 25_000 // 64 + 1, "retrain": 50_000 // 96 + 1}


def step_args() -> dict[str, list[str]]:
    from jaxnas.methods import METHODS

    out = {"darts-first": ["--kind", "search", "--order", "first"],
           "darts-first-loop": ["--kind", "search", "--order", "first", "--passes", "loop"],
           "darts-second": ["--kind", "search", "--order", "second"],
           "nb201-first": ["--kind", "search", "--space", "nb201", "--order", "first"]}
    out.update({f"method-{m}": ["--kind", "search", "--method", m] for m in METHODS if m != "darts"})
    out["retrain"] = ["--kind", "retrain"]
    return out


def main() -> None:
    from jaxnas import targets

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="h200", help=", ".join(targets.NAMES))
    p.add_argument("--size", default="paper", choices=["paper", "test"])
    p.add_argument("--steps", default="all", help="comma-separated names (see the docstring), or all")
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--timeout", type=int, default=3600, help="seconds a compile may take")
    p.add_argument("--lower-only", action="store_true", help="FLOPs per step from the lowered program, no compile")
    p.add_argument("--fusion-autotune", action="store_true",
                   help="GPU: keep XLA's fusion autotuner on (run.fusion_autotune; jaxnas turns it off)")
    args = p.parse_args()
    target = targets.get(args.target)
    missing = targets.available(args.target)
    if missing:
        sys.exit(f"bench_accelerator: {missing}")
    known = step_args()
    names = list(known) if args.steps == "all" else args.steps.split(",")
    for name in names:
        if name not in known:
            sys.exit(f"bench_accelerator: unknown step {name!r}; allowed: {', '.join(known)}")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    env.pop("XLA_FLAGS", None)
    print(json.dumps({"target": target.name, "description": target.description, "size": args.size,
                      "host_cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}), flush=True)
    for name in names:
        cmd = [sys.executable, "-m", "jaxnas.targets", "--target", args.target, "--size", args.size,
               "--devices", str(args.devices), *known[name], *(["--lower-only"] if args.lower_only else []),
               *(["--fusion-autotune"] if args.fusion_autotune and known[name][1] in ("search", "retrain") else [])]
        t = time.perf_counter()
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            print(json.dumps({"name": name, "failed": f"compile over {args.timeout} s"}), flush=True)
            continue
        wall = time.perf_counter() - t
        if out.returncode:
            failed = [ln for ln in out.stderr.splitlines() if "Check failed" in ln] or out.stderr.splitlines()[-1:]
            print(json.dumps({"name": name, "failed": out.returncode, "message": failed[:1]}), flush=True)
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        steps = STEPS["retrain" if name == "retrain" else "search"] * EPOCHS
        r.pop("library_calls", None)
        bound = {"epochs50_bound_min": round(r["roofline_ms"] * steps / 6e4, 2)} if "roofline_ms" in r else {}
        print(json.dumps({"name": name, **r, "process_s": round(wall, 1), **bound}), flush=True)


if __name__ == "__main__":
    main()
