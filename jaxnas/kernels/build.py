"""Building jaxnas's CPU kernels and registering them with XLA (nothing here computes).

The C++ sources next to this file (``depthwise.cc``, ``batchnorm.cc``, ``pool.cc``, with
``common.h``) are compiled with the machine's C++ compiler against jaxlib's FFI headers into
a per-user cache the first time they are needed (a few seconds) and reused after that;
nothing is built at install time. Where they cannot be built (no compiler) or
``JAXNAS_NATIVE=0`` is set, ``available()`` is False and ``jaxnas.kernels`` takes XLA's path.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import jax
import jaxlib

_HERE = Path(__file__).parent
_SOURCES = [_HERE / "depthwise.cc", _HERE / "batchnorm.cc", _HERE / "pool.cc"]
_HEADERS = [_HERE / "common.h"]
_FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-w"]


def _march() -> str:
    """The build target: ``-march=native``, or ``$JAXNAS_NATIVE_MARCH`` (e.g. ``x86-64-v3``: AVX2 and FMA,
    to build for a cluster's oldest nodes, or to measure the AVX2 kernels on an AVX-512 machine)."""
    return f"-march={os.environ.get('JAXNAS_NATIVE_MARCH') or 'native'}"


_TARGETS = {"jaxnas_dw_fwd": "JaxnasDwFwd", "jaxnas_dw_bwd": "JaxnasDwBwd",
            "jaxnas_materialize": "JaxnasMaterialize", "jaxnas_bn_fwd": "JaxnasBnFwd",
            "jaxnas_bn_bwd": "JaxnasBnBwd", "jaxnas_bn_bwd2": "JaxnasBnBwd2", "jaxnas_sep_fwd": "JaxnasSepFwd", "jaxnas_sep_bwd": "JaxnasSepBwd",
            "jaxnas_sep_bwd2": "JaxnasSepBwd2",
            "jaxnas_pool_fwd": "JaxnasPoolFwd", "jaxnas_pool_bwd": "JaxnasPoolBwd",
            "jaxnas_pool_jvp": "JaxnasPoolJvp"}


def cache_dir() -> Path:
    """Where compiled kernels live: ``$JAXNAS_NATIVE_DIR``, else ``~/.cache/jaxnas/native``."""
    return Path(os.environ.get("JAXNAS_NATIVE_DIR") or
                os.path.join(os.path.expanduser("~"), ".cache", "jaxnas", "native"))


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        path = shutil.which(name) if name else None
        if path:
            return path
    return None


def build(verbose: bool = False) -> Path:
    """Compile the kernels (``depthwise.cc``, ``batchnorm.cc``, ``pool.cc``) into the cache (atomically) unless
    they are there; return the library path.

    The file name hashes the sources, jaxlib's version, the flags and the CPU, so a
    changed kernel, jaxlib or machine gets its own build.
    """
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX)")
    include = jax.ffi.include_dir()
    flags = [*_FLAGS, _march()]
    key = hashlib.sha256("\0".join([*(p.read_text() for p in _SOURCES + _HEADERS), jaxlib.__version__, cxx, *flags,
                                    platform.machine(), _cpu_flags()]).encode()).hexdigest()[:16]
    path = cache_dir() / f"kernels-{key}.so"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"jaxnas: compiling the native CPU kernels (once; cached in {path.parent}) ...", file=sys.stderr, flush=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(fd)
    try:
        cmd = [cxx, *flags, "-I", include, "-I", str(_HERE), *map(str, _SOURCES), "-o", tmp]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-2000:]}")
        if verbose:
            print(" ".join(cmd))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


_REGISTERED: list[Path] = []  # the library whose targets this process registered (XLA keeps them for good)


@functools.cache
def _load() -> bool:
    if os.environ.get("JAXNAS_NATIVE", "1") == "0":
        return False
    if _REGISTERED:
        return True
    try:
        path = build()
        lib = ctypes.cdll.LoadLibrary(str(path))
        for target, symbol in _TARGETS.items():
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
        _REGISTERED.append(path)
    except (OSError, RuntimeError, AttributeError) as e:
        warnings.warn(f"jaxnas: the native CPU kernels are not available ({e}); using XLA's forms",
                      RuntimeWarning, stacklevel=3)
        return False
    return True


def available() -> bool:
    """True when the kernel is built and registered, and JAX runs on the CPU."""
    return jax.default_backend() == "cpu" and _load()


