import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxnas import config as config_lib
from jaxnas.cli import main
from jaxnas.errors import JaxnasError
from jaxnas.spaces import discrete_space


def _space(in_shape=(8, 8, 1), **over):
    cfg = config_lib.search_defaults().space
    cfg.name = "chain"
    cfg.filters, cfg.kernels, cfg.units, cfg.max_depth = "8,16", "1,3", "32", 5
    for k, v in over.items():
        cfg[k] = v
    return discrete_space(cfg, in_shape)


def test_shapes_are_inferred_and_the_network_matches():
    space = _space()
    arch = ("conv3x3-8", "maxpool", "concat(conv1x1-16,conv3x3-16)", "sum(conv1x1-8,conv3x3-8)", "fc-32")
    assert space.shapes(arch) == [(8, 8, 1), (8, 8, 8), (4, 4, 8), (4, 4, 32), (4, 4, 8), (32,)]
    net = space.build(arch, (8, 8, 1), 10, nnx.Rngs(0))
    assert net(jnp.ones((2, 8, 8, 1))).shape == (2, 10)
    # parameters by hand: conv 3*3*1*8 + BN 16; branches (1*8*16 + 32) + (9*8*16 + 32);
    # sum branches (32*8 + 16) + (9*32*8 + 16); fc 4*4*8*32 + 32; classifier 32*10 + 10
    from jaxnas.nn import count_params

    assert count_params(net) == (72 + 16) + (128 + 32 + 1152 + 32) + (256 + 16 + 2304 + 16) + (4096 + 32) + 330
    assert space.decode(space.encode(arch)) == arch


def test_invalid_sequences_are_never_proposed():
    space = _space()
    after_fc = space.choices(("fc-32",), 1)
    assert after_fc == ["end", "fc-32"]  # no convolution or pooling after flattening
    three_pools = ("maxpool", "avgpool", "maxpool")  # 8 -> 4 -> 2 -> 1
    assert not any(c.endswith("pool") for c in space.choices(three_pools, 3))
    assert "end" not in space.choices((), 0)
    rng = np.random.default_rng(0)
    for _ in range(300):
        arch = space.random(rng)
        assert 1 <= len(arch) <= 5
        space.shapes(arch)  # raises if invalid
        child = space.mutate(arch, rng)
        space.shapes(child)
        assert child != arch
    with pytest.raises(JaxnasError, match="'conv3x3-8' cannot follow shape"):
        space.decode("fc-32 > conv3x3-8")
    with pytest.raises(JaxnasError, match="unknown chain block 'conv7-8'"):
        space.decode("conv7-8")


def test_with_choice_keeps_the_valid_rest():
    space = _space()
    arch = ("conv3x3-8", "maxpool", "conv1x1-16")
    assert space.with_choice(arch, 1, "avgpool") == ("conv3x3-8", "avgpool", "conv1x1-16")
    assert space.with_choice(arch, 1, "fc-32") == ("conv3x3-8", "fc-32")  # the conv cannot follow fc
    assert space.with_choice(arch, 2, "end") == ("conv3x3-8", "maxpool")


def test_a_config_without_valid_architectures_is_an_error(tmp_path, capsys):
    with pytest.raises(JaxnasError, match="admits no valid architecture"):
        _space(in_shape=(1, 1, 1), filters="", kernels="", units="", pools="max", merges="", branches=0)
    with pytest.raises(JaxnasError, match="admits no valid architecture"):
        _space(max_depth=0)
    assert main(["search", "--config.search.strategy=random", "--config.space.name=chain",
                 "--config.space.max_depth=0", f"--config.run.workdir={tmp_path}"]) == 2
    assert "admits no valid architecture" in capsys.readouterr().err


def test_greedy_with_training_evaluation_grows_layer_by_layer(tmp_path):
    from jaxnas.search import get_strategy
    from jaxnas import rundir

    cfg = config_lib.search_defaults()
    cfg.search.strategy, cfg.data.name = "greedy", "digits"
    cfg.space.name, cfg.space.filters, cfg.space.kernels, cfg.space.units = "chain", "8", "3", "32"
    cfg.space.pools, cfg.space.branches, cfg.space.max_depth = "max", 0, 2
    cfg.evaluator.kind, cfg.evaluator.epochs = "train", 1
    cfg.run.workdir, cfg.run.name = str(tmp_path), "g"
    out = get_strategy("greedy")(cfg, rundir.create(cfg, "search"), log=lambda *_: None)
    asked = [r["arch"] for r in out["history"]]
    # decision 0: the 3 blocks; decision 1: the kept block followed by each allowed block
    assert sorted(asked[:3]) == ["conv3x3-8", "fc-32", "maxpool"]
    first = max(out["history"][:3], key=lambda r: r["score"])["arch"]
    assert all(a.startswith(first + " > ") for a in asked[3:])
    assert out["result"]["score"] > 0.5  # 10 classes
    assert out["result"]["test"]["accuracy"] > 0.5 and 0 < out["result"]["test"]["macro_f1"] <= 1


@pytest.mark.parametrize("kind, message", [
    ("train", r"non-finite training loss for conv3x3-8 > fc-32 in epoch 1; lower evaluator.lr"),
    ("supernet", r"non-finite supernet loss in epoch 1; lower optim.lr")])
def test_an_evaluator_whose_training_diverges_stops_with_one_line(kind, message):
    """The evaluators train through the driver's loop (``driver.StepLoop``), whose guard checks every
    step's loss one step late."""
    from jaxnas.evaluators import make_evaluator

    cfg = config_lib.search_defaults()
    cfg.data.name, cfg.search.batch_size, cfg.search.max_steps_per_epoch = "digits", 32, 4
    cfg.space.name, cfg.space.filters, cfg.space.kernels, cfg.space.units = "chain", "8", "3", "32"
    cfg.space.max_depth, cfg.space.branches = 2, 0
    cfg.evaluator.kind, cfg.evaluator.epochs, cfg.evaluator.lr = kind, 1, 1e30
    cfg.optim.lr, cfg.optim.grad_clip = 1e30, 0.0
    cfg.discrete.ws_epochs = 1
    space = discrete_space(cfg.space, (8, 8, 1))
    with pytest.raises(JaxnasError, match=message):
        make_evaluator(cfg, space, log=lambda *_: None).score(space.decode("conv3x3-8 > fc-32"))


def test_a_block_is_parsed_once_when_it_is_made_and_reads_as_its_token(monkeypatch):
    import json

    from flax import nnx

    from jaxnas.config import space_group
    from jaxnas.spaces import chain, discrete_space

    space = discrete_space(space_group("chain"), (8, 8, 1))
    arch = space.decode("conv3x3-32 > maxpool > sum(conv3x3-32,conv5x5-32) > fc-64")
    assert arch == ("conv3x3-32", "maxpool", "sum(conv3x3-32,conv5x5-32)", "fc-64")  # equal to the text
    assert [b.kind for b in arch] == [("conv", 3, 32), ("pool", "max"), ("par", "sum", ((3, 32), (5, 32))),
                                      ("fc", 64)]
    assert json.dumps(list(arch)) == json.dumps([str(b) for b in arch]) and space.encode(arch) == \
        "conv3x3-32 > maxpool > sum(conv3x3-32,conv5x5-32) > fc-64"
    calls = []
    real = chain._parse
    monkeypatch.setattr(chain, "_parse", lambda t: calls.append(t) or real(t))
    space.shapes(arch)
    space.build(arch, (8, 8, 1), 10, nnx.Rngs(0))
    space.with_choice(arch, 1, space.choices(arch, 1)[-1])
    assert calls == []  # every use reads the parsed blocks
