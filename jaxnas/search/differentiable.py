"""The ``darts`` strategy: bilevel optimisation of a supernet, then discretization (DARTS,
Liu et al. 2019, Alg. 1; cnn/train_search.py).

``DartsSearch`` is the run as one object (``driver.Loop``): set-up (data, mesh, supernet and
optimizers, the jitted step), then the driver's loop: each step one bilevel step; each epoch end
the search-val split is evaluated with BN running statistics and the space's discretization
gives the current architecture.
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

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
from jaxnas.nn import DTYPES
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


class Stage(NamedTuple):
    """One supernet of the search (a progressive search has one per stage): the module, its graph, a fresh
    state, and its jitted bilevel and evaluation steps."""

    net: nnx.Module
    graphdef: object
    fresh: object
    step: object
    evaluate: object


class DartsSearch(driver.Loop):
    """A DARTS search (Liu et al. 2019, Alg. 1) as one object that ``driver.run`` drives. Set-up is
    ``__init__`` (data, mesh, optimizers, the first stage's supernet and jitted steps) and ``restore``;
    each step is one bilevel step; each epoch's end evaluates search-val with BN running statistics and
    discretizes; ``finish`` writes the genotype. A progressive search (``method.stages``) enters each stage
    at its first epoch: the edges pruned to the stage's ops, the weights widened to its K."""

    @staticmethod
    def check(cfg, data: data_lib.SearchData) -> None:
        """Everything this set-up refuses, without making a weight (``--check`` runs it; so does
        ``__init__``, first): the method's parts, each batch size against its split and the devices,
        the supernet built abstractly and the stages it can run."""
        s = cfg.search
        methods.parts(cfg.method, s.epochs, 1)
        for part, idx in (("search-train", data.train_idx), ("search-val", data.val_idx)):
            if s.batch_size > len(idx):
                raise JaxnasError(f"search.batch_size {s.batch_size} is larger than the {len(idx)} examples of the "
                                  f"{part} split (data.train_portion={cfg.data.train_portion})")
        mesh = parallel.make_mesh(cfg.run.devices)
        parallel.check_batch(s.batch_size, mesh)
        parallel.check_batch(s.eval_batch_size, mesh)
        ds = data.dataset
        net = nnx.eval_shape(lambda: build_supernet(cfg.space, ds.image_shape, ds.num_classes, nnx.Rngs(cfg.seed),
                                                    kernels=cfg.run.kernels))
        check_stages(net, progressive.stages(cfg.method.stages, s.epochs), cfg.space.name)

    def __init__(self, cfg, run_dir: str | None = None, log=print, data: data_lib.SearchData | None = None):
        s = cfg.search
        self.cfg, self.run_dir, self.log, self.space = cfg, run_dir, log, get_space(cfg.space.name)

        # data: search-train and search-val halves of the training split
        self.data = data if data is not None else data_lib.search_data(cfg.data)
        self.check(cfg, self.data)
        self.mean, self.std = self.data.mean, self.data.std
        self.train_b = self.data.batcher("train", s.batch_size, cfg.seed, 0)
        self.val_b = self.data.batcher("val", s.batch_size, cfg.seed, 1)
        self.epochs = s.epochs
        self.steps = min(self.train_b.steps_per_epoch, s.max_steps_per_epoch or self.train_b.steps_per_epoch)
        self.log_every, self.checkpoint_every = cfg.run.log_every, cfg.run.checkpoint_every
        self.profile_step, self.profile_steps = cfg.run.profile_step, cfg.run.profile_steps

        # mesh: every device, the batch split over them
        self.mesh = parallel.make_mesh(cfg.run.devices)
        self.part = parallel.local_part()

        # optimizers and the method's parts; a progressive search builds one supernet per stage
        self.stages = progressive.stages(cfg.method.stages, s.epochs)
        self.schedule = epoch_cosine_lr(cfg.optim.lr, cfg.optim.lr_min, s.epochs, self.steps)
        self.w_tx, self.a_tx = weight_optimizer(cfg.optim, self.schedule), alpha_optimizer(cfg.optim)
        self.parts = methods.parts(cfg.method, s.epochs, self.steps)
        self._built: dict = {}
        self.stage, self.masks = 0, None
        self.current = self._build(0, None)
        self.state = parallel.put_replicated(self.current.fresh, self.mesh)
        self.ckpt = driver.checkpointer(run_dir, cfg.run.keep_checkpoints, log)
        self.start, self.sums, self.count, self.history, self.arch = 0, {}, 0, [], None

    def _supernet(self, k: int, masks):
        """The supernet of stage k with these op masks (a new one; nothing is kept)."""
        cfg, space_cfg, ds = self.cfg, self.cfg.space, self.data.dataset
        if self.stages:
            space_cfg = ml_collections.ConfigDict(cfg.space.to_dict())
            space_cfg.partial_channels = self.stages[k].partial
        net = build_supernet(space_cfg, ds.image_shape, ds.num_classes, nnx.Rngs(cfg.seed), kernels=cfg.run.kernels)
        if masks is not None:
            net.set_op_mask(masks)
        return net

    def _build(self, k: int, masks) -> Stage:
        """The supernet of stage k with these op masks, its fresh state and jitted steps (the last one built is
        kept, so restoring and continuing in one stage builds it once)."""
        key = (k, None if masks is None else tuple((n, np.asarray(m, bool).tobytes()) for n, m in sorted(masks.items())))
        if key in self._built:
            return self._built[key]
        cfg, s, mesh = self.cfg, self.cfg.search, self.mesh
        net = self._supernet(k, masks)
        gdef, fresh = init_state(net, self.w_tx, self.a_tx, seed=cfg.seed)
        net.eval()
        gdef_eval = nnx.split(net)[0]
        dtype = DTYPES[s.dtype]
        step = parallel.jit_data_parallel(make_search_step(gdef, self.w_tx, self.a_tx, self.schedule, s.order,
                                                           cfg.optim, self.parts, gdef_eval, dtype,
                                                           s.get("passes", "unrolled")), mesh, n_batches=2,
                                            fusion_autotune=cfg.run.get("fusion_autotune", False))
        evaluate_step = jax.jit(make_eval_step(gdef_eval, self.parts, dtype),
                                in_shardings=(parallel.replicated(mesh), parallel.batch_sharded(mesh)),
                                out_shardings=parallel.replicated(mesh))
        self._built = {key: Stage(net, gdef, fresh, step, evaluate_step)}  # the latest only: a finished stage's go
        return self._built[key]

    def _state_shape(self, meta: dict):
        """The structure of a checkpoint's state, from its meta (stage and op masks): that stage's supernet
        and fresh state built abstractly, as zeros of their shapes. Nothing is kept (a pure function)."""
        k, masks = self._stage_of(meta)
        shapes = jax.eval_shape(lambda: init_state(self._supernet(k, masks), self.w_tx, self.a_tx,
                                                   seed=self.cfg.seed)[1])
        return jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), shapes)

    @staticmethod
    def _stage_of(meta: dict):
        m = meta.get("op_mask")
        return meta.get("stage", 0), None if m is None else {name: np.asarray(v, bool) for name, v in m.items()}

    def restore(self) -> None:
        """Continue from the newest good checkpoint: its meta names the stage and op masks, whose supernet
        gives the state's structure; the search then continues in that stage."""
        template = self._state_shape if self.stages else self.state
        tree, meta, self.start, self.history = driver.restore_run(
            self.ckpt, template, self.steps, self.mesh.devices.size, self.run_dir, self.log,
            ("metrics.jsonl", "alphas.jsonl"), fingerprint(self.cfg))
        if tree is not None:
            self.stage, self.masks = self._stage_of(meta)
            self.current = self._build(self.stage, self.masks)
            self.state, self.sums, self.count = parallel.put_replicated(tree, self.mesh), meta["sums"], meta["count"]
        if self.history:
            self.arch = self.space.arch_from_dict(self.history[-1]["genotype"])

    def open(self, resume: bool) -> None:
        """Restore (``resume``), then the writers, the progress bar and the run's first lines."""
        cfg, s, ds = self.cfg, self.cfg.search, self.data.dataset
        if resume:
            self.restore()
        self.writer = writers.MetricWriter(self.run_dir, self.start, cfg.run.tensorboard, resume)
        n_params = sum(x.size for x in jax.tree.leaves(self.state.params))
        self.log(f"search: method={cfg.method.name} space={cfg.space.name} ops={','.join(self.current.net.op_names)} "
                 f"order={s.order} | {n_params / 1e6:.3f}M weights | data={ds.name} {ds.image_shape} train/val "
                 f"{len(self.data.train_idx)}/{len(self.data.val_idx)} | {self.mesh.devices.size} x "
                 f"{jax.devices()[0].device_kind} in {jax.process_count()} process(es) | {self.steps} steps/epoch")
        self.start_progress("search", cfg.run.progress, f"the {s.order}-order search step")
        eval_idx = self.data.val_idx[:s.eval_examples] if s.eval_examples else self.data.val_idx
        self.eval_idx = eval_idx
        self.eval_what = "search-val" if len(eval_idx) == len(self.data.val_idx) else \
            f"{len(eval_idx)} search-val images"

    def enter_stage(self, k: int) -> None:
        """Prune each edge to the stage's ops and widen the weights to its K (methods.progressive)."""
        old = jax.device_get(self.state)
        alphas = {n: np.asarray(v[...]) for n, v in old.alphas.items() if str(n).startswith("alphas")}
        pruned, self.masks = progressive.prune(alphas, self.masks, self.stages[k].keep)
        self.current = self._build(k, self.masks)
        fresh = self.current.fresh
        new_alphas = jax.tree_util.tree_map_with_path(lambda path, x: pruned.get(path[0].key, x), old.alphas)
        seed = self.cfg.seed + k
        self.state = parallel.put_replicated(old._replace(
            params=progressive.widen_tree(old.params, fresh.params, seed), alphas=new_alphas,
            batch_stats=progressive.widen_tree(old.batch_stats, fresh.batch_stats, seed),
            w_opt=progressive.widen_tree(old.w_opt, fresh.w_opt, seed)), self.mesh)
        self.stage = k
        st = self.stages[k]
        self.log(f"stage {k + 1}/{len(self.stages)} from epoch {st.start + 1}: {st.keep} ops per edge kept, "
                 f"partial channels K={st.partial}")

    def begin_epoch(self, epoch, first):
        if first == 0:
            self.sums, self.count = {}, 0
            if self.stages and progressive.stage_of(self.stages, epoch) != self.stage:
                self.enter_stage(progressive.stage_of(self.stages, epoch))

    def step(self, epoch, i):
        tb = parallel.put_batch(self.train_b.batch(epoch, i, self.part), self.mesh, local=True)
        vb = parallel.put_batch(self.val_b.batch(epoch, i, self.part), self.mesh, local=True)
        self.state, metrics = self.current.step(self.state, tb, vb)
        return metrics

    def log_step(self, epoch, i, gstep, m):
        s = self.cfg.search
        for k, v in m.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1
        val = f"val loss {m['val_loss']:.4f} acc {m['val_acc']:.3f} | " if "val_loss" in m else ""
        sched = "".join(f"{k} {float(m[k]):.4g} | " for k in methods.HYPER if k in m)
        self.progress.write(f"epoch {epoch + 1}/{s.epochs} step {i + 1}/{self.steps} | train loss "
                            f"{m['train_loss']:.4f} acc {m['train_acc']:.3f} | {val}lr {m['lr']:.5f} | {sched}"
                            f"{self.progress.rate() * s.batch_size:.1f} img/s | ETA {self.progress.eta()}", self.log)
        self.writer.write("steps", gstep, {"epoch": epoch + 1, "step": gstep, **m})

    def end_epoch(self, epoch, gstep, seconds):
        s, ds, state, op_names = self.cfg.search, self.data.dataset, self.state, self.current.net.op_names
        val_loss, val_acc = evaluate(self.current.evaluate, state, ds.x_train[self.eval_idx],
                                     ds.y_train[self.eval_idx], s.eval_batch_size, self.mean, self.std, self.mesh)
        self.arch = nnx.merge(self.current.graphdef, state.params, state.alphas, state.batch_stats).genotype()
        record = {"epoch": epoch + 1, "step": gstep, "time_s": round(time.time() - self.t0, 2),
                  **{f"mean_{k}": v / max(self.count, 1) for k, v in self.sums.items()},
                  "search_val_loss": val_loss, "search_val_acc": val_acc, "genotype": self.arch.to_dict()}
        self.history.append(record)
        self.progress.write(f"epoch {epoch + 1}/{s.epochs} done in {seconds:.1f}s | {self.eval_what}, BN running "
                            f"statistics: loss {val_loss:.4f} acc {val_acc:.4f} | ETA {self.progress.eta()} | "
                            f"genotype {self.arch}", self.log)
        self.writer.write("metrics", gstep, record)
        self.writer.write("alphas", gstep, {"epoch": epoch + 1, "ops": list(op_names), **alphas_record(state.alphas)})
        self.writer.tb_scalars("alpha_softmax", gstep, _alpha_scalars(state.alphas, op_names))
        self.writer.text("genotype", gstep, str(self.arch))
        self.writer.flush()

    def save(self, gstep):
        if self.ckpt is not None:
            masks = self.masks
            self.ckpt.save(gstep, self.state, {
                "step": gstep, "steps_per_epoch": self.steps, "sums": self.sums, "count": self.count,
                "devices": int(self.mesh.devices.size), "processes": jax.process_count(),
                "config": fingerprint(self.cfg), "stage": self.stage,
                "op_mask": None if masks is None else {n: m.tolist() for n, m in masks.items()}})

    def finish(self) -> dict:
        """The found cell (looked up in a tabular benchmark when one is given, e.g. DARTS on NAS-Bench-201),
        written to ``genotype.json``; returns the result."""
        cfg, log, arch, run_dir = self.cfg, self.log, self.arch, self.run_dir
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
        return {"genotype": arch, "history": self.history, "state": self.state, "graphdef": self.current.graphdef,
                "result": result}


@register_strategy("darts")
def run(cfg, run_dir: str | None = None, log=print, resume: bool = False,
        data: data_lib.SearchData | None = None) -> dict:
    """Run a DARTS search as configured on ``data`` (None: ``data_lib.search_data(cfg.data)``); returns the
    final genotype and the per-epoch history.

    With ``run_dir`` it checkpoints every ``run.checkpoint_every`` steps and at each
    epoch end; ``resume`` continues from the newest good checkpoint there, bit for bit.
    """
    if resume and not run_dir:
        raise JaxnasError("resume needs a run directory")
    search = DartsSearch(cfg, run_dir, log, data)
    search.open(resume)
    driver.run(search)
    return search.finish()
