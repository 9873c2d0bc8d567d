"""Several hosts: ``jax.distributed.initialize`` from the config, the environment or SLURM.

Every process runs the same program; the mesh spans all devices of all processes,
each process feeds its own rows of every global batch, and XLA's collectives keep
weights, alphas and optimizer states identical everywhere. Only process 0 writes
logs and genotypes; checkpoints are written by orbax, which coordinates the processes.

Sources, first match wins:
1. ``run.coordinator`` / ``run.num_processes`` / ``run.process_id`` in the config
   (``--config.run.coordinator=host:port`` and so on);
2. the environment: ``JAXNAS_COORDINATOR``, ``JAXNAS_NUM_PROCESSES``, ``JAXNAS_PROCESS_ID``;
3. a SLURM job step with more than one task (``SLURM_NTASKS`` > 1): JAX reads SLURM's
   variables itself (coordinator = first node of the allocation).
With none of these, the run is a single process and nothing is initialised.
"""

from __future__ import annotations

import os
import socket
import time

import jax

from jaxnas.errors import JaxnasError


def settings(run_cfg) -> dict | None:
    """The arguments for ``jax.distributed.initialize``, or None for a single-process run."""
    coordinator = run_cfg.get("coordinator", "") or os.environ.get("JAXNAS_COORDINATOR", "")
    num = int(run_cfg.get("num_processes", 0) or os.environ.get("JAXNAS_NUM_PROCESSES", 0) or 0)
    pid = run_cfg.get("process_id", -1)
    if pid is None or pid < 0:
        pid = int(os.environ.get("JAXNAS_PROCESS_ID", -1))
    timeout = int(run_cfg.get("init_timeout", 120))
    if coordinator or num or pid >= 0:
        missing = [n for n, v in (("coordinator", coordinator), ("num_processes", num)) if not v]
        if pid < 0:
            missing.append("process_id")
        if missing:
            raise JaxnasError(f"multi-process run needs run.coordinator, run.num_processes and run.process_id; "
                              f"missing: {', '.join(missing)}")
        if num < 1 or not 0 <= pid < num:
            raise JaxnasError(f"run.process_id must be in [0, {num}), got {pid}")
        if ":" not in coordinator:
            raise JaxnasError(f"run.coordinator must be host:port, got {coordinator!r}")
        return {"coordinator_address": coordinator, "num_processes": num, "process_id": pid,
                "initialization_timeout": timeout}
    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_JOB_ID" in os.environ:
        return {"cluster_detection_method": "slurm", "initialization_timeout": timeout}
    return None


_initialized = False


def initialize(run_cfg, log=print) -> None:
    """Join the process group described by ``run_cfg``/environment (no-op for a single process)."""
    global _initialized
    kwargs = settings(run_cfg)
    if kwargs is None or _initialized:
        return
    where = kwargs.get("coordinator_address", "SLURM")
    if kwargs.get("process_id", 0) != 0:
        _wait_for_coordinator(where, kwargs["initialization_timeout"], kwargs)
    try:
        jax.distributed.initialize(**kwargs)
    except Exception as e:  # unreachable coordinator, port in use, bad SLURM environment
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise JaxnasError(f"cannot join the process group at {where} "
                          f"(process {kwargs.get('process_id', '?')} of {kwargs.get('num_processes', '?')}, "
                          f"timeout {kwargs['initialization_timeout']} s): {first[:300]}") from None
    _initialized = True
    log(f"process {jax.process_index()} of {jax.process_count()} joined {where}: "
        f"{jax.local_device_count()} local / {jax.device_count()} global devices")


def _wait_for_coordinator(address: str, timeout: float, kwargs: dict) -> None:
    """Probe the coordinator's port first: XLA's client aborts the whole process (no Python error)
    when it cannot connect, so an unreachable coordinator is caught here with a clear message."""
    host, port = address.rsplit(":", 1)
    deadline = time.time() + timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                return
        except OSError as e:
            if time.time() > deadline:
                raise JaxnasError(f"cannot join the process group at {address} (process {kwargs['process_id']} of "
                                  f"{kwargs['num_processes']}): coordinator unreachable after {timeout} s ({e}); "
                                  f"is process 0 running, and is the address right?") from None
            time.sleep(0.5)


def is_main() -> bool:
    return jax.process_index() == 0
