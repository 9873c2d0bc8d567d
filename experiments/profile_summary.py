"""Sum a jax.profiler trace's events by kind: where a compiled step spends its time.

    python experiments/bench_search_step.py --order first --steps 1 --profile /tmp/prof
    python experiments/profile_summary.py /tmp/prof

Reads the Perfetto trace (``*.trace.json.gz``) that ``--profile`` writes, keeps the
events of XLA's CPU executable (thunks: fusions, custom calls, library calls), strips
instance numbers from their names (``fusion.123`` -> ``fusion``), and prints the
thread time per kind over all threads, largest first, with call counts. The FFI calls are
told apart by target (``ffi_call:jaxnas_sep_bwd``) from the compiled HLO that the benchmark
saves beside the trace (``step.hlo.txt``, or gzipped).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re


def load_events(path: str) -> list[dict]:
    files = sorted(glob.glob(os.path.join(path, "**", "*.trace.json.gz"), recursive=True))
    if not files:
        raise SystemExit(f"no *.trace.json.gz under {path} (run the benchmark with --profile {path})")
    with gzip.open(files[-1]) as f:
        trace = json.load(f)
    return [e for e in trace.get("traceEvents", []) if e.get("ph") == "X" and "dur" in e]


def ffi_targets(path: str) -> dict[str, str]:
    """HLO op name -> custom-call target, from ``step.hlo.txt`` under ``path`` (empty if absent)."""
    targets = {}
    for file in glob.glob(os.path.join(path, "**", "step.hlo.txt*"), recursive=True):
        with (gzip.open(file, "rt") if file.endswith(".gz") else open(file)) as f:
            for line in f:
                m = re.search(r"%?([\w.-]+) = .*custom-call\(.*custom_call_target=\"([\w.-]+)\"", line)
                if m:
                    targets[m.group(1)] = m.group(2)
    return targets


def kind(name: str) -> str:
    name = re.sub(r"[._-]?\d+$", "", name)
    return re.sub(r"\.\d+", "", name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    events = load_events(args.path)
    targets = ffi_targets(args.path)
    steps = [e for e in events if e["name"].startswith(("jit_step", "PjitFunction(step)", "PjitFunction(jit(step))"))]
    total, calls = collections.Counter(), collections.Counter()
    for e in events:
        name = e["name"]
        if name.startswith(("jit_", "PjitFunction", "$", "ThunkExecutor", "Thunk")) or " " in name:
            continue
        k = kind(name) + (":" + targets[name] if name in targets else "")
        total[k] += e["dur"] / 1e6
        calls[k] += 1
    wall = sum(e["dur"] for e in steps) / 1e6 if steps else None
    print(f"step wall time {wall:.2f} s" if wall else "step wall time: not found in the trace")
    print(f"thread time in the kinds below: {sum(total.values()):.2f} s")
    for k, v in total.most_common(args.top):
        print(f"{v:8.3f} s  {calls[k]:6d} calls  {k}")


if __name__ == "__main__":
    main()
