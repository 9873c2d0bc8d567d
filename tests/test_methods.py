"""The DARTS family's parts against hand-worked values, and every method end to end in both spaces."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from flax import nnx

from jaxnas import config as config_lib
from jaxnas import methods, optim, parallel, rundir
from jaxnas.errors import JaxnasError
from jaxnas import relaxations
from jaxnas.methods import betadarts, drnas, fairdarts, progressive, sdarts
from jaxnas.search import bilevel as B
from jaxnas.search import get_strategy
from jaxnas.spaces import build_supernet
from jaxnas.spaces.darts import DartsSupernet
from jaxnas.spaces.edges import EdgeMix, SourceEdges, channel_shuffle, group_softmax

from conftest import tiny_cfg

METHOD_NAMES = ("darts", "gdas", "snas", "pcdarts", "drnas", "betadarts", "darts_minus", "fairdarts", "sdarts_rs",
                "sdarts_adv")


# ---------------------------------------------------------------- relaxations


def test_gumbel_hard_is_one_hot_in_value_with_the_softmax_gradient():
    alphas = jnp.array([[0.3, -0.2, 0.1], [1.0, 0.0, -1.0]])
    key, tau = jax.random.PRNGKey(3), 0.7
    g = jax.random.gumbel(key, alphas.shape)
    c = jnp.array([[1.0, 2.0, -3.0], [0.5, -1.0, 2.0]])

    def probs(a):
        return jax.nn.softmax((jax.nn.log_softmax(a, -1) + g) / tau, -1)

    hard = relaxations.gumbel_hard.gumbel_hard(alphas, key, {"tau": tau})
    expected = np.eye(3)[np.argmax(np.asarray(probs(alphas)), -1)]
    np.testing.assert_array_equal(np.asarray(hard), expected)
    assert (np.asarray(hard)[expected == 0] == 0).all()  # exactly zero, so the mixed op can skip them
    grad_hard = jax.grad(lambda a: (relaxations.gumbel_hard.gumbel_hard(a, key, {"tau": tau}) * c).sum())(alphas)
    grad_soft = jax.grad(lambda a: (probs(a) * c).sum())(alphas)
    np.testing.assert_allclose(grad_hard, grad_soft, rtol=1e-5, atol=1e-7)
    # without a key: the discretized cell
    np.testing.assert_array_equal(relaxations.gumbel_hard.gumbel_hard(alphas, None, {}), np.eye(3)[[0, 0]])


def test_hard_mixed_op_runs_the_selected_ops_and_gives_unselected_ones_gdas_gradient():
    """GDAS's forward_gdas: edge output = h_sel * op_sel(x) + sum_{i != sel} h_i (a scalar of value 0), so
    d out / d h_i is op_i(x) for the selected op and 1 for the others; an op no edge selected never runs."""
    ops = ("none", "skip_connect", "nor_conv_3x3", "avg_pool_3x3")
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 4))
    weights = jnp.array([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])  # edge 0: skip, edge 1: avg pool
    hard = SourceEdges(2, 4, 1, ops, rngs=nnx.Rngs(0), mixed=EdgeMix(search_bn=False, hard=True))
    soft = SourceEdges(2, 4, 1, ops, rngs=nnx.Rngs(0), mixed=EdgeMix(search_bn=False))
    before = jax.tree.map(np.asarray, nnx.state(hard, nnx.BatchStat))
    graphdef, st = nnx.split(hard)
    out, vjp = jax.vjp(lambda w: nnx.merge(graphdef, st, copy=True)(x, w), weights)
    np.testing.assert_allclose(out, soft(x, weights), rtol=1e-6, atol=1e-6)
    ct = jax.random.normal(jax.random.PRNGKey(1), out.shape)
    (g,) = vjp(ct)
    skip_out, pool_out = np.asarray(x), np.asarray(soft.ops["3"](x))[..., 0, :]
    ct = np.asarray(ct)
    expected = np.array([[ct[..., 0, :].sum(), (ct[..., 0, :] * skip_out).sum(), ct[..., 0, :].sum(),
                          ct[..., 0, :].sum()],
                         [ct[..., 1, :].sum(), ct[..., 1, :].sum(), ct[..., 1, :].sum(),
                          (ct[..., 1, :] * pool_out).sum()]])
    np.testing.assert_allclose(g, expected, rtol=1e-4, atol=1e-4)
    # the conv was selected by no edge: it did not run, its BN statistics are untouched (they move when it runs)
    hard(x, weights)
    after = jax.tree.map(np.asarray, nnx.state(hard, nnx.BatchStat))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
        np.testing.assert_array_equal(a, b)
    hard(x, weights.at[1].set(jnp.array([0.0, 0.0, 1.0, 0.0])))
    moved = jax.tree.map(np.asarray, nnx.state(hard, nnx.BatchStat))
    assert any(np.abs(a - b).max() > 0 for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(moved)))


def test_dirichlet_pathwise_gradient_matches_a_finite_difference_of_the_expectation():
    """d/dtheta E_{w ~ Dir(ELU(theta)+1)}[sum_i c_i w_i^2], by averaging the reparameterized gradient over
    samples, against a central difference of the closed form E[w_i^2] = a_i (a_i + 1) / (A (A + 1))."""
    theta = jnp.array([0.4, -0.3, 1.2])
    c = jnp.array([1.0, -2.0, 3.0])

    def expectation(t):
        a = relaxations.dirichlet.concentration(t)
        A = a.sum()
        return (c * a * (a + 1) / (A * (A + 1))).sum()

    keys = jax.random.split(jax.random.PRNGKey(0), 100_000)
    mc_grad = jax.grad(lambda t: jax.vmap(lambda k: (c * relaxations.dirichlet.dirichlet(t, k, {}) ** 2).sum())(keys).mean())(theta)
    h = 1e-3
    fd = np.array([(expectation(theta.at[i].add(h)) - expectation(theta.at[i].add(-h))) / (2 * h) for i in range(3)])
    np.testing.assert_allclose(mc_grad, fd, atol=0.01)
    assert np.abs(fd).max() > 0.05  # a gradient worth comparing
    np.testing.assert_allclose(relaxations.dirichlet.dirichlet(theta, None, {}), relaxations.dirichlet.concentration(theta) /
                               relaxations.dirichlet.concentration(theta).sum(), rtol=1e-6)


def test_dirichlet_kl_against_scipy_and_zero_at_the_uniform():
    # KL(Beta(a, b) || Beta(1, 1)) = -entropy(Beta(a, b)): the uniform's density is 1
    for a, b in ((2.0, 3.0), (0.5, 1.5)):
        np.testing.assert_allclose(drnas.kl_to_uniform(jnp.array([a, b])), -scipy.stats.beta(a, b).entropy(),
                                   rtol=1e-4)
    assert float(drnas.dirichlet_kl([jnp.zeros((3, 4))])) == pytest.approx(0.0, abs=1e-4)  # ELU(0) + 1 = 1


def test_sigmoid_relaxation_and_the_zero_one_loss():
    a = jnp.array([[0.0, 10.0], [-10.0, 0.0]])
    np.testing.assert_allclose(relaxations.sigmoid.sigmoid(a, None, {}), jax.nn.sigmoid(a))
    # sigmoid: 0.5, ~1, ~0, 0.5 -> -mean((w - 0.5)^2) = -(0 + 0.25 + 0.25 + 0) / 4
    assert float(fairdarts.zero_one([a])) == pytest.approx(-0.125, abs=1e-4)
    g = jax.grad(lambda x: fairdarts.zero_one([x]))(jnp.array([[0.5]]))
    s = jax.nn.sigmoid(0.5)
    np.testing.assert_allclose(g, [[-2 * (s - 0.5) * s * (1 - s)]], rtol=1e-5)


# ---------------------------------------------------------------- regularizers and schedules


def test_beta_decay_term_and_its_gradient():
    normal = jnp.array([[0.0, 0.0], [1.0, 2.0]])
    reduce = jnp.array([[3.0, -1.0]])
    lse = [np.log(2.0), np.log(np.e + np.e ** 2), np.log(np.e ** 3 + np.e ** -1)]
    assert float(betadarts.beta_decay([normal, reduce])) == pytest.approx(np.mean(lse), rel=1e-6)
    gn, gr = jax.grad(lambda n, r: betadarts.beta_decay([n, r]), argnums=(0, 1))(normal, reduce)
    np.testing.assert_allclose(gn, jax.nn.softmax(normal, -1) / 3, rtol=1e-6)  # softmax / number of edges
    np.testing.assert_allclose(gr, jax.nn.softmax(reduce, -1) / 3, rtol=1e-6)


def _hyper(name, space="nb201", epochs=None, spe=10):
    cfg = config_lib.method_config(name, space)
    epochs = epochs or cfg.search.epochs
    p = methods.parts(cfg.method, epochs, spe)
    return lambda epoch: {k: float(v) for k, v in p.hyper(jnp.asarray(epoch * spe + spe - 1)).items()}


def approx(v):
    return pytest.approx(v, rel=1e-5, abs=1e-6)  # float32 schedules


def test_schedules_at_their_end_points():
    h = _hyper("gdas")  # 250 epochs, 10 -> 0.1 over epochs - 1 (GDAS.py)
    assert h(0)["tau"] == approx(10.0) and h(249)["tau"] == approx(0.1)
    h = _hyper("snas")  # 150 epochs, 1 -> 0.03 over the epochs
    assert h(0)["tau"] == approx(1.0) and h(149)["tau"] == approx(1 - 0.97 * 149 / 150)
    h = _hyper("betadarts")  # lambda = 50 * epoch / 100
    assert h(0)["reg"] == 0.0 and h(99)["reg"] == approx(49.5)
    h = _hyper("darts_minus", "darts")  # beta (50 - epoch) / 50
    assert h(0)["skip"] == 1.0 and h(49)["skip"] == approx(0.02)
    h = _hyper("sdarts_rs", "darts")  # 0.03 + 0.27 * epoch / epochs
    assert h(0)["eps"] == approx(0.03) and h(49)["eps"] == approx(0.03 + 0.27 * 49 / 50)
    assert _hyper("darts")(3) == {}  # plain DARTS schedules nothing
    with pytest.raises(JaxnasError, match="'over' must be one of epochs, epochs-1, fixed"):
        cfg = config_lib.method_config("gdas", "nb201")
        cfg.method.tau.over = "twice"
        methods.parts(cfg.method, 10, 1)
    assert methods.schedule(0.0, 50.0, 100) == dict(start=0.0, end=50.0, over="fixed", span=100)
    with pytest.raises(JaxnasError, match="config field 'method.tau.over': unknown value '25'"):
        config_lib.apply_overrides(config_lib.method_config("gdas", "nb201"), ["method.tau.over=25"])
    cfg = config_lib.apply_overrides(config_lib.method_config("gdas", "nb201"), ["method.tau.over=fixed",
                                                                                "method.tau.span=4"])
    assert methods.parts(cfg.method, 10, 1).hyper(jnp.asarray(2))["tau"] == approx(10.0 - 9.9 * 2 / 4)
    with pytest.raises(JaxnasError, match="needs span >= 1"):
        config_lib.apply_overrides(cfg, ["method.tau.span=0"])


# ---------------------------------------------------------------- mixed-op variants


def test_channel_shuffle_by_hand():
    x = jnp.arange(6.0).reshape(1, 1, 1, 6)
    np.testing.assert_array_equal(channel_shuffle(x, 2)[0, 0, 0], [0, 3, 1, 4, 2, 5])
    np.testing.assert_array_equal(channel_shuffle(x, 3)[0, 0, 0], [0, 2, 4, 1, 3, 5])


@pytest.mark.parametrize("stride", [1, 2])
def test_partial_channels_shapes_bypass_and_shuffle(stride):
    """Only the first C/K channels go through the ops; the rest bypass (max-pooled 2x2 at stride 2)."""
    C, K = 8, 4
    edges = SourceEdges(3, C, stride, ("none", "skip_connect", "sep_conv_3x3"), rngs=nnx.Rngs(0), mixed=EdgeMix(partial=K))
    assert edges.ops["2"](jnp.zeros((2, 8, 8, C // K))).shape[-1] == C // K  # ops built for C/K channels
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, C))
    w = jnp.array([[0.0, 0.5, 0.0], [0.0, 0.2, 0.0], [0.0, 0.0, 0.0]])  # skip only: no conv contributes
    out = edges(x, w)
    assert out.shape == (2, 8 // stride, 8 // stride, 3, C)
    unshuffled = channel_shuffle(out, C // K)  # shuffling by C/K groups undoes a shuffle by K
    mixed = edges.ops["1"](x[..., :C // K])[..., 0, :] if stride == 1 else None
    rest = x[..., C // K:] if stride == 1 else x[..., C // K:].reshape(2, 4, 2, 4, 2, C - C // K).max(axis=(2, 4))
    for e, weight in enumerate((0.5, 0.2, 0.0)):
        np.testing.assert_allclose(unshuffled[..., e, C // K:], rest, rtol=1e-6)
        if stride == 1:
            np.testing.assert_allclose(unshuffled[..., e, :C // K], weight * mixed, rtol=1e-6, atol=1e-7)


def test_edge_normalization_groups_and_the_genotype_ranks_alpha_times_beta():
    betas = jnp.array([0.1, 0.4, 1.0, -1.0, 0.0])
    n = group_softmax(betas, [2, 3])
    np.testing.assert_allclose([n[:2].sum(), n[2:].sum()], [1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(n[:2], jax.nn.softmax(betas[:2]), rtol=1e-6)
    ops = ("none", "skip_connect", "sep_conv_3x3")
    model = DartsSupernet(1, 10, C=4, layers=1, nodes=2, ops=ops, edge_norm=True, rngs=nnx.Rngs(0))
    # node 0 edges (0, 1); node 1 edges (0, 1, node 0). By alpha alone edge 0 of node 1 is strongest; by
    # alpha * beta it is the weakest.
    a = np.zeros((5, 3), np.float32)
    a[:, 1] = [2.0, 1.0, 3.0, 1.0, 1.0]
    b = np.array([0.0, 0.0, -5.0, 0.0, 0.0], np.float32)
    for kind in ("normal", "reduce"):
        getattr(model, f"alphas_{kind}")[...] = jnp.asarray(a)
        getattr(model, f"betas_{kind}")[...] = jnp.asarray(b)
    assert [src for _, src in model.genotype().normal] == [0, 1, 1, 2]
    model.edge_norm = False
    assert [src for _, src in model.genotype().normal] == [0, 1, 0, 1]


def test_auxiliary_skip_at_beta_one_and_zero():
    for stride in (1, 2):
        edges = SourceEdges(2, 4, stride, ("none", "skip_connect", "sep_conv_3x3"), rngs=nnx.Rngs(0), mixed=EdgeMix(aux_skip=True))
        plain = SourceEdges(2, 4, stride, ("none", "skip_connect", "sep_conv_3x3"), rngs=nnx.Rngs(0))
        nnx.update(plain.ops, nnx.state(edges.ops, nnx.Param))  # the same op weights (aux is extra)
        x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 4))
        w = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(1), (2, 3)), -1)
        np.testing.assert_allclose(edges(x, w, skip=0.0), plain(x, w), rtol=1e-5, atol=1e-6)
        diff = edges(x, w, skip=1.0) - edges(x, w, skip=0.0)
        if stride == 1:
            np.testing.assert_allclose(diff, jnp.broadcast_to(x[..., None, :], diff.shape), rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_allclose(diff, edges.aux(x) * jnp.ones((2, 1)), rtol=1e-5, atol=1e-6)
            assert np.abs(diff).max() > 0.1


def test_partial_channels_must_divide_and_do_not_combine_with_the_auxiliary_skip():
    with pytest.raises(JaxnasError, match="partial_channels=3 must divide"):
        SourceEdges(2, 8, 1, ("skip_connect",), rngs=nnx.Rngs(0), mixed=EdgeMix(partial=3))
    with pytest.raises(JaxnasError, match="cannot be combined"):
        SourceEdges(2, 8, 1, ("skip_connect",), rngs=nnx.Rngs(0), mixed=EdgeMix(partial=2, aux_skip=True))


# ---------------------------------------------------------------- perturbations


def test_sdarts_perturbations_stay_on_the_simplex_and_the_attack_raises_the_loss():
    w0 = {"normal": jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(0), (5, 4)), -1)}
    target = jnp.array([0.0, 1.0, 0.0, 0.0])

    def loss(w):  # lower when every row moves toward op 1
        return -jnp.sum(w["normal"] * target)

    for name, fn in (("random", sdarts.random), ("pgd", sdarts.pgd)):
        out = fn(w0, jax.random.PRNGKey(1), 0.3, loss, 7)["normal"]
        assert (np.asarray(out) >= 0).all(), name
        np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-6)
        assert np.abs(np.asarray(out - w0["normal"])).max() > 1e-3, name  # it moved
    adv = sdarts.pgd(w0, jax.random.PRNGKey(1), 0.3, loss, 7)
    assert float(loss(adv)) > float(loss(w0))
    # the clip: negative entries to 0, a zero row to its argmax, rows renormalized
    clipped = sdarts.clip_to_simplex(jnp.array([[-0.2, 0.6, 0.6], [-0.1, -0.3, -0.5]]))
    np.testing.assert_allclose(clipped, [[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])


# ---------------------------------------------------------------- the engine with the parts


def _step_fn(cfg, order="first", epochs=4, spe=2):
    model = build_supernet(cfg.space, (8, 8, 1), 10, nnx.Rngs(0))
    schedule = optim.epoch_cosine_lr(cfg.optim.lr, cfg.optim.lr_min, epochs, spe)
    w_tx, a_tx = optim.weight_optimizer(cfg.optim, schedule), optim.alpha_optimizer(cfg.optim)
    graphdef, state = B.init_state(model, w_tx, a_tx)
    parts = methods.parts(cfg.method, epochs, spe)
    return graphdef, state, jax.jit(B.make_search_step(graphdef, w_tx, a_tx, schedule, order, cfg.optim, parts))


def _batches(seed):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(16, 8, 8, 1)).astype(np.float32), "y": rng.integers(0, 10, 16).astype(np.int32)}


def test_single_level_ignores_the_val_batch_and_warm_up_keeps_the_alphas():
    cfg = tiny_cfg()
    _, state, step = _step_fn(cfg, "single")
    tb = _batches(0)
    s1, m = step(state, tb, _batches(1))
    s2, _ = step(state, tb, _batches(2))
    assert "val_loss" not in m
    for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.abs(np.asarray(s1.alphas["alphas_normal"][...] - state.alphas["alphas_normal"][...])).max() > 0

    cfg.method.arch_start_epoch = 1  # 2 steps per epoch: steps 0 and 1 only train the weights
    _, state, step = _step_fn(cfg)
    alphas0 = np.asarray(state.alphas["alphas_normal"][...])
    for i in range(3):
        state, m = step(state, _batches(2 * i), _batches(2 * i + 1))
        moved = np.abs(np.asarray(state.alphas["alphas_normal"][...]) - alphas0).max()
        assert (moved > 0) == (i == 2), i
        assert np.isfinite(float(m["val_loss"])) and float(m["val_loss"]) > 0


def test_a_regularizer_adds_its_gradient_to_the_architecture_step():
    """One beta-DARTS step equals a DARTS step whose alpha gradient has lambda * softmax(alpha) / E added."""
    cfg = tiny_cfg()
    cfg.method.regularizer, cfg.method.reg = "beta_decay", methods.schedule(20.0, 20.0)
    cfg.optim.arch_weight_decay = 0.0
    graphdef, state, step = _step_fn(cfg)
    tb, vb = _batches(0), _batches(1)
    after, m = step(state, tb, vb)
    a = state.alphas
    g, *_ = B.make_hypergradient(graphdef, "first", cfg.optim)(state, 0.025, tb, vb, *jax.random.split(state.key, 3)[1:])
    edges = sum(x.shape[0] for x in methods.op_alphas(a))
    g = jax.tree.map(lambda gi, ai: gi + 20.0 * jax.nn.softmax(ai, -1) / edges, g, a)
    upd, _ = optim.alpha_optimizer(cfg.optim).update(g, optim.alpha_optimizer(cfg.optim).init(a), a)
    for k in ("alphas_normal", "alphas_reduce"):
        np.testing.assert_allclose(after.alphas[k][...], a[k][...] + upd[k][...], rtol=1e-5, atol=1e-8)
    assert float(m["reg"]) == 20.0 and float(m["reg_loss"]) == pytest.approx(20.0 * float(betadarts.beta_decay(methods.op_alphas(a))), rel=1e-5)


def _run(method, space, tmp_path=None, name="run", **over):
    cfg = config_lib.method_config(method, space)
    cfg.data.name = "digits"
    if space == "darts":
        cfg.space.C, cfg.space.layers, cfg.space.nodes, cfg.space.allow_no_normal_cell = 4, 1, 2, True
        # parameter-free candidate ops compile in a fraction of a conv's time (the cells' 1x1 convs remain)
        cfg.space.ops = "skip_connect,max_pool_3x3,avg_pool_3x3" if method == "fairdarts" else \
            "none,skip_connect,max_pool_3x3"
    else:
        cfg.space.C, cfg.space.cells_per_stage, cfg.space.ops = 4, 1, "none,skip_connect,avg_pool_3x3"
    cfg.search.epochs, cfg.search.batch_size, cfg.search.eval_batch_size = 2, 16, 64
    cfg.search.max_steps_per_epoch, cfg.search.eval_examples = 2, 64
    cfg.method.arch_start_epoch = min(cfg.method.arch_start_epoch, 1)
    if cfg.method.stages:  # DrNAS's progressive search, one epoch a stage: K 2 -> 1, 3 ops -> 2
        cfg.method.stages = progressive.parse("1:2:3,1:1:2")
        cfg.space.partial_channels = 2
    cfg.run.progress = False
    cfg.run.checkpoint_every = 0
    for k, v in over.items():
        section, field = k.split("__")
        cfg[section][field] = v
    path = None
    if tmp_path is not None:
        cfg.run.workdir, cfg.run.name = str(tmp_path), name
        path = rundir.create(cfg, "search")
    return cfg, path, get_strategy("darts")(cfg, path, log=lambda *_: None)


@pytest.mark.parametrize("space", ["nb201", "darts"])
@pytest.mark.parametrize("method", METHOD_NAMES)
def test_every_method_runs_end_to_end(method, space):
    cfg, _, out = _run(method, space)
    assert len(out["history"]) == 2 and np.isfinite(out["history"][-1]["search_val_loss"])
    assert out["genotype"] is not None
    init = build_supernet(cfg.space, (8, 8, 1), 10, nnx.Rngs(cfg.seed))
    moved = max(np.abs(np.asarray(out["state"].alphas[k][...]) - np.asarray(getattr(init, k)[...])).max()
                for k in out["state"].alphas.keys())
    assert moved > 1e-5  # the architecture was trained


def test_resume_with_a_sampling_relaxation_is_bit_exact(tmp_path):
    _, _, ref = _run("gdas", "darts", tmp_path, "ref")
    cfg, path, _ = _run("gdas", "darts", tmp_path, "cut")
    shutil.rmtree(os.path.join(path, "checkpoints", "4"))  # as if killed before the last epoch's checkpoint
    out = get_strategy("darts")(config_lib.for_resume(path, None, [], "search"), path, log=lambda *_: None,
                                resume=True)
    for a, b in zip(jax.tree.leaves(ref["state"]), jax.tree.leaves(out["state"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_sampling_method_on_one_and_four_devices_agrees():
    def run(n):
        cfg = tiny_cfg()
        cfg.space.relaxation = "gumbel_hard"
        cfg.method.tau = methods.schedule(10.0, 0.1, "epochs-1")
        model = build_supernet(cfg.space, (8, 8, 1), 10, nnx.Rngs(0))
        schedule = optim.epoch_cosine_lr(cfg.optim.lr, cfg.optim.lr_min, 4, 2)
        w_tx, a_tx = optim.weight_optimizer(cfg.optim, schedule), optim.alpha_optimizer(cfg.optim)
        graphdef, state = B.init_state(model, w_tx, a_tx)
        mesh = parallel.make_mesh(n)
        step = parallel.jit_data_parallel(B.make_search_step(graphdef, w_tx, a_tx, schedule, "first", cfg.optim,
                                                             methods.parts(cfg.method, 4, 2)), mesh, 2)
        state = parallel.put_replicated(state, mesh)
        for i in range(3):
            state, _ = step(state, parallel.put_batch(_batches(2 * i), mesh), parallel.put_batch(_batches(2 * i + 1),
                                                                                                  mesh))
        return jax.device_get(state)

    one, four = run(1), run(4)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(four)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_unknown_parts_are_one_line_errors():
    cfg = config_lib.method_config("darts", "nb201")
    cfg.method.regularizer = "l3"
    with pytest.raises(JaxnasError, match="unknown regularizer 'l3'"):
        methods.parts(cfg.method, 2, 1)
    cfg = config_lib.method_config("betadarts", "nb201")
    cfg.method.reg = methods.schedule(0.0, 0.0)
    with pytest.raises(JaxnasError, match="has weight 0"):
        methods.parts(cfg.method, 2, 1)
    with pytest.raises(JaxnasError, match="unknown method 'edarts'"):
        config_lib.method_config("edarts")


def test_the_worked_example_adds_a_method_in_one_file():
    import importlib.util
    path = os.path.join(os.path.dirname(__file__), "..", "experiments", "annealed_method.py")
    if "annealed" not in methods.METHODS:
        spec = importlib.util.spec_from_file_location("annealed_method", path)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    cfg, _, out = _run("annealed", "nb201")
    assert cfg.space.relaxation == "softmax_tau" and cfg.method.regularizer == "entropy"
    assert np.isfinite(out["history"][-1]["search_val_loss"])
    h = _hyper("annealed", epochs=2, spe=1)
    assert h(0)["tau"] == approx(5.0) and h(1)["tau"] == approx(0.5)


# ---------------------------------------------------------------- progressive search (DrNAS)


def test_stages_parse_and_refuse_what_cannot_be_done():
    from jaxnas.methods import progressive as P
    written = (dict(epochs=25, partial=6, keep=8), dict(epochs=25, partial=4, keep=4))
    assert P.parse("25:6:8,25:4:4") == P.check(list(written)) == written
    st = P.stages(written, 50)
    assert st == [P.Stage(0, 25, 6, 8), P.Stage(25, 25, 4, 4)]
    assert [P.stage_of(st, e) for e in (0, 24, 25, 49)] == [0, 0, 1, 1]
    assert P.stages(P.parse(""), 7) == []
    for text, match in (("25:6", "epochs:K:ops"), ("25:4:8,25:6:4", "widen"), ("25:6:4,25:4:8", "do not come back"),
                        ("0:6:8", "positive")):
        with pytest.raises(JaxnasError, match=match):
            P.parse(text)
    with pytest.raises(JaxnasError, match="adds? up to 45"):
        P.stages(P.parse("25:6:8,20:4:4"), 50)
    for bad, match in (([dict(epochs=1, partial=1)], "exactly"), ([dict(epochs=1, partial=True, keep=1)], "positive"),
                       ("x", "epochs:K:ops"), (5, "list")):
        with pytest.raises(JaxnasError, match=match):
            P.check(bad)
    # the search config: the command line's short form and a field's range checked when it is read
    cfg = config_lib.apply_overrides(config_lib.load(None, "search"), ["search.epochs=2", "method.stages=1:2:3,1:1:2"])
    assert cfg.method.stages == P.parse("1:2:3,1:1:2")
    with pytest.raises(JaxnasError, match="add up to 2 epochs, search.epochs is 3"):
        config_lib.apply_overrides(cfg, ["search.epochs=3"])


def test_prune_keeps_the_strongest_unpruned_ops_and_widen_copies_channels():
    from jaxnas.methods import progressive as P
    a = {"alphas_normal": np.array([[0.1, 0.5, 0.3, -0.2], [0.9, 0.0, 0.8, 0.7]], np.float32)}
    pruned, masks = P.prune(a, None, 3)
    np.testing.assert_array_equal(masks["alphas_normal"], [[True, True, True, False], [True, False, True, True]])
    np.testing.assert_allclose(pruned["alphas_normal"], [[0.1, 0.5, 0.3, 0.0], [0.9, 0.0, 0.8, 0.7]])
    again, masks = P.prune(pruned, masks, 2)  # the pruned 0.0 entries never come back
    np.testing.assert_array_equal(masks["alphas_normal"], [[False, True, True, False], [True, False, True, False]])
    old = {"w": np.arange(6.0).reshape(2, 3), "pw": np.arange(9.0).reshape(3, 3), "same": np.ones(4)}
    new = {"w": np.zeros((2, 5)), "pw": np.zeros((5, 5)), "same": np.zeros(4)}
    out = P.widen_tree(old, new, seed=0)
    idx = [int(np.argmax(np.all(out["w"][:, j:j + 1] == old["w"], axis=0))) for j in (3, 4)]
    np.testing.assert_array_equal(out["w"], np.concatenate([old["w"], old["w"][:, idx]], axis=1))
    # one channel map for every leaf: the pointwise matrix copies the same channels on both axes
    np.testing.assert_array_equal(out["pw"][3:, 3:], old["pw"][np.ix_(idx, idx)])
    np.testing.assert_array_equal(out["same"], old["same"])


def test_an_op_mask_renormalizes_the_relaxed_weights_and_the_genotype_ignores_masked_ops():
    ops = ("none", "skip_connect", "sep_conv_3x3", "max_pool_3x3")
    model = DartsSupernet(1, 10, C=4, layers=1, nodes=2, ops=ops, relaxation="dirichlet", rngs=nnx.Rngs(0))
    mask = np.ones((5, 4), bool)
    mask[:, 2] = False  # sep_conv pruned everywhere
    model.alphas_normal[...] = model.alphas_normal[...].at[:, 2].set(5.0)  # ... though its alphas are the largest
    model.set_op_mask({"alphas_normal": mask, "alphas_reduce": mask})
    w = model.relax(jax.random.PRNGKey(0))["normal"]
    assert float(jnp.abs(w[:, 2]).max()) == 0.0
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
    assert all(op != "sep_conv_3x3" for op, _ in model.genotype().normal)


def test_progressive_search_prunes_widens_and_resumes_exactly_across_stages(tmp_path):
    over = dict(space__C=12, space__ops="none,skip_connect,sep_conv_3x3", space__partial_channels=4,
                method__stages=progressive.parse("1:4:3,1:2:2"), run__checkpoint_every=1)
    cfg, ref_path, ref = _run("drnas", "darts", tmp_path, "ref", **over)
    from jaxnas import checkpoint
    mask = np.asarray(checkpoint.Checkpointer(os.path.join(ref_path, "checkpoints")).meta(4)["op_mask"]["alphas_normal"])
    assert mask.shape == (5, 3) and (mask.sum(-1) == 2).all()  # each edge pruned to its 2 strongest ops
    sep = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(ref["state"].params)[0]
           if "pw" in jax.tree_util.keystr(path)]
    assert sep and all(leaf.shape[-1] == 12 for leaf in sep)  # the reduction cell's 24 channels: 24/4 -> 24/2
    for gone in (["4"], ["3", "4"]):  # resume mid-stage-2 (step 3), then from stage 1's last step (2)
        _, path, _ = _run("drnas", "darts", tmp_path, f"cut{len(gone)}", **over)
        for step in gone:
            shutil.rmtree(os.path.join(path, "checkpoints", step))
        out = get_strategy("darts")(config_lib.for_resume(path, None, [], "search"), path, log=lambda *_: None,
                                    resume=True)
        for x, y in zip(jax.tree.leaves(ref["state"]), jax.tree.leaves(out["state"])):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_fairdarts_threshold_drops_weak_kept_edges_and_the_cell_still_retrains():
    from jaxnas import genotype as G
    from jaxnas.spaces.darts import DartsNetwork
    ops = ("skip_connect", "sep_conv_3x3", "max_pool_3x3")
    w = np.array([[0.9, 0.1, 0.2], [0.3, 0.5, 0.1],                    # node 0: sigmoid strengths of 2 edges
                  [0.1, 0.95, 0.2], [0.2, 0.1, 0.86], [0.1, 0.1, 0.1]],  # node 1: 3 edges
                 np.float32)
    cell = G.derive_cell(w, ops, 2, distributions=False, threshold=0.85)
    assert cell == (("skip_connect", 0), ("none", 1), ("sep_conv_3x3", 0), ("max_pool_3x3", 1))
    assert G.derive_cell(w, ops, 2, distributions=False)[1] == ("sep_conv_3x3", 1)  # DARTS's parse keeps it
    g = G.validate(G.Genotype(cell, (2, 3), cell, (2, 3)))
    net = DartsNetwork(g, 1, 10, C=4, layers=3, auxiliary=False, rngs=nnx.Rngs(0))
    logits, _ = net(jnp.ones((2, 8, 8, 1)))  # a none edge adds zero: node 0 is skip(c_{k-2}) alone
    assert logits.shape == (2, 10) and np.isfinite(np.asarray(logits)).all()
    assert config_lib.method_config("fairdarts", "darts").space.op_threshold == 0.85


def test_the_sdarts_attack_runs_in_evaluation_mode():
    """With the evaluation graph the PGD attack's loss uses BN running statistics, so the step differs from
    one whose attack uses batch statistics; without a perturbation the evaluation graph changes nothing."""
    def step_with(perturbation, use_eval):
        cfg = tiny_cfg()
        if perturbation:
            cfg.method.perturbation, cfg.method.eps = perturbation, methods.schedule(0.3, 0.3)
        model = build_supernet(cfg.space, (8, 8, 1), 10, nnx.Rngs(0))
        schedule = optim.epoch_cosine_lr(cfg.optim.lr, cfg.optim.lr_min, 4, 2)
        w_tx, a_tx = optim.weight_optimizer(cfg.optim, schedule), optim.alpha_optimizer(cfg.optim)
        graphdef, state = B.init_state(model, w_tx, a_tx)
        model.eval()
        step = jax.jit(B.make_search_step(graphdef, w_tx, a_tx, schedule, "first", cfg.optim,
                                          methods.parts(cfg.method, 4, 2), nnx.split(model)[0] if use_eval else None))
        return step(state, _batches(0), _batches(1))[0].params

    def same(a, b):
        return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

    assert not same(step_with("pgd", True), step_with("pgd", False))
    assert same(step_with("", True), step_with("", False))
