"""Compile one jaxnas step for a target without its device and print what XLA built, as one JSON line.

    python -m jaxnas.targets --target h200 --kind search --order first             # test size
    python -m jaxnas.targets --target h200 --kind search --size paper --order second
    python -m jaxnas.targets --target tpu-v5e --kind retrain --size paper --hlo step.hlo.txt

Exit status: 0 compiled; 2 bad arguments (one line); 3 the target's plugin is not installed. A
fatal abort inside XLA kills this process (the caller sees its signal), which is why tests and
benchmarks compile each step in its own process.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    from jaxnas import targets

    p = argparse.ArgumentParser(prog="python -m jaxnas.targets", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", required=True, help=", ".join(targets.NAMES))
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--kind", default="search", help="search, retrain or optimize")
    p.add_argument("--size", default="test", help="test or paper")
    p.add_argument("--space", default="darts")
    p.add_argument("--order", default="")
    p.add_argument("--method", default="")
    p.add_argument("--batch", type=int, default=0)
    p.add_argument("--layers", type=int, default=0)
    p.add_argument("--C", type=int, default=0)
    p.add_argument("--ops", default="", help="search: the candidate ops (space.ops), e.g. none,sep_conv_3x3")
    p.add_argument("--kernels", default="auto")
    p.add_argument("--reweight", default="", help="optimize: a reweighted fit's step, l2rw, mwnet or hypergrad")
    p.add_argument("--model", default="cnn", help="optimize: the model spec, e.g. cnn, resnet:32, wrn:28-10")
    p.add_argument("--optimizer", default="adamw", help="optimize: sgd or adamw")
    p.add_argument("--dtype", default="float32", help="search and retrain: float32 or bfloat16 (search.dtype, train.dtype)")
    p.add_argument("--passes", default="unrolled", help="search, first order: unrolled or loop (search.passes)")
    p.add_argument("--fusion-autotune", action="store_true",
                   help="GPU: keep XLA's fusion autotuner on (run.fusion_autotune; jaxnas turns it off)")
    p.add_argument("--hlo", default="", help="write the compiled HLO here")
    p.add_argument("--lower-only", action="store_true",
                   help="stop after lowering: FLOPs and lowering time, no compile (minutes less at paper size)")
    args = p.parse_args(argv)
    targets.prepare_environment()
    from jaxnas.errors import JaxnasError
    from jaxnas.targets import steps

    try:
        targets.get(args.target)
        missing = targets.available(args.target)
        if missing:
            print(f"jaxnas: target {args.target}: {missing}", file=sys.stderr)
            return 3
        kw = {"search": dict(space=args.space, order=args.order, method=args.method, layers=args.layers, C=args.C,
                                ops=args.ops, fusion_autotune=args.fusion_autotune, dtype=args.dtype,
                                passes=args.passes),
              "retrain": dict(dtype=args.dtype, fusion_autotune=args.fusion_autotune),
              "optimize": dict(reweight=args.reweight, model=args.model, optimizer=args.optimizer,
                               fusion_autotune=args.fusion_autotune)}.get(args.kind, {})
        built = steps.build(args.kind, args.target, args.devices, size=args.size, batch=args.batch,
                            kernels=args.kernels, **kw)
        if args.lower_only:
            import time

            t = time.perf_counter()
            lowered = built.jitted.lower(*built.args)
            summary = {"target": args.target, "devices": args.devices, "lower_s": round(time.perf_counter() - t, 1),
                       "gflops": round(targets.flops(lowered, args.devices) / 1e9, 3)}
        else:
            report = targets.compile(built.jitted, built.args, args.target, args.devices)
            summary = report.summary()
    except JaxnasError as e:
        print(f"jaxnas: {e}", file=sys.stderr)
        return 2
    import jax

    if args.hlo and not args.lower_only:
        with open(args.hlo, "w") as f:
            f.write(report.hlo)
    print(json.dumps({"step": built.name, "kernels": built.kernels, **summary, "jax": jax.__version__}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
