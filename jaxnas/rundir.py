"""Run directories: the resolved config, provenance (seed, versions, devices) and JSONL logs."""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import platform
import shutil
import socket
import sys
import tempfile
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
    existed = os.path.isdir(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise JaxnasError(f"cannot create the run directory {path!r} ({e.strerror or e})") from None
    if jax.process_index() != 0:
        return path
    try:
        check_writable(path)
        _write_start(cfg, kind, path)
    except BaseException as e:
        if not existed:  # nothing half-made is left behind: the folder goes, with whatever was written
            shutil.rmtree(path, ignore_errors=True)
        if is_disk_full(e):
            raise JaxnasError(f"the disk is full ({getattr(e, 'strerror', None) or e}): cannot start a run in "
                              f"{path!r}; nothing was left behind") from None
        raise
    return path


def _write_start(cfg, kind: str, path: str) -> None:
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

def only_started(path: str) -> bool:
    """True when a run folder holds nothing but what starting it wrote (config.json, meta.json,
    TensorBoard headers, empty folders): a start that failed before any result."""
    for root, _, files in os.walk(path):
        rel = os.path.relpath(root, path)
        for f in files:
            if rel == "." and f in ("config.json", "meta.json", ".lock"):
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
    """Write JSON atomically: a temporary file of a unique name in the same folder, flushed to disk,
    then renamed over ``path``; a killed run, a full disk or a second writer never leaves half a file."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text(path: str, text: str) -> None:
    """``text`` to ``path`` atomically (see ``write_json``)."""
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a run's files from the group that shares it
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise

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


def read_jsonl_records(path: str) -> list[dict]:
    """The JSON objects of a log that a killed or full-disk run may have cut: every whole line that is a
    JSON object, in order; a cut or damaged line is skipped. A missing file has none."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise JaxnasError(f"cannot read {path!r} ({e.strerror or e})") from None
    out = []
    for line in lines:
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


# -- a run directory defends itself: one process at a time, and a full disk is one line ----------

_HELD: dict[str, object] = {}  # run directory (real path) -> the open lock file this process holds


def lock(path: str) -> None:
    """Hold ``<path>/.lock`` (an advisory ``fcntl`` lock, released when the process ends, however it
    ends) for the rest of this process, so that a second process on the same run fails at once with
    one line naming the holder. Taking a lock this process holds already is a no-op."""
    key = os.path.realpath(path)
    if key in _HELD or jax.process_index() != 0:
        return
    lock_path = os.path.join(path, ".lock")
    try:
        f = open(lock_path, "a+", encoding="utf-8")
    except OSError as e:
        raise JaxnasError(f"cannot write in {path!r} ({e.strerror or e}); a run needs a writable folder "
                          f"(its lock file {os.path.basename(lock_path)})") from None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise JaxnasError(f"run directory {path!r} is in use by {holder}; wait for it to end (or stop it), "
                          f"then --resume {path}") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()} since "
            f"{datetime.datetime.now().isoformat(timespec='seconds')}: {' '.join(sys.argv) or 'python'}\n")
    f.flush()
    _HELD[key] = f


def unlock(path: str) -> None:
    """Release the lock ``lock(path)`` took (the end of a run in a longer-lived process)."""
    f = _HELD.pop(os.path.realpath(path), None)
    if f is not None:
        f.close()


@contextlib.contextmanager
def locked(path: str | None):
    """``lock(path)`` for the body (nothing when ``path`` is None); released after it if taken here."""
    if path is None or os.path.realpath(path) in _HELD:
        yield
        return
    lock(path)
    try:
        yield
    finally:
        unlock(path)


DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def disk_full_cause(e: BaseException | None) -> BaseException | None:
    """The ``OSError`` of a full disk or quota, or SQLite's "database or disk is full", that ``e`` is or
    was caused by (Optuna wraps SQLAlchemy's errors); ``None`` when it is something else."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, OSError) and e.errno in DISK_FULL:
            return e
        text = str(e).lower()
        if type(e).__name__ in ("OperationalError", "DatabaseError") and ("is full" in text or "disk i/o" in text):
            return e
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


def is_disk_full(e: BaseException | None) -> bool:
    return disk_full_cause(e) is not None


@contextlib.contextmanager
def disk_errors(run_dir: str | None):
    """A full disk inside the body becomes one line: what failed, that what finished is kept, and how
    to go on (free space, then ``--resume``)."""
    try:
        yield
    except JaxnasError:
        raise
    except Exception as e:  # an OSError, or a storage library's error that wraps one
        cause = disk_full_cause(e)
        if cause is None:
            raise
        where = f"; everything finished so far is kept in {run_dir!r}: free space, then --resume {run_dir}" \
            if run_dir else ""
        detail = getattr(cause, "strerror", None) or str(cause).splitlines()[0][:160]
        raise JaxnasError(f"the disk is full ({detail}){where}") from None

