"""Retrain a genotype from scratch and test it (DARTS cnn/train.py), and re-evaluate a saved run.

Set-up (data, mesh, the evaluation network and optimizer, the jitted train step), then the
run driver's loop (cosine lr and linearly growing drop-path, both per epoch), then one test
on the held-out test split, which is never used for any choice.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxnas import checkpoint, driver, kernels, parallel, rundir, writers
from jaxnas import config as config_lib
from jaxnas import data as data_lib
from jaxnas import genotype as genotype_lib
from jaxnas import metrics as metrics_lib
from jaxnas.errors import JaxnasError
from jaxnas.nn import count_params
from jaxnas.optim import epoch_cosine_lr, weight_optimizer
from jaxnas.spaces.darts import DartsNetwork

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build_network(cfg, genotype, image_shape, num_classes: int, platform: str | None = None) -> DartsNetwork:
    """The evaluation network of ``genotype`` (``cfg.model``), built with ``cfg.run.kernels`` for backend
    ``platform`` (None: JAX's default); a head that cannot fit the images is an error."""
    m = cfg.model
    if m.auxiliary:
        size = image_shape[0] // 4  # after the two reduction cells
        if size < 5:
            raise JaxnasError(f"the auxiliary head needs at least 5x5 features after the second reduction, "
                              f"images of {image_shape[0]}x{image_shape[1]} give {size}x{size}: "
                              f"set --config.model.auxiliary=false")
    return kernels.build_with(lambda: DartsNetwork(genotype, image_shape[-1], num_classes, C=m.C, layers=m.layers,
                                              auxiliary=m.auxiliary, stem_multiplier=m.stem_multiplier,
                                              rngs=nnx.Rngs(cfg.seed)), cfg.run.kernels, platform)


def make_train_step(graphdef, tx, aux_weight: float, dtype) -> callable:
    """``step(params, stats, opt, batch, key, drop_prob) -> (params, stats, opt, metrics)``: CE + aux_weight * CE_aux."""

    def loss_fn(params, stats, batch, key, drop_prob):
        p = jax.tree.map(lambda v: v.astype(dtype), params)
        model = nnx.merge(graphdef, p, stats, copy=True)
        logits, aux = model(batch["x"].astype(dtype), drop_prob, key)
        logits = logits.astype(jnp.float32)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
        total = loss
        if aux is not None:
            total = loss + aux_weight * optax.softmax_cross_entropy_with_integer_labels(
                aux.astype(jnp.float32), batch["y"]).mean()
        new_stats = jax.tree.map(lambda v: v.astype(jnp.float32), nnx.state(model, nnx.BatchStat))
        return total, (loss, logits, new_stats)

    def step(params, stats, opt, batch, key, drop_prob):
        (total, (loss, logits, stats)), g = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, batch, key,
                                                                                     drop_prob)
        updates, opt = tx.update(g, opt, params)
        params = optax.apply_updates(params, updates)
        acc = (jnp.argmax(logits, -1) == batch["y"]).mean()
        return params, stats, opt, {"loss": loss, "total_loss": total, "acc": acc, "grad_norm": optax.tree.norm(g)}

    return step


def make_predict(graphdef_eval):
    def predict(params, stats, batch):
        logits, _ = nnx.merge(graphdef_eval, params, stats)(batch["x"])
        return logits

    return predict


def test_metrics(predict, params, stats, x, y, num_classes, batch_size, mean, std, mesh) -> dict:
    """Top-1/top-5, macro-F1, per-class precision/recall and the confusion matrix on (x, y)."""
    preds, top5 = [], 0
    for batch in data_lib.eval_batches(x, y, batch_size, mean, std):
        logits = np.asarray(predict(params, stats, parallel.put_batch(batch, mesh)))
        n = int(batch["mask"].sum())
        logits, labels = logits[:n], batch["y"][:n]
        preds.append(logits.argmax(-1))
        k = min(5, num_classes)
        top5 += int((np.argsort(-logits, -1)[:, :k] == labels[:, None]).any(-1).sum())
    m = metrics_lib.from_confusion(metrics_lib.confusion_matrix(y, np.concatenate(preds), num_classes))
    m["top5"] = top5 / len(y)
    m["num_examples"] = int(len(y))
    return m


def _prepare(cfg, genotype, ds: data_lib.Dataset | None = None):
    ds = ds if ds is not None else data_lib.load_dataset(cfg.data.name, cfg.data.data_dir)
    model = build_network(cfg, genotype, ds.image_shape, ds.num_classes)
    mesh = parallel.make_mesh(cfg.run.devices)
    parallel.check_batch(cfg.train.eval_batch_size, mesh)
    model.eval()
    graphdef_eval, params, stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    if jax.tree.leaves(rest):
        raise ValueError(f"network holds state that is neither weights nor BN statistics: {rest}")
    model.train()
    predict = jax.jit(make_predict(graphdef_eval),
                      in_shardings=(parallel.replicated(mesh),) * 2 + (parallel.batch_sharded(mesh),),
                      out_shardings=parallel.replicated(mesh))
    return ds, model, mesh, params, stats, predict


def run(cfg, run_dir: str | None = None, log=print, resume: bool = False, data: data_lib.Dataset | None = None) -> dict:
    """Retrain ``cfg.genotype`` as configured on ``data`` (None: the dataset ``cfg.data`` names), then test;
    writes weights and test metrics into ``run_dir``.

    Checkpoints (weights, BN statistics, optimizer, PRNG key, position) every
    ``run.checkpoint_every`` steps and at each epoch end; ``resume`` continues bit for bit.
    """
    t = cfg.train
    if t.epochs < 1:
        raise JaxnasError(f"train.epochs must be positive, got {t.epochs}")
    if resume and not run_dir:
        raise JaxnasError("resume needs a run directory")

    # data, mesh and model (the evaluation network of the genotype)
    genotype = genotype_lib.load(cfg.genotype)
    ds, model, mesh, params, stats, predict = _prepare(cfg, genotype, data)
    parallel.check_batch(t.batch_size, mesh)
    mean, std = ds.mean_std()
    augment = data_lib.resolve_augment(cfg.data.augment, ds.name)
    batches = data_lib.Batcher(ds.x_train, ds.y_train, np.arange(len(ds.x_train)), t.batch_size, mean, std,
                               augment, cfg.seed, 0, cutout=cfg.data.cutout)
    steps = min(batches.steps_per_epoch, t.max_steps_per_epoch or batches.steps_per_epoch)

    # optimizer and the jitted train step
    schedule = epoch_cosine_lr(cfg.optim.lr, cfg.optim.lr_min, t.epochs, steps)
    tx = weight_optimizer(cfg.optim, schedule)
    graphdef = nnx.split(model, nnx.Param, nnx.BatchStat, ...)[0]
    repl, data = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    train_step = jax.jit(make_train_step(graphdef, tx, cfg.model.auxiliary_weight, DTYPES[t.dtype]),
                         in_shardings=(repl, repl, repl, data, repl, repl), out_shardings=repl,
                         donate_argnums=(0, 1, 2))
    opt = tx.init(params)
    key = jax.random.key(cfg.seed)
    part = parallel.local_part()

    # loop: restore, then the driver's epochs
    ckpt = driver.checkpointer(run_dir, cfg.run.keep_checkpoints, log)
    start, sums, history = 0, {"loss": 0.0, "acc": 0.0}, []
    if resume:
        template = {"params": params, "stats": stats, "opt": opt, "key": jax.random.key_data(key)}
        tree, meta, start, history = driver.restore_run(ckpt, template, steps, mesh.devices.size, run_dir, log,
                                                        config=config_lib.fingerprint(cfg))
        if tree is not None:
            params, stats, opt = tree["params"], tree["stats"], tree["opt"]
            key, sums = jax.random.wrap_key_data(tree["key"]), meta["sums"]
    params, stats, opt = parallel.put_replicated((params, stats, opt), mesh)
    writer = writers.MetricWriter(run_dir, start, cfg.run.tensorboard, resume)
    log(f"train: genotype {genotype} | {count_params(model) / 1e6:.3f}M params (auxiliary head excluded) | "
        f"C={cfg.model.C} layers={cfg.model.layers} | data={ds.name} train/test {len(ds.x_train)}/{len(ds.x_test)} "
        f"| {mesh.devices.size} x {jax.devices()[0].device_kind} in {jax.process_count()} process(es) | "
        f"{steps} steps/epoch")
    progress = driver.Progress(t.epochs * steps, start, "train", cfg.run.progress and jax.process_index() == 0)
    if start < t.epochs * steps:
        log("compiling the train step (the first step; XLA's persistent cache shortens later runs)")
    t0, last, drop_prob = time.time(), {}, 0.0

    def begin_epoch(epoch, first):
        nonlocal sums, drop_prob
        drop_prob = cfg.model.drop_path_prob * epoch / t.epochs
        if first == 0:
            sums = {"loss": 0.0, "acc": 0.0}

    def step(epoch, i):
        nonlocal params, stats, opt, key, sums, last
        key, sub = jax.random.split(key)
        batch = parallel.put_batch(batches.batch(epoch, i, part), mesh, local=True)
        params, stats, opt, last = train_step(params, stats, opt, batch, sub, jnp.float32(drop_prob))
        sums = {k: sums[k] + last[k] for k in sums}
        return {"train loss": last["total_loss"], "gradient norm": last["grad_norm"]}

    def log_step(epoch, i, gstep, _):
        loss, acc = float(last["loss"]), float(last["acc"])
        progress.write(f"epoch {epoch + 1}/{t.epochs} step {i + 1}/{steps} | loss {loss:.4f} acc {acc:.3f} | "
                       f"drop-path {drop_prob:.3f} | {progress.rate() * t.batch_size:.1f} img/s | "
                       f"ETA {progress.eta()}", log)
        writer.write("steps", gstep, {"epoch": epoch + 1, "step": gstep, "loss": loss, "acc": acc,
                                      "lr": float(schedule(gstep - 1))})

    def end_epoch(epoch, gstep, seconds):
        record = {"epoch": epoch + 1, "step": gstep, "train_loss": float(sums["loss"]) / steps,
                  "train_acc": float(sums["acc"]) / steps, "drop_prob": drop_prob,
                  "time_s": round(time.time() - t0, 2)}
        history.append(record)
        progress.write(f"epoch {epoch + 1}/{t.epochs} done in {seconds:.1f}s | train loss "
                       f"{record['train_loss']:.4f} acc {record['train_acc']:.4f} | ETA {progress.eta()}", log)
        writer.write("metrics", gstep, record)
        writer.flush()

    def save(gstep):
        if ckpt is not None:
            ckpt.save(gstep, {"params": params, "stats": stats, "opt": opt, "key": jax.random.key_data(key)},
                      {"step": gstep, "steps_per_epoch": steps, "sums": {k: float(v) for k, v in sums.items()},
                       "devices": int(mesh.devices.size), "processes": jax.process_count(),
                       "config": config_lib.fingerprint(cfg)})

    driver.run_epochs(epochs=t.epochs, steps=steps, start=start, log_every=cfg.run.log_every,
                      checkpoint_every=cfg.run.checkpoint_every, progress=progress, ckpt=ckpt, run_dir=run_dir,
                      writer=writer, step=step, log_step=log_step, end_epoch=end_epoch, save=save,
                      begin_epoch=begin_epoch)
    result = test_metrics(predict, params, stats, ds.x_test, ds.y_test, ds.num_classes, t.eval_batch_size,
                          mean, std, mesh)
    result["params"] = count_params(model)
    log("test metrics (held-out test split, used for nothing else):\n" + metrics_lib.table(result))
    if run_dir and jax.process_index() == 0:
        genotype_lib.save(genotype, os.path.join(run_dir, "genotype.json"))
        checkpoint.save(os.path.join(run_dir, "weights.npz"), params=params, batch_stats=stats)
        rundir.write_json(os.path.join(run_dir, "test_metrics.json"), result)
    return {"test": result, "history": history}


def evaluate_run(run_dir: str, log=print, imports: str = "") -> dict:
    """Reload a finished ``jaxnas train`` run's weights and recompute its test metrics. Nothing the run
    names is imported: a run made with ``run.imports`` needs ``imports`` (already imported) to match."""
    for name in ("config.json", "genotype.json", "weights.npz"):
        if not os.path.exists(os.path.join(run_dir, name)):
            raise JaxnasError(f"{run_dir!r} is not a finished train run: {name} is missing")
    cfg = config_lib.from_dict(rundir.read_json(os.path.join(run_dir, "config.json"), "run config"), "train")
    config_lib.check_run_imports(cfg.run.imports, imports, run_dir)
    genotype = genotype_lib.load(os.path.join(run_dir, "genotype.json"))
    ds, model, mesh, params, stats, predict = _prepare(cfg, genotype)
    params, stats = checkpoint.load(os.path.join(run_dir, "weights.npz"), params=params, batch_stats=stats)
    params, stats = parallel.put_replicated((params, stats), mesh)
    mean, std = ds.mean_std()
    result = test_metrics(predict, params, stats, ds.x_test, ds.y_test, ds.num_classes, cfg.train.eval_batch_size,
                          mean, std, mesh)
    result["params"] = count_params(model)
    log(metrics_lib.table(result))
    return result
