"""The one training routine of dataset optimization: the baseline, every trial and every final refit
go through ``fit``, so that a comparison is between models and hyperparameters, not code paths.

Per step: cross-entropy with label smoothing (Szegedy et al. 2016), SGD with momentum and L2 weight
decay (PyTorch's ``weight_decay``) or AdamW (decoupled decay), a cosine learning rate over all
steps; augmentation by random crop (zero padding of H/8 pixels, DARTS's 4 at 32x32), horizontal
flip, and Cutout of H/2 (DARTS's 16 at 32x32). Inputs are normalized by the mean and std of the
examples trained on. After every epoch the validation split (when given) is scored; ``on_epoch``
sees the score and may stop the run (pruning).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Callable

import jax
import numpy as np
import optax
from flax import nnx

from jaxnas import data as data_lib
from jaxnas import checkpoint as checkpoint_lib
from jaxnas import metrics as metrics_lib
from jaxnas import driver, parallel, rundir, writers
from jaxnas.errors import JaxnasError
from jaxnas.evaluators.train import make_classifier_steps
from jaxnas.hyper import reweight
from jaxnas.hyper.methods import METHODS
from jaxnas.hyper.methods.registry import needs_label_noise
from jaxnas.nn import count_params
from jaxnas.optimize import model_spec, models

HPARAMS = ("lr", "weight_decay", "batch_size", "epochs", "label_smoothing", "augment", "optimizer", "momentum")
AUGMENTS = ("none", "crop", "crop_flip", "crop_cutout", "crop_flip_cutout")
OPTIMIZERS = ("sgd", "adamw")
METRICS = ("accuracy", "macro_f1")


class Diverged(JaxnasError):
    """The training loss became NaN or Inf."""


class TimeUp(Exception):
    """A trial ran past its time limit."""


def check_hparams(hp: dict, where: str) -> None:
    """Each hyperparameter of the type and inside the range the trainer takes; else one error naming it."""
    for name in ("batch_size", "epochs"):
        if not isinstance(hp[name], int) or isinstance(hp[name], bool):
            raise JaxnasError(f"{where}.{name} must be an integer, got {hp[name]!r}")
    for name in ("lr", "weight_decay", "label_smoothing", "momentum"):
        if not isinstance(hp[name], (int, float)) or isinstance(hp[name], bool) or not math.isfinite(hp[name]):
            raise JaxnasError(f"{where}.{name} must be a finite number, got {hp[name]!r}")
    if hp["augment"] not in AUGMENTS:
        raise JaxnasError(f"{where}.augment: unknown augmentation {hp['augment']!r}; allowed: {', '.join(AUGMENTS)}")
    if hp["optimizer"] not in OPTIMIZERS:
        raise JaxnasError(f"{where}.optimizer: unknown optimizer {hp['optimizer']!r}; allowed: {', '.join(OPTIMIZERS)}")
    for name, ok, allowed in (("lr", hp["lr"] > 0, "> 0"), ("weight_decay", hp["weight_decay"] >= 0, ">= 0"),
                              ("batch_size", int(hp["batch_size"]) >= 1, ">= 1"),
                              ("epochs", int(hp["epochs"]) >= 1, ">= 1"),
                              ("label_smoothing", 0 <= hp["label_smoothing"] < 1, "in [0, 1)"),
                              ("momentum", 0 <= hp["momentum"] < 1, "in [0, 1)")):
        if not ok:
            raise JaxnasError(f"{where}.{name} must be {allowed}, got {hp[name]!r}")


def optimizer(hp: dict, total_steps: int, schedule: bool = False):
    """The weight optimizer of ``hp`` (``schedule=True``: with its learning-rate schedule, a pair)."""
    lr = optax.cosine_decay_schedule(float(hp["lr"]), max(total_steps, 1))
    if hp["optimizer"] == "adamw":
        tx = optax.adamw(lr, weight_decay=float(hp["weight_decay"]))
    else:
        tx = optax.chain(optax.add_decayed_weights(float(hp["weight_decay"])),
                         optax.sgd(lr, momentum=float(hp["momentum"]) or None))
    return (tx, lr) if schedule else tx


@dataclasses.dataclass
class Fitted:
    """A trained model: its weights, the jitted predictor, per-epoch history and cost."""

    params: object
    stats: object
    predict: Callable
    mean: np.ndarray
    std: np.ndarray
    num_params: int
    history: list[dict]
    seconds: float
    best_epoch: int
    eval_batch: int = 256

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits of every image of ``x`` (batches of fixed size, the last one padded)."""
        out = []
        for batch in data_lib.eval_batches(x, np.zeros(len(x), np.int32), self.eval_batch, self.mean, self.std):
            n = int(batch["mask"].sum())
            out.append(np.asarray(self.predict(self.params, self.stats, batch["x"]))[:n])
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def warm_up(self, shape: tuple) -> None:
        """Compile the predictor on zeros, so that timing it later measures inference, not compiling."""
        x = np.zeros((self.eval_batch,) + tuple(shape), np.float32)
        jax.block_until_ready(self.predict(self.params, self.stats, x))


def score(y: np.ndarray, preds: np.ndarray, num_classes: int, metric: str) -> float:
    m = metrics_lib.from_confusion(metrics_lib.confusion_matrix(y, preds, num_classes))
    return m[metric]


class _EpochCheckpoints:
    """A fit's state after its last finished epoch, in folder ``directory``: ``state-<epoch>.npz``
    (named arrays, ``checkpoint.save``: written whole, then renamed) and then ``latest.json`` (the
    epoch's meta, naming that file; written atomically). Only the newest state is kept. A folder that
    cannot be read back is reported and the fit starts over."""

    def __init__(self, directory: str):
        self.directory = directory
        self.latest = os.path.join(directory, "latest.json")

    def restore(self, template) -> tuple[dict, dict] | None:
        if not os.path.exists(self.latest):
            return None
        try:
            meta = rundir.read_json(self.latest, "fit checkpoint")
            (tree,) = checkpoint_lib.load(os.path.join(self.directory, str(meta.get("state"))), state=template)
        except JaxnasError as e:
            print(f"warning: {e}; the fit starts over", flush=True)
            return None
        return tree, meta

    def save(self, epoch: int, tree: dict, meta: dict) -> None:
        os.makedirs(self.directory, exist_ok=True)
        name = f"state-{epoch}.npz"
        checkpoint_lib.save(os.path.join(self.directory, name), state=tree)
        rundir.write_json(self.latest, dict(meta, state=name))
        for old in os.listdir(self.directory):
            if old.startswith("state-") and old != name:
                os.remove(os.path.join(self.directory, old))


class Fit(driver.Loop):
    """One training run of the trainer as a run object that ``driver.run`` drives (the loop every
    jaxnas run goes through: the NaN/Inf guard, one step late, and closing whatever happens). Set-up
    (``__init__``) builds the model, the batches, the jitted steps on the mesh and restores a
    checkpoint; ``step`` trains on one batch (with ``hyper``: a reweighting step, after the
    hyperparameter update when one is due); ``end_epoch`` records the epoch, scores val, keeps the
    best weights, checkpoints, and calls ``on_epoch``; ``result()`` is the ``Fitted``. Signals are
    left to the caller (``catch_signals = False``): an optimize run stops at once and its finished
    work is on disk. The arguments are ``fit``'s."""

    catch_signals = False

    def __init__(self, spec: "model_spec.Spec | str", hp: dict, x: np.ndarray, y: np.ndarray,
                 train_idx: np.ndarray, num_classes: int, seed: int, cfg, val_idx: np.ndarray | None = None,
                 on_epoch: Callable[[int, float], None] | None = None, keep_best: bool = False,
                 metric: str = "accuracy", deadline: float = 0.0, hyper=None, clean: np.ndarray | None = None,
                 checkpoint: str | None = None):
        self.spec, self.hp, self.x, self.y, self.num_classes = spec, hp, x, y, num_classes
        self.val_idx, self.on_epoch, self.keep_best, self.metric = val_idx, on_epoch, keep_best, metric
        self.deadline, self.hyper, self.clean = deadline, hyper, clean
        epochs, batch_size = int(hp["epochs"]), int(hp["batch_size"])
        mesh = self.mesh = parallel.make_mesh(cfg.run.devices)
        if batch_size > len(train_idx):  # a split smaller than one batch: one batch of all of it
            batch_size = max(parallel.round_to_devices(len(train_idx), mesh), 1)
        parallel.check_batch(batch_size, mesh)
        model = models.build(spec, x.shape[1:], num_classes, nnx.Rngs(seed), cfg)
        model.eval()
        graphdef_eval = nnx.split(model)[0]
        model.train()
        graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
        xt = data_lib.to_unit(x[train_idx])
        mean, std = xt.mean(axis=(0, 1, 2)), xt.std(axis=(0, 1, 2)) + 1e-8
        h = x.shape[1]
        augment = hp["augment"]
        crop, cut, pad = augment.replace("_cutout", ""), h // 2 if augment.endswith("cutout") else 0, max(1, h // 8)
        self.batches = data_lib.Batcher(x, y, train_idx, batch_size, mean, std, crop, seed, 11, cutout=cut, pad=pad)
        self.epochs, self.steps = epochs, self.batches.steps_per_epoch
        self.log_every = self.steps  # nothing is logged per step: the epoch's record is the log
        method = METHODS.lookup(hyper.method) if hyper is not None else None
        learned = method is not None and method.owns_weight_decay(hyper)
        tx, self.schedule = optimizer({**hp, "weight_decay": 0.0} if learned else hp, epochs * self.steps,
                                      schedule=True)
        autotune = bool(cfg.run.fusion_autotune)
        self.train, predict = make_classifier_steps(graphdef, graphdef_eval, tx, float(hp["label_smoothing"]),
                                                    num_classes, mesh, autotune)
        self.params, self.stats, self.opt = parallel.put_replicated((params, stats, tx.init(params)), mesh)
        n_dev = mesh.devices.size
        self.fitted = Fitted(self.params, self.stats, predict, mean, std, count_params(model), [], 0.0, epochs,
                             eval_batch=-(-256 // n_dev) * n_dev)
        self.meta = self.rstate = self.last_weight = self.seen = None
        if hyper is not None:
            if method.needs_clean and clean is None:
                raise needs_label_noise(hyper.method, "no record of one (clean=None)")
            if val_idx is None or len(val_idx) == 0:
                raise JaxnasError("optimize.hyper needs a validation split of at least one example: its meta data")
            mb = parallel.round_to_devices(min(int(hyper.meta_batch), len(val_idx)), mesh)
            if mb == 0:
                raise JaxnasError(f"optimize.hyper: the validation split's {len(val_idx)} examples are fewer than "
                                  f"the {n_dev} devices; a meta batch needs at least one example per device")
            self.meta = data_lib.Batcher(x, y, val_idx, mb, mean, std, crop, seed, 12, cutout=cut, pad=pad)
            self.learner = reweight.Steps(graphdef, tx, hp, num_classes, len(train_idx), hyper, seed, mesh, autotune,
                                          image_shape=x.shape[1:])
            self.rstate = parallel.put_replicated(self.learner.init(), mesh)
            self.position = np.zeros(len(x), np.int32)
            self.position[train_idx] = np.arange(len(train_idx))
            self.last_weight, self.seen = np.zeros(len(x)), np.zeros(len(x), bool)
        self.best = (-math.inf, None)
        self.t0 = time.time()
        self.saved = _EpochCheckpoints(checkpoint) if checkpoint else None
        if self.saved is not None:
            self._restore()
        self.progress = driver.Progress(self.epochs * self.steps, self.start, str(spec), enabled=False)
        self.writer = writers.MetricWriter(None)

    def _state(self) -> dict:
        best = self.best[1][:2] if self.best[1] is not None else (self.params, self.stats)
        return {"params": self.params, "stats": self.stats, "opt": self.opt, "rstate": self.rstate,
                "last_weight": self.last_weight, "seen": self.seen, "best": best}

    def _restore(self) -> None:
        restored = self.saved.restore(self._state())
        if restored is None:
            return
        state, m = restored
        self.params, self.stats, self.opt, self.rstate = parallel.put_replicated(
            (state["params"], state["stats"], state["opt"], state["rstate"]), self.mesh)
        if self.meta is not None:
            self.last_weight, self.seen = state["last_weight"], state["seen"]
        if m["best_epoch"]:
            self.best = (m["best_score"], parallel.put_replicated(state["best"], self.mesh) + (m["best_epoch"],))
        self.start, self.t0, self.fitted.history = m["epoch"] * self.steps, self.t0 - m["seconds"], m["history"]
        if self.deadline:  # a time limit counts the time the fit spent before it stopped
            self.deadline -= m["seconds"]
        self.fitted.params, self.fitted.stats = self.params, self.stats
        if self.on_epoch is not None and self.val_idx is not None:  # a study's trial: its pruner sees them again
            for record in self.fitted.history:
                self.on_epoch(record["epoch"], record["val"])

    def nonfinite(self, gstep: int, bad: list[str]) -> Exception:
        epoch = (gstep - 1) // self.steps + 1
        return Diverged(f"model {self.spec}: the training loss became {bad[0].split('=', 1)[1]} in epoch {epoch} "
                        f"(lr {self.hp['lr']:.3g}, optimizer {self.hp['optimizer']})")

    def begin_epoch(self, epoch: int, first: int) -> None:
        self.losses, self.weights = [], []

    def step(self, epoch: int, i: int) -> dict:
        batches, g = self.batches, epoch * self.steps + i
        if self.meta is None:
            self.params, self.stats, self.opt, loss = self.train(self.params, self.stats, self.opt,
                                                                 batches.batch(epoch, i))
        else:
            learner = self.learner
            rows, batch = self._batch(epoch, i)
            meta_batch = self.meta.batch(epoch, i)
            if learner.updates_hyper(g):
                ahead = [batch] + [self._batch(epoch, i + j)[1] for j in range(1, learner.lookahead)]
                self.rstate, _ = learner.hyper_update(self.params, self.stats, self.opt, self.rstate,
                                                      jax.tree.map(lambda *a: np.stack(a), *ahead), meta_batch,
                                                      self.schedule(g))
            self.params, self.stats, self.opt, self.rstate, loss, w = learner.step(
                self.params, self.stats, self.opt, self.rstate, batch, meta_batch, self.schedule(g))
            self.weights.append((rows, w))
        self.losses.append(loss)
        if self.deadline and time.time() > self.deadline:
            jax.block_until_ready(loss)
            raise TimeUp(f"stopped in epoch {epoch + 1} after {time.time() - self.t0:.0f} s")
        return {"loss": loss}

    def _batch(self, epoch: int, i: int) -> tuple[np.ndarray, dict]:
        """Training batch ``i`` of ``epoch`` for a reweighting step, and its rows (into ``x``): the
        batch with its examples' positions in the training split (per-example weights), the learned
        augmentations' randomness, and for ``oracle`` which of its labels are correct."""
        rows, batch = self.batches.rows(epoch, i), self.batches.batch(epoch, i)
        if self.learner.needs_clean:
            batch["clean"] = self.clean[rows].astype(np.float32)
        return rows, dict(batch, pos=self.position[rows], **self.learner.draws(epoch, i, batch["x"].shape))

    def end_epoch(self, epoch: int, gstep: int, seconds: float) -> None:
        record = {"epoch": epoch + 1, "train_loss": float(np.mean(jax.device_get(self.losses)))}
        if self.meta is not None:
            for rows, w in jax.device_get(self.weights):
                self.last_weight[rows], self.seen[rows] = w, True
            record["weights"] = reweight.weight_summary(self.last_weight, self.seen, self.clean)
            if self.learner.values is not None:
                record["hyper"] = self.learner.values(self.rstate)
        fitted = self.fitted
        fitted.params, fitted.stats = self.params, self.stats
        if self.val_idx is not None:
            preds = fitted.logits(self.x[self.val_idx]).argmax(-1)
            record["val"] = score(self.y[self.val_idx], preds, self.num_classes, self.metric)
            if record["val"] > self.best[0]:
                self.best = (record["val"], (self.params, self.stats, epoch + 1))
        record["seconds"] = round(time.time() - self.t0, 3)
        fitted.history.append(record)
        if self.saved is not None:  # before on_epoch, which may stop the fit
            best = self.best[1]
            self.saved.save(epoch + 1, self._state(),
                            {"epoch": epoch + 1, "history": fitted.history, "seconds": time.time() - self.t0,
                             "best_score": self.best[0] if best is not None else None,
                             "best_epoch": best[2] if best is not None else 0})
        if self.on_epoch is not None and self.val_idx is not None:
            self.on_epoch(epoch + 1, record["val"])

    def result(self) -> Fitted:
        fitted = self.fitted
        fitted.seconds = time.time() - self.t0
        if self.keep_best and self.best[1] is not None:
            fitted.params, fitted.stats, fitted.best_epoch = self.best[1]
        return fitted


def fit(spec: "model_spec.Spec | str", hp: dict, x: np.ndarray, y: np.ndarray, train_idx: np.ndarray,
        num_classes: int, seed: int, cfg, val_idx: np.ndarray | None = None, on_epoch: Callable[[int, float], None] | None = None,
        keep_best: bool = False, metric: str = "accuracy", deadline: float = 0.0, hyper=None,
        clean: np.ndarray | None = None, checkpoint: str | None = None) -> Fitted:
    """Train model ``spec`` from scratch with ``hp`` on ``x[train_idx]``; score ``x[val_idx]`` after
    every epoch (``on_epoch(epoch, score)`` may raise to stop). ``keep_best``: return the weights of
    the epoch with the best validation score (early stopping on val), else the last ones.
    ``deadline`` (a ``time.time()``, 0: none): past it, ``TimeUp`` is raised after the current step.
    ``hyper`` (``optimize.hyper``): learn example weights or hyperparameters on meta batches of the
    validation split (``jaxnas.hyper.reweight``); ``clean`` (a mask over ``x``: the label is correct)
    adds the weights' separation of clean and corrupted examples to each epoch's record.
    ``checkpoint``: a folder for the state after each epoch; a fit started again with the same
    arguments and folder goes on from its last finished epoch, with the same result as one that was
    never stopped (the batches depend only on seed, epoch and step). A NaN or Inf loss raises
    ``Diverged``. The run object is ``Fit``."""
    run = Fit(spec, hp, x, y, train_idx, num_classes, seed, cfg, val_idx, on_epoch, keep_best, metric, deadline,
              hyper, clean, checkpoint)
    driver.run(run)
    return run.result()
