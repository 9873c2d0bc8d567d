"""Transparent huge pages for XLA:CPU's buffers, through glibc's ``glibc.malloc.hugetlb`` tunable.

XLA:CPU allocates a step's temporary buffers (1.6 GB for DARTS's first-order search step at 8
cells, 4.8 GB for its exact second order) afresh on every execution, from a thread of its own
pool, so glibc serves them with ``mmap`` and returns them with ``munmap``. Every step then faults
each 4 KiB page in again: 530,000 page faults a step for a 2.2 GB buffer, about a sixth of the
step's time (docs/benchmarks.md). With ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (glibc 2.35 and
later) glibc marks such mappings for transparent huge pages, and the same buffer takes about a
thousand 2 MiB faults. Where the kernel's THP mode is ``always`` this already happens; where it is
``never`` the tunable does nothing.

glibc reads its tunables once, when a process starts, so a running process cannot turn this on.
The ``jaxnas`` command and the benchmark scripts re-execute themselves once with the tunable set
(:func:`reexec`, before any work); ``JAXNAS_HUGE_PAGES=0`` turns that off. A program that imports
jaxnas gets the same effect by starting Python with the variable set::

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python my_search.py
"""

from __future__ import annotations

import os
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
_THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"


def _hugetlb_setting() -> str | None:
    """The value of ``glibc.malloc.hugetlb`` in ``GLIBC_TUNABLES``, or None where it is not set."""
    for item in os.environ.get("GLIBC_TUNABLES", "").split(":"):
        name, _, value = item.partition("=")
        if name == "glibc.malloc.hugetlb":
            return value
    return None


def active() -> bool:
    """Whether this process was started with glibc's huge-page tunable on (any value but 0)."""
    return _hugetlb_setting() not in (None, "0")


def thp_mode() -> str:
    """The kernel's transparent-huge-page mode (``always``, ``madvise`` or ``never``), or ``""``
    where it cannot be read (not Linux)."""
    try:
        with open(_THP_MODE) as f:
            text = f.read()
    except OSError:
        return ""
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else ""


def _glibc_has_tunable() -> bool:
    lib, version = platform.libc_ver()
    if lib != "glibc":
        return False
    try:
        major, minor = (int(p) for p in version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (2, 35)


def wanted() -> bool:
    """Whether :func:`reexec` would restart this process: Linux with glibc 2.35 or later, the kernel's
    THP mode ``madvise``, the tunable not set yet (a user's own value, 0 included, is kept), and
    ``JAXNAS_HUGE_PAGES`` not ``0``."""
    return (sys.platform.startswith("linux") and os.environ.get("JAXNAS_HUGE_PAGES", "1") != "0"
            and _hugetlb_setting() is None and thp_mode() == "madvise" and _glibc_has_tunable())


def reexec() -> None:
    """Restart this command once with ``GLIBC_TUNABLES`` extended by :data:`TUNABLE`, when
    :func:`wanted`; otherwise return. Call it first thing in a command's entry point, never from
    library code: it replaces the running process (same interpreter, same arguments)."""
    if not wanted():
        return
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    env = dict(os.environ, GLIBC_TUNABLES=f"{tunables}:{TUNABLE}" if tunables else TUNABLE)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
