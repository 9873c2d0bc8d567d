"""The DARTS search strategy: bilevel optimisation of a supernet, then discretization.

A plain loop: build data and supernet, jit the bilevel step over the device mesh,
run epochs, evaluate the search-val split and derive the genotype after each epoch.
"""

from __future__ import annotations

import math
import os
import time

import jax
import numpy as np
from flax import nnx

from jaxnas import data as data_lib
from jaxnas import genotype as genotype_lib
from jaxnas import parallel, rundir
from jaxnas.errors import JaxnasError
from jaxnas.search import register_strategy
from jaxnas.search.bilevel import (alpha_optimizer, epoch_cosine_lr, init_state, make_eval_step,
                                   make_search_step, weight_optimizer)
from jaxnas.spaces import build_supernet


def alphas_record(alphas) -> dict:
    """Raw and softmaxed alphas as nested lists, for alphas.jsonl."""
    out = {}
    for key, var in alphas.items():
        a = np.asarray(var[...])
        out[key] = a.tolist()
        out[f"{key}_softmax"] = np.asarray(jax.nn.softmax(a, axis=-1)).tolist()
    return out


def _finite_or_die(metrics: dict, step: int) -> None:
    for name, value in metrics.items():
        if not math.isfinite(value):
            raise JaxnasError(f"non-finite {name} ({value}) at step {step}; stopping (lower the learning rate?)")


def evaluate(eval_fn, state, x, y, batch_size, mean, std, mesh) -> tuple[float, float]:
    """Loss and accuracy over all of (x, y) with BN running statistics."""
    loss_sum, correct = 0.0, 0.0
    for batch in data_lib.eval_batches(x, y, batch_size, mean, std):
        l, c = eval_fn(state, parallel.put_batch(batch, mesh))
        loss_sum += float(l)
        correct += float(c)
    return loss_sum / len(x), correct / len(x)


@register_strategy("darts")
def run(cfg, run_dir: str | None = None, log=print) -> dict:
    """Run a DARTS search as configured; returns the final genotype and last epoch's metrics."""
    ds = data_lib.load_dataset(cfg.data.name, cfg.data.data_dir)
    mean, std = ds.mean_std()
    train_idx, val_idx = data_lib.search_split(len(ds.x_train), cfg.data.train_portion)
    augment = data_lib.resolve_augment(cfg.data.augment, ds.name)
    s = cfg.search
    if s.epochs < 1 or s.batch_size < 1:
        raise JaxnasError(f"search.epochs and search.batch_size must be positive, got {s.epochs} and {s.batch_size}")
    mesh = parallel.make_mesh(cfg.run.devices)
    parallel.check_batch(s.batch_size, mesh)
    parallel.check_batch(s.eval_batch_size, mesh)
    train_b = data_lib.Batcher(ds.x_train, ds.y_train, train_idx, s.batch_size, mean, std, augment, cfg.seed, 0)
    val_b = data_lib.Batcher(ds.x_train, ds.y_train, val_idx, s.batch_size, mean, std, augment, cfg.seed, 1)
    steps = train_b.steps_per_epoch
    if s.max_steps_per_epoch:
        steps = min(steps, s.max_steps_per_epoch)

    model = build_supernet(cfg.space, ds.image_shape, ds.num_classes, nnx.Rngs(cfg.seed))
    schedule = epoch_cosine_lr(cfg.optim.lr, cfg.optim.lr_min, s.epochs, steps)
    w_tx, a_tx = weight_optimizer(cfg.optim, schedule), alpha_optimizer(cfg.optim)
    graphdef, state = init_state(model, w_tx, a_tx)
    model.eval()
    graphdef_eval = nnx.split(model)[0]
    step_fn = parallel.jit_data_parallel(make_search_step(graphdef, w_tx, a_tx, schedule, s.order, cfg.optim),
                                         mesh, n_batches=2)
    eval_fn = jax.jit(make_eval_step(graphdef_eval),
                      in_shardings=(parallel.replicated(mesh), parallel.batch_sharded(mesh)),
                      out_shardings=parallel.replicated(mesh))
    state = parallel.put_replicated(state, mesh)

    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    log(f"search: space={cfg.space.name} ops={','.join(model.op_names)} C={cfg.space.C} layers={cfg.space.layers} "
        f"nodes={cfg.space.nodes} order={s.order} | {n_params / 1e6:.3f}M weights | data={ds.name} "
        f"{ds.image_shape} train/val {len(train_idx)}/{len(val_idx)} | {mesh.devices.size} x "
        f"{jax.devices()[0].device_kind} | {steps} steps/epoch")
    history, t0 = [], time.time()
    genotype = None
    for epoch in range(s.epochs):
        sums, count, t_epoch = {}, 0, time.time()
        for i in range(steps):
            tb = parallel.put_batch(train_b.batch(epoch, i), mesh)
            vb = parallel.put_batch(val_b.batch(epoch, i), mesh)
            state, metrics = step_fn(state, tb, vb)
            if (i + 1) % cfg.run.log_every == 0 or i + 1 == steps:
                m = {k: float(v) for k, v in metrics.items()}
                _finite_or_die(m, epoch * steps + i + 1)
                for k, v in m.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
                rate = (i + 1) * s.batch_size / (time.time() - t_epoch)
                log(f"epoch {epoch + 1}/{s.epochs} step {i + 1}/{steps} | train loss {m['train_loss']:.4f} "
                    f"acc {m['train_acc']:.3f} | val loss {m['val_loss']:.4f} acc {m['val_acc']:.3f} | "
                    f"lr {m['lr']:.5f} | {rate:.1f} img/s")
                if run_dir:
                    rundir.append_jsonl(os.path.join(run_dir, "steps.jsonl"),
                                        {"epoch": epoch + 1, "step": epoch * steps + i + 1, **m})
        val_loss, val_acc = evaluate(eval_fn, state, ds.x_train[val_idx], ds.y_train[val_idx],
                                     s.eval_batch_size, mean, std, mesh)
        merged = nnx.merge(graphdef, state.params, state.alphas, state.batch_stats)
        genotype = merged.genotype()
        record = {"epoch": epoch + 1, "step": (epoch + 1) * steps, "time_s": round(time.time() - t0, 2),
                  **{f"mean_{k}": v / max(count, 1) for k, v in sums.items()},
                  "search_val_loss": val_loss, "search_val_acc": val_acc, "genotype": genotype.to_dict()}
        history.append(record)
        log(f"epoch {epoch + 1}/{s.epochs} done in {time.time() - t_epoch:.1f}s | search-val loss {val_loss:.4f} "
            f"acc {val_acc:.4f} | genotype {genotype}")
        if run_dir:
            rundir.append_jsonl(os.path.join(run_dir, "metrics.jsonl"), record)
            rundir.append_jsonl(os.path.join(run_dir, "alphas.jsonl"),
                                {"epoch": epoch + 1, **alphas_record(state.alphas)})
    if run_dir:
        genotype_lib.save(genotype, os.path.join(run_dir, "genotype.json"))
        log(f"genotype written to {os.path.join(run_dir, 'genotype.json')}")
    return {"genotype": genotype, "history": history, "state": state, "graphdef": graphdef}
