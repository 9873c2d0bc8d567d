"""``kernels.reference.conv``: its derivatives of every order equal JAX's own, and its second
derivatives compile to convolutions of the forward's window, not full-image correlations."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.kernels import reference


def _lax(x, w, stride, padding, dilation, groups):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), ((padding, padding),) * 2,
                                        rhs_dilation=(dilation, dilation), feature_group_count=groups,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


GEOMETRIES = [  # H, k, stride, padding, dilation, groups, C, D
    (7, 1, 1, 0, 1, 1, 3, 4),
    (7, 3, 2, 1, 1, 1, 4, 6),
    (8, 3, 1, 2, 2, 2, 4, 6),
    (9, 1, 2, 0, 1, 1, 3, 2),
]


@pytest.mark.parametrize("H,k,stride,padding,dilation,groups,C,D", GEOMETRIES)
def test_conv_derivatives_up_to_third_order_equal_jax(H, k, stride, padding, dilation, groups, C, D):
    rng = np.random.default_rng(k + stride + dilation)
    x = jnp.asarray(rng.normal(size=(2, H, H, C)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, C // groups, D)), jnp.float32)
    geom = (stride, padding, dilation, groups)
    y = reference.conv(x, w, *geom)
    np.testing.assert_allclose(y, _lax(x, w, *geom), rtol=1e-5, atol=1e-5)
    ct = jnp.asarray(rng.normal(size=y.shape), jnp.float32)

    def second(f):
        """The shape of DARTS's exact step: a function of both gradients, differentiated again."""
        def outer(x, w):
            gx, gw = jax.grad(lambda x, w: jnp.sum(jnp.sin(f(x, w, *geom)) * ct), argnums=(0, 1))(x, w)
            return jnp.sum(gx ** 2) + jnp.sum(jnp.cos(gw))
        return jax.grad(outer, argnums=(0, 1))(x, w)

    def third(f):
        inner = jax.grad(lambda x: jnp.sum(f(x, w, *geom) ** 3))
        middle = jax.grad(lambda x: jnp.sum(inner(x) ** 2))
        return jax.grad(lambda x: jnp.sum(middle(x)))(x)

    for ours, theirs in zip(second(reference.conv), second(_lax)):
        np.testing.assert_allclose(ours, theirs, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(third(reference.conv), third(_lax), rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("conv,full_image_windows", [(reference.conv, False), (_lax, True)])
def test_second_derivative_of_a_kernel_gradient_has_no_full_image_window(conv, full_image_windows):
    """d/dx of <T_w(x, g), v> for a 3x3 conv: JAX's rules make a conv with the 12x12 cotangent as
    its window, padded by 10 or more; ours are 3x3 convs."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 12, 12, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 3, 4)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(3, 3, 3, 4)), jnp.float32)

    def kernel_grad_along_v(x):
        gw = jax.grad(lambda w: jnp.sum(jnp.tanh(conv(x, w, 1, 1, 1, 1))))(w)
        return jnp.sum(gw * v)

    hlo = jax.jit(jax.grad(kernel_grad_along_v)).lower(x).as_text()
    pads = [int(p) for p in re.findall(r"stablehlo.convolution.*window = \{[^}]*pad = \[\[(\d+),", hlo)]
    assert pads, hlo[:2000]
    assert any(p >= 10 for p in pads) == full_image_windows, pads


@pytest.mark.parametrize("kwargs,square", [
    (dict(kernel_size=(3, 3), strides=2, padding=1), (2, 1, 1)),
    (dict(kernel_size=(1, 1), padding=((0, 0), (0, 0)), use_bias=True), (1, 0, 1)),
    (dict(kernel_size=(3, 3), kernel_dilation=(2, 2), padding=((2, 2), (2, 2))), (1, 2, 2)),
    (dict(kernel_size=(2, 2), padding="SAME"), None),
    (dict(kernel_size=(3, 3), strides=(1, 2), padding=((1, 1), (1, 1))), None),
    (dict(kernel_size=(3, 3), padding=((0, 1), (0, 1))), None),
])
def test_nn_conv_equals_flax_conv_and_takes_the_closed_path_when_square(kwargs, square):
    from flax import nnx

    from jaxnas.nn import Conv, _square_geometry

    c = Conv(3, 4, rngs=nnx.Rngs(0), **kwargs)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 9, 9, 3)), jnp.float32)
    assert _square_geometry(c) == square
    np.testing.assert_allclose(c(x), nnx.Conv.__call__(c, x), rtol=1e-5, atol=1e-5)
