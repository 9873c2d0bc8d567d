"""Learning to Reweight, Meta-Weight-Net and learned hyperparameters: one step against hand-written
references of the published algorithms, and end to end on noisy digits."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from jaxnas import config as config_lib
from jaxnas.errors import JaxnasError
from jaxnas.hyper import reweight
from jaxnas.hyper.methods import Hyper, mwnet
from jaxnas.optimize import corrupt, models
from jaxnas.optimize import split as split_lib
from jaxnas.optimize import trainer


def _hyper(**kw):
    h = config_lib.optimize_defaults().optimize.hyper
    h.update(kw)
    return h


def _tiny(seed=0, n=6, m=5):
    cfg = config_lib.tiny_optimize()
    model = models.build("cnn:4", (8, 8, 1), 3, nnx.Rngs(seed), cfg)
    graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    rng = np.random.default_rng(seed)
    batch = {"x": rng.normal(size=(n, 8, 8, 1)).astype(np.float32), "y": rng.integers(0, 3, n),
             "pos": np.arange(n)}
    meta = {"x": rng.normal(size=(m, 8, 8, 1)).astype(np.float32), "y": rng.integers(0, 3, m)}
    return graphdef, params, stats, batch, meta


def _ce(graphdef, params, stats, x, y):
    logits = nnx.merge(graphdef, params, stats, copy=True)(x)
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), jnp.asarray(y)[:, None], 1)[:, 0]


def _flat(tree):
    return jnp.concatenate([jnp.ravel(a) for a in jax.tree.leaves(tree)])


HP = {"label_smoothing": 0.0, "weight_decay": 0.0}


def test_l2rw_weights_are_the_normalized_positive_gradient_alignments():
    # Ren et al. 2018, Eq. 12: d L_meta(w - a sum_i eps_i grad l_i) / d eps_j at eps = 0 is
    # -a grad L_meta(w) . grad l_j(w); the weights are max(alignment, 0) normalized to sum 1.
    graphdef, params, stats, batch, meta = _tiny()
    tx = optax.sgd(0.1)
    steps = reweight.Steps(graphdef, tx, HP, 3, 6, _hyper(method="l2rw"), 0)
    g_meta = _flat(jax.grad(lambda p: _ce(graphdef, p, stats, meta["x"], meta["y"]).mean())(params))
    align = np.array([float(_flat(jax.grad(lambda p: _ce(graphdef, p, stats, batch["x"][j:j + 1],
                                                         batch["y"][j:j + 1])[0])(params)) @ g_meta)
                      for j in range(6)])
    expected = np.maximum(align, 0) / np.maximum(align, 0).sum()
    assert (align > 0).any() and (align < 0).any()  # the case tests both sides of the max
    new_params, _, _, _, loss, w = steps.step(params, stats, tx.init(params), steps.init(), batch, meta, 0.1)
    np.testing.assert_allclose(np.asarray(w) / 6, expected, rtol=1e-4, atol=1e-7)
    ce = _ce(graphdef, params, stats, batch["x"], batch["y"])
    assert float(loss) == pytest.approx(float(jnp.sum(jnp.asarray(expected) * ce)), rel=1e-5)
    grad = jax.grad(lambda p: jnp.sum(jnp.asarray(expected) * _ce(graphdef, p, stats, batch["x"], batch["y"])))(params)
    np.testing.assert_allclose(_flat(new_params), _flat(params) - 0.1 * _flat(grad), rtol=1e-4, atol=1e-6)


def test_mwnet_step_follows_the_official_algorithm():
    # MW-Net.py's train(): virtual SGD step on mean(l * V(l.detach())) at the current lr; meta CE after it;
    # Adam(1e-3, weight_decay=1e-4) on V; the real step on mean(l * V'(l)) with V' the updated net.
    graphdef, params, stats, batch, meta = _tiny(1)
    lr = 0.05
    tx = optax.sgd(0.1)
    steps = reweight.Steps(graphdef, tx, HP, 3, 6, _hyper(method="mwnet"), 0)
    state = steps.init()
    phi = state.params
    assert phi["w1"].shape == (1, 100) and phi["w2"].shape == (100, 1)

    def meta_after_virtual(phi_):
        def inner(p):
            ell = _ce(graphdef, p, stats, batch["x"], batch["y"])
            return jnp.mean(ell * mwnet.vnet(phi_, jax.lax.stop_gradient(ell)))
        p2 = jax.tree.map(lambda a, g: a - lr * g, params, jax.grad(inner)(params))
        return _ce(graphdef, p2, stats, meta["x"], meta["y"]).mean()

    g = jax.grad(meta_after_virtual)(phi)
    # Adam's first step (bias-corrected): -lr * g' / (|g'| + eps), g' = g + wd * phi
    phi_new = jax.tree.map(lambda p, gg: p - 1e-3 * (gg + 1e-4 * p) / (jnp.abs(gg + 1e-4 * p) + 1e-8), phi, g)
    ell = _ce(graphdef, params, stats, batch["x"], batch["y"])
    w = mwnet.vnet(phi_new, ell)
    grad = jax.grad(lambda p: jnp.mean(_ce(graphdef, p, stats, batch["x"], batch["y"]) * w))(params)
    new_params, _, _, new_state, _, got_w = steps.step(params, stats, tx.init(params), state, batch, meta, lr)
    np.testing.assert_allclose(_flat(new_state.params), _flat(phi_new), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got_w, w, rtol=1e-4)
    np.testing.assert_allclose(_flat(new_params), _flat(params) - 0.1 * _flat(grad), rtol=1e-4, atol=1e-6)


def test_the_oracle_step_is_sgd_on_the_mean_loss_of_the_correctly_labelled_examples():
    # Weights 1 for a correct label, 0 for a changed one; the loss their mean over the batch's correct
    # examples; the reported weights in units where uniform weighting is 1 (6 / 4 for each correct one).
    graphdef, params, stats, batch, meta = _tiny(3)
    clean = np.array([1, 0, 1, 1, 0, 1], np.float32)
    tx = optax.sgd(0.1)
    steps = reweight.Steps(graphdef, tx, HP, 3, 6, _hyper(method="oracle"), 0)
    new_params, _, _, _, loss, w = steps.step(params, stats, tx.init(params), steps.init(), dict(batch, clean=clean),
                                              meta, 0.1)
    np.testing.assert_allclose(np.asarray(w), clean * 6 / 4, rtol=1e-6)
    ell = _ce(graphdef, params, stats, batch["x"], batch["y"])
    assert float(loss) == pytest.approx(float(jnp.sum(clean * ell) / 4), rel=1e-5)
    grad = jax.grad(lambda p: jnp.sum(clean * _ce(graphdef, p, stats, batch["x"], batch["y"])) / 4)(params)
    np.testing.assert_allclose(_flat(new_params), _flat(params) - 0.1 * _flat(grad), rtol=1e-4, atol=1e-6)
    none = np.zeros(6, np.float32)  # a batch without one correct label: no update, weights 0
    same, _, _, _, loss0, w0 = steps.step(params, stats, tx.init(params), steps.init(), dict(batch, clean=none),
                                          meta, 0.1)
    assert float(loss0) == 0.0 and not np.asarray(w0).any()
    np.testing.assert_array_equal(_flat(same), _flat(params))


def test_a_users_method_is_one_registration_and_then_checked_and_built(monkeypatch):
    # "halve": every example weighted 1/2, from the shared real step; its check refuses an optimizer lookahead
    from jaxnas.hyper.methods import METHODS, Built, Method, register_hyper_method

    def build(c):
        def step(params, stats, opt, rstate, batch, meta, lr):
            params, stats, opt, loss = c.real_step(params, stats, opt, batch, lambda ell: 0.5 * jnp.mean(ell))
            return params, stats, opt, rstate, loss, jnp.full(batch["y"].shape, 0.5)
        return Built(step, lambda: Hyper(None, None))

    def check(cfg):
        if cfg.lookahead != "sgd":
            raise JaxnasError("halve takes no lookahead")

    monkeypatch.setitem(METHODS, "halve", None)  # so that the registration is undone after the test
    del METHODS["halve"]
    register_hyper_method("halve", Method(build, check))
    reweight.check(_hyper(method="halve"))
    with pytest.raises(JaxnasError, match="halve takes no lookahead"):
        reweight.check(_hyper(method="halve", lookahead="optimizer"))
    graphdef, params, stats, batch, meta = _tiny(5)
    tx = optax.sgd(0.1)
    steps = reweight.Steps(graphdef, tx, HP, 3, 6, _hyper(method="halve"), 0)
    assert steps.hyper_update is None and not steps.updates_hyper(0) and steps.lookahead == 1
    new_params, _, _, _, _, w = steps.step(params, stats, tx.init(params), steps.init(), batch, meta, 0.1)
    grad = jax.grad(lambda p: 0.5 * _ce(graphdef, p, stats, batch["x"], batch["y"]).mean())(params)
    np.testing.assert_allclose(_flat(new_params), _flat(params) - 0.1 * _flat(grad), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(w), 0.5)


def test_hypergrad_updates_each_declared_hyperparameter_by_its_meta_gradient():
    graphdef, params, stats, batch, meta = _tiny(2)
    tx = optax.sgd(0.1)
    hyper = _hyper(method="hypergrad", learn="example_weights,class_weights,weight_decay,label_smoothing", lr=0.01)
    steps = reweight.Steps(graphdef, tx, {"label_smoothing": 0.1, "weight_decay": 1e-3}, 3, 6, hyper, 0)
    state = steps.init()
    assert set(state.params) == {"example", "class", "log_wd", "ls"}
    assert steps.values(state)["label_smoothing"] == pytest.approx(0.1)
    assert steps.values(state)["weight_decay"] == pytest.approx(1e-3)
    def train_loss(p):  # with every weight the same: the smoothed cross-entropy plus the L2 term
        logp = jax.nn.log_softmax(nnx.merge(graphdef, p, stats, copy=True)(batch["x"]))
        ce = -(0.9 * jnp.take_along_axis(logp, batch["y"][:, None], 1)[:, 0] + 0.1 * logp.mean(-1))
        return ce.mean() + 0.5 * 1e-3 * jnp.sum(_flat(p) ** 2)

    stacked = jax.tree.map(lambda a: np.stack([a]), batch)
    new_state, mloss = steps.hyper_update(params, stats, tx.init(params), state, stacked, meta, 0.1)
    ahead = jax.tree.map(lambda a, g: a - 0.1 * g, params, jax.grad(train_loss)(params))  # the one-step lookahead
    assert float(mloss) == pytest.approx(float(_ce(graphdef, ahead, stats, meta["x"], meta["y"]).mean()), rel=1e-5)
    for k in state.params:  # Adam's first step moves every coordinate with a nonzero gradient by ~lr
        delta = np.abs(np.asarray(new_state.params[k]) - np.asarray(state.params[k]))
        assert np.all((delta > 0.009) & (delta < 0.0101)), k
    _, _, _, _, loss, w = steps.step(params, stats, tx.init(params), state, batch, meta, 0.1)
    np.testing.assert_allclose(w, 1.0, rtol=1e-6)
    assert float(loss) == pytest.approx(float(train_loss(params)), rel=1e-5)


def test_learned_learning_rate_follows_the_hypergradient_descent_signal_and_scales_the_step():
    # Baydin et al. 2018: d L_meta(w - lr e^s grad L_train(w)) / ds at s = 0 is
    # -lr grad L_meta(w') . grad L_train(w); Adam's first step moves s by -hyper_lr * sign of that.
    graphdef, params, stats, batch, meta = _tiny(3)
    tx = optax.sgd(0.1)
    steps = reweight.Steps(graphdef, tx, HP, 3, 6, _hyper(method="hypergrad", learn="learning_rate", lr=0.01), 0)
    state = steps.init()
    assert set(state.params) == {"log_lr"} and steps.values(state) == {"lr_scale": 1.0}
    g_train = jax.grad(lambda p: _ce(graphdef, p, stats, batch["x"], batch["y"]).mean())(params)
    ahead = jax.tree.map(lambda a, g: a - 0.2 * g, params, g_train)
    g_meta = jax.grad(lambda p: _ce(graphdef, p, stats, meta["x"], meta["y"]).mean())(ahead)
    signal = -0.2 * float(_flat(g_meta) @ _flat(g_train))
    assert abs(signal) > 1e-6
    new_state, mloss = steps.hyper_update(params, stats, tx.init(params), state,
                                          jax.tree.map(lambda a: np.stack([a]), batch), meta, 0.2)
    assert float(mloss) == pytest.approx(float(_ce(graphdef, ahead, stats, meta["x"], meta["y"]).mean()), rel=1e-5)
    assert float(new_state.params["log_lr"]) == pytest.approx(-0.01 * np.sign(signal), rel=1e-3)
    # the real step's update is the optimizer's times e^s
    doubled = Hyper({"log_lr": jnp.log(2.0)}, state.opt)
    p1 = steps.step(params, stats, tx.init(params), state, batch, meta, 0.2)[0]
    p2 = steps.step(params, stats, tx.init(params), doubled, batch, meta, 0.2)[0]
    np.testing.assert_allclose(_flat(p2) - _flat(params), 2 * (_flat(p1) - _flat(params)), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(_flat(p1), _flat(params) - 0.1 * _flat(g_train), rtol=1e-4, atol=1e-6)


def test_a_lookahead_through_plain_sgd_is_the_official_virtual_step():
    # lookahead=optimizer takes one step of the trainer's optimizer; for SGD without momentum at the
    # current learning rate that is the official virtual step, so MW-Net's step is unchanged.
    graphdef, params, stats, batch, meta = _tiny(4)
    tx = optax.sgd(0.05)
    a = reweight.Steps(graphdef, tx, HP, 3, 6, _hyper(method="mwnet"), 0)
    b = reweight.Steps(graphdef, tx, HP, 3, 6, _hyper(method="mwnet", lookahead="optimizer"), 0)
    out_a = a.step(params, stats, tx.init(params), a.init(), batch, meta, 0.05)
    out_b = b.step(params, stats, tx.init(params), b.init(), batch, meta, 0.05)
    for x, y in zip(jax.tree.leaves(out_a), jax.tree.leaves(out_b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)


def test_a_lookahead_through_adam_differentiates_adams_step():
    # lookahead=optimizer with Adam: the learned learning rate's hypergradient is
    # d/ds L_meta(w + e^s u(w)) at s = 0 = grad L_meta(w + u) . u, u Adam's update from its state.
    graphdef, params, stats, batch, meta = _tiny(5)
    tx = optax.adam(0.01)
    opt = tx.init(params)
    for _ in range(2):  # a state with history, as mid-training
        g = jax.grad(lambda p: _ce(graphdef, p, stats, batch["x"], batch["y"]).mean())(params)
        upd, opt = tx.update(g, opt, params)
        params = optax.apply_updates(params, upd)
    hyper = _hyper(method="hypergrad", learn="learning_rate", lookahead="optimizer", lr=0.01)
    steps = reweight.Steps(graphdef, tx, HP, 3, 6, hyper, 0)
    g = jax.grad(lambda p: _ce(graphdef, p, stats, batch["x"], batch["y"]).mean())(params)
    u, _ = tx.update(g, opt, params)
    ahead = optax.apply_updates(params, u)
    g_meta = jax.grad(lambda p: _ce(graphdef, p, stats, meta["x"], meta["y"]).mean())(ahead)
    signal = float(_flat(g_meta) @ _flat(u))
    state = steps.init()
    new_state, mloss = steps.hyper_update(params, stats, opt, state, jax.tree.map(lambda a: np.stack([a]), batch),
                                          meta, 0.01)
    assert float(mloss) == pytest.approx(float(_ce(graphdef, ahead, stats, meta["x"], meta["y"]).mean()), rel=1e-5)
    assert float(new_state.params["log_lr"]) == pytest.approx(-0.01 * np.sign(signal), rel=1e-3)


def test_adams_step_has_a_finite_derivative_where_a_gradient_coordinate_is_zero():
    # Adam's first update m / (sqrt(v) + eps) at g_i = 0 has the derivative 0 * inf in v's path; the
    # lookahead takes 0 there (such a coordinate's gradient does not move with the hyperparameters).
    tx = optax.adam(0.01)
    opt = tx.init(jnp.zeros(2))
    direction = jnp.array([0.0, 1.0])

    def moved(fn):
        return jax.grad(lambda s: jnp.sum(fn(lambda g: tx.update(g, opt)[0])(s * direction)))(1.0)

    assert np.isnan(float(moved(lambda f: f)))
    assert np.isfinite(float(moved(reweight._finite_vjp)))


def test_optimize_hyper_fields_are_checked_with_one_line_errors():
    with pytest.raises(JaxnasError, match="lookahead=optimizer with method=l2rw"):
        reweight.check(_hyper(method="l2rw", lookahead="optimizer"))
    with pytest.raises(JaxnasError, match="lookahead=optimizer takes one step .* needs estimator=unrolled and steps=1"):
        reweight.check(_hyper(method="hypergrad", lookahead="optimizer", steps=3))
    with pytest.raises(JaxnasError, match="lookahead='adam' unknown; allowed: sgd, optimizer"):
        reweight.check(_hyper(lookahead="adam"))
    with pytest.raises(JaxnasError, match="learn=learning_rate needs optimize.hyper.estimator=unrolled"):
        reweight.check(_hyper(method="hypergrad", learn="learning_rate", estimator="implicit"))
    with pytest.raises(JaxnasError, match="declares weight_decay twice"):
        reweight.check(_hyper(method="hypergrad", learn="weight_decay,example_weights,weight_decay"))
    with pytest.raises(JaxnasError, match="'lr' unknown; allowed: example_weights"):
        reweight.check(_hyper(method="hypergrad", learn="lr"))
    with pytest.raises(JaxnasError, match="optimize.hyper.steps must be an integer >= 1"):
        reweight.check(_hyper(steps=0))
    with pytest.raises(JaxnasError, match="optimize.hyper.lr must be a finite number > 0"):
        reweight.check(_hyper(lr=float("nan")))
    with pytest.raises(JaxnasError, match="method='mw' unknown"):
        reweight.check(_hyper(method="mw"))


# --- corruption -------------------------------------------------------------------------------------

def _corrupt(**kw):
    c = ml_collections.ConfigDict(dict(kind="none", rate=0.0, factor=1.0, val=False))
    c.update(kw)
    return c


def test_symmetric_noise_changes_a_fraction_rate_of_train_labels_and_never_test():
    y = np.repeat(np.arange(10), 3000)
    idx = np.random.default_rng(0).permutation(len(y))
    train, val, test = np.sort(idx[:20000]), np.sort(idx[20000:25000]), np.sort(idx[25000:])
    c = corrupt.apply(_corrupt(kind="symmetric", rate=0.4), y, train, val, 10, seed=3)
    assert np.mean(c.y[train] != y[train]) == pytest.approx(0.4, abs=0.01)
    assert np.array_equal(c.y[val], y[val]) and np.array_equal(c.y[test], y[test])
    assert np.array_equal(c.clean, c.y == y) and c.record["wrong_labels"] == int((c.y != y).sum())
    assert np.array_equal(np.asarray(c.record["original_labels"]), y[c.record["wrong_indices"]])
    again = corrupt.apply(_corrupt(kind="symmetric", rate=0.4), y, train, val, 10, seed=3)
    assert np.array_equal(again.y, c.y)  # seeded
    mix = corrupt.apply(_corrupt(kind="uniform_mix", rate=0.4, val=True), y, train, val, 10, seed=3)
    # MW-Net's convention: redrawn over all K classes, so 0.4 * 9/10 = 36% wrong
    assert np.mean(mix.y[train] != y[train]) == pytest.approx(0.36, abs=0.01)
    assert np.mean(mix.y[val] != y[val]) == pytest.approx(0.36, abs=0.02)
    assert np.array_equal(mix.y[test], y[test])


def test_longtail_keeps_n_max_times_factor_to_the_minus_c_over_k_minus_1():
    y = np.repeat(np.arange(3), 100)
    train = np.arange(300)
    c = corrupt.apply(_corrupt(kind="longtail", factor=100.0), y, train, np.arange(0), 3, seed=0)
    assert np.bincount(y[c.train], minlength=3).tolist() == [100, 10, 1]  # 100 * 100^(-c/2)
    assert c.record["removed"] == 189 and np.array_equal(c.y, y)


@pytest.mark.parametrize("fields, message", [
    ({"kind": "symmetric", "rate": 1.0}, "rate must be in \\[0, 1\\), got 1.0"),
    ({"kind": "symmetric", "rate": -0.1}, "rate must be in \\[0, 1\\), got -0.1"),
    ({"kind": "symmetric", "rate": float("nan")}, "rate must be in \\[0, 1\\)"),
    ({"kind": "symmetric", "rate": 0.0}, "needs data.corrupt.rate in \\(0, 1\\)"),
    ({"kind": "longtail", "factor": 0.5}, "factor must be a finite number >= 1"),
    ({"kind": "longtail", "factor": 1.0}, "needs data.corrupt.factor > 1"),
    ({"kind": "flip"}, "kind='flip' unknown; allowed: none, symmetric, uniform_mix, longtail"),
])
def test_bad_corruptions_are_one_line_errors(fields, message):
    with pytest.raises(JaxnasError, match=message):
        corrupt.check(_corrupt(**fields))


# --- end to end -------------------------------------------------------------------------------------

def test_reweighting_down_weights_wrong_labels_on_noisy_digits():
    """40% symmetric noise on the digits' train split: L2RW's and the learned per-example weights rank
    correct labels above wrong ones (AUROC > 0.5 by a margin), and each epoch records it."""
    pool = split_lib.load_pool("digits")
    sp = split_lib.stratified_split(pool, 0.15, 0.15, 0)
    c = corrupt.apply(_corrupt(kind="symmetric", rate=0.4), pool.y_train, sp.train, sp.val, 10, seed=0)
    cfg = config_lib.tiny_optimize()
    hp = dict(cfg.optimize.baseline.to_dict(), epochs=6)
    for hyper, floor in ((_hyper(method="l2rw"), 0.55), (_hyper(method="hypergrad", lr=0.1), 0.6)):
        f = trainer.fit("cnn", hp, pool.x_train, c.y, c.train, 10, 0, cfg, val_idx=sp.val, hyper=hyper, clean=c.clean)
        aurocs = [h["weights"]["auroc_clean"] for h in f.history]
        assert len(aurocs) == 6 and aurocs[-1] > floor, (hyper.method, aurocs)
        last = f.history[-1]["weights"]
        assert sum(last["hist_clean"]) + sum(last["hist_noisy"]) == len(c.train)


def test_the_oracle_weights_exactly_the_correct_labels_and_needs_label_noise(tmp_path):
    pool = split_lib.load_pool("digits")
    sp = split_lib.stratified_split(pool, 0.15, 0.15, 0)
    c = corrupt.apply(_corrupt(kind="symmetric", rate=0.4), pool.y_train, sp.train, sp.val, 10, seed=0)
    cfg = config_lib.tiny_optimize()
    hp = dict(cfg.optimize.baseline.to_dict(), epochs=1)
    f = trainer.fit("cnn:4", hp, pool.x_train, c.y, c.train, 10, 0, cfg, val_idx=sp.val, hyper=_hyper(method="oracle"),
                    clean=c.clean)
    w = f.history[-1]["weights"]
    assert w["auroc_clean"] == 1.0 and sum(w["hist_noisy"][1:]) == 0  # every changed label weighted 0
    assert w["weight_zero_fraction"] == pytest.approx(1 - c.clean[c.train].mean(), abs=0.03)
    with pytest.raises(JaxnasError, match="needs a known label corruption"):
        trainer.fit("cnn:4", hp, pool.x_train, pool.y_train, sp.train, 10, 0, cfg, val_idx=sp.val,
                    hyper=_hyper(method="oracle"))


def _fit_on(devices: int, hyper, epochs: int = 2, **kw):
    pool = split_lib.load_pool("digits")
    sp = split_lib.stratified_split(pool, 0.15, 0.15, 0)
    c = corrupt.apply(_corrupt(kind="symmetric", rate=0.4), pool.y_train, sp.train, sp.val, 10, seed=0)
    cfg = config_lib.tiny_optimize()
    cfg.run.devices = devices
    hp = dict(cfg.optimize.baseline.to_dict(), epochs=epochs, batch_size=32)
    train = c.train[:320]
    return trainer.fit("cnn:8", hp, pool.x_train, c.y, train, 10, 0, cfg, val_idx=sp.val[:64], hyper=hyper,
                       clean=c.clean, **kw)


@pytest.mark.parametrize("hyper", [None, _hyper(method="l2rw", meta_batch=32), _hyper(method="mwnet", meta_batch=32),
                                   _hyper(method="hypergrad", learn="example_weights,learning_rate", meta_batch=32),
                                   _hyper(method="hypergrad", learn="augment_translate", meta_batch=32)],
                         ids=["plain", "l2rw", "mwnet", "hypergrad", "augment"])
def test_a_fit_is_the_same_on_one_and_four_devices(hyper):
    """The trainer and every reweighting step are data-parallel: the state replicated, training and
    meta batches split over the mesh, the program written for the global batch."""
    assert jax.device_count() >= 4
    one, four = _fit_on(1, hyper), _fit_on(4, hyper)
    leaves = jax.tree.leaves(four.params)
    assert all(a.sharding.num_devices == 4 for a in leaves)
    for a, b in zip(jax.tree.leaves((one.params, one.stats)), jax.tree.leaves((four.params, four.stats))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-5)
    for r1, r4 in zip(one.history, four.history):
        assert r1["train_loss"] == pytest.approx(r4["train_loss"], rel=1e-4)
        if hyper is not None:
            assert r1["weights"]["weight_mean"] == pytest.approx(r4["weights"]["weight_mean"], rel=1e-3, abs=1e-6)
            assert r1.get("hyper") == pytest.approx(r4.get("hyper"), rel=1e-3) if "hyper" in r1 else True
    if hyper is not None and hyper.method != "hypergrad":  # the weights were not all equal
        assert one.history[-1]["weights"]["weight_std"] > 1e-3


class _Stop(Exception):
    pass


def test_a_resumed_fit_counts_the_time_it_spent_before_it_stopped_against_its_deadline(tmp_path):
    import json
    import time

    def stop_after_one(epoch, _):
        raise _Stop

    with pytest.raises(_Stop):
        _fit_on(1, None, epochs=3, checkpoint=str(tmp_path / "cut"), on_epoch=stop_after_one)
    latest = tmp_path / "cut" / "latest.json"
    meta = json.loads(latest.read_text())
    latest.write_text(json.dumps(dict(meta, seconds=1000.0)))  # as if epoch 1 had taken 1,000 s
    with pytest.raises(trainer.TimeUp):  # 500 s from now, less the 1,000 s already spent: past
        _fit_on(1, None, epochs=3, checkpoint=str(tmp_path / "cut"), deadline=time.time() + 500)
    assert len(_fit_on(1, None, epochs=3, checkpoint=str(tmp_path / "cut"),
                       deadline=time.time() + 1500).history) == 3  # 500 s left: it finishes


@pytest.mark.parametrize("hyper", [None, _hyper(method="mwnet", meta_batch=32),
                                   _hyper(method="hypergrad", learn="example_weights,learning_rate", meta_batch=32),
                                   _hyper(method="hypergrad", learn="augment_noise,augment_translate", meta_batch=32)],
                         ids=["plain", "mwnet", "hypergrad", "augment"])
def test_a_stopped_fit_goes_on_from_its_last_epoch_bit_exactly(hyper, tmp_path):
    whole = _fit_on(2, hyper, epochs=3, keep_best=True, checkpoint=str(tmp_path / "whole"))
    seen = []

    def stop_after_two(epoch, _):
        seen.append(epoch)
        if epoch == 2:
            raise _Stop

    with pytest.raises(_Stop):
        _fit_on(2, hyper, epochs=3, keep_best=True, checkpoint=str(tmp_path / "cut"), on_epoch=stop_after_two)
    resumed = _fit_on(2, hyper, epochs=3, keep_best=True, checkpoint=str(tmp_path / "cut"),
                     on_epoch=lambda e, _: seen.append(e))
    # the resumed fit shows on_epoch its restored epochs' scores again (a study's pruner sees the whole
    # curve), then trains only epoch 3: epochs 1 and 2 were not trained again
    assert seen == [1, 2, 1, 2, 3]
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(resumed.history) == strip(whole.history)
    assert resumed.best_epoch == whole.best_epoch
    for a, b in zip(jax.tree.leaves((whole.params, whole.stats)), jax.tree.leaves((resumed.params, resumed.stats))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_diverging_fit_raises_diverged_naming_the_epoch_and_what_to_change():
    """The fit runs on the driver's loop: a NaN loss is caught one step late and becomes ``Diverged``
    (a study prunes the trial); a huge learning rate makes the CNN's loss overflow in its first epoch."""
    pool = split_lib.load_pool("digits")
    cfg = config_lib.tiny_optimize()
    cfg.run.devices = 1
    hp = dict(cfg.optimize.baseline.to_dict(), epochs=3, batch_size=64, optimizer="sgd", lr=1e30, momentum=0.9)
    with pytest.raises(trainer.Diverged, match=r"model cnn:4: the training loss became (nan|inf) in epoch 1 "
                                               r"\(lr 1e\+30, optimizer sgd\)"):
        trainer.fit("cnn:4", hp, pool.x_train, pool.y_train, np.arange(640), 10, 0, cfg)
