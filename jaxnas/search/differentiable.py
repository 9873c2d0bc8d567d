"""The ``darts`` strategy: bilevel optimisation of a supernet, then discretization (DARTS,
Liu et al. 2019, Alg. 1; cnn/train_search.py).

Set-up (data, mesh, supernet and optimizers, the jitted step), then the run driver's loop:
each step one bilevel step; each epoch end the search-val split is evaluated with BN
running statistics and the space's discretization gives the current architecture.
"""

from __future__ import annotations

import os
import time

import jax
import ml_collections
import numpy as np
from flax import nnx

from jaxnas import data as data_lib
from jaxnas import driver, methods, parallel, rundir, writers
from jaxnas.methods import progressive
from jaxnas.config import fingerprint
from jaxnas.errors import JaxnasError
from jaxnas.evaluators import TableEvaluator
from jaxnas.optim import alpha_optimizer, epoch_cosine_lr, weight_optimizer
from jaxnas.search.bilevel import init_state, make_eval_step, make_search_step
from jaxnas.search.registry import register_strategy
from jaxnas.spaces import build_supernet, discrete_space, get_space


def alphas_record(alphas) -> dict:
    """Raw and softmaxed alphas as nested lists, for alphas.jsonl (edge betas, 1-D, raw only)."""
    out = {}
    for key, var in alphas.items():
        a = np.asarray(var[...])
        out[key] = a.tolist()
        if a.ndim == 2:
            out[f"{key}_softmax"] = np.asarray(jax.nn.softmax(a, axis=-1)).tolist()
    return out


def evaluate(eval_fn, state, x, y, batch_size, mean, std, mesh) -> tuple[float, float]:
    """Loss and accuracy over all of (x, y) with BN running statistics."""
    loss_sum, correct = 0.0, 0.0
    for batch in data_lib.eval_batches(x, y, batch_size, mean, std):
        l, c = eval_fn(state, parallel.put_batch(batch, mesh))
        loss_sum += float(l)
        correct += float(c)
    return loss_sum / len(x), correct / len(x)


def _alpha_scalars(alphas, op_names) -> dict:
    """softmax(alpha) of every edge and op as flat scalars for TensorBoard (``normal/e3/sep_conv_3x3``)."""
    out = {}
    for key, var in alphas.items():
        if np.ndim(var[...]) != 2:
            continue
        w = np.asarray(jax.nn.softmax(np.asarray(var[...]), axis=-1))
        for e, row in enumerate(w):
            for op, v in zip(op_names, row):
                out[f"{key}/e{e}/{op}"] = float(v)
    return out


def check_stages(net, stages: list, space_name: str) -> None:
    """A progressive search (``method.stages``) needs a supernet with op masks whose first stage keeps
    every op; one error naming what is wrong."""
    if stages and not hasattr(net, "set_op_mask"):
        raise JaxnasError(f"method.stages needs a supernet with op masks; space {space_name!r} has none")
    if stages and stages[0].keep != len(net.op_names):
        raise JaxnasError(f"method.stages: the first stage must keep all {len(net.op_names)} ops, "
                          f"got {stages[0].keep}")


@register_strategy("darts")
def run(cfg, run_dir: str | None = None, log=print, resume: bool = False,
        data: data_lib.SearchData | None = None) -> dict:
    """Run a DARTS search as configured on ``data`` (None: ``data_lib.search_data(cfg.data)``); returns the
    final genotype and the per-epoch history.

    With ``run_dir`` it checkpoints every ``run.checkpoint_every`` steps and at each
    epoch end; ``resume`` continues from the newest good checkpoint there, bit for bit.
    """
    s = cfg.search
    if s.epochs < 1 or s.batch_size < 1:
        raise JaxnasError(f"search.epochs and search.batch_size must be positive, got {s.epochs} and {s.batch_size}")
    if resume and not run_dir:
        raise JaxnasError("resume needs a run directory")
    space = get_space(cfg.space.name)
    methods.registry.check(cfg.method)

    # data: search-train and search-val halves of the training split
    data = data if data is not None else data_lib.search_data(cfg.data)
    ds, train_idx, val_idx = data.dataset, data.train_idx, data.val_idx
    mean, std = ds.mean_std()
    train_b, val_b = data.batcher("train", s.batch_size, cfg.seed, 0), data.batcher("val", s.batch_size, cfg.seed, 1)
    steps = min(train_b.steps_per_epoch, s.max_steps_per_epoch or train_b.steps_per_epoch)

    # mesh: every device, the batch split over them
    mesh = parallel.make_mesh(cfg.run.devices)
    parallel.check_batch(s.batch_size, mesh)
    parallel.check_batch(s.eval_batch_size, mesh)
    part = parallel.local_part()

    # model and optimizers; a progressive search (method.stages) builds one supernet per stage
    stages = progressive.parse_stages(cfg.method.stages, s.epochs)
    schedule = epoch_cosine_lr(cfg.optim.lr, cfg.optim.lr_min, s.epochs, steps)
    w_tx, a_tx = weight_optimizer(cfg.optim, schedule), alpha_optimizer(cfg.optim)
    parts = methods.parts(cfg.method, s.epochs, steps)

    def build_stage(k: int, masks):
        """The supernet of stage k with these op masks, its fresh state and its jitted steps."""
        space_cfg = cfg.space
        if stages:
            space_cfg = ml_collections.ConfigDict(cfg.space.to_dict())
            space_cfg.partial_channels = stages[k].partial
        net = build_supernet(space_cfg, ds.image_shape, ds.num_classes, nnx.Rngs(cfg.seed), kernels=cfg.run.kernels)
        check_stages(net, stages, cfg.space.name)
        if masks is not None:
            net.set_op_mask(masks)
        gdef, fresh = init_state(net, w_tx, a_tx, seed=cfg.seed)
        net.eval()
        gdef_eval = nnx.split(net)[0]
        # steps: the bilevel step and the evaluation, jitted over the mesh
        step_j = parallel.jit_data_parallel(make_search_step(gdef, w_tx, a_tx, schedule, s.order, cfg.optim, parts,
                                                             gdef_eval), mesh, n_batches=2)
        eval_j = jax.jit(make_eval_step(gdef_eval, parts),
                         in_shardings=(parallel.replicated(mesh), parallel.batch_sharded(mesh)),
                         out_shardings=parallel.replicated(mesh))
        return net, gdef, fresh, step_j, eval_j

    stage, masks = 0, None
    model, graphdef, state, step_fn, eval_fn = build_stage(0, None)
    state = parallel.put_replicated(state, mesh)

    def template(meta: dict):
        """The state of the stage a checkpoint was written in (its meta names the stage and the masks)."""
        nonlocal stage, masks, model, graphdef, step_fn, eval_fn
        k, m = meta.get("stage", 0), meta.get("op_mask")
        m = None if m is None else {name: np.asarray(v, bool) for name, v in m.items()}
        if (k, m is None) == (stage, masks is None) and (m is None or all(
                np.array_equal(m[n], masks[n]) for n in m)):
            return jax.device_get(state)
        stage, masks = k, m
        model, graphdef, fresh, step_fn, eval_fn = build_stage(k, m)
        return jax.device_get(fresh)

    def enter_stage(k: int) -> None:
        """Prune each edge to the stage's ops and widen the weights to its K (methods.progressive)."""
        nonlocal stage, masks, model, graphdef, state, step_fn, eval_fn
        old = jax.device_get(state)
        alphas = {n: np.asarray(v[...]) for n, v in old.alphas.items() if str(n).startswith("alphas")}
        pruned, masks = progressive.prune(alphas, masks, stages[k].keep)
        model, graphdef, fresh, step_fn, eval_fn = build_stage(k, masks)
        new_alphas = jax.tree_util.tree_map_with_path(
            lambda path, x: pruned.get(path[0].key, x), old.alphas)
        seed = cfg.seed + k
        state = parallel.put_replicated(old._replace(
            params=progressive.widen_tree(old.params, fresh.params, seed), alphas=new_alphas,
            batch_stats=progressive.widen_tree(old.batch_stats, fresh.batch_stats, seed),
            w_opt=progressive.widen_tree(old.w_opt, fresh.w_opt, seed)), mesh)
        stage = k
        log(f"stage {k + 1}/{len(stages)} from epoch {stages[k].start + 1}: {stages[k].keep} ops per edge kept, "
            f"partial channels K={stages[k].partial}")

    # loop: restore, then the driver's epochs
    ckpt = driver.checkpointer(run_dir, cfg.run.keep_checkpoints, log)
    start, sums, count, history = 0, {}, 0, []
    if resume:
        tree, meta, start, history = driver.restore_run(ckpt, template if stages else state, steps,
                                                        mesh.devices.size, run_dir, log,
                                                        ("metrics.jsonl", "alphas.jsonl"), fingerprint(cfg))
        if tree is not None:
            state, sums, count = parallel.put_replicated(tree, mesh), meta["sums"], meta["count"]
    writer = writers.MetricWriter(run_dir, start, cfg.run.tensorboard, resume)
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    log(f"search: method={cfg.method.name} space={cfg.space.name} ops={','.join(model.op_names)} order={s.order} | "
        f"{n_params / 1e6:.3f}M weights | data={ds.name} {ds.image_shape} train/val {len(train_idx)}/{len(val_idx)} | "
        f"{mesh.devices.size} x {jax.devices()[0].device_kind} in {jax.process_count()} process(es) | "
        f"{steps} steps/epoch")
    arch = space.arch_from_dict(history[-1]["genotype"]) if history else None
    progress = driver.Progress(s.epochs * steps, start, "search", cfg.run.progress and jax.process_index() == 0)
    if start < s.epochs * steps:
        log(f"compiling the {s.order}-order search step (the first step; XLA's persistent cache shortens later runs)")
    t0 = time.time()

    def begin_epoch(epoch, first):
        nonlocal sums, count
        if first == 0:
            sums, count = {}, 0
            if stages and progressive.stage_of(stages, epoch) != stage:
                enter_stage(progressive.stage_of(stages, epoch))

    def step(epoch, i):
        nonlocal state
        tb = parallel.put_batch(train_b.batch(epoch, i, part), mesh, local=True)
        vb = parallel.put_batch(val_b.batch(epoch, i, part), mesh, local=True)
        state, metrics = step_fn(state, tb, vb)
        return metrics

    def log_step(epoch, i, gstep, m):
        nonlocal count
        for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + v
        count += 1
        val = f"val loss {m['val_loss']:.4f} acc {m['val_acc']:.3f} | " if "val_loss" in m else ""
        sched = "".join(f"{k} {float(m[k]):.4g} | " for k in methods.HYPER if k in m)
        progress.write(f"epoch {epoch + 1}/{s.epochs} step {i + 1}/{steps} | train loss {m['train_loss']:.4f} "
                       f"acc {m['train_acc']:.3f} | {val}lr {m['lr']:.5f} | {sched}"
                       f"{progress.rate() * s.batch_size:.1f} img/s | ETA {progress.eta()}", log)
        writer.write("steps", gstep, {"epoch": epoch + 1, "step": gstep, **m})

    eval_idx = val_idx[:s.eval_examples] if s.eval_examples else val_idx
    eval_what = "search-val" if len(eval_idx) == len(val_idx) else f"{len(eval_idx)} search-val images"

    def end_epoch(epoch, gstep, seconds):
        nonlocal arch
        val_loss, val_acc = evaluate(eval_fn, state, ds.x_train[eval_idx], ds.y_train[eval_idx], s.eval_batch_size,
                                     mean, std, mesh)
        arch = nnx.merge(graphdef, state.params, state.alphas, state.batch_stats).genotype()
        record = {"epoch": epoch + 1, "step": gstep, "time_s": round(time.time() - t0, 2),
                  **{f"mean_{k}": v / max(count, 1) for k, v in sums.items()},
                  "search_val_loss": val_loss, "search_val_acc": val_acc, "genotype": arch.to_dict()}
        history.append(record)
        progress.write(f"epoch {epoch + 1}/{s.epochs} done in {seconds:.1f}s | {eval_what}, BN running statistics: "
                       f"loss {val_loss:.4f} acc {val_acc:.4f} | ETA {progress.eta()} | genotype {arch}", log)
        writer.write("metrics", gstep, record)
        writer.write("alphas", gstep, {"epoch": epoch + 1, "ops": list(model.op_names),
                                       **alphas_record(state.alphas)})
        writer.tb_scalars("alpha_softmax", gstep, _alpha_scalars(state.alphas, model.op_names))
        writer.text("genotype", gstep, str(arch))
        writer.flush()

    def save(gstep):
        if ckpt is not None:
            ckpt.save(gstep, state, {"step": gstep, "steps_per_epoch": steps, "sums": sums, "count": count,
                                     "devices": int(mesh.devices.size), "processes": jax.process_count(),
                                     "config": fingerprint(cfg), "stage": stage,
                                     "op_mask": None if masks is None else {n: m.tolist() for n, m in masks.items()}})

    driver.run_epochs(epochs=s.epochs, steps=steps, start=start, log_every=cfg.run.log_every,
                      checkpoint_every=cfg.run.checkpoint_every, progress=progress, ckpt=ckpt, run_dir=run_dir,
                      writer=writer, step=step, log_step=log_step, end_epoch=end_epoch, save=save,
                      begin_epoch=begin_epoch)

    # the found cell looked up in a tabular benchmark, when one is given (e.g. DARTS on NAS-Bench-201)
    result = None
    if cfg.evaluator.table:
        e = cfg.evaluator
        discrete = discrete_space(cfg.space)
        table = TableEvaluator(e.table, discrete, e.arch_column, e.score_column, e.test_column, e.f1_column)
        result = {"arch": discrete.encode(arch), "test": table.test(arch)}
        log(f"{result['arch']} in {e.table}: test {result['test']['accuracy']}")
    if run_dir and jax.process_index() == 0:
        rundir.write_json(os.path.join(run_dir, "genotype.json"), arch.to_dict())
        log(f"genotype written to {os.path.join(run_dir, 'genotype.json')}")
        if result is not None:
            rundir.write_json(os.path.join(run_dir, "result.json"), result)
    return {"genotype": arch, "history": history, "state": state, "graphdef": graphdef, "result": result}
