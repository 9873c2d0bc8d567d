"""One epoch of DARTS's CIFAR-10 search on synthetic CIFAR-sized data, through jaxnas's input pipeline.

    python experiments/search_epoch.py                      # first order, batch 64, 390 steps
    python experiments/search_epoch.py --order second --steps 50
    python experiments/search_epoch.py --dtype bfloat16     # mixed precision (search.dtype)

50,000 random 32x32x3 uint8 images and labels, split 25,000 / 25,000 as ``train_portion=0.5``; each
step reads a train and a val batch from ``jaxnas.data.Batcher`` (the search's own shuffling, crop,
flip and normalisation) and places them on the mesh, as ``jaxnas search`` does; the search step is
``jaxnas.search.bilevel``'s at DARTS's size (8 cells, C=16). Prints one JSON line: compile time, the
epoch's wall time and images/s, the host's time building a step's batches (``input_ms``; the
device waits on it only when it exceeds ``step_ms``), and the 50-epoch search this implies. Checkpoints and logs are
left out (the search writes them every 100 steps and at epoch ends).
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--order", default="first")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=0, help="steps to time (0: one epoch, 390)")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--devices", type=int, default=0)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="search.dtype")
    p.add_argument("--passes", default="unrolled", choices=["unrolled", "loop"], help="search.passes (first order)")
    args = p.parse_args()

    import jax
    import numpy as np
    from flax import nnx

    from jaxnas import config as config_lib
    from jaxnas import data as data_lib
    from jaxnas import optim, parallel
    from jaxnas.nn import DTYPES
    from jaxnas.search import bilevel as B
    from jaxnas.spaces import build_supernet

    cfg = config_lib.search_defaults()
    cfg.space.layers = args.layers
    cfg.space.allow_no_normal_cell = args.layers < 3
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50_000, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, 50_000).astype(np.int32)
    train_idx, val_idx = np.arange(25_000), np.arange(25_000, 50_000)
    mean, std = np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32)
    train = data_lib.Batcher(x, y, train_idx, args.batch, mean, std, "crop_flip", 2, 0)
    val = data_lib.Batcher(x, y, val_idx, args.batch, mean, std, "crop_flip", 2, 1)
    steps = args.steps or train.steps_per_epoch

    mesh = parallel.make_mesh(args.devices)
    model = build_supernet(cfg.space, (32, 32, 3), 10, nnx.Rngs(0))
    schedule = optim.epoch_cosine_lr(cfg.optim.lr, cfg.optim.lr_min, cfg.search.epochs, train.steps_per_epoch)
    w_tx, a_tx = optim.weight_optimizer(cfg.optim, schedule), optim.alpha_optimizer(cfg.optim)
    graphdef, state = B.init_state(model, w_tx, a_tx)
    step = parallel.jit_data_parallel(B.make_search_step(graphdef, w_tx, a_tx, schedule, args.order, cfg.optim,
                                                         dtype=DTYPES[args.dtype], passes=args.passes), mesh, 2)
    state = parallel.put_replicated(state, mesh)

    host = [0.0]  # seconds spent building batches on the host

    def batches(i):
        t0 = time.perf_counter()
        out = parallel.put_batch(train.batch(0, i), mesh), parallel.put_batch(val.batch(0, i), mesh)
        host[0] += time.perf_counter() - t0
        return out

    t = time.perf_counter()
    tb, vb = batches(0)
    compiled = step.lower(state, tb, vb).compile()
    compile_s = time.perf_counter() - t
    state, m = compiled(state, tb, vb)  # warm-up
    jax.block_until_ready(m)
    t, host[0] = time.perf_counter(), 0.0
    for i in range(1, steps + 1):
        tb, vb = batches(i)
        state, m = compiled(state, tb, vb)
    jax.block_until_ready(m)
    wall = time.perf_counter() - t
    per_step = wall / steps
    print(json.dumps({"what": "search_epoch", "order": args.order, "dtype": args.dtype, "passes": args.passes, "batch": args.batch, "layers": args.layers,
                      "devices": mesh.devices.size, "device_kind": jax.devices()[0].device_kind,
                      "jax": jax.__version__, "compile_s": round(compile_s, 1), "steps": steps,
                      "wall_s": round(wall, 2), "step_ms": round(per_step * 1e3, 2),
                      "input_ms": round(host[0] / steps * 1e3, 2),  # the host's batches (and their transfer) a step
                      "images_per_s": round(2 * args.batch / per_step, 1),
                      "search_50_epochs_min": round(per_step * train.steps_per_epoch * 50 / 60, 1),
                      "train_loss": float(m["train_loss"])}), flush=True)


if __name__ == "__main__":
    main()
