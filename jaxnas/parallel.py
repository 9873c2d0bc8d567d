"""Data parallelism over every device: one ``jax.jit`` over a 1-D device mesh.

This is what ``jax.pmap`` is built on since jax 0.8 (``jit(shard_map(...))``), used
directly: the state is replicated (``P()``), every batch is split over the mesh's
``data`` axis (``P('data')``), and XLA's SPMD partitioner inserts the all-reduces.
The program is written for the global batch, so losses, gradients and BatchNorm
statistics are global-batch quantities, the same for any device count up to
floating-point summation order.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxnas.errors import JaxnasError

DATA_AXIS = "data"


def make_mesh(num_devices: int = 0, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over the first ``num_devices`` devices (0: all of them)."""
    devices = list(devices if devices is not None else jax.devices())
    if num_devices:
        if num_devices > len(devices):
            raise JaxnasError(f"asked for {num_devices} devices but only {len(devices)} are available")
        devices = devices[:num_devices]
    return Mesh(np.array(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch(batch_size: int, mesh: Mesh) -> None:
    n = mesh.devices.size
    if batch_size % n:
        raise JaxnasError(f"batch size {batch_size} is not divisible by the device count {n}")


def put_batch(batch: dict, mesh: Mesh) -> dict:
    """Place a host batch (numpy arrays, leading axis = global batch) split over the mesh."""
    return jax.device_put(batch, batch_sharded(mesh))


def put_replicated(tree, mesh: Mesh):
    return jax.device_put(tree, replicated(mesh))


def jit_data_parallel(step: Callable, mesh: Mesh, n_batches: int, donate_state: bool = True) -> Callable:
    """jit ``step(state, *batches)`` with the state replicated and each batch split over devices."""
    repl, data = replicated(mesh), batch_sharded(mesh)
    return jax.jit(step, in_shardings=(repl,) + (data,) * n_batches, out_shardings=repl,
                   donate_argnums=(0,) if donate_state else ())
