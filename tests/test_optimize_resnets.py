"""The CIFAR ResNets and Wide ResNets of the reweighting benchmarks: parameter counts against the papers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxnas import config as config_lib
from jaxnas.errors import JaxnasError
from jaxnas.optimize import models


def _params(spec, shape=(32, 32, 3), k=10):
    m = nnx.eval_shape(lambda: models.build(spec, shape, k, nnx.Rngs(0), config_lib.tiny_optimize()))
    return sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.Param)))


def test_parameter_counts_match_the_papers():
    assert round(_params("resnet:20") / 1e6, 2) == 0.27   # He et al. 2016, Table 6
    assert round(_params("resnet:32") / 1e6, 2) == 0.46
    assert round(_params("resnet:56") / 1e6, 2) == 0.85
    assert round(_params("wrn:28-10") / 1e6, 1) == 36.5   # Zagoruyko & Komodakis 2016, Table 1
    # option A shortcuts add no parameters: ResNet-32 is the convs, BN scales/biases and the classifier
    convs = 3 * 3 * 3 * 16 + sum(9 * c * c * 2 * 5 for c in (16, 32, 64)) - 9 * (32 * 32 - 16 * 32) - 9 * (64 * 64 - 32 * 64)
    bns = 2 * (16 + sum(2 * 5 * c for c in (16, 32, 64)))
    assert _params("resnet:32") == convs + bns + 64 * 10 + 10


def test_they_classify_any_image_size_and_refuse_bad_depths():
    cfg = config_lib.tiny_optimize()
    for spec in ("resnet:8", "wrn:10-1"):
        model = models.build(spec, (12, 12, 1), 3, nnx.Rngs(0), cfg)
        out = model(jnp.asarray(np.random.default_rng(0).normal(size=(2, 12, 12, 1)), jnp.float32))
        assert out.shape == (2, 3) and bool(jnp.all(jnp.isfinite(out)))
    for spec, message in (("resnet:33", "6n\\+2"), ("resnet:x", "an integer"), ("wrn:27-10", "6n\\+4"),
                          ("wrn:28", "<depth>-<widen factor>")):
        with pytest.raises(JaxnasError, match=message):
            models.build(spec, (32, 32, 3), 10, nnx.Rngs(0), cfg)


@pytest.mark.parametrize("argv", [["noisy"], ["longtail", "--factor", "200", "--method", "l2rw"]])
def test_the_cifar_benchmark_command_is_a_valid_optimize_config(argv, capsys):
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "experiments"))
    import reweight_cifar

    assert reweight_cifar.main([*argv, "--print-only"]) == 0
    words = capsys.readouterr().out.split()
    overrides = [w[len("--config."):] for w in words if w.startswith("--config.")]
    cfg = config_lib.apply_overrides(config_lib.load(None, "optimize"), overrides)
    config_lib.check_config(cfg, "optimize")
    assert cfg.compare.refit == "train" and cfg.optimize.tune == "gradient"
