"""Time the jit-compiled retraining step of the DARTS evaluation network on random data.

    python experiments/bench_train_step.py --genotype DARTS_V2 --C 36 --layers 20 --batch 96 --image 32

Prints compile time, median step time, images/s, peak resident memory and XLA's
temporary-buffer estimate.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from benchutil import peak_rss_gb, reset_peak_rss

from jaxnas import hugepages


def main() -> None:
    hugepages.reexec()  # as the jaxnas command does (jaxnas/hugepages.py)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--genotype", default="DARTS_V2")
    p.add_argument("--C", type=int, default=36)
    p.add_argument("--layers", type=int, default=20)
    p.add_argument("--batch", type=int, default=96)
    p.add_argument("--image", type=int, default=32)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx

    from jaxnas import genotype as G
    from jaxnas import parallel
    from jaxnas import train as T
    from jaxnas.nn import count_params
    from jaxnas.spaces.darts import DartsNetwork

    net = DartsNetwork(G.load(args.genotype), 3, 10, C=args.C, layers=args.layers, rngs=nnx.Rngs(0))
    graphdef, params, stats = nnx.split(net, nnx.Param, nnx.BatchStat)
    tx = optax.chain(optax.clip_by_global_norm(5.0), optax.add_decayed_weights(3e-4), optax.sgd(0.025, momentum=0.9))
    mesh = parallel.make_mesh(0)
    repl, data = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    step = jax.jit(T.make_train_step(graphdef, tx, 0.4, T.DTYPES[args.dtype]),
                   in_shardings=(repl, repl, repl, data, repl, repl), out_shardings=repl, donate_argnums=(0, 1, 2))
    params, stats = parallel.put_replicated((params, stats), mesh)
    opt = parallel.put_replicated(tx.init(params), mesh)
    rng = np.random.default_rng(0)
    batch = parallel.put_batch({"x": rng.normal(size=(args.batch, args.image, args.image, 3)).astype(np.float32),
                                "y": rng.integers(0, 10, args.batch).astype(np.int32)}, mesh)
    key, drop = jax.random.key(0), jnp.float32(0.1)
    t = time.perf_counter()
    compiled = step.lower(params, stats, opt, batch, key, drop).compile()
    compile_s = time.perf_counter() - t
    mem = compiled.memory_analysis()
    rss_compile = peak_rss_gb()  # the reset below clears the kernel's mark
    rss_reset = reset_peak_rss()
    params, stats, opt, m = compiled(params, stats, opt, batch, key, drop)
    jax.block_until_ready(m)
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        params, stats, opt, m = compiled(params, stats, opt, batch, key, drop)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    median = statistics.median(times)
    print(json.dumps({
        "genotype": args.genotype, "C": args.C, "layers": args.layers, "batch": args.batch, "dtype": args.dtype,
        "params": count_params(net), "devices": mesh.devices.size, "device_kind": jax.devices()[0].device_kind,
        "compile_s": round(compile_s, 1), "median_step_s": round(median, 3),
        "images_per_s": round(args.batch / median, 1),
        "peak_rss_gb": max(rss_compile, peak_rss_gb()),
        "peak_rss_steps_gb": peak_rss_gb() if rss_reset else None,
        "xla_temp_gb": round(getattr(mem, "temp_size_in_bytes", 0) / 1e9, 2) if mem else None,
        "jax": jax.__version__}))


if __name__ == "__main__":
    main()
