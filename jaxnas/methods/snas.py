"""SNAS (Xie et al., ICLR 2019): a concrete (Gumbel-softmax) relaxation trained single-level.

Official code: SNAS-Series/SNAS (``utils.Temp_Scheduler``: temperature 1 -> 0.03 linearly over the
epochs; weights and alphas both trained on the training data).

Its relaxation, ``gumbel_soft``, is in ``jaxnas/relaxations/gumbel_soft.py``; this preset names it.
"""

from jaxnas.methods.registry import register_method, schedule


@register_method("snas")
def configure(cfg) -> None:
    """150 epochs, tau 1 -> 0.03, single-level, Adam 3e-4 (0.5, 0.999) wd 1e-3, DARTS's weight optimizer.
    The held-out 10% is monitored only (SNAS trains on all 50k images and monitors on the test set)."""
    cfg.space.relaxation = "gumbel_soft"
    cfg.method.tau = schedule(1.0, 0.03, "epochs")
    cfg.search.order = "single"
    cfg.search.epochs = 150
    cfg.data.train_portion = 0.9
