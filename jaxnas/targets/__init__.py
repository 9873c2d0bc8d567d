"""Compile-only accelerator targets: compile any jaxnas step for a GPU or TPU on a machine without one.

XLA compiles for a device it does not have when it is given a description of it (deviceless
ahead-of-time compilation). A CUDA target is a ``GpuTargetConfigProto`` text (the ``*.txtpb``
files beside this module, from the vendors' data sheets); a TPU target is a topology name that
libtpu knows. ``targets.json`` names them and holds the peaks the roofline bounds use.

    from jaxnas import targets
    targets.prepare_environment()                  # before jax starts a backend
    mesh = targets.mesh("h200", devices=1)         # a mesh of abstract H200s
    report = targets.compile(jax.jit(f, ...), args, target="h200")
    report.temp_bytes, report.flops, report.hlo

The plugins come from ``pip install "jax[cuda12]"`` / ``"jax[tpu]"`` at the same version as jax
(the ``accel`` extra); ``available(target)`` says whether this process can compile for one.
Everything a compile returns is the compiled program, exactly what the device would run, so a
compile that aborts here aborts there: run a compile that may crash in a subprocess
(``python -m jaxnas.targets``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import time
from importlib import resources
from typing import Any

from jaxnas.errors import JaxnasError, unknown


@dataclasses.dataclass(frozen=True)
class Target:
    """One compile-only device: what XLA is told about it and the peaks its roofline uses."""

    name: str
    platform: str            # "cuda" or "tpu"
    description: str
    memory_gb: float         # device memory
    hbm_gbps: float          # memory bandwidth, GB/s
    matmul_tflops: float     # what XLA's default precision reaches for float32 convs and dots
    bf16_tflops: float
    fp32_tflops: float | None = None
    config: str = ""         # CUDA: the GpuTargetConfigProto file beside this module
    topology: str = ""       # TPU: libtpu's topology name of one chip, e.g. "v5e:1x1"
    sm: str = ""

    def target_config(self) -> str:
        return resources.files(__package__).joinpath(self.config).read_text()


@functools.cache
def catalogue() -> dict[str, Target]:
    """Every target in ``targets.json``, by name."""
    raw = json.loads(resources.files(__package__).joinpath("targets.json").read_text())
    return {name: Target(name=name, **fields) for name, fields in raw.items() if not name.startswith("_")}


NAMES = ("h100", "h200", "a100", "tpu-v5e")


def get(name: str) -> Target:
    found = catalogue().get(name)
    if found is None:
        raise unknown("compile target", name, tuple(catalogue()))
    return found


def prepare_environment() -> None:
    """Environment for deviceless compilation; call before jax starts its first backend.

    JAX runs on the CPU (the host's arrays and the model's initialisation); the CUDA plugin is
    told not to look for a GPU or check its driver, libtpu not to query a TPU host's metadata nor to
    take its one-process lock file (there is no chip to share).
    Values the user has set are kept."""
    for key, value in (("JAX_PLATFORMS", "cpu"), ("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1"),
                       ("CUDA_VISIBLE_DEVICES", "-1"), ("TPU_SKIP_MDS_QUERY", "1"),
                       ("TPU_ACCELERATOR_TYPE", "v5litepod-1"), ("TPU_WORKER_HOSTNAMES", "localhost"),
                       ("ALLOW_MULTIPLE_LIBTPU_LOAD", "1"),  # no chip to guard: compiles may run side by side
                       ("TF_CPP_MIN_LOG_LEVEL", "2")):
        os.environ.setdefault(key, value)


def plugin_version(platform: str) -> str | None:
    """The installed plugin's version for ``platform`` ("cuda" or "tpu"), None when absent."""
    from importlib import metadata

    names = {"cuda": ("jax-cuda12-plugin", "jax-cuda13-plugin"), "tpu": ("libtpu",)}[platform]
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def available(name: str) -> str | None:
    """None when this process can compile for target ``name``, else why not (one line)."""
    target = get(name)
    if plugin_version(target.platform) is None:
        extra = "jax[cuda12]" if target.platform == "cuda" else "jax[tpu]"
        return f"the {target.platform} plugin is not installed (pip install \"{extra}\" at this jax's version)"
    return None


def topology(name: str, devices: int = 1):
    """The abstract devices of ``devices`` chips of target ``name`` (one host)."""
    from jax.experimental import topologies

    target = get(name)
    if devices < 1:
        raise JaxnasError(f"a compile target needs at least 1 device, got {devices}")
    if target.platform == "cuda":
        return topologies.get_topology_desc(platform="cuda", target_config=target.target_config(),
                                            topology=f"1x1x{devices}")
    chip = target.topology.split(":")[0]
    shapes = {1: "1x1", 2: "1x2", 4: "2x2", 8: "2x4"}
    if devices not in shapes:
        raise JaxnasError(f"target {name}: {devices} devices is not a TPU slice shape; allowed: "
                          f"{', '.join(map(str, shapes))}")
    return topologies.get_topology_desc(platform="tpu", topology_name=f"{chip}:{shapes[devices]}")


def mesh(name: str, devices: int = 1):
    """A 1-D ``data`` mesh (jaxnas.parallel's layout) over ``devices`` abstract chips of ``name``."""
    from jaxnas import parallel

    return parallel.make_mesh(devices, list(topology(name, devices).devices))


def abstract(tree: Any, sharding) -> Any:
    """``tree`` as ShapeDtypeStructs placed by ``sharding`` (the arguments of a deviceless lowering)."""
    import jax

    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


@dataclasses.dataclass
class Report:
    """What a deviceless compile tells: XLA's memory plan, the work, and the compiled program."""

    target: str
    devices: int
    compile_s: float         # XLA's compile of the lowered program
    lower_s: float           # tracing and lowering to StableHLO
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    flops: float             # per device: XLA's cost analysis of the program before backend passes
    bytes_accessed: float    # per device: operands and results of each kernel of the compiled program
    hlo: str = dataclasses.field(repr=False, default="")
    loops: int = 0           # while loops in the compiled program: ``flops`` counts each body once

    @property
    def memory_bytes(self) -> int:
        """Device memory the step needs: arguments, results not aliased to them, temporaries."""
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes

    def roofline_s(self) -> float:
        """The step's lower bound on ``target``: its FLOPs at the matmul peak or its bytes at the
        memory bandwidth, whichever takes longer (Williams et al. 2009)."""
        t = get(self.target)
        return max(self.flops / (t.matmul_tflops * 1e12), self.bytes_accessed / (t.hbm_gbps * 1e9))

    def summary(self) -> dict:
        return {"target": self.target, "devices": self.devices, "lower_s": round(self.lower_s, 1),
                "compile_s": round(self.compile_s, 1),
                "argument_gb": round(self.argument_bytes / 1e9, 4), "temp_gb": round(self.temp_bytes / 1e9, 4),
                "memory_gb": round(self.memory_bytes / 1e9, 4), "gflops": round(self.flops / 1e9, 3),
                "gbytes_accessed": round(self.bytes_accessed / 1e9, 3),
                "roofline_ms": round(self.roofline_s() * 1e3, 4),
                **({"gflops_counts_loop_bodies_once": True} if self.loops else {}),
                "library_calls": library_calls(self.hlo)}


def _cpu_client():
    import jax

    return jax.devices("cpu")[0].client


def flops(lowered, devices: int) -> float:
    """FLOPs per device of a lowered program: XLA's HloCostAnalysis of the whole (unpartitioned)
    program on the host, divided by the devices it is split over. It counts a loop's body once,
    whatever its trip count (``Report.loops`` says when there is one); ``bytes_accessed`` counts it
    once a trip. Backend passes do not change
    the arithmetic, and GPU executables compiled without a device report no cost of their own."""
    from jax._src.lib import xla_client
    from jaxlib import _hlo

    module = _hlo.hlo_module_from_text(lowered.as_text(dialect="hlo"))
    cost = xla_client._xla.hlo_module_cost_analysis(_cpu_client(), module)
    return float(cost.get("flops", 0.0)) / devices


_FREE = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast", "after-all", "partition-id",
         "replica-id", "opt-barrier", "while", "conditional", "call"}
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
          "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
_ARRAY = re.compile(r"\b([a-z]+[0-9]*)\[([0-9,]*)\]")


def _shape_bytes(shape: str) -> int:
    """Bytes of an HLO shape's text (an array or a tuple of arrays; layouts ignored)."""
    total = 0
    for dtype, dims in _ARRAY.findall(shape.split("{")[0] if not shape.startswith("(") else shape):
        n = 1
        for d in filter(None, dims.split(",")):
            n *= int(d)
        total += n * _BYTES.get(dtype, 0)
    return total


def _split_instruction(line: str):
    """``(name, shape, opcode, operand names, rest)`` of one HLO instruction line, else None."""
    line = line.strip().removeprefix("ROOT ").strip()
    if " = " not in line:
        return None
    name, rhs = line.split(" = ", 1)
    if rhs.startswith("("):  # a tuple shape: up to its closing parenthesis
        depth = 0
        for i, ch in enumerate(rhs):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                break
        shape, rhs = rhs[:i + 1], rhs[i + 1:].strip()
    else:
        shape, _, rhs = rhs.partition(" ")
    opcode, _, rest = rhs.partition("(")
    depth, i = 1, 0
    for i, ch in enumerate(rest):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0:
            break
    operands = [o.strip().split(" ")[-1].lstrip("%") for o in rest[:i].split(",") if o.strip()]
    return name.lstrip("%"), shape, opcode.strip(), operands, rest[i + 1:]


def bytes_accessed(compiled) -> float:
    """Bytes each kernel of the compiled program reads and writes, summed over its entry
    computation: every fusion, library call (cuDNN, cuBLAS) and collective reads its operands
    from device memory and writes its results there. Loop bodies count once per trip where XLA
    knows the trip count. Read from the HLO text, which every jax version prints alike."""
    return _bytes_of_text(compiled.as_text())


def _trips_of_condition(instructions: list) -> int:
    """The trip count of a loop whose condition is ``counter < constant`` (how jax lowers ``scan`` and
    ``fori_loop``, the counter from 0), for backends that do not annotate it (TPU); else 1."""
    constants = {n: ops[0] for n, sh, op, ops, _ in instructions if op == "constant" and sh.startswith("s32[]")}
    for _, _, op, ops, rest in instructions:
        if op == "compare" and "direction=LT" in rest and len(ops) == 2 and ops[1] in constants:
            return int(constants[ops[1]])
    return 1


def _bytes_of_text(hlo: str) -> float:
    comps: dict[str, list] = {}
    entry, current = "", None
    for line in hlo.splitlines():
        stripped = line.strip()
        if stripped.endswith("{") and " = " not in stripped.split("(")[0]:
            head = stripped.split(" ")[0 if not stripped.startswith("ENTRY") else 1].lstrip("%")
            current = comps.setdefault(head, [])
            if stripped.startswith("ENTRY"):
                entry = head
            continue
        if stripped == "}":
            current = None
            continue
        if current is not None:
            parsed = _split_instruction(stripped)
            if parsed:
                current.append(parsed)

    def cost(name: str, seen: tuple = ()) -> float:
        if name not in comps or name in seen:
            return 0.0
        shapes = {n: sh for n, sh, _, _, _ in comps[name]}
        total = 0.0
        for _, shape, opcode, operands, rest in comps[name]:
            if opcode == "while":
                body = re.search(r"body=%?([\w.\-]+)", rest)
                trips = re.search(r'"known_trip_count":\{"n":"(\d+)"', rest)
                cond = re.search(r"condition=%?([\w.\-]+)", rest)
                n = int(trips.group(1)) if trips else _trips_of_condition(comps.get(cond.group(1), []) if cond else [])
                if body:
                    total += n * cost(body.group(1), seen + (name,))
                continue
            if opcode in _FREE:
                continue
            total += _shape_bytes(shape) + sum(_shape_bytes(shapes.get(o, "")) for o in operands)
        return total

    return cost(entry)


def library_calls(hlo: str) -> dict[str, int]:
    """How many of the compiled program's kernels are library calls, by target (cuDNN's convolutions,
    cuBLAS's GEMMs, Triton's fusions): whether a form lowers to the vendor's kernels."""
    counts: dict[str, int] = {}
    for line in hlo.splitlines():
        if 'custom_call_target="' in line:
            name = line.split('custom_call_target="')[1].split('"')[0]
            counts[name] = counts.get(name, 0) + 1
        elif '"kind":"__triton' in line:
            counts["triton"] = counts.get("triton", 0) + 1
    return counts


def compile(jitted, args: tuple, target: str, devices: int = 1) -> Report:
    """Lower ``jitted`` (a ``jax.jit`` with its shardings on ``mesh(target, devices)``) for the
    abstract arguments ``args`` and compile it for ``target``; the report of what XLA built."""
    t = time.perf_counter()
    lowered = jitted.lower(*args)
    lower_s = time.perf_counter() - t
    t = time.perf_counter()
    compiled = lowered.compile()
    seconds = time.perf_counter() - t
    mem = compiled.memory_analysis()
    hlo = compiled.as_text()
    return Report(target=target, devices=devices, compile_s=seconds, lower_s=lower_s,
                  argument_bytes=int(getattr(mem, "argument_size_in_bytes", 0)),
                  output_bytes=int(getattr(mem, "output_size_in_bytes", 0)),
                  alias_bytes=int(getattr(mem, "alias_size_in_bytes", 0)),
                  temp_bytes=int(getattr(mem, "temp_size_in_bytes", 0)),
                  flops=flops(lowered, devices), bytes_accessed=_bytes_of_text(hlo), hlo=hlo,
                  loops=len(re.findall(r"\swhile\(", hlo)))
