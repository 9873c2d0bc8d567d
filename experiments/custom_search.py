"""A custom differentiable search loop written only with jaxnas's public API (``import jaxnas``).

    python experiments/custom_search.py            # about a minute on 2 CPU cores

It registers an op of its own (with its batched form) and a relaxation of its own
(softmax with a temperature), builds a 1-cell DARTS supernet on the embedded 8x8 digits,
and runs its own data loop around jaxnas's jitted bilevel step. It prints the losses and
the genotype derived from the raw alphas.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jaxnas


class Scale(nnx.Module):
    """relu(x) * s with a learnable per-channel scale, subsampled by the stride: one edge."""

    def __init__(self, C: int, stride: int):
        self.s, self.stride = nnx.Param(jnp.ones((C,))), stride

    def __call__(self, x):
        return jax.nn.relu(x[:, ::self.stride, ::self.stride]) * self.s[...]


class StackedScale(nnx.Module):
    """The same op for the E edges that read one state: (N, H, W, C) -> (N, H', W', E, C)."""

    def __init__(self, E: int, C: int, stride: int):
        self.s, self.stride = nnx.Param(jnp.ones((E, C))), stride

    def __call__(self, x):
        return jax.nn.relu(x[:, ::self.stride, ::self.stride])[..., None, :] * self.s[...]


@jaxnas.register_op("scaled_relu", batched=lambda E, C, stride, bn, rngs: StackedScale(E, C, stride))
def scaled_relu(C, stride, affine, rngs):
    return Scale(C, stride)


@jaxnas.register_relaxation("softmax_t2")
def softmax_t2(alphas, key=None, hyper=None):
    """Softmax at temperature 2 (a flatter mixture than DARTS's)."""
    return jax.nn.softmax(alphas / 2.0, axis=-1)


def main() -> None:
    cfg = jaxnas.load_config(None, ["space.layers=3", "space.nodes=2", "space.C=8",
                                    "space.ops=none,skip_connect,scaled_relu,sep_conv_3x3",
                                    "space.relaxation=softmax_t2", "search.batch_size=32"])
    ds = jaxnas.load_dataset("digits")
    mean, std = ds.mean_std()
    x = ((ds.x_train - mean) / std).astype(np.float32)
    y = ds.y_train.astype(np.int32)
    half = len(x) // 2

    model = jaxnas.build_supernet(cfg.space, ds.image_shape, ds.num_classes, nnx.Rngs(cfg.seed),
                                  kernels=cfg.run.kernels)
    steps, epochs = half // cfg.search.batch_size, 3
    schedule = jaxnas.epoch_cosine_lr(cfg.optim.lr, cfg.optim.lr_min, epochs, steps)
    w_tx, a_tx = jaxnas.weight_optimizer(cfg.optim, schedule), jaxnas.alpha_optimizer(cfg.optim)
    graphdef, state = jaxnas.init_state(model, w_tx, a_tx, seed=cfg.seed)
    step = jax.jit(jaxnas.make_search_step(graphdef, w_tx, a_tx, schedule, "first", cfg.optim))

    rng = np.random.default_rng(cfg.seed)
    b = cfg.search.batch_size
    for epoch in range(epochs):
        order_t, order_v = rng.permutation(half), half + rng.permutation(len(x) - half)
        for i in range(steps):
            t, v = order_t[i * b:(i + 1) * b], order_v[i * b:(i + 1) * b]
            state, m = step(state, {"x": x[t], "y": y[t]}, {"x": x[v], "y": y[v]})
        print(f"epoch {epoch + 1}: train loss {float(m['train_loss']):.3f} val acc {float(m['val_acc']):.3f}")

    alphas = state.alphas
    genotype = jaxnas.derive_from_alphas(np.asarray(alphas["alphas_normal"][...]),
                                         np.asarray(alphas["alphas_reduce"][...]), model.op_names, model.nodes)
    print(f"genotype (DARTS's rule on softmax of the raw alphas): {genotype}")


if __name__ == "__main__":
    main()
