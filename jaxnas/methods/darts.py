"""DARTS (Liu et al., ICLR 2019): softmax relaxation and no added part; the engine's defaults."""

from jaxnas.methods.registry import register_method


@register_method("darts")
def configure(cfg) -> None:
    """quark0/darts cnn/train_search.py (search_defaults); on NAS-Bench-201 the benchmark's DARTS protocol."""
    cfg.space.relaxation = "softmax"
