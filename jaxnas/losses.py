"""The classification loss and accuracy every training step uses."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy with integer labels (PyTorch's ``nn.CrossEntropyLoss``)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Top-1 accuracy of a batch."""
    return (jnp.argmax(logits, -1) == labels).mean()
