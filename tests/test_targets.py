"""jaxnas.targets without a plugin: the catalogue, the roofline, the kernel choice per backend, the
step list CI compiles. (tests/test_targets_compile.py compiles the steps for each target.)"""

import json

import pytest

from jaxnas import kernels, targets
from jaxnas.errors import JaxnasError
from jaxnas.methods import METHODS
from jaxnas.search.bilevel import ORDERS
from jaxnas.targets import steps


def test_catalogue_has_the_named_targets_and_their_config_files():
    cat = targets.catalogue()
    assert set(targets.NAMES) <= set(cat)
    for name in ("h100", "h200", "a100"):
        t = cat[name]
        text = t.target_config()
        assert t.platform == "cuda" and 'platform_name: "CUDA"' in text
        major = {"sm_90": 9, "sm_80": 8}[t.sm]
        assert f"major: {major}" in text.split("cuda_compute_capability")[1].split("}")[0]
        bandwidth = int(text.split("memory_bandwidth: ")[1].split()[0])
        assert bandwidth == pytest.approx(t.hbm_gbps * 1e9, rel=0.01)  # the two files agree
    assert cat["h200"].memory_gb > cat["h100"].memory_gb
    assert cat["tpu-v5e"].platform == "tpu" and cat["tpu-v5e"].topology == "v5e:1x1"


def test_unknown_target_is_one_line_naming_the_allowed():
    with pytest.raises(JaxnasError, match=r"unknown compile target 'h300'.*h100.*tpu-v5e"):
        targets.get("h300")


def test_roofline_is_the_slower_of_compute_and_memory():
    # h200: 495 TFLOP/s for float32 convs and dots (TF32), 4800 GB/s
    r = targets.Report("h200", 1, 1.0, 0.1, 0, 0, 0, 0, flops=495e9, bytes_accessed=4.8e9)
    assert r.roofline_s() == pytest.approx(1e-3)           # both 1 ms
    r.bytes_accessed = 9.6e9
    assert r.roofline_s() == pytest.approx(2e-3)           # memory-bound
    r.flops = 4.95e12
    assert r.roofline_s() == pytest.approx(10e-3)          # compute-bound
    r.argument_bytes, r.output_bytes, r.alias_bytes, r.temp_bytes = 100, 40, 30, 7
    assert r.memory_bytes == 117


def test_library_calls_are_counted_by_target():
    hlo = "\n".join([
        '%a = f32[2] custom-call(%p), custom_call_target="__cudnn$convForward", backend_config={}',
        '%b = f32[2] custom-call(%p), custom_call_target="__cudnn$convForward"',
        '%c = f32[2] fusion(%p), kind=kCustom, backend_config={"fusion_backend_config":{"kind":"__triton_gemm"}}',
        '%d = f32[2] add(%p, %p)'])
    assert targets.library_calls(hlo) == {"__cudnn$convForward": 2, "triton": 1}


def test_auto_kernels_per_backend():
    assert kernels.resolve("auto", "tpu") == kernels.AUTO["tpu"]
    assert kernels.resolve("auto", "cuda") == kernels.AUTO["cuda"]
    assert kernels.resolve("native", "cuda") == "dense"  # the CPU kernels never reach another backend
    assert kernels.resolve("shift", "tpu") == "shift"
    with kernels.use("auto", "cuda") as form:
        assert form == kernels.AUTO["cuda"] and kernels.resolve() == form  # modules built inside see it
    with pytest.raises(JaxnasError, match="unknown kernel implementation"):
        kernels.resolve("fast", "cuda")


def test_every_step_covers_each_order_each_method_both_spaces():
    specs = steps.every_step()
    for space in ("darts", "nb201"):
        assert {s["order"] for s in specs if s.get("space") == space and "order" in s} == set(ORDERS)
        assert {s["method"] for s in specs if s.get("space") == space and "method" in s} == set(METHODS) - {"darts"}
    assert {s["kind"] for s in specs} == {"search", "retrain", "optimize"}
    assert {(s["kind"], s.get("order")) for s in specs if s.get("dtype") == "bfloat16"} == \
        {("search", "first"), ("search", "second"), ("retrain", None)}
    assert len({steps.step_id(s) for s in specs}) == len(specs)


def test_search_config_test_size_is_tiny_and_keeps_every_op():
    cfg = steps.search_config("darts", "", "test")
    assert (cfg.space.C, cfg.space.layers, cfg.space.nodes, cfg.search.batch_size) == (4, 1, 2, 8)
    assert cfg.space.ops == "auto"  # all 8 DARTS ops
    paper = steps.search_config("darts", "", "paper")
    assert (paper.space.C, paper.space.layers, paper.search.batch_size) == (16, 8, 64)
    pc = steps.search_config("darts", "pcdarts", "test")
    assert pc.space.C % pc.space.partial_channels == 0
    with pytest.raises(JaxnasError, match="unknown step size"):
        steps.search_config("darts", "", "huge")


def test_targets_json_is_data():
    raw = json.loads(targets.resources.files("jaxnas.targets").joinpath("targets.json").read_text())
    assert all(isinstance(v, dict) for k, v in raw.items() if not k.startswith("_"))


class _Compiled:
    def __init__(self, text):
        self.text = text

    def as_text(self):
        return self.text


def test_bytes_accessed_sums_each_kernels_operands_and_results():
    """A hand-worked compiled module: a fusion reading two f32[4,8] and writing one, a library call
    reading it and an f32[8,2] and writing (f32[4,2], u8[16]), and a while loop of 3 trips whose body
    runs a fusion over a bf16[10]; parameters, tuples and bitcasts move nothing."""
    hlo = """HloModule jit_f, entry_computation_layout={(f32[4,8]{1,0})->f32[4,2]{1,0}}

%body (p: (s32[], bf16[10])) -> (s32[], bf16[10]) {
  %p = (s32[], bf16[10]{0}) parameter(0)
  %x = bf16[10]{0} get-tuple-element(%p), index=1
  %y = bf16[10]{0} fusion(%x), kind=kLoop, calls=%f2
  ROOT %t = (s32[], bf16[10]{0}) tuple(%i, %y)
}

ENTRY %main.1 (a: f32[4,8], w: f32[8,2]) -> f32[4,2] {
  %a = f32[4,8]{1,0} parameter(0)
  %w = f32[8,2]{1,0} parameter(1)
  %f = f32[4,8]{1,0} fusion(%a, %a), kind=kLoop, calls=%fused
  %c = (f32[4,2]{1,0}, u8[16]{0}) custom-call(%f, %w), custom_call_target="__cudnn$convForward"
  %g = f32[4,2]{1,0} get-tuple-element(%c), index=0
  %l = (s32[], bf16[10]{0}) while(%init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"3"}}
  ROOT %b = f32[4,2]{1,0} bitcast(%g)
}
"""
    fusion = 3 * 4 * 8 * 4
    call = 4 * 8 * 4 + 8 * 2 * 4 + (4 * 2 * 4 + 16)
    loop = 3 * (2 * 10 * 2)
    assert targets.bytes_accessed(_Compiled(hlo)) == fusion + call + loop
    # a backend that does not annotate the trip count (TPU): read from the condition, counter < 3
    cond = """%cond (q: (s32[], bf16[10])) -> pred[] {
  %q = (s32[], bf16[10]{0}) parameter(0)
  %n = s32[]{:T(128)} constant(3)
  %i = s32[] get-tuple-element(%q), index=0
  ROOT %lt = pred[] compare(%i, %n), direction=LT
}

"""
    bare = hlo.replace(', backend_config={"known_trip_count":{"n":"3"}}', "")
    assert targets.bytes_accessed(_Compiled(bare.replace("ENTRY", cond + "ENTRY"))) == fusion + call + loop
    assert targets.bytes_accessed(_Compiled(bare)) == fusion + call + loop // 3  # no condition to read: once
