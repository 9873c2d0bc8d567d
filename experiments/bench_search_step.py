"""Time the jit-compiled DARTS search step on random data.

    python experiments/bench_search_step.py --order all --batch 32 --C 16 --layers 8 --image 32

Prints, per order: compile time, median step time, images/s (train + val images
per step), the process's peak resident memory, and XLA's own estimate of the
step's temporary buffers. ``--order all`` runs each order in its own process so
peak memory is per order. Add ``--profile DIR`` for a jax.profiler trace.

Peak RSS (`peak_rss_gb`) includes XLA's own memory while compiling; `peak_rss_steps_gb` is the
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

from benchutil import peak_rss_gb, reset_peak_rss


def bench(args) -> dict:
    import jax
    import numpy as np
    from flax import nnx

    from jaxnas import config as config_lib
    from jaxnas import kernels
    from jaxnas import parallel
    from jaxnas import optim
    from jaxnas.search import bilevel as B
    from jaxnas.spaces import build_supernet

    if args.cache:
        jax.config.update("jax_compilation_cache_dir", args.cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    cfg = config_lib.search_defaults()
    cfg.space.C, cfg.space.layers, cfg.space.ops = args.C, args.layers, args.ops
    cfg.space.allow_no_normal_cell = args.layers < 3
    with kernels.use(args.kernels):
        model = build_supernet(cfg.space, (args.image, args.image, 3), 10, nnx.Rngs(0))
    schedule = optim.epoch_cosine_lr(cfg.optim.lr, cfg.optim.lr_min, 50, 1000)
    w_tx, a_tx = optim.weight_optimizer(cfg.optim, schedule), optim.alpha_optimizer(cfg.optim)
    graphdef, state = B.init_state(model, w_tx, a_tx)
    mesh = parallel.make_mesh(args.devices)
    step = parallel.jit_data_parallel(B.make_search_step(graphdef, w_tx, a_tx, schedule, args.order, cfg.optim),
                                      mesh, 2)
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
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        state, m = compiled(state, tb, vb)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    if args.profile:
        jax.profiler.stop_trace()
    median = statistics.median(times)
    return {
        "order": args.order, "batch": args.batch, "C": args.C, "layers": args.layers, "image": args.image,
        "devices": mesh.devices.size, "device_kind": jax.devices()[0].device_kind,
        "compile_s": round(compile_s, 1), "median_step_s": round(median, 3),
        "images_per_s": round(2 * args.batch / median, 1),
        "peak_rss_gb": max(rss_compile, peak_rss_gb()),
        "peak_rss_steps_gb": peak_rss_gb() if rss_reset else None,
        "xla_temp_gb": round(getattr(mem, "temp_size_in_bytes", 0) / 1e9, 2) if mem else None,
        "gflops_per_step": round(cost.get("flops", 0) / 1e9, 1) if cost else None,
        "jax": jax.__version__,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--order", default="all", choices=["first", "second", "second_fd", "all"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--C", type=int, default=16)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--image", type=int, default=32)
    p.add_argument("--ops", default="darts")
    p.add_argument("--kernels", default="auto", help="auto, native, dense, shift or grouped (jaxnas/kernels)")
    p.add_argument("--devices", type=int, default=0)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--profile", default="")
    p.add_argument("--cache", default="", help="persistent compilation cache directory")
    args = p.parse_args()
    if args.order != "all":
        print(json.dumps(bench(args)), flush=True)
        return
    for order in ("first", "second", "second_fd"):
        argv = [a for a in sys.argv[1:] if not a.startswith("--order")]
        if "all" in argv:
            argv.remove("all")
        subprocess.run([sys.executable, os.path.abspath(__file__), "--order", order] + argv, check=True)


if __name__ == "__main__":
    main()
