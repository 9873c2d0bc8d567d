"""Shared by the benchmark scripts: the steps' own peak memory, without the compiler's."""

from __future__ import annotations


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux), so that the steps' own peak can be read after compiling.

    The memory the compiler freed is first handed back to the system (glibc ``malloc_trim``);
    otherwise it stays resident and counts towards the steps' peak.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_gb() -> float:
    """The process's peak RSS since start or since the last ``reset_peak_rss`` (ru_maxrss off Linux)."""
    try:
        with open("/proc/self/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / 1e6, 2)


def machine() -> dict:
    """The CPU model, its vector extensions and core count (Linux /proc/cpuinfo; platform otherwise)."""
    import os
    import platform

    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    vector = [v for v in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "amx_tile")
              if v in flags]
    from jaxnas import hugepages

    return {"cpu": model, "vector": vector, "cores": os.cpu_count(),
            "kernels_built_for": f"-march={os.environ.get('JAXNAS_NATIVE_MARCH') or 'native'}",
            "huge_pages": hugepages.active(), "thp": hugepages.thp_mode()}
