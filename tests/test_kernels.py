"""The kernel choice is explicit: every network builder takes ``kernels=``, stores the resolved name on the
model and on every module it built, whatever setting is around it; ``kernels.use`` is a context variable."""

import concurrent.futures

import pytest
from flax import nnx

from jaxnas import config as config_lib
from jaxnas import genotype as genotype_lib
from jaxnas import kernels
from jaxnas import train as train_lib
from jaxnas.optimize import models
from jaxnas.spaces import build_network, build_supernet, discrete_space

from conftest import tiny_cfg


def impls(model) -> set[str]:
    """The kernel implementation of every module of ``model`` that records one."""
    return {m.impl for _, m in nnx.iter_graph(model) if isinstance(m, nnx.Module) and hasattr(m, "impl")}


def supernet(space: str, **kw):
    cfg = tiny_cfg()
    cfg.space.name = space
    shape = (8, 8, 3)
    return nnx.eval_shape(lambda: build_supernet(cfg.space, shape, 10, nnx.Rngs(0), **kw))


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_build_supernet_uses_the_given_kernels_inside_any_other_setting(space):
    with kernels.use("grouped"):
        net = supernet(space, kernels="shift")
        assert net.kernels == "shift" and impls(net) == {"shift"}
        inherited = supernet(space)  # no kernels=: the setting around it
        assert inherited.kernels == "grouped" and impls(inherited) == {"grouped"}
    assert supernet(space).kernels == kernels.resolve("auto")


def test_native_is_never_chosen_for_another_backend():
    net = supernet("darts", kernels="native", platform="tpu")
    assert net.kernels == "dense" and impls(net) == {"dense"}
    assert supernet("darts", kernels="auto", platform="cuda").kernels == kernels.AUTO["cuda"]


def test_every_builder_takes_the_config_kernels():
    cfg = config_lib.tiny_train()
    cfg.run.kernels = "shift"
    net = nnx.eval_shape(lambda: train_lib.build_network(cfg, genotype_lib.load(cfg.genotype), (8, 8, 3), 10))
    assert net.kernels == "shift" and impls(net) == {"shift"}

    ocfg = config_lib.optimize_defaults()
    ocfg.run.kernels = "grouped"
    with kernels.use("shift"):  # the config wins: run.kernels can never be silently ignored
        net = nnx.eval_shape(lambda: models.build("genotype:DARTS_V2", (8, 8, 1), 10, nnx.Rngs(0), ocfg))
    assert net.kernels == "grouped" and impls(net) == {"grouped"}

    space_cfg = config_lib.space_group("nb201", None)
    space = discrete_space(space_cfg, (8, 8, 3))
    arch = space.initial()
    net = nnx.eval_shape(lambda: build_network(space, arch, (8, 8, 3), 10, nnx.Rngs(0), kernels="dense"))
    assert net.kernels == "dense" and impls(net) <= {"dense"}


def test_use_is_local_to_its_thread_and_restored_after_errors():
    with kernels.use("shift"):
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            assert pool.submit(kernels.resolve).result() == kernels.resolve("auto")
        assert kernels.resolve() == "shift"
    with pytest.raises(RuntimeError):
        with kernels.use("grouped"):
            raise RuntimeError
    assert kernels.resolve() == kernels.resolve("auto")
