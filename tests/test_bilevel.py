import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxnas import kernels, optim
from jaxnas.kernels import build
from jaxnas.search import bilevel as B
from jaxnas.spaces import build_supernet
from jaxnas.nn import ArchParam

from conftest import tiny_cfg


def _setup(order="first", seed=0, n=16, lr=0.025):
    cfg = tiny_cfg(order=order)
    cfg.optim.lr = lr
    model = build_supernet(cfg.space, (8, 8, 1), 10, nnx.Rngs(seed))
    schedule = optim.epoch_cosine_lr(cfg.optim.lr, cfg.optim.lr_min, 4, 5)
    w_tx, a_tx = optim.weight_optimizer(cfg.optim, schedule), optim.alpha_optimizer(cfg.optim)
    graphdef, state = B.init_state(model, w_tx, a_tx)
    rng = np.random.default_rng(seed)
    batches = [{"x": rng.normal(size=(n, 8, 8, 1)).astype(np.float32),
                "y": rng.integers(0, 10, n).astype(np.int32)} for _ in range(4)]
    return cfg, graphdef, state, w_tx, a_tx, schedule, batches


def test_alphas_live_apart_from_weights():
    cfg, graphdef, state, w_tx, a_tx, *_ = _setup()
    assert set(state.alphas.keys()) == {"alphas_normal", "alphas_reduce"}
    assert all(isinstance(v, ArchParam) for v in jax.tree.leaves(state.alphas, is_leaf=lambda x: isinstance(x, nnx.Variable)))
    assert "alphas_normal" not in state.params and state.alphas["alphas_normal"][...].shape == (5, 3)
    # the weight optimizer's state (momentum, decay) covers exactly the weights
    trace = optax.tree_utils.tree_get(state.w_opt, "trace")
    assert jax.tree.structure(trace) == jax.tree.structure(state.params)
    a0 = np.asarray(state.alphas["alphas_normal"][...])
    assert 0 < np.abs(a0).max() < 1e-2  # 1e-3 * N(0, 1)


def _unrolled_val_loss(graphdef, state, lr, tb, vb, momentum, wd):
    """Independent reference: L_val(w - lr*(momentum*buf + dL_train/dw + wd*w), alpha) as a function of alpha."""
    loss_fn = B.make_loss_fn(graphdef)
    buf = optax.tree_utils.tree_get(state.w_opt, "trace")

    def f(alphas):
        g = jax.grad(lambda w: loss_fn(w, alphas, state.batch_stats, tb)[0])(state.params)
        w2 = jax.tree.map(lambda w, b, gw: w - lr * (momentum * b + gw + wd * w), state.params, buf, g)
        return loss_fn(w2, alphas, state.batch_stats, vb)[0]

    return f


def test_exact_second_order_hypergradient_matches_finite_differences():
    with jax.enable_x64(True):
        cfg, graphdef, state, w_tx, a_tx, schedule, batches = _setup("second")
        state = jax.tree.map(lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x, state)
        batches = [{"x": b["x"].astype(np.float64), "y": b["y"]} for b in batches]
        # take one real step so the momentum buffer is non-zero
        state, _ = jax.jit(B.make_search_step(graphdef, w_tx, a_tx, schedule, "first", cfg.optim))(
            state, batches[0], batches[1])
        tb, vb = batches[2], batches[3]
        lr = 0.1  # larger than DARTS's so the second-order term is clearly visible
        hyper = B.make_hypergradient(graphdef, "second", cfg.optim)
        g = jax.jit(hyper)(state, lr, tb, vb)[0]
        f = _unrolled_val_loss(graphdef, state, lr, tb, vb, cfg.optim.momentum, cfg.optim.weight_decay)
        direction = jax.tree.map(lambda a: jnp.asarray(np.random.default_rng(1).normal(size=a.shape)), state.alphas)
        h = 1e-4
        shift = lambda s: jax.tree.map(lambda a, d: a + s * h * d, state.alphas, direction)  # noqa: E731
        numeric = (f(shift(1.0)) - f(shift(-1.0))) / (2 * h)
        analytic = sum(jnp.vdot(a[...], d[...]) for a, d in zip(jax.tree.leaves(g), jax.tree.leaves(direction)))
        assert float(analytic) == pytest.approx(float(numeric), rel=1e-5, abs=1e-9)
        # and it differs from the first-order gradient, so the test sees the second-order term
        g1 = jax.jit(B.make_hypergradient(graphdef, "first", cfg.optim))(state, lr, tb, vb)[0]
        first = sum(jnp.vdot(a[...], d[...]) for a, d in zip(jax.tree.leaves(g1), jax.tree.leaves(direction)))
        assert abs(float(first) - float(numeric)) > 100 * abs(float(analytic) - float(numeric))


def test_darts_finite_difference_approximates_the_exact_hypergradient():
    cfg, graphdef, state, w_tx, a_tx, schedule, batches = _setup("second_fd")
    lr = 0.025
    exact = jax.jit(B.make_hypergradient(graphdef, "second", cfg.optim))(state, lr, batches[0], batches[1])[0]
    fd = jax.jit(B.make_hypergradient(graphdef, "second_fd", cfg.optim))(state, lr, batches[0], batches[1])[0]
    e = np.concatenate([np.ravel(x) for x in jax.tree.leaves(exact)])
    a = np.concatenate([np.ravel(x) for x in jax.tree.leaves(fd)])
    # float32 central differences with eps = 0.01/||v||: a few percent, as in DARTS
    assert np.linalg.norm(a - e) <= 5e-2 * np.linalg.norm(e)
    assert np.dot(a, e) / (np.linalg.norm(a) * np.linalg.norm(e)) > 0.998


@pytest.mark.skipif(not build.available(), reason="needs the native CPU kernels")
def test_exact_hypergradient_with_native_kernels_equals_xla_forms():
    """The native kernels' backward calls compute only what a derivative needs (the architecture
    gradient through the unrolled step takes no weight cotangents): the same hypergradient as XLA's ops."""
    grads = []
    for impl in ("native", "dense"):
        with kernels.use(impl):
            cfg, graphdef, state, *_, batches = _setup("second")
        grads.append(jax.jit(B.make_hypergradient(graphdef, "second", cfg.optim))(state, 0.1, batches[0], batches[1])[0])
    native, dense = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)]) for g in grads)
    np.testing.assert_allclose(native, dense, rtol=1e-3, atol=1e-4 * np.abs(dense).max())


def test_weight_update_matches_pytorch_sgd_rules():
    cfg = tiny_cfg().optim
    schedule = optim.epoch_cosine_lr(0.025, 0.001, 4, 2)
    tx = optim.weight_optimizer(cfg, schedule)
    w = {"k": jnp.array([1.0, -2.0])}
    st = tx.init(w)
    buf, wt = np.zeros(2), np.array([1.0, -2.0])
    for step, g in enumerate([np.array([0.3, 0.4]), np.array([30.0, 40.0]), np.array([-1.0, 0.5])]):
        upd, st = tx.update({"k": jnp.asarray(g, jnp.float32)}, st, w)
        w = optax.apply_updates(w, upd)
        # torch: clip_grad_norm_(5) on the raw gradient, then SGD(momentum 0.9, weight_decay 3e-4)
        g = g * min(1.0, 5.0 / np.linalg.norm(g))
        d = g + 3e-4 * wt
        buf = 0.9 * buf + d
        lr = 0.001 + 0.5 * (0.025 - 0.001) * (1 + np.cos(np.pi * (step // 2) / 4))
        wt = wt - lr * buf
        np.testing.assert_allclose(w["k"], wt, rtol=1e-6)


def test_global_norm_clip_over_many_leaves_equals_optax():
    """The clip takes the norm of all leaves as one reduction; the rule is optax's (and torch's)."""
    rng = np.random.default_rng(0)
    tree = {"a": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32), "b": [jnp.asarray(rng.normal(size=5), jnp.float32),
                                                                         jnp.asarray(rng.normal(size=(2, 2, 2)), jnp.float32)]}
    flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])
    np.testing.assert_allclose(optim.global_norm(tree), np.linalg.norm(flat), rtol=1e-6)
    for max_norm in (0.5, 100.0):  # clipped, untouched
        ours, _ = optim.clip_by_global_norm(max_norm).update(tree, optax.EmptyState())
        ref, _ = optax.clip_by_global_norm(max_norm).update(tree, optax.EmptyState())
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
            np.testing.assert_allclose(a, b, rtol=1e-6)
    clipped, _ = optim.clip_by_global_norm(0.5).update(tree, optax.EmptyState())
    np.testing.assert_allclose(optim.global_norm(clipped), 0.5, rtol=1e-6)


def test_alpha_update_is_adam_with_coupled_l2():
    tx = optim.alpha_optimizer(tiny_cfg().optim)
    a = {"a": jnp.array([0.5, -0.2])}
    g = np.array([0.1, 0.3])
    upd, _ = tx.update({"a": jnp.asarray(g, jnp.float32)}, tx.init(a), a)
    gd = g + 1e-3 * np.array([0.5, -0.2])
    m, v = 0.5 * gd / (1 - 0.5), 0.001 * gd ** 2 / (1 - 0.999)
    np.testing.assert_allclose(upd["a"], -3e-3 * m / (np.sqrt(v) + 1e-8), rtol=1e-5)


def test_schedule_steps_once_per_epoch():
    s = optim.epoch_cosine_lr(0.025, 0.001, 50, 10)
    assert float(s(0)) == pytest.approx(0.025) and float(s(9)) == pytest.approx(0.025)
    assert float(s(250)) == pytest.approx(0.013)
    assert float(s(499)) == pytest.approx(0.001 + 0.012 * (1 + np.cos(np.pi * 49 / 50)))


def test_step_compiles_once_and_lowers_the_loss():
    cfg, graphdef, state, w_tx, a_tx, schedule, batches = _setup(lr=0.2)
    step = jax.jit(chex.assert_max_traces(B.make_search_step(graphdef, w_tx, a_tx, schedule, "first", cfg.optim), n=1))
    first = None
    for i in range(20):  # one fixed train batch: the loss on it must fall
        state, m = step(state, batches[0], batches[1 + i % 3])
        first = first if first is not None else float(m["train_loss"])
    assert float(m["train_loss"]) < 0.5 * first
    assert int(state.step) == 20


def test_unknown_order():
    from jaxnas.errors import JaxnasError

    with pytest.raises(JaxnasError, match="unknown search order 'third'.*first, second, second_fd"):
        B.make_hypergradient(None, "third", tiny_cfg().optim)


@pytest.mark.parametrize("order", ["first", "second"])
def test_a_bfloat16_step_keeps_float32_state_and_follows_the_float32_step(order):
    """search.dtype=bfloat16 (mixed precision): the loss, the alpha hypergradient and the weight update
    follow the float32 step within bfloat16's precision; every leaf of the state stays float32."""
    cfg, graphdef, state, w_tx, a_tx, schedule, batches = _setup(order, n=32)
    steps = {d: jax.jit(B.make_search_step(graphdef, w_tx, a_tx, schedule, order, cfg.optim, dtype=d))
             for d in (jnp.float32, jnp.bfloat16)}
    (s32, m32), (s16, m16) = (steps[d](state, batches[0], batches[1]) for d in (jnp.float32, jnp.bfloat16))
    assert all(a.dtype == b.dtype for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(s16)))
    assert float(m16["train_loss"]) != float(m32["train_loss"])  # it did compute in bfloat16
    assert float(m16["train_loss"]) == pytest.approx(float(m32["train_loss"]), rel=2e-2)
    assert float(m16["val_loss"]) == pytest.approx(float(m32["val_loss"]), rel=2e-2)

    def flat(t):
        return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(t)])

    for part in ("alphas", "params"):  # the update of each, bf16 against f32: cosine close to 1, norm within 10%
        d32 = flat(getattr(s32, part)) - flat(getattr(state, part))
        d16 = flat(getattr(s16, part)) - flat(getattr(state, part))
        assert d16 @ d32 / (np.linalg.norm(d16) * np.linalg.norm(d32)) > 0.98, part
        assert np.linalg.norm(d16) == pytest.approx(np.linalg.norm(d32), rel=0.1), part
    stats32, stats16 = flat(s32.batch_stats), flat(s16.batch_stats)
    np.testing.assert_allclose(stats16, stats32, rtol=2e-2, atol=2e-3)


def test_bfloat16_batch_norm_statistics_are_computed_in_float32():
    # x = 30 + N(0, 1): E[x^2] - E[x]^2 in bfloat16 (resolution 4 near 900) would lose the variance entirely
    from jaxnas.kernels import reference

    x = (30.0 + np.random.default_rng(0).normal(size=(64, 4, 4, 3))).astype(np.float32)
    _, mean, var = reference.batch_norm(jnp.asarray(x, jnp.bfloat16), jnp.zeros(3), jnp.ones(3), 0.0, 1e-5)
    xb = np.asarray(jnp.asarray(x, jnp.bfloat16), np.float64)
    assert mean.dtype == jnp.float32
    np.testing.assert_allclose(mean, xb.mean((0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(var, xb.var((0, 1, 2)), rtol=1e-2)


def test_finite_differences_need_float32():
    from jaxnas.errors import JaxnasError

    with pytest.raises(JaxnasError, match="second_fd needs search.dtype=float32"):
        B.make_hypergradient(None, "second_fd", tiny_cfg().optim, jnp.bfloat16)
    B.make_hypergradient(None, "second_fd", tiny_cfg().optim, jnp.float32)  # float32 is fine


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_every_method_supernet_computes_in_bfloat16(space):
    """With bfloat16 weights and images every method's supernet stays in bfloat16 to its logits: no
    float32 relaxed weight, edge scale or skip factor promotes the activations back to float32."""
    from jaxnas import methods
    from jaxnas.methods import METHODS
    from jaxnas.targets import steps

    for m in METHODS:
        cfg = steps.search_config(space, "" if m == "darts" else m, "test")
        model = nnx.eval_shape(lambda: build_supernet(cfg.space, (8, 8, 3), 10, nnx.Rngs(0), kernels="dense"))
        graphdef, params, alphas, stats = nnx.split(model, nnx.Param, ArchParam, nnx.BatchStat)
        parts = methods.parts(cfg.method, cfg.search.epochs, 10)

        def logits(params, alphas, stats, x):
            p16 = jax.tree.map(lambda v: v.astype(jnp.bfloat16), params)
            net = nnx.merge(graphdef, p16, alphas, stats, copy=True)
            return B._call(net, x, jax.random.key(0), parts.hyper(jnp.zeros((), jnp.int32)), None)

        out = jax.eval_shape(logits, params, alphas, stats, jax.ShapeDtypeStruct((4, 8, 8, 3), jnp.bfloat16))
        assert out.dtype == jnp.bfloat16, m


@pytest.mark.parametrize("part", ["darts", "sampling", "regularizer_and_warm_up", "four_devices"])
def test_the_first_order_passes_as_one_loop_are_the_unrolled_step(part):
    """search.passes=loop runs the val pass and the train pass through one compiled body; the states and
    metrics of several steps equal the two-pass step's: the alphas updated on the val batch before the
    weight pass, the sampling keys of each pass, a regularizer, a warm-up before the first alpha update,
    and a batch split over 4 devices."""
    from jaxnas import methods, parallel

    cfg, graphdef, state, w_tx, a_tx, schedule, batches = _setup("first", n=16)
    if part == "sampling":
        cfg.space.relaxation = "gumbel_hard"
        cfg.method.tau = methods.schedule(10.0, 0.1, "epochs-1")
        model = build_supernet(cfg.space, (8, 8, 1), 10, nnx.Rngs(0))
        graphdef, state = B.init_state(model, w_tx, a_tx)
    if part == "regularizer_and_warm_up":
        cfg.method.regularizer, cfg.method.reg = "beta_decay", methods.schedule(0.5, 2.0, "epochs")
        cfg.method.arch_start_epoch = 1  # 5 steps an epoch: the first alpha update at step 6
    parts = methods.parts(cfg.method, 4, 5)
    mesh = parallel.make_mesh(4 if part == "four_devices" else 1)
    state, run = jax.device_get(state), {}  # host copies: the steps donate their state
    for passes in ("unrolled", "loop"):
        step = parallel.jit_data_parallel(B.make_search_step(graphdef, w_tx, a_tx, schedule, "first", cfg.optim, parts,
                                                             passes=passes), mesh, 2)
        s, history = parallel.put_replicated(state, mesh), []
        for i in range(7):
            s, m = step(s, parallel.put_batch(batches[i % 4], mesh), parallel.put_batch(batches[(i + 1) % 4], mesh))
            history.append(jax.device_get(m))
        run[passes] = jax.device_get(s), history
    (s_u, h_u), (s_l, h_l) = run["unrolled"], run["loop"]
    for a, b in zip(jax.tree.leaves(s_u), jax.tree.leaves(s_l)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-5, atol=1e-6)
    for mu, ml in zip(h_u, h_l):
        assert mu.keys() == ml.keys()
        for k in mu:
            np.testing.assert_allclose(ml[k], mu[k], rtol=2e-5, atol=1e-6, err_msg=k)
    a0, a7 = (np.asarray(t.alphas["alphas_reduce"][...]) for t in (state, s_l))
    assert not np.allclose(a0, a7)  # the alphas did move
    if part == "regularizer_and_warm_up":
        assert [float(m["alpha_grad_norm"]) == 0.0 for m in h_l] == [True] * 5 + [False] * 2


def test_looped_passes_need_the_first_order_without_a_perturbation():
    from jaxnas import config as config_lib
    from jaxnas.errors import JaxnasError

    for cfg, why in ((tiny_cfg(order="second"), "search.order=second has no two like passes"),
                     (config_lib.method_config("sdarts_rs"), "a perturbation of the weight pass (SDARTS)")):
        with pytest.raises(JaxnasError, match=re.escape(why)):
            config_lib.apply_overrides(cfg, ["search.passes=loop"])
    with pytest.raises(JaxnasError, match="unknown value 'twice'; allowed: unrolled, loop"):
        config_lib.apply_overrides(tiny_cfg(), ["search.passes=twice"])
    with pytest.raises(JaxnasError, match="search.passes=loop is for the differentiable search"):
        config_lib.apply_overrides(tiny_cfg(strategy="random"), ["search.passes=loop"])
