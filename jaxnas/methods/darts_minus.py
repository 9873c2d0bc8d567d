"""DARTS- (Chu et al., ICLR 2021): an auxiliary skip connection on every edge, its beta decayed 1 -> 0.

The skip is a mixed-op variant (``space.aux_skip``); its beta is the ``skip`` schedule. Official code:
Meituan-AutoML/DARTS- ``src/search/model_search.py`` (``MixedOp``) and ``src/utils.py::DecayScheduler``
(linear: ``beta * (T_max - epoch) / T_max``, T_max 50).
"""

from jaxnas.methods.registry import register_method, schedule


@register_method("darts_minus")
def configure(cfg) -> None:
    """DARTS's defaults (50 epochs, batch 64) with the auxiliary skip, beta 1 -> 0 over 50 epochs."""
    cfg.space.aux_skip = True
    cfg.method.skip = schedule(1.0, 0.0, 50)
    cfg.search.epochs = 50
