"""The hypergradient estimators against closed forms (ridge regression) and float64 finite
differences (a tiny network, and weighted logistic regression at its optimum)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.errors import JaxnasError
from jaxnas.hyper import estimators


def _ridge(seed=0, n=40, m=30, d=5):
    rng = np.random.default_rng(seed)
    x, xv = rng.normal(size=(n, d)), rng.normal(size=(m, d))
    w_true = rng.normal(size=d)
    y, yv = x @ w_true + 0.3 * rng.normal(size=n), xv @ w_true + 0.3 * rng.normal(size=m)
    return jnp.asarray(x), jnp.asarray(y), jnp.asarray(xv), jnp.asarray(yv)


def _inner(w, theta, batch):  # ||Xw - y||^2 / 2n + exp(theta) / 2 ||w||^2
    x, y = batch
    return 0.5 * jnp.mean((x @ w - y) ** 2) + 0.5 * jnp.exp(theta) * jnp.sum(w ** 2)


def _outer(w, theta, batch):
    x, y = batch
    return 0.5 * jnp.mean((x @ w - y) ** 2)


def _closed_form(x, y, xv, yv, theta):
    """w* = A^-1 X^T y / n with A = X^T X / n + lambda I; dw*/dtheta = -lambda A^-1 w*."""
    lam, n = np.exp(theta), len(y)
    a = np.asarray(x.T @ x) / n + lam * np.eye(x.shape[1])
    w = np.linalg.solve(a, np.asarray(x.T @ y) / n)
    g_val = np.asarray(xv.T @ (xv @ w - yv)) / len(yv)
    return a, w, g_val


def test_implicit_equals_the_closed_form_ridge_hypergradient():
    with jax.enable_x64(True):
        x, y, xv, yv = _ridge()
        theta = jnp.float64(np.log(0.3))
        a, w, g_val = _closed_form(x, y, xv, yv, float(theta))
        exact = g_val @ (-np.exp(float(theta)) * np.linalg.solve(a, w))
        cg = estimators.implicit(_inner, _outer, "cg", iters=20)
        loss, g, _ = jax.jit(cg)(jnp.asarray(w), theta, (x, y), (xv, yv))
        assert float(g) == pytest.approx(exact, rel=1e-8)
        assert float(loss) == pytest.approx(float(_outer(jnp.asarray(w), theta, (xv, yv))))
        alpha = 1.0 / np.linalg.eigvalsh(a).max()  # < 2 / lambda_max: the series converges
        neumann = estimators.implicit(_inner, _outer, "neumann", iters=400, alpha=alpha)
        assert float(jax.jit(neumann)(jnp.asarray(w), theta, (x, y), (xv, yv))[1]) == pytest.approx(exact, rel=1e-5)
        few = estimators.implicit(_inner, _outer, "neumann", iters=2, alpha=alpha)
        assert abs(float(few(jnp.asarray(w), theta, (x, y), (xv, yv))[1]) - exact) > 1e-3 * abs(exact)


@pytest.mark.parametrize("steps", [1, 5, 20])
def test_unrolled_from_the_optimum_equals_the_truncated_neumann_sum(steps):
    # From w0 = w*, every SGD step stays at w*, and dw_K/dtheta = -eta lambda sum_{j<K} (I - eta A)^j w*:
    # the K-term Neumann series of the implicit hypergradient (Lorraine et al. 2020, Sec. 3).
    with jax.enable_x64(True):
        x, y, xv, yv = _ridge(1)
        theta, eta = np.log(0.5), 0.2
        a, w, g_val = _closed_form(x, y, xv, yv, theta)
        lam = np.exp(theta)
        dw, power = np.zeros_like(w), np.eye(len(w))
        for _ in range(steps):
            dw += -eta * lam * power @ w
            power = power @ (np.eye(len(w)) - eta * a)
        batch = (x, y) if steps == 1 else (jnp.stack([x] * steps), jnp.stack([y] * steps))
        for remat, unroll in ((True, 1), (False, 1), (True, True)):  # a loop with and without remat, straight-line
            est = estimators.unrolled(_inner, _outer, lr=eta, steps=steps, remat=remat, unroll=unroll)
            _, g, w_next = jax.jit(est)(jnp.asarray(w), jnp.float64(theta), batch, (xv, yv))
            assert float(g) == pytest.approx(g_val @ dw, rel=1e-9)
            np.testing.assert_allclose(w_next, w, atol=1e-12)


def _mlp(params, x):
    return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"]


def _weighted_ce(params, h, batch):  # per-example weights 2 sigmoid(z), normalized; wd exp(log_wd)
    x, y = batch
    logp = jax.nn.log_softmax(_mlp(params, x))
    ell = -jnp.take_along_axis(logp, y[:, None], 1)[:, 0]
    wts = 2 * jax.nn.sigmoid(h["z"])
    l2 = sum(jnp.sum(p ** 2) for p in jax.tree.leaves(params))
    return jnp.sum(wts * ell) / jnp.sum(wts) + 0.5 * jnp.exp(h["log_wd"]) * l2


def _ce(params, h, batch):
    x, y = batch
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(_mlp(params, x)), y[:, None], 1))


def test_unrolled_matches_float64_finite_differences_on_a_tiny_network():
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        k = 3
        params = {"w1": jnp.asarray(rng.normal(size=(4, 6)) * 0.5), "b1": jnp.zeros(6),
                  "w2": jnp.asarray(rng.normal(size=(6, k)) * 0.5)}
        xs = jnp.asarray(rng.normal(size=(3, 8, 4)))
        ys = jnp.asarray(rng.integers(0, k, size=(3, 8)))
        val = (jnp.asarray(rng.normal(size=(10, 4))), jnp.asarray(rng.integers(0, k, size=10)))
        h = {"z": jnp.asarray(rng.normal(size=8)), "log_wd": jnp.float64(-3.0)}
        est = jax.jit(estimators.unrolled(_weighted_ce, _ce, lr=lambda h_: 0.5, steps=3))
        _, g, _ = est(params, h, (xs, ys), val)
        direction = {"z": jnp.asarray(rng.normal(size=8)), "log_wd": jnp.float64(1.0)}
        eps = 1e-6
        plus = jax.tree.map(lambda a, d: a + eps * d, h, direction)
        minus = jax.tree.map(lambda a, d: a - eps * d, h, direction)
        fd = (est(params, plus, (xs, ys), val)[0] - est(params, minus, (xs, ys), val)[0]) / (2 * eps)
        analytic = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(direction)))
        assert float(analytic) == pytest.approx(float(fd), rel=1e-6)


def test_implicit_matches_finite_differences_of_the_retrained_optimum():
    # Weighted L2-regularized logistic regression is strongly convex: w*(h) by Newton's method to
    # machine precision, L_val(w*(h)) differenced in float64, against the implicit estimator at w*(h).
    with jax.enable_x64(True):
        rng = np.random.default_rng(4)
        x = jnp.asarray(rng.normal(size=(30, 3)))
        y = jnp.asarray((rng.random(30) < 0.5).astype(int))
        xv = jnp.asarray(rng.normal(size=(20, 3)))
        yv = jnp.asarray((rng.random(20) < 0.5).astype(int))

        def inner(w, h, batch):
            xb, yb = batch
            ell = jnp.logaddexp(0, xb @ w) - yb * (xb @ w)
            wts = 2 * jax.nn.sigmoid(h["z"])
            return jnp.sum(wts * ell) / jnp.sum(wts) + 0.5 * jnp.exp(h["log_wd"]) * jnp.sum(w ** 2)

        def outer(w, h, batch):
            xb, yb = batch
            return jnp.mean(jnp.logaddexp(0, xb @ w) - yb * (xb @ w))

        def optimum(h):
            w = jnp.zeros(3)
            for _ in range(30):
                g = jax.grad(inner)(w, h, (x, y))
                w = w - jnp.linalg.solve(jax.hessian(inner)(w, h, (x, y)), g)
            return w

        h = {"z": jnp.asarray(rng.normal(size=30)), "log_wd": jnp.float64(-2.0)}
        est = estimators.implicit(inner, outer, "cg", iters=10)
        _, g, _ = est(optimum(h), h, (x, y), (xv, yv))
        direction = {"z": jnp.asarray(rng.normal(size=30)), "log_wd": jnp.float64(0.7)}
        eps = 1e-5
        val = lambda hh: outer(optimum(hh), hh, (xv, yv))  # noqa: E731
        fd = (val(jax.tree.map(lambda a, d: a + eps * d, h, direction))
              - val(jax.tree.map(lambda a, d: a - eps * d, h, direction))) / (2 * eps)
        analytic = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(direction)))
        assert float(analytic) == pytest.approx(float(fd), rel=1e-6)


def test_bad_estimator_settings_are_one_line_errors():
    with pytest.raises(JaxnasError, match="steps must be an integer >= 1"):
        estimators.unrolled(_inner, _outer, steps=0)
    with pytest.raises(JaxnasError, match="solver 'lu' unknown; allowed: neumann, cg"):
        estimators.implicit(_inner, _outer, "lu")
    with pytest.raises(JaxnasError, match="estimator 'exact' unknown"):
        estimators.make("exact", _inner, _outer)
