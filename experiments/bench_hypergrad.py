"""Cost of the hypergradient estimators and reweighting steps against a plain training step.

    python experiments/bench_hypergrad.py --model cnn:32,64 --image 32 --channels 3 --batch 64

For each: the median step time over ``--steps`` calls (after compiling), and XLA's memory plan of the
compiled step (temporary buffers; arguments). The rows: a plain training step; L2RW's and MW-Net's
steps (one virtual step and a meta batch each); the hypergradient of example weights unrolled over
K = 1, 5, 20 training batches, as a loop with the body rematerialized, a loop without, and an
unrolled scan (the CPU default); and the implicit
estimator (Neumann series, 20 Hessian-vector products). Prints one JSON line per row and a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cnn:32,64")
    p.add_argument("--image", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--ks", default="1,5,20")
    args = p.parse_args()

    import jax
    import numpy as np
    import optax
    from flax import nnx

    from jaxnas import config as config_lib
    from jaxnas.evaluators.train import make_classifier_steps
    from jaxnas.hyper import estimators, reweight
    from jaxnas.optimize import models

    cfg = config_lib.tiny_optimize()
    shape = (args.image, args.image, args.channels)
    model = models.build(args.model, shape, args.classes, nnx.Rngs(0), cfg)
    model.eval()
    graphdef_eval = nnx.split(model)[0]
    model.train()
    graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    tx = optax.sgd(0.1, momentum=0.9)
    opt = tx.init(params)
    rng = np.random.default_rng(0)
    n = 50 * args.batch

    def batch(k=None):
        lead = (k,) if k else ()
        return {"x": rng.normal(size=lead + (args.batch,) + shape).astype(np.float32),
                "y": rng.integers(0, args.classes, size=lead + (args.batch,)),
                "pos": rng.integers(0, n, size=lead + (args.batch,))}

    meta = {k: v for k, v in batch().items() if k != "pos"}
    hp = {"label_smoothing": 0.0, "weight_decay": 5e-4}
    rows = []

    def measure(name, fn, *a):
        t0 = time.perf_counter()
        compiled = jax.jit(fn).lower(*a).compile()
        compile_s = time.perf_counter() - t0
        mem = compiled.memory_analysis()
        jax.block_until_ready(compiled(*a))
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(*a))
            times.append(time.perf_counter() - t0)
        row = {"step": name, "ms": round(1e3 * statistics.median(times), 2), "compile_s": round(compile_s, 2),
               "temp_mb": round(mem.temp_size_in_bytes / 2 ** 20, 2) if mem else None,
               "args_mb": round(mem.argument_size_in_bytes / 2 ** 20, 2) if mem else None}
        rows.append(row)
        print(json.dumps(row), flush=True)

    train, _ = make_classifier_steps(graphdef, graphdef_eval, tx)
    b = batch()
    measure("plain training step", lambda p_, s_, o_, b_: train(p_, s_, o_, b_), params, stats, opt, b)
    h = config_lib.optimize_defaults().optimize.hyper
    for method in ("l2rw", "mwnet"):
        h.method = method
        st = reweight.Steps(graphdef, tx, hp, args.classes, n, h, 0)
        measure(f"{method} step", st.step, params, stats, opt, st.init(), b, meta, 0.1)
    h.lookahead = "optimizer"  # the virtual step through the trainer's optimizer
    st = reweight.Steps(graphdef, tx, hp, args.classes, n, h, 0)
    measure("mwnet step, lookahead=optimizer", st.step, params, stats, opt, st.init(), b, meta, 0.1)
    h.method, h.learn, h.lookahead = "hypergrad", "example_weights", "sgd"
    for k in (int(v) for v in args.ks.split(",")):
        for remat, unroll in (((True, 1), (False, 1), (True, True)) if k > 1 else ((True, 1),)):
            h.steps, h.estimator = k, "unrolled"
            st = reweight.Steps(graphdef, tx, hp, args.classes, n, h, 0)
            state = st.init()

            def unrolled_update(p_, s_, r_, bs, m_, remat=remat, k=k, unroll=unroll, st=st):
                inner = lambda w, hh, bb: st.train_loss(w, hh, s_, bb)[0]  # noqa: E731
                outer = lambda w, hh, mm: st.meta_loss(w, s_, mm)  # noqa: E731
                est = estimators.unrolled(inner, outer, lr=0.1, steps=k, remat=remat, unroll=unroll)
                return est(p_, r_.params, bs if k > 1 else jax.tree.map(lambda a: a[0], bs), m_)[:2]

            what = "" if k == 1 else ", unrolled scan" if unroll is True else ", loop, remat" if remat else ", loop"
            measure(f"hypergradient unrolled K={k}{what}",
                    unrolled_update, params, stats, state, batch(k), meta)
    h.estimator, h.steps = "implicit", 1
    st = reweight.Steps(graphdef, tx, hp, args.classes, n, h, 0)
    measure("hypergradient implicit (Neumann, 20 HVPs)", st.hyper_update, params, stats, opt, st.init(), batch(1),
            meta, 0.1)
    plain = rows[0]["ms"]
    print(f"\n{'step':45s} {'ms':>8s} {'x plain':>8s} {'temp MB':>8s} {'compile s':>9s}")
    for r in rows:
        print(f"{r['step']:45s} {r['ms']:8.2f} {r['ms'] / plain:8.2f} {r['temp_mb'] or 0:8.1f} {r['compile_s']:9.2f}")


if __name__ == "__main__":
    main()
