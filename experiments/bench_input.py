"""The host side of the input pipeline: milliseconds to build one batch with ``jaxnas.data.Batcher``.

    python experiments/bench_input.py                 # CIFAR-sized, the search's and retraining's batches
    python experiments/bench_input.py --batches 500

Each search step reads two batches (search-train and search-val), each retraining step one. The host
builds the next batch while the device runs the step (jax dispatches asynchronously and the driver
checks a step's numbers one step late), so the device waits on the input only when building the
step's batches takes longer than the step. Prints one JSON line per setting.
"""

from __future__ import annotations

import argparse
import json
import platform
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, default=300)
    args = p.parse_args()

    import numpy as np

    from jaxnas import data as data_lib

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (25_000, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, 25_000).astype(np.int32)
    mean, std = np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32)
    for what, batch, augment, cut in (("search", 64, "crop_flip", 0), ("retrain", 96, "crop_flip", 16),
                                      ("eval-like", 256, "none", 0)):
        b = data_lib.Batcher(x, y, np.arange(len(x)), batch, mean, std, augment, 0, 0, cutout=cut)
        b.batch(0, 0)
        t = time.perf_counter()
        for i in range(args.batches):
            b.batch(0, i)
        ms = (time.perf_counter() - t) / args.batches * 1e3
        print(json.dumps({"what": what, "batch": batch, "augment": augment, "cutout": cut,
                          "ms_per_batch": round(ms, 3), "machine": platform.machine(),
                          "cpus": __import__("os").cpu_count()}), flush=True)


if __name__ == "__main__":
    main()
