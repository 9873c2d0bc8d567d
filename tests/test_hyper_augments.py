"""Learned augmentations: each transform against a hand-worked case, and the hypergradient of its
magnitude through a training step against float64 finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxnas import config as config_lib
from jaxnas.hyper import augments, estimators, reweight
from jaxnas.hyper.methods import hypergrad
from jaxnas.optimize import models


def _steps(learn: str, image_shape=(8, 8, 1)) -> reweight.Steps:
    """The hypergradient steps of a tiny CNN on 8x8x1 images learning ``learn``."""
    cfg = config_lib.tiny_optimize()
    graphdef, _, _ = nnx.split(models.build("cnn:4", (8, 8, 1), 3, nnx.Rngs(0), cfg), nnx.Param, nnx.BatchStat)
    hyper = config_lib.optimize_defaults().optimize.hyper
    hyper.update(method="hypergrad", learn=learn)
    return reweight.Steps(graphdef, optax.sgd(0.1), {"label_smoothing": 0.0, "weight_decay": 0.0}, 3, 6, hyper, 0,
                          image_shape=image_shape)


def test_translate_by_whole_pixels_moves_the_image_and_shifts_in_zeros():
    x = jnp.arange(2 * 4 * 5 * 2, dtype=jnp.float32).reshape(2, 4, 5, 2)
    u = jnp.asarray([[0.5, 0.0], [0.0, -1.0]])  # m = 2: down 1 row; left 2 columns
    out = np.asarray(augments.AUGMENTS["translate"].apply(x, jnp.float32(2.0), u))
    want = np.zeros_like(np.asarray(x))
    want[0, 1:] = x[0, :-1]
    want[1, :, :-2] = x[1, :, 2:]
    np.testing.assert_allclose(out, want, atol=1e-5)


def test_translate_by_a_fraction_of_a_pixel_is_the_linear_interpolation_of_its_neighbours():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 6, 6, 3)).astype(np.float32)
    t = augments.AUGMENTS["translate"]
    out = np.asarray(t.apply(jnp.asarray(x), jnp.float32(0.3), jnp.asarray([[0.0, 1.0]])))  # right 0.3 px
    right = np.zeros_like(x)
    right[:, :, 1:] = x[:, :, :-1]
    np.testing.assert_allclose(out, 0.7 * x + 0.3 * right, atol=1e-5)
    np.testing.assert_allclose(np.asarray(t.apply(jnp.asarray(x), jnp.float32(0.0), jnp.ones((1, 2)))), x, atol=1e-6)


def test_noise_adds_its_magnitude_times_the_draw():
    x, eps = jnp.ones((2, 3, 3, 1)), jnp.full((2, 3, 3, 1), -2.0)
    np.testing.assert_allclose(augments.AUGMENTS["noise"].apply(x, 0.25, eps), 0.5)


def test_brightness_and_contrast_move_each_image_by_its_own_draw():
    x = jnp.asarray([[[[1.0], [3.0]]], [[[0.0], [4.0]]]])  # two 1x2x1 images, means 2 and 2
    u = jnp.asarray([1.0, -0.5])
    np.testing.assert_allclose(augments.AUGMENTS["brightness"].apply(x, 0.4, u)[:, 0, :, 0], [[1.4, 3.4], [-0.2, 3.8]],
                               rtol=1e-6)
    # contrast 1 + 0.4 u: 1.4 for the first image (2 -+ 1.4), 0.8 for the second (2 -+ 1.6)
    np.testing.assert_allclose(augments.AUGMENTS["contrast"].apply(x, 0.4, u)[:, 0, :, 0], [[0.6, 3.4], [0.4, 3.6]],
                               rtol=1e-6)


def test_rotate_by_90_degrees_is_a_quarter_turn_and_by_0_the_image():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
    r = augments.AUGMENTS["rotate"]
    out = np.asarray(r.apply(jnp.asarray(x), jnp.float32(90.0), jnp.asarray([1.0, -1.0])))
    np.testing.assert_allclose(out[0], np.rot90(x[0], 1), atol=1e-5)   # counter-clockwise as displayed
    np.testing.assert_allclose(out[1], np.rot90(x[1], -1), atol=1e-5)
    np.testing.assert_allclose(np.asarray(r.apply(jnp.asarray(x), jnp.float32(0.0), jnp.ones(2))), x, atol=1e-6)


def test_scale_reads_each_pixel_at_its_offset_over_the_factor():
    # a ramp over the columns (value = column) zoomed by 2 about the centre 3.5: out[:, j] = 3.5 + (j - 3.5) / 2;
    # zoomed by 0.5 the outer columns read outside the image, where zeros come in
    x = jnp.broadcast_to(jnp.arange(8.0)[None, None, :, None], (2, 8, 8, 1))
    sc = augments.AUGMENTS["scale"]
    out = np.asarray(sc.apply(x, jnp.float32(1.0), jnp.asarray([1.0, -0.5])))
    np.testing.assert_allclose(out[0, 3, :, 0], 3.5 + (np.arange(8) - 3.5) / 2, atol=1e-5)
    np.testing.assert_allclose(out[1, 3, 2:6, 0], 3.5 + (np.arange(2, 6) - 3.5) * 2, atol=1e-5)
    assert (out[1, :, 0, 0] == 0).all() and (out[1, 0, :, 0] == 0).all()


def test_magnitudes_start_at_their_fraction_of_the_bound_in_the_images_units():
    steps = _steps("augment_noise,augment_translate")
    values = steps.values(steps.init())
    assert values["augment_noise"] == pytest.approx(0.1)
    assert values["augment_translate"] == pytest.approx(0.5)  # 8 / 4 pixels at most, a quarter of that
    draws = steps.draws(1, 2, (6, 8, 8, 1))["aug"]
    assert draws["noise"].shape == (6, 8, 8, 1) and draws["translate"].shape == (6, 2)
    again = steps.draws(1, 2, (6, 8, 8, 1))["aug"]  # a function of seed, epoch and step
    np.testing.assert_array_equal(draws["translate"], again["translate"])
    assert not np.array_equal(draws["translate"], steps.draws(1, 3, (6, 8, 8, 1))["aug"]["translate"])
    with pytest.raises(ValueError, match="image shape"):
        _steps("augment_noise", image_shape=None)


def test_every_magnitudes_hypergradient_matches_float64_finite_differences_through_a_training_step():
    with jax.enable_x64(True):
        cfg = config_lib.tiny_optimize()
        model = models.build("cnn:4", (8, 8, 1), 3, nnx.Rngs(1), cfg)
        graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        stats = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), stats)
        hyper = config_lib.optimize_defaults().optimize.hyper
        hyper.update(method="hypergrad", learn=",".join(f"augment_{n}" for n in augments.AUGMENTS))  # every one
        steps = reweight.Steps(graphdef, optax.sgd(0.1), {"label_smoothing": 0.0, "weight_decay": 0.0}, 3, 6, hyper,
                               0, image_shape=(8, 8, 1))
        rng = np.random.default_rng(4)
        batch = {"x": rng.normal(size=(6, 8, 8, 1)), "y": rng.integers(0, 3, 6), "pos": np.arange(6),
                 **steps.draws(0, 0, (6, 8, 8, 1))}
        batch = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64) if a.dtype.kind == "f" else jnp.asarray(a), batch)
        meta = {"x": jnp.asarray(rng.normal(size=(5, 8, 8, 1))), "y": jnp.asarray(rng.integers(0, 3, 5))}
        h = {f"aug_{n}": jnp.float64(v) for n, v in zip(augments.AUGMENTS, np.linspace(-1.0, 0.5, len(augments.AUGMENTS)))}
        inner = lambda w, h, b: steps.train_loss(w, h, stats, b)[0]  # noqa: E731
        outer = lambda w, h, m: steps.meta_loss(w, stats, m)  # noqa: E731
        _, g, _ = estimators.unrolled(inner, outer, lr=0.5)(params, h, batch, meta)

        def after_step(hh):
            w1 = jax.tree.map(lambda p, d: p - 0.5 * d, params, jax.grad(inner)(params, hh, batch))
            return outer(w1, hh, meta)
        for k in h:
            e = 1e-5
            fd = (after_step({**h, k: h[k] + e}) - after_step({**h, k: h[k] - e})) / (2 * e)
            assert abs(float(fd)) > 1e-7, k  # the magnitude does shape the step
            assert float(g[k]) == pytest.approx(float(fd), rel=1e-5, abs=1e-10), k


def test_a_users_augmentation_is_one_registration_and_then_learnable(monkeypatch):
    from jaxnas.hyper.augments import registry

    monkeypatch.setitem(registry.AUGMENTS, "user_shift", None)  # so that the test's registration is undone
    del registry.AUGMENTS["user_shift"]
    augments.register_augment("user_shift", augments.Augment(
        apply=lambda x, m, u: x + m * u[:, None, None, None], draw=lambda rng, shape: rng.uniform(-1, 1, shape[:1]),
        bound=lambda image_shape: 2.0, start=0.5, unit="std"))
    assert "augment_user_shift" in hypergrad.parse_learn("augment_user_shift")
    steps = _steps("augment_user_shift")
    assert steps.values(steps.init()) == {"augment_user_shift": pytest.approx(1.0)}
    with pytest.raises(Exception, match="augment_nope.*unknown.*augment_user_shift"):
        hypergrad.parse_learn("augment_nope")
