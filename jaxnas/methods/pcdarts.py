"""PC-DARTS (Xu et al., ICLR 2020): partial channel connections and edge normalization.

Both are mixed-op variants of the supernet (``space.partial_channels``, ``space.edge_norm``,
``jaxnas.spaces.edges``). Official code: yuhuixu1993/PC-DARTS ``model_search.py`` and ``train_search.py``.
"""

from jaxnas.methods.registry import register_method


@register_method("pcdarts")
def configure(cfg) -> None:
    """K=4, edge normalization; 50 epochs, batch 256, lr 0.1 cosine to 0, wd 3e-4; arch Adam 6e-4 (0.5, 0.999)
    wd 1e-3 from epoch 15 on; first order. NB201 has no official PC-DARTS code: the benchmark's batch 64 and
    lr 0.025 -> 0.001 with the same parts."""
    cfg.space.partial_channels, cfg.space.edge_norm = 4, True
    cfg.search.epochs, cfg.search.order = 50, "first"
    cfg.method.arch_start_epoch = 15
    cfg.optim.arch_lr = 6e-4
    if cfg.space.name == "darts":
        cfg.search.batch_size = 256
        cfg.optim.lr, cfg.optim.lr_min = 0.1, 0.0
