"""The ``supernet`` evaluator: a weight-sharing supernet of the space (``Space.weight_sharing``)
trained with one random architecture per step (Li & Talwalkar, UAI 2019), then ``score(arch)``
= accuracy on search-val batches with the shared weights. BatchNorm uses the batch's
statistics when scoring (as Li & Talwalkar and ENAS do), because running statistics mix
all sampled paths."""

from __future__ import annotations

import time

import numpy as np

from jaxnas import data as data_lib
from jaxnas import driver
from jaxnas.driver import Progress
from jaxnas.errors import JaxnasError
from jaxnas.evaluators.registry import register_evaluator
from jaxnas.optim import epoch_cosine_lr, weight_optimizer
from jaxnas.spaces import get_space


@register_evaluator("supernet")
class SupernetEvaluator:
    """Trains a weight-sharing supernet on construction, then ``score(arch)`` = search-val accuracy."""

    has_cost = True  # the wall time
    takes_data = True

    def __init__(self, space, cfg, log=print, data: data_lib.SearchData | None = None):
        self.space, self.cfg = space, cfg
        data = data if data is not None else data_lib.search_data(cfg.data)
        ds = data.dataset
        s, d = cfg.search, cfg.discrete
        if d.ws_epochs < 1 or d.ws_eval_batches < 1:
            raise JaxnasError(f"discrete.ws_epochs and discrete.ws_eval_batches must be positive, got "
                              f"{d.ws_epochs}, {d.ws_eval_batches}")
        train_b = data.batcher("train", s.batch_size, cfg.seed, 0)
        val_b = data.batcher("val", s.batch_size, cfg.seed, 1, augment="none")
        steps = min(train_b.steps_per_epoch, s.max_steps_per_epoch or train_b.steps_per_epoch)
        tx = weight_optimizer(cfg.optim, epoch_cosine_lr(cfg.optim.lr, cfg.optim.lr_min, d.ws_epochs, steps))
        state, step, self._accuracy = get_space(cfg.space.name).weight_sharing(space, cfg, ds, tx)
        rng = np.random.default_rng([cfg.seed, 17])
        t0 = time.time()
        log(f"weight-sharing supernet: {d.ws_epochs} epochs x {steps} steps, one random architecture per step")
        progress = Progress(d.ws_epochs * steps, 0, "supernet", cfg.run.progress)
        self.state, last = state, {}

        def train(epoch, i):
            self.state, last["loss"] = step(self.state, space.random(rng), train_b.batch(epoch, i))
            return {"loss": last["loss"]}

        def end(epoch, seconds):
            progress.write(f"supernet epoch {epoch + 1}/{d.ws_epochs}: loss {float(last['loss']):.4f} "
                           f"({time.time() - t0:.0f} s, ETA {progress.eta()})", log)

        driver.run(driver.StepLoop(d.ws_epochs, steps, train, end_epoch=end, progress=progress, log=log,
                                   nonfinite=lambda e: JaxnasError(f"non-finite supernet loss in epoch {e}; "
                                                                   f"lower optim.lr")))
        self.batches = [val_b.batch(0, i) for i in range(min(d.ws_eval_batches, val_b.steps_per_epoch))]

    def score(self, arch) -> tuple[float, float]:
        t0 = time.time()
        acc = np.mean([float(self._accuracy(self.state, arch, b)) for b in self.batches])
        return float(acc), time.time() - t0
