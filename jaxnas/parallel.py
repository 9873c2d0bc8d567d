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
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

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
    if batch_size % jax.process_count():
        raise JaxnasError(f"batch size {batch_size} is not divisible by the process count {jax.process_count()}")
    if batch_size % n:
        raise JaxnasError(f"batch size {batch_size} is not divisible by the device count {n}")


def local_part() -> tuple[int, int]:
    """``(process index, process count)``: which rows of each global batch this process feeds."""
    return jax.process_index(), jax.process_count()


def put_batch(batch: dict, mesh: Mesh, local: bool = False) -> dict:
    """Place a batch split over the mesh: ``batch`` holds the global batch, or with ``local``
    only this process's contiguous rows of it (what ``Batcher.batch(..., part=local_part())`` gives)."""
    sharding = batch_sharded(mesh)
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)
    index, count = local_part()

    def put(x):
        if not local:
            n = x.shape[0] // count
            x = x[index * n:(index + 1) * n]
        return jax.make_array_from_process_local_data(sharding, x, (x.shape[0] * count,) + x.shape[1:])

    return {k: put(v) for k, v in batch.items()}


def put_replicated(tree, mesh: Mesh):
    return jax.device_put(tree, replicated(mesh))


GPU_PLATFORMS = ("gpu", "cuda", "rocm")


def compiler_options(mesh: Mesh, fusion_autotune: bool = False) -> dict | None:
    """The XLA options of jaxnas's jitted steps on ``mesh``'s platform (``run.fusion_autotune``).

    On GPUs XLA's fusion autotuner (``xla_gpu_experimental_enable_fusion_autotuner``, on by default
    in recent XLA) compiles every candidate emitter of every fusion before it picks one: half of the
    8-cell DARTS step's compile time (docs/accelerators.md), for fusions that are memory-bound
    loops and reductions. jaxnas turns it off unless ``fusion_autotune``; XLA's default emitters
    then run, and convolutions and GEMMs are autotuned as before. Elsewhere: None (no options)."""
    platform = mesh.devices.flat[0].platform
    if platform in GPU_PLATFORMS and not fusion_autotune:
        return {"xla_gpu_experimental_enable_fusion_autotuner": False}
    return None


REPLICATED = P()                  # the same value on every device
SPLIT = P(DATA_AXIS)              # a batch: rows split over the devices
SPLIT_STACKED = P(None, DATA_AXIS)  # batches stacked on a leading axis: each one's rows split


def jit_sharded(fn: Callable, mesh: Mesh, in_specs: tuple, out_specs, fusion_autotune: bool = False) -> Callable:
    """jit ``fn`` with each argument and result placed by a PartitionSpec on ``mesh`` (``REPLICATED``,
    ``SPLIT``, ``SPLIT_STACKED``; a spec stands for a whole pytree), with ``compiler_options``. The
    program is written for the global batch, as ``jit_data_parallel``'s."""
    def shard(specs):
        return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda s: isinstance(s, P))
    return jax.jit(fn, in_shardings=shard(in_specs), out_shardings=shard(out_specs),
                   compiler_options=compiler_options(mesh, fusion_autotune))


def round_to_devices(batch_size: int, mesh: Mesh) -> int:
    """The largest multiple of the device count not above ``batch_size`` (0 when there is none)."""
    n = mesh.devices.size
    return batch_size - batch_size % n


def jit_data_parallel(step: Callable, mesh: Mesh, n_batches: int, donate_state: bool = True,
                      fusion_autotune: bool = False) -> Callable:
    """jit ``step(state, *batches)`` with the state replicated and each batch split over devices,
    with ``compiler_options(mesh, fusion_autotune)``."""
    repl, data = replicated(mesh), batch_sharded(mesh)
    return jax.jit(step, in_shardings=(repl,) + (data,) * n_batches, out_shardings=repl,
                   donate_argnums=(0,) if donate_state else (),
                   compiler_options=compiler_options(mesh, fusion_autotune))
