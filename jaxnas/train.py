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
from jaxnas.nn import DTYPES, count_params  # noqa: F401  (DTYPES: train.dtype's values)
from jaxnas.optim import epoch_cosine_lr, weight_optimizer
from jaxnas.spaces.darts import DartsNetwork


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
    model.eval()
    graphdef_eval, params, stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    if jax.tree.leaves(rest):
        raise ValueError(f"network holds state that is neither weights nor BN statistics: {rest}")
    model.train()
    predict = jax.jit(make_predict(graphdef_eval),
                      in_shardings=(parallel.replicated(mesh),) * 2 + (parallel.batch_sharded(mesh),),
                      out_shardings=parallel.replicated(mesh))
    return ds, model, mesh, params, stats, predict


class Retrain(driver.Loop):
    """Retraining a genotype from scratch (DARTS's train.py) as one object that ``driver.run`` drives:
    set-up in ``__init__`` and ``restore``; each step one SGD step with drop-path; each epoch's end the
    epoch's record; ``finish`` tests once on the held-out test split and writes the weights."""

    @staticmethod
    def check(cfg, data: data_lib.Dataset | None = None) -> data_lib.Dataset:
        """Everything this set-up refuses, without making a weight (``--check`` runs it; so does
        ``__init__``, first): the genotype, the data (``data``, else ``cfg.data``), the network built
        abstractly, and both batch sizes against the devices. Returns the dataset."""
        genotype = genotype_lib.load(cfg.genotype)
        ds = data if data is not None else data_lib.load_dataset(cfg.data.name, cfg.data.data_dir)
        jax.eval_shape(lambda: nnx.state(build_network(cfg, genotype, ds.image_shape, ds.num_classes)))
        mesh = parallel.make_mesh(cfg.run.devices)
        parallel.check_batch(cfg.train.batch_size, mesh)
        parallel.check_batch(cfg.train.eval_batch_size, mesh)
        return ds

    def __init__(self, cfg, run_dir: str | None = None, log=print, data: data_lib.Dataset | None = None):
        t = cfg.train
        self.cfg, self.run_dir, self.log = cfg, run_dir, log

        # data, mesh and model (the evaluation network of the genotype)
        data = self.check(cfg, data)
        self.genotype = genotype_lib.load(cfg.genotype)
        self.ds, self.model, self.mesh, params, stats, self.predict = _prepare(cfg, self.genotype, data)
        ds = self.ds
        self.mean, self.std = ds.mean_std()
        augment = data_lib.resolve_augment(cfg.data.augment, ds.name)
        self.batches = data_lib.Batcher(ds.x_train, ds.y_train, np.arange(len(ds.x_train)), t.batch_size, self.mean,
                                        self.std, augment, cfg.seed, 0, cutout=cfg.data.cutout)
        self.epochs = t.epochs
        self.steps = min(self.batches.steps_per_epoch, t.max_steps_per_epoch or self.batches.steps_per_epoch)
        self.log_every, self.checkpoint_every = cfg.run.log_every, cfg.run.checkpoint_every
        self.profile_step, self.profile_steps = cfg.run.profile_step, cfg.run.profile_steps

        # optimizer and the jitted train step
        self.schedule = epoch_cosine_lr(cfg.optim.lr, cfg.optim.lr_min, t.epochs, self.steps)
        tx = weight_optimizer(cfg.optim, self.schedule)
        graphdef = nnx.split(self.model, nnx.Param, nnx.BatchStat, ...)[0]
        repl, sharded = parallel.replicated(self.mesh), parallel.batch_sharded(self.mesh)
        self.train_step = jax.jit(make_train_step(graphdef, tx, cfg.model.auxiliary_weight, DTYPES[t.dtype]),
                                  in_shardings=(repl, repl, repl, sharded, repl, repl), out_shardings=repl,
                                  donate_argnums=(0, 1, 2),
                                  compiler_options=parallel.compiler_options(self.mesh,
                                                                             cfg.run.get("fusion_autotune", False)))
        self.params, self.stats, self.opt = params, stats, tx.init(params)
        self.key = jax.random.key(cfg.seed)
        self.part = parallel.local_part()
        self.ckpt = driver.checkpointer(run_dir, cfg.run.keep_checkpoints, log)
        self.start, self.sums, self.history, self.last, self.drop_prob = 0, {"loss": 0.0, "acc": 0.0}, [], {}, 0.0

    def _tree(self) -> dict:
        return {"params": self.params, "stats": self.stats, "opt": self.opt, "key": jax.random.key_data(self.key)}

    def open(self, resume: bool) -> None:
        """Restore (``resume``: the newest good checkpoint), then the writers, the progress bar and the run's
        first line."""
        cfg, t, ds = self.cfg, self.cfg.train, self.ds
        if resume:
            tree, meta, self.start, self.history = driver.restore_run(
                self.ckpt, self._tree(), self.steps, self.mesh.devices.size, self.run_dir, self.log,
                config=config_lib.fingerprint(cfg))
            if tree is not None:
                self.params, self.stats, self.opt = tree["params"], tree["stats"], tree["opt"]
                self.key, self.sums = jax.random.wrap_key_data(tree["key"]), meta["sums"]
        self.params, self.stats, self.opt = parallel.put_replicated((self.params, self.stats, self.opt), self.mesh)
        self.writer = writers.MetricWriter(self.run_dir, self.start, cfg.run.tensorboard, resume)
        self.log(f"train: genotype {self.genotype} | {count_params(self.model) / 1e6:.3f}M params (auxiliary head "
                 f"excluded) | C={cfg.model.C} layers={cfg.model.layers} | data={ds.name} train/test "
                 f"{len(ds.x_train)}/{len(ds.x_test)} | {self.mesh.devices.size} x {jax.devices()[0].device_kind} in "
                 f"{jax.process_count()} process(es) | {self.steps} steps/epoch")
        self.start_progress("train", cfg.run.progress, "the train step")

    def begin_epoch(self, epoch, first):
        self.drop_prob = self.cfg.model.drop_path_prob * epoch / self.epochs
        if first == 0:
            self.sums = {"loss": 0.0, "acc": 0.0}

    def step(self, epoch, i):
        self.key, sub = jax.random.split(self.key)
        batch = parallel.put_batch(self.batches.batch(epoch, i, self.part), self.mesh, local=True)
        self.params, self.stats, self.opt, last = self.train_step(self.params, self.stats, self.opt, batch, sub,
                                                                  jnp.float32(self.drop_prob))
        self.sums = {k: self.sums[k] + last[k] for k in self.sums}
        self.last = last
        return {"train loss": last["total_loss"], "gradient norm": last["grad_norm"]}

    def log_step(self, epoch, i, gstep, _):
        t, p = self.cfg.train, self.progress
        loss, acc = float(self.last["loss"]), float(self.last["acc"])
        p.write(f"epoch {epoch + 1}/{t.epochs} step {i + 1}/{self.steps} | loss {loss:.4f} acc {acc:.3f} | "
                f"drop-path {self.drop_prob:.3f} | {p.rate() * t.batch_size:.1f} img/s | ETA {p.eta()}", self.log)
        self.writer.write("steps", gstep, {"epoch": epoch + 1, "step": gstep, "loss": loss, "acc": acc,
                                           "lr": float(self.schedule(gstep - 1))})

    def end_epoch(self, epoch, gstep, seconds):
        record = {"epoch": epoch + 1, "step": gstep, "train_loss": float(self.sums["loss"]) / self.steps,
                  "train_acc": float(self.sums["acc"]) / self.steps, "drop_prob": self.drop_prob,
                  "time_s": round(time.time() - self.t0, 2)}
        self.history.append(record)
        self.progress.write(f"epoch {epoch + 1}/{self.epochs} done in {seconds:.1f}s | train loss "
                            f"{record['train_loss']:.4f} acc {record['train_acc']:.4f} | ETA {self.progress.eta()}",
                            self.log)
        self.writer.write("metrics", gstep, record)
        self.writer.flush()

    def save(self, gstep):
        if self.ckpt is not None:
            self.ckpt.save(gstep, self._tree(),
                           {"step": gstep, "steps_per_epoch": self.steps,
                            "sums": {k: float(v) for k, v in self.sums.items()},
                            "devices": int(self.mesh.devices.size), "processes": jax.process_count(),
                            "config": config_lib.fingerprint(self.cfg)})

    def finish(self) -> dict:
        """Test once on the held-out test split; write the genotype, the weights and the test metrics."""
        ds, run_dir = self.ds, self.run_dir
        result = test_metrics(self.predict, self.params, self.stats, ds.x_test, ds.y_test, ds.num_classes,
                              self.cfg.train.eval_batch_size, self.mean, self.std, self.mesh)
        result["params"] = count_params(self.model)
        self.log("test metrics (held-out test split, used for nothing else):\n" + metrics_lib.table(result))
        if run_dir and jax.process_index() == 0:
            genotype_lib.save(self.genotype, os.path.join(run_dir, "genotype.json"))
            checkpoint.save(os.path.join(run_dir, "weights.npz"), params=self.params, batch_stats=self.stats)
            rundir.write_json(os.path.join(run_dir, "test_metrics.json"), result)
        return {"test": result, "history": self.history}


def run(cfg, run_dir: str | None = None, log=print, resume: bool = False, data: data_lib.Dataset | None = None) -> dict:
    """Retrain ``cfg.genotype`` as configured on ``data`` (None: the dataset ``cfg.data`` names), then test;
    writes weights and test metrics into ``run_dir``.

    Checkpoints (weights, BN statistics, optimizer, PRNG key, position) every
    ``run.checkpoint_every`` steps and at each epoch end; ``resume`` continues bit for bit.
    """
    if resume and not run_dir:
        raise JaxnasError("resume needs a run directory")
    retrain = Retrain(cfg, run_dir, log, data)
    retrain.open(resume)
    driver.run(retrain)
    return retrain.finish()


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
    parallel.check_batch(cfg.train.eval_batch_size, mesh)
    params, stats = checkpoint.load(os.path.join(run_dir, "weights.npz"), params=params, batch_stats=stats)
    params, stats = parallel.put_replicated((params, stats), mesh)
    mean, std = ds.mean_std()
    result = test_metrics(predict, params, stats, ds.x_test, ds.y_test, ds.num_classes, cfg.train.eval_batch_size,
                          mean, std, mesh)
    result["params"] = count_params(model)
    log(metrics_lib.table(result))
    return result
