"""Every jaxnas step, built for a compile target: the jitted function over the target's mesh and
its abstract arguments, ready for ``jaxnas.targets.compile``.

The steps are the ones the commands run (``jaxnas.search.bilevel.make_search_step``,
``jaxnas.train.make_train_step``, the optimize trainer's ``make_classifier_steps``), built with
the kernel form ``kernels="auto"`` means on the target's backend, at one of two sizes:

* ``test``: the smallest network with every op (DARTS: 1 reduction cell of 2 nodes, C=4; NB-201:
  one cell a stage, C=4; 8x8 images, 8 images a device): seconds to compile, what CI checks;
* ``paper``: the papers' search sizes (DARTS: 8 cells, C=16, 32x32, batch 64; NB-201: N=5,
  C=16, batch 64) and DARTS's retraining (C=36, 20 cells, batch 96).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from jaxnas.errors import JaxnasError, unknown

SIZES = ("test", "paper")
KINDS = ("search", "retrain", "optimize")


@dataclasses.dataclass
class Built:
    """A step ready to lower: ``jitted.lower(*args)``."""

    name: str
    jitted: Callable
    args: tuple
    kernels: str     # the resolved kernel form


def _abstract_state(state, mesh):
    from jaxnas import parallel
    from jaxnas.targets import abstract

    return abstract(state, parallel.replicated(mesh))


def _shapes(fn: Callable, *args):
    """``fn(*args)``'s result with every array replaced by its shape and dtype: the network and its
    optimizer states are never initialised (which would compile a host program per parameter)."""
    import jax

    return jax.eval_shape(fn, *args)


def _batch(batch: int, image: int, channels: int, mesh) -> dict:
    import jax
    import jax.numpy as jnp

    from jaxnas import parallel

    data = parallel.batch_sharded(mesh)
    return {"x": jax.ShapeDtypeStruct((batch, image, image, channels), jnp.float32, sharding=data),
            "y": jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=data)}


def search_config(space: str = "darts", method: str = "", size: str = "test", batch: int = 0, layers: int = 0,
                  C: int = 0, ops: str = ""):
    """The search config of a step: DARTS's defaults or ``method``'s preset, at ``size``."""
    from jaxnas import config as config_lib
    from jaxnas.methods.progressive import stages

    if size not in SIZES:
        raise unknown("step size", size, SIZES)
    cfg = config_lib.method_config(method, space) if method else config_lib.search_defaults()
    if not method:
        cfg.space = config_lib.space_group(space)
    if cfg.method.stages:  # a progressive search: its last stage's supernet (every op kept)
        cfg.space.partial_channels = stages(cfg.method.stages, cfg.search.epochs)[-1].partial
        cfg.method.stages = ()
    test = size == "test"
    if space == "nb201":
        cfg.space.C = C or (4 if test else 16)
        cfg.space.cells_per_stage = layers or (1 if test else 5)
    else:
        cfg.space.C = C or (4 if test else 16)
        cfg.space.layers = layers or (1 if test else 8)
        if test and not layers:
            cfg.space.nodes = 2
        cfg.space.allow_no_normal_cell = cfg.space.layers < 3
    if cfg.space.get("partial_channels", 1) > 1 and cfg.space.C % cfg.space.partial_channels:
        cfg.space.C = cfg.space.partial_channels * max(1, cfg.space.C // cfg.space.partial_channels)
    if ops:
        cfg.space.ops = ops
    cfg.search.batch_size = batch or (8 if test else 64)
    return cfg


def search(target: str, devices: int = 1, space: str = "darts", order: str = "", method: str = "",
           size: str = "test", batch: int = 0, layers: int = 0, C: int = 0, ops: str = "", kernels: str = "auto",
           mesh=None, fusion_autotune: bool = False, dtype: str = "float32", passes: str = "unrolled") -> Built:
    """The bilevel search step (``jaxnas search``) of ``order`` (default: the method's) for ``target``,
    computed in ``dtype`` (``search.dtype``), its passes ``passes`` (``search.passes``)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxnas import methods, optim, parallel
    from jaxnas.nn import DTYPES, split_model
    from jaxnas.search import bilevel as B
    from jaxnas.spaces import build_supernet
    from jaxnas.targets import get
    from jaxnas.targets import mesh as make_mesh

    cfg = search_config(space, method, size, batch * devices if batch else 0, layers, C, ops)
    if not batch:
        cfg.search.batch_size *= devices if size == "test" else 1
    order = order or cfg.search.order
    if order not in B.ORDERS:
        raise unknown("search order", order, B.ORDERS)
    if dtype not in DTYPES:
        raise unknown("search.dtype", dtype, tuple(DTYPES))
    image = 8 if size == "test" else 32
    mesh = mesh or make_mesh(target, devices)
    model = nnx.eval_shape(lambda: build_supernet(cfg.space, (image, image, 3), 10, nnx.Rngs(0), kernels=kernels,
                                                  platform=get(target).platform))
    form = model.kernels
    schedule = optim.epoch_cosine_lr(cfg.optim.lr, cfg.optim.lr_min, cfg.search.epochs, 100)
    w_tx, a_tx = optim.weight_optimizer(cfg.optim, schedule), optim.alpha_optimizer(cfg.optim)
    graphdef, params, alphas, stats = split_model(model)
    state = _shapes(lambda p, a, s: B.SearchState(jnp.zeros((), jnp.int32), p, a, s, w_tx.init(p), a_tx.init(a),
                                                  jax.random.PRNGKey(0)), params, alphas, stats)
    parts = methods.parts(cfg.method, cfg.search.epochs, 100)
    model.eval()
    graphdef_eval = nnx.split(model)[0]
    step = B.make_search_step(graphdef, w_tx, a_tx, schedule, order, cfg.optim, parts, graphdef_eval, DTYPES[dtype],
                              passes)
    jitted = parallel.jit_data_parallel(step, mesh, 2, fusion_autotune=fusion_autotune)
    tb = _batch(cfg.search.batch_size, image, 3, mesh)
    name = f"search-{space}-{method or 'darts'}-{order}-{size}" + ("" if dtype == "float32" else f"-{dtype}") + \
        ("" if passes == "unrolled" else f"-{passes}")
    return Built(name, jitted, (_abstract_state(state, mesh), tb, dict(tb)), form)


def retrain(target: str, devices: int = 1, size: str = "test", batch: int = 0, dtype: str = "float32",
            kernels: str = "auto", mesh=None, fusion_autotune: bool = False) -> Built:
    """The retraining step (``jaxnas train``) of DARTS_V2: test size C=8, 3 cells with the auxiliary
    head off on 8x8 images; paper size C=36, 20 cells, auxiliary head, batch 96 on 32x32."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxnas import config as config_lib
    from jaxnas import genotype as genotype_lib
    from jaxnas import parallel
    from jaxnas import train as train_lib
    from jaxnas.optim import epoch_cosine_lr, weight_optimizer
    from jaxnas.targets import get
    from jaxnas.targets import mesh as make_mesh

    if size not in SIZES:
        raise unknown("step size", size, SIZES)
    if dtype not in train_lib.DTYPES:
        raise unknown("train.dtype", dtype, tuple(train_lib.DTYPES))
    cfg = config_lib.train_defaults() if size == "paper" else config_lib.tiny_train()
    cfg.model.auxiliary = size == "paper"
    image = 32 if size == "paper" else 8
    batch = batch or (cfg.train.batch_size if size == "paper" else 8 * devices)
    mesh = mesh or make_mesh(target, devices)
    cfg.run.kernels = kernels
    model = nnx.eval_shape(lambda: train_lib.build_network(cfg, genotype_lib.load(cfg.genotype), (image, image, 3),
                                                           10, platform=get(target).platform))
    form = model.kernels
    graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    tx = weight_optimizer(cfg.optim, epoch_cosine_lr(cfg.optim.lr, cfg.optim.lr_min, cfg.train.epochs, 100))
    step = train_lib.make_train_step(graphdef, tx, cfg.model.auxiliary_weight, train_lib.DTYPES[dtype])
    repl, data = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    jitted = jax.jit(step, in_shardings=(repl, repl, repl, data, repl, repl), out_shardings=repl,
                     donate_argnums=(0, 1, 2), compiler_options=parallel.compiler_options(mesh, fusion_autotune))
    state = _abstract_state((params, stats, _shapes(tx.init, params)), mesh)
    key = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=repl)
    drop = jax.ShapeDtypeStruct((), jnp.float32, sharding=repl)
    return Built(f"retrain-{size}-{dtype}", jitted, (*state, _batch(batch, image, 3, mesh), key, drop), form)


REWEIGHTS = ("", "l2rw", "mwnet", "hypergrad")


def optimize(target: str, devices: int = 1, size: str = "test", model: str = "cnn", batch: int = 0,
             optimizer: str = "adamw", kernels: str = "auto", mesh=None, reweight: str = "",
             fusion_autotune: bool = False) -> Built:
    """The optimize trainer's step (``jaxnas optimize``: the baseline, every trial, every refit) for
    ``model`` (a model spec, ``jaxnas.optimize.models``) on 8x8x1 digits (test) or 32x32x3 (paper).
    ``reweight``: instead, the step of a reweighted fit (``optimize.hyper.method``): L2RW's or
    MW-Net's step (lookahead, weights, real step), or for ``hypergrad`` its hyperparameter update
    (the one-step hypergradient of per-example weights, the learning rate and every learned
    augmentation's magnitude, and Adam on them)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxnas import config as config_lib
    from jaxnas import parallel
    from jaxnas.evaluators.train import make_classifier_steps
    from jaxnas.optimize import models, trainer
    from jaxnas.targets import get
    from jaxnas.targets import mesh as make_mesh

    if size not in SIZES:
        raise unknown("step size", size, SIZES)
    if optimizer not in trainer.OPTIMIZERS:
        raise unknown("optimizer", optimizer, trainer.OPTIMIZERS)
    if reweight not in REWEIGHTS:
        raise unknown("reweighting method", reweight, REWEIGHTS[1:])
    cfg = config_lib.optimize_defaults()
    shape = (8, 8, 1) if size == "test" else (32, 32, 3)
    batch = batch or (8 * devices if size == "test" else 128)
    mesh = mesh or make_mesh(target, devices)
    cfg.run.kernels = kernels
    net = nnx.eval_shape(lambda: models.build(model, shape, 10, nnx.Rngs(0), cfg, platform=get(target).platform))
    form = net.kernels
    net.eval()
    graphdef_eval = nnx.split(net)[0]
    net.train()
    graphdef, params, stats = nnx.split(net, nnx.Param, nnx.BatchStat)
    hp = dict(cfg.optimize.baseline.to_dict(), optimizer=optimizer, label_smoothing=0.1)
    tx = trainer.optimizer(hp, 1000)
    state = _abstract_state((params, stats, _shapes(tx.init, params)), mesh)
    images = _batch(batch, shape[0], shape[-1], mesh)
    if not reweight:
        train, _ = make_classifier_steps(graphdef, graphdef_eval, tx, hp["label_smoothing"], 10, mesh, fusion_autotune)
        return Built(f"optimize-{model}-{optimizer}-{size}", train, (*state, images), form)
    from jaxnas.hyper import augments
    from jaxnas.hyper import reweight as reweight_lib

    hyper = cfg.optimize.hyper
    learn = ["example_weights", "learning_rate"]
    if reweight == "hypergrad":  # and every learned augmentation
        learn += [f"augment_{name}" for name in augments.AUGMENTS]
    hyper.method, hyper.learn = reweight, ",".join(learn)
    n_train = 1000
    steps = reweight_lib.Steps(graphdef, tx, hp, 10, n_train, hyper, 0, mesh, fusion_autotune, image_shape=shape)
    rstate = _abstract_state(_shapes(steps.init), mesh)
    repl, data = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    draws = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=data),
                         steps.draws(0, 0, (batch, *shape)))
    batch_pos = dict(images, pos=jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=data), **draws)
    lr = jax.ShapeDtypeStruct((), jnp.float32, sharding=repl)
    name = f"optimize-{reweight}-{model}-{optimizer}-{size}"
    if reweight == "hypergrad":
        split_stacked = jax.sharding.NamedSharding(mesh, parallel.SPLIT_STACKED)
        stacked = jax.tree.map(lambda a: jax.ShapeDtypeStruct((1,) + a.shape, a.dtype, sharding=split_stacked),
                               batch_pos)
        return Built(name, steps.hyper_update, (*state, rstate, stacked, images, lr), form)
    return Built(name, steps.step, (*state, rstate, batch_pos, images, lr), form)


def build(kind: str, target: str, devices: int = 1, **kwargs: Any) -> Built:
    """``search``, ``retrain`` or ``optimize`` (keyword arguments as those functions take)."""
    builders = {"search": search, "retrain": retrain, "optimize": optimize}
    if kind not in builders:
        raise unknown("step kind", kind, KINDS)
    try:
        return builders[kind](target, devices, **kwargs)
    except TypeError as e:
        raise JaxnasError(f"step {kind}: {e}") from None


def every_step(spaces=("darts", "nb201")) -> list[dict]:
    """The steps CI compiles for every target: each order of DARTS and each method preset in both
    spaces, the DARTS search of both orders and the retraining step in bfloat16 (mixed precision), the
    first order's passes as one loop (``search.passes=loop``), the
    retraining step and the optimize trainer's, at test size."""
    from jaxnas.methods import METHODS
    from jaxnas.search.bilevel import ORDERS

    out = [dict(kind="search", space=s, order=o) for s in spaces for o in ORDERS]
    out += [dict(kind="search", space=s, method=m) for s in spaces for m in METHODS if m != "darts"]
    out += [dict(kind="search", space="darts", order=o, dtype="bfloat16") for o in ("first", "second")]
    out += [dict(kind="search", space="darts", order="first", passes="loop")]
    out += [dict(kind="retrain"), dict(kind="retrain", dtype="bfloat16"), dict(kind="optimize")]
    out += [dict(kind="optimize", reweight=r) for r in ("l2rw", "mwnet", "hypergrad")]
    return out


def step_id(spec: dict) -> str:
    """A short readable name of a step spec, for test ids and tables."""
    return "-".join(str(v) for k, v in spec.items() if k != "size")

