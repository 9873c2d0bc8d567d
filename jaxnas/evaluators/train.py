"""The ``train`` evaluator: trains the architecture's network from scratch for a budget of
epochs on the search-train split and scores top-1 accuracy on search-val; the cost is the
wall time. Its ``test`` retrains on the whole train split and reports test accuracy and
macro-F1, computed once."""

from __future__ import annotations

import time
import zlib

import jax
import numpy as np
import optax
from flax import nnx

from jaxnas import data as data_lib
from jaxnas import driver
from jaxnas import metrics as metrics_lib
from jaxnas import parallel
from jaxnas.errors import JaxnasError
from jaxnas.evaluators.registry import register_evaluator
from jaxnas.spaces.registry import build_network


def make_classifier_steps(graphdef, graphdef_eval, tx, smoothing: float = 0.0, num_classes: int = 0,
                          mesh=None, fusion_autotune: bool = False):
    """jit-compiled ``train(params, stats, opt, batch) -> (params, stats, opt, loss)`` and
    ``predict(params, stats, x) -> logits`` for any network returning logits (or a tuple whose first
    element is the logits). ``smoothing`` > 0: cross-entropy against labels smoothed over
    ``num_classes`` (Szegedy et al. 2016). ``mesh``: data-parallel over its devices (the state
    replicated, batches split; ``parallel.jit_sharded``), else plain ``jax.jit``."""

    def loss_fn(params, stats, batch):
        model = nnx.merge(graphdef, params, stats, copy=True)
        out = model(batch["x"])
        logits = out[0] if isinstance(out, tuple) else out
        if smoothing:
            targets = optax.smooth_labels(jax.nn.one_hot(batch["y"], num_classes), smoothing)
            loss = optax.softmax_cross_entropy(logits, targets).mean()
        else:
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
        return loss, nnx.state(model, nnx.BatchStat)

    def train(params, stats, opt, batch):
        (loss, stats), g = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, batch)
        updates, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, updates), stats, opt, loss

    def predict(params, stats, x):
        out = nnx.merge(graphdef_eval, params, stats)(x)
        return out[0] if isinstance(out, tuple) else out

    if mesh is None:
        return jax.jit(train), jax.jit(predict)
    R, S = parallel.REPLICATED, parallel.SPLIT
    return (parallel.jit_sharded(train, mesh, (R, R, R, S), R, fusion_autotune),
            parallel.jit_sharded(predict, mesh, (R, R, S), S, fusion_autotune))


class TrainEvaluator:
    """Train from scratch (SGD momentum 0.9, cosine lr, weight decay) for ``epochs`` on search-train,
    score top-1 on search-val; seeded by (seed, architecture) so a score is reproducible."""

    has_cost = True  # the wall time
    takes_data = True

    def __init__(self, space, cfg, log=print, data: data_lib.SearchData | None = None):
        self.space, self.cfg, self.log = space, cfg, log
        data = data if data is not None else data_lib.search_data(cfg.data)
        self.ds, self.train_idx, self.val_idx, self.augment = data.dataset, data.train_idx, data.val_idx, data.augment
        self.mean, self.std = data.mean, data.std
        e = cfg.evaluator
        if e.epochs < 1 or e.batch_size < 1:
            raise JaxnasError(f"evaluator.epochs and evaluator.batch_size must be positive, got {e.epochs}, "
                              f"{e.batch_size}")

    def _seed(self, arch) -> int:
        return (self.cfg.seed * 1_000_003 + zlib.crc32(self.space.encode(arch).encode())) % (2 ** 31)

    def _fit(self, arch, indices, epochs: int):
        e = self.cfg.evaluator
        seed = self._seed(arch)
        model = build_network(self.space, arch, self.ds.image_shape, self.ds.num_classes, nnx.Rngs(seed),
                              kernels=self.cfg.run.kernels)
        model.eval()
        graphdef_eval = nnx.split(model)[0]
        model.train()
        graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
        batches = data_lib.Batcher(self.ds.x_train, self.ds.y_train, indices, min(e.batch_size, len(indices)),
                                   self.mean, self.std, self.augment, seed, 7)
        steps = batches.steps_per_epoch
        schedule = optax.cosine_decay_schedule(e.lr, epochs * steps)
        tx = optax.chain(optax.add_decayed_weights(e.weight_decay), optax.sgd(schedule, momentum=0.9))
        train, predict = make_classifier_steps(graphdef, graphdef_eval, tx)
        state = [params, stats, tx.init(params)]  # (params, stats, opt), replaced at each step

        def step(epoch, i):
            new_params, new_stats, new_opt, loss = train(*state, batches.batch(epoch, i))
            state[:] = [new_params, new_stats, new_opt]
            return {"loss": loss}

        driver.run(driver.StepLoop(epochs, steps, step, log=self.log, nonfinite=lambda e: JaxnasError(
            f"non-finite training loss for {self.space.encode(arch)} in epoch {e}; lower evaluator.lr")))
        return state[0], state[1], predict

    def _predict_all(self, predict, params, stats, x, y) -> np.ndarray:
        preds = []
        for batch in data_lib.eval_batches(x, y, 256, self.mean, self.std):
            n = int(batch["mask"].sum())
            preds.append(np.asarray(predict(params, stats, batch["x"]))[:n].argmax(-1))
        return np.concatenate(preds)

    def score(self, arch) -> tuple[float, float]:
        t0 = time.time()
        params, stats, predict = self._fit(arch, self.train_idx, self.cfg.evaluator.epochs)
        x, y = self.ds.x_train[self.val_idx], self.ds.y_train[self.val_idx]
        acc = float((self._predict_all(predict, params, stats, x, y) == y).mean())
        return acc, time.time() - t0

    def test(self, arch) -> dict:
        """Retrain on the whole train split and measure test accuracy and macro-F1 once."""
        epochs = self.cfg.evaluator.final_epochs or self.cfg.evaluator.epochs
        params, stats, predict = self._fit(arch, np.arange(len(self.ds.x_train)), epochs)
        preds = self._predict_all(predict, params, stats, self.ds.x_test, self.ds.y_test)
        m = metrics_lib.from_confusion(metrics_lib.confusion_matrix(self.ds.y_test, preds, self.ds.num_classes))
        return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "confusion_matrix": m["confusion_matrix"],
                "source": f"retrained {epochs} epochs on all {len(self.ds.x_train)} training examples"}


register_evaluator("train")(TrainEvaluator)
