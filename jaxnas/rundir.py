"""Run directories: the resolved config, provenance (seed, versions, devices) and JSONL logs."""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from importlib import metadata

import jax

from jaxnas.errors import JaxnasError

PACKAGES = ("jaxnas", "jax", "jaxlib", "flax", "optax", "chex", "numpy", "tensorflow-datasets", "ml_collections",
            "orbax-checkpoint", "tensorboardX")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out

def create(cfg, kind: str) -> str:
    """Make ``<workdir>/<name or timestamp-kind>`` and write config.json and meta.json into it (process 0)."""
    if jax.process_count() > 1 and not cfg.run.name:
        raise JaxnasError("a multi-process run needs --config.run.name so that all processes share one run directory")
    name = cfg.run.name or f"{datetime.datetime.now():%Y%m%d-%H%M%S}-{kind}-{cfg.data.name.replace('/', '_')}"
    path = os.path.join(cfg.run.workdir, name)
    os.makedirs(path, exist_ok=True)
    if jax.process_index() != 0:
        return path
    if any(os.path.exists(os.path.join(path, f)) for f in ("checkpoints", "search_state.json", "metrics.jsonl")):
        raise JaxnasError(f"run directory {path!r} already holds a run; continue it with --resume {path} "
                          f"or choose another run.name")
    write_json(os.path.join(path, "config.json"), cfg.to_dict())
    devices = jax.devices()
    write_json(os.path.join(path, "meta.json"), {
        "kind": kind,
        "seed": cfg.seed,
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": sys.argv,
        "versions": package_versions(),
        "backend": jax.default_backend(),
        "device_count": jax.device_count(),
        "devices_used": cfg.run.devices or jax.device_count(),
        "device_kind": devices[0].device_kind,
        "process_count": jax.process_count(),
    })
    return path

def record_resume(path: str) -> None:
    """Append when, with how many devices and what command a run was resumed (resumes.jsonl)."""
    if jax.process_index() == 0:
        append_jsonl(os.path.join(path, "resumes.jsonl"), {
            "time": datetime.datetime.now().isoformat(timespec="seconds"), "command": sys.argv,
            "device_count": jax.device_count(), "device_kind": jax.devices()[0].device_kind,
            "process_count": jax.process_count(), "versions": package_versions()})


def write_json(path: str, obj) -> None:
    """Write JSON atomically (temp file + rename), so a killed run never leaves half a file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)

def append_jsonl(path: str, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")

def read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]

