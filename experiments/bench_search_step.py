"""Time the jit-compiled DARTS search step on random data.

    python experiments/bench_search_step.py --order all --batch 32 --C 16 --layers 8 --image 32
    python experiments/bench_search_step.py --method all --batch 32     # every DARTS-family method
    python experiments/bench_search_step.py --space nb201 --layers 5 --order second   # NAS-Bench-201, N=5
    python experiments/bench_search_step.py --order first --batch 64 --dtype bfloat16 # mixed precision (GPU/TPU)

``--method NAME`` times that method's step (``jaxnas.methods``: its relaxation, mixed-op variants,
regularizer, perturbation and order, at the schedules' first-epoch values) on the DARTS space;
``--method all`` runs each in its own process. The first line printed describes the machine.

Prints, per order: compile time, median step time, images/s (train + val images
per step), the process's peak resident memory, and XLA's own estimate of the
step's temporary buffers. ``--order all`` runs each order in its own process so
peak memory is per order. Add ``--profile DIR`` for a jax.profiler trace.

``cores_busy`` is the process's CPU time during the timed steps over their wall time times the
core count (1.0: every core busy throughout). Peak RSS (`peak_rss_gb`) includes XLA's own memory while compiling; `peak_rss_steps_gb` is the
steps' own peak (the mark is reset after compiling, on Linux); ``xla_temp_gb`` is the step's
own temporary buffers. ``--cache DIR`` turns on the persistent compilation cache.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from benchutil import machine, peak_rss_gb, reset_peak_rss

from jaxnas import hugepages


def bench(args) -> dict:
    import jax
    import numpy as np
    from flax import nnx

    from jaxnas import config as config_lib
    from jaxnas import parallel
    from jaxnas import methods, optim
    from jaxnas.nn import DTYPES
    from jaxnas.search import bilevel as B
    from jaxnas.spaces import build_supernet

    if args.cache:
        jax.config.update("jax_compilation_cache_dir", args.cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    cfg = config_lib.method_config(args.method, "darts") if args.method else config_lib.search_defaults()
    order = cfg.search.order if args.method else args.order
    if cfg.method.stages:  # a progressive search: time its last stage's supernet (every op kept)
        from jaxnas.methods.progressive import stages

        cfg.space.partial_channels = stages(cfg.method.stages, cfg.search.epochs)[-1].partial
        cfg.method.stages = ()
    if args.space == "nb201":  # NAS-Bench-201's supernet: --layers is N, the cells of each of its 3 stages
        cfg.space = config_lib.space_group("nb201")
        cfg.space.C, cfg.space.cells_per_stage = args.C, args.layers
    else:
        cfg.space.C, cfg.space.layers = args.C, args.layers
        if args.ops != "darts" or cfg.space.ops == "auto":
            cfg.space.ops = args.ops
        cfg.space.allow_no_normal_cell = args.layers < 3
    model = build_supernet(cfg.space, (args.image, args.image, 3), 10, nnx.Rngs(0), kernels=args.kernels)
    schedule = optim.epoch_cosine_lr(cfg.optim.lr, cfg.optim.lr_min, 50, 1000)
    w_tx, a_tx = optim.weight_optimizer(cfg.optim, schedule), optim.alpha_optimizer(cfg.optim)
    graphdef, state = B.init_state(model, w_tx, a_tx)
    mesh = parallel.make_mesh(args.devices)
    parts = methods.parts(cfg.method, 50, 1000)
    parts = parts._replace(arch_start_step=0)  # time the architecture step too
    model.eval()
    graphdef_eval = nnx.split(model)[0]  # SDARTS-ADV attacks in evaluation mode
    step = parallel.jit_data_parallel(B.make_search_step(graphdef, w_tx, a_tx, schedule, order, cfg.optim, parts,
                                                         graphdef_eval, DTYPES[args.dtype], args.passes), mesh, 2,
                                        fusion_autotune=args.fusion_autotune)
    state = parallel.put_replicated(state, mesh)
    rng = np.random.default_rng(0)
    batch = lambda: parallel.put_batch({  # noqa: E731
        "x": rng.normal(size=(args.batch, args.image, args.image, 3)).astype(np.float32),
        "y": rng.integers(0, 10, args.batch).astype(np.int32)}, mesh)
    tb, vb = batch(), batch()
    t = time.perf_counter()
    compiled = step.lower(state, tb, vb).compile()
    compile_s = time.perf_counter() - t
    mem = compiled.memory_analysis()
    rss_compile = peak_rss_gb()  # the reset below clears the kernel's mark
    rss_reset = reset_peak_rss()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    for _ in range(args.warmup):
        state, m = compiled(state, tb, vb)
    jax.block_until_ready(m)
    if args.profile:
        jax.profiler.start_trace(args.profile, create_perfetto_trace=True)
        os.makedirs(args.profile, exist_ok=True)
        with open(os.path.join(args.profile, "step.hlo.txt"), "w") as f:  # profile_summary names the FFI calls
            f.write(compiled.as_text())
    times = []
    cpu0 = os.times()
    for _ in range(args.steps):
        t = time.perf_counter()
        state, m = compiled(state, tb, vb)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    cpu1 = os.times()
    if args.profile:
        jax.profiler.stop_trace()
    busy = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / (sum(times) * (os.cpu_count() or 1))
    median = statistics.median(times)
    return {
        "method": args.method or "darts", "space": args.space, "order": order, "dtype": args.dtype, "passes": args.passes, "batch": args.batch, "C": args.C, "layers": args.layers, "image": args.image,
        "devices": mesh.devices.size, "device_kind": jax.devices()[0].device_kind,
        "compile_s": round(compile_s, 1), "median_step_s": round(median, 3),
        "images_per_s": round(2 * args.batch / median, 1),
        "cores_busy": round(busy, 2),
        "peak_rss_gb": max(rss_compile, peak_rss_gb()),
        "peak_rss_steps_gb": peak_rss_gb() if rss_reset else None,
        "xla_temp_gb": round(getattr(mem, "temp_size_in_bytes", 0) / 1e9, 2) if mem else None,
        "gflops_per_step": round(cost.get("flops", 0) / 1e9, 1) if cost else None,
        "jax": jax.__version__,
    }


def main() -> None:
    hugepages.reexec()  # as the jaxnas command does (jaxnas/hugepages.py)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--order", default="all", choices=["first", "second", "second_fd", "all"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--C", type=int, default=16)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--image", type=int, default=32)
    p.add_argument("--space", default="darts", choices=["darts", "nb201"])
    p.add_argument("--ops", default="darts")
    p.add_argument("--kernels", default="auto", help="auto, native, dense, shift or grouped (jaxnas/kernels)")
    p.add_argument("--devices", type=int, default=0)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--profile", default="")
    p.add_argument("--fusion-autotune", action="store_true",
                   help="GPU: keep XLA's fusion autotuner on (run.fusion_autotune; jaxnas turns it off)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="search.dtype")
    p.add_argument("--passes", default="unrolled", choices=["unrolled", "loop"], help="search.passes (first order)")
    p.add_argument("--cache", default="", help="persistent compilation cache directory")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", default="", help="a DARTS-family method (jaxnas.methods), or all")
    args = p.parse_args()
    if "--child" not in sys.argv:
        print(json.dumps({"machine": machine()}), flush=True)
    if args.method == "all":
        from jaxnas.methods import METHODS

        for name in METHODS:
            argv = [a for a in sys.argv[1:] if not a.startswith("--method") and a != "all"]
            subprocess.run([sys.executable, os.path.abspath(__file__), "--method", name, "--child"] + argv, check=True)
        return
    if args.method:
        print(json.dumps(bench(args)), flush=True)
        return
    if args.order != "all":
        print(json.dumps(bench(args)), flush=True)
        return
    for order in ("first", "second", "second_fd"):
        argv = [a for a in sys.argv[1:] if not a.startswith("--order")]
        if "all" in argv:
            argv.remove("all")
        subprocess.run([sys.executable, os.path.abspath(__file__), "--order", order, "--child"] + argv, check=True)


if __name__ == "__main__":
    main()
