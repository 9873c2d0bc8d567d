"""GDAS (Dong & Yang, CVPR 2019): one sampled op per edge, straight-through gradients to every alpha.

Official code: D-X-Y/AutoDL-Projects ``xautodl/models/cell_searchs/search_model_gdas.py`` (the
sampler), ``search_cells.py::forward_gdas`` (only the sampled op runs), ``exps/NAS-Bench-201-algos/GDAS.py``
(tau from 10 to 0.1 linearly over epochs - 1).

Its relaxation, ``gumbel_hard``, is in ``jaxnas/relaxations/gumbel_hard.py``; this preset names it.
"""

from jaxnas.methods.registry import register_method, schedule


@register_method("gdas")
def configure(cfg) -> None:
    """GDAS.config (NB201) / GDAS-NASNet-CIFAR.config (DARTS space): 250 epochs, SGD nesterov lr 0.025
    cosine to 0.001, wd 5e-4; Adam 3e-4 (0.5, 0.999) wd 1e-3; tau 10 -> 0.1; batch 64 / 256."""
    cfg.space.relaxation = "gumbel_hard"
    cfg.method.tau = schedule(10.0, 0.1, "epochs-1")
    cfg.search.epochs = 250
    cfg.search.batch_size = 64 if cfg.space.name == "nb201" else 256
    cfg.optim.lr, cfg.optim.lr_min, cfg.optim.weight_decay, cfg.optim.nesterov = 0.025, 0.001, 5e-4, True
    cfg.optim.arch_lr, cfg.optim.arch_weight_decay = 3e-4, 1e-3
