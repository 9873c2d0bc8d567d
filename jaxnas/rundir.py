"""Run directories: the resolved config, provenance (seed, versions, devices) and JSONL logs."""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from importlib import metadata

import jax

from jaxnas import hugepages
from jaxnas.errors import JaxnasError

PACKAGES = ("jaxnas", "jax", "jaxlib", "flax", "optax", "chex", "numpy", "tensorflow-datasets", "ml_collections",
            "orbax-checkpoint", "tensorboardX", "optuna", "scipy")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out

def check_writable(path: str) -> None:
    """Fail at once, with the path named, where a run could not write (a read-only folder)."""
    probe = os.path.join(path, f".jaxnas-write-test-{os.getpid()}")
    try:
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise JaxnasError(f"cannot write in {path!r} ({e.strerror or e}); a run needs a writable folder") from None


def _data_label(name: str) -> str:
    """A dataset's name for a folder name: a file's stem (``path/to/x.npz`` -> ``x``), else the name."""
    base = os.path.basename(name.rstrip("/"))
    return os.path.splitext(base)[0] if os.path.splitext(base)[1] else name.replace("/", "_")


def create(cfg, kind: str) -> str:
    """Make ``<workdir>/<name or timestamp-kind-data>`` and write config.json and meta.json into it
    (process 0). ``run.name`` is one path component; an existing run is never overwritten."""
    if jax.process_count() > 1 and not cfg.run.name:
        raise JaxnasError("a multi-process run needs --config.run.name so that all processes share one run directory")
    name = cfg.run.name
    if name and (name in (".", "..") or os.sep in name or "/" in name or os.path.isabs(name)):
        raise JaxnasError(f"run.name {name!r} must be one folder name (no path separators, not '.' or '..'); "
                          f"choose the parent folder with run.workdir")
    name = name or f"{datetime.datetime.now():%Y%m%d-%H%M%S}-{kind}-{_data_label(cfg.data.name)}"
    path = os.path.join(cfg.run.workdir, name)
    if jax.process_index() == 0 and os.path.exists(os.path.join(path, "config.json")):
        raise JaxnasError(f"run directory {path!r} already holds a run; continue it with --resume {path} "
                          f"or choose another run.name")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise JaxnasError(f"cannot create the run directory {path!r} ({e.strerror or e})") from None
    if jax.process_index() != 0:
        return path
    check_writable(path)
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
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "transparent_huge_pages": hugepages.thp_mode(),
    })
    return path

def only_started(path: str) -> bool:
    """True when a run folder holds nothing but what starting it wrote (config.json, meta.json,
    TensorBoard headers, empty folders): a start that failed before any result."""
    for root, _, files in os.walk(path):
        rel = os.path.relpath(root, path)
        for f in files:
            if rel == "." and f in ("config.json", "meta.json"):
                continue
            if rel.split(os.sep)[0] == "tb":
                continue
            return False
    return True


def record_resume(path: str) -> None:
    """Append when, with how many devices and what command a run was resumed (resumes.jsonl)."""
    if jax.process_index() == 0:
        check_writable(path)
        if os.path.isdir(os.path.join(path, "checkpoints")):
            check_writable(os.path.join(path, "checkpoints"))
        for name in sorted(os.listdir(path)):  # the logs a resumed run appends to
            if name.endswith((".jsonl", ".json")):
                try:
                    with open(os.path.join(path, name), "a"):
                        pass
                except OSError as e:
                    raise JaxnasError(f"cannot write {os.path.join(path, name)!r} ({e.strerror or e}); "
                                      f"a resumed run appends to it") from None
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

def read_json(path: str, what: str = "file") -> dict:
    """A JSON object read from ``path``; anything else (missing, not UTF-8, not JSON, not an object,
    a folder) is one JaxnasError naming the file and what is wrong."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except FileNotFoundError:
        raise JaxnasError(f"{what} {path!r} does not exist") from None
    except IsADirectoryError:
        raise JaxnasError(f"{what} {path!r} is a folder, not a JSON file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise JaxnasError(f"{what} {path!r} is not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise JaxnasError(f"{what} {path!r} holds a JSON {type(value).__name__}, not an object")
    return value


def json_line(record: dict) -> str:
    return json.dumps(record, sort_keys=True) + "\n"


def append_jsonl(path: str, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json_line(record))

def read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]

