"""The jaxnas command's restart with glibc's huge-page tunable (jaxnas/hugepages.py)."""

import os
import subprocess
import sys

import pytest

from jaxnas import hugepages

# Run in a child: report the tunables it runs with, after asking for the restart as an entry point does
# (the kernel's THP mode is made "madvise" so the check does not depend on this machine's setting).
CHILD = """
import os
from jaxnas import hugepages
if not hugepages.active():
    hugepages.thp_mode = lambda: "madvise"
    hugepages.reexec()
print("tunables=" + os.environ.get("GLIBC_TUNABLES", ""))
"""


def _run(**env) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "JAXNAS_HUGE_PAGES")}
    out = subprocess.run([sys.executable, "-c", CHILD], env={**base, **env}, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return out.strip().splitlines()[-1]


@pytest.mark.skipif(not (sys.platform.startswith("linux") and hugepages._glibc_has_tunable()),
                    reason="glibc 2.35 or later on Linux only")
def test_command_restarts_once_with_the_tunable_kept_beside_the_users_own():
    assert _run() == "tunables=glibc.malloc.hugetlb=1"
    assert _run(GLIBC_TUNABLES="glibc.malloc.arena_max=8") == \
        "tunables=glibc.malloc.arena_max=8:glibc.malloc.hugetlb=1"
    assert _run(JAXNAS_HUGE_PAGES="0") == "tunables="  # turned off: no restart
    assert _run(GLIBC_TUNABLES="glibc.malloc.hugetlb=0") == "tunables=glibc.malloc.hugetlb=0"  # the user's choice


def test_active_reads_the_tunables_value(monkeypatch):
    for value, on in (("glibc.malloc.hugetlb=1", True), ("glibc.malloc.arena_max=2:glibc.malloc.hugetlb=2", True),
                      ("glibc.malloc.hugetlb=0", False), ("glibc.malloc.arena_max=2", False), ("", False)):
        monkeypatch.setenv("GLIBC_TUNABLES", value)
        assert hugepages.active() is on


def test_thp_mode_is_read_from_the_bracketed_choice(tmp_path, monkeypatch):
    f = tmp_path / "enabled"
    f.write_text("always [madvise] never\n")
    monkeypatch.setattr(hugepages, "_THP_MODE", str(f))
    assert hugepages.thp_mode() == "madvise"
    monkeypatch.setattr(hugepages, "_THP_MODE", str(tmp_path / "missing"))
    assert hugepages.thp_mode() == "" and not hugepages.wanted()  # not Linux's sysfs: nothing to do
