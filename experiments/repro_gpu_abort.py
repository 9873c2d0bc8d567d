"""The XLA:GPU abort that stopped the H200 run (jax 0.11.2), reproduced on a CPU without a GPU.

    python experiments/repro_gpu_abort.py            # the minimal program, then jaxnas's own step
    python experiments/repro_gpu_abort.py --form conv

Needs ``jax[cuda12]`` at jax's version (0.11.2 to see the abort: Python >= 3.12). Each case runs in its
own process and prints one JSON line: ``compiled``, or ``aborted`` with XLA's message.

The minimal program is DARTS's FactorizedReduce as jaxnas batched it over E edges: two 1x1
stride-2 convs written as matrix products over strided pixels (``einsum("nhwc,ecd->nhwed",
x[:, ::2, ::2], k)``, the second on the input shifted by one pixel), concatenated on the channels.
XLA:GPU 0.11's GemmFusion fuses the concatenation of the two strided, padded slices into one
Triton GEMM operand and its tiling propagation fails (``triton_tiling_propagation.cc:703 Check
failed: subdim_size_accumulator == dim_size (16 vs. 8)``); jax 0.12's XLA compiles it. jaxnas
now writes those convs as convolutions off the CPU (``--form conv``: cuDNN's), which compile on
both (docs/accelerators.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = """
import json, sys
from jaxnas import targets
targets.prepare_environment()
import jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
m = targets.mesh("h200", 1)
S = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32, sharding=NamedSharding(m, P()))
form = sys.argv[1]

def one_by_one(x, k):
    if form == "matmul":
        return jnp.einsum("nhwc,ecd->nhwed", x[:, ::2, ::2, :], k)
    E, C, D = k.shape
    y = jax.lax.conv_general_dilated(x, jnp.moveaxis(k, 0, 1).reshape(1, 1, C, E * D), (2, 2), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y.reshape(y.shape[:3] + (E, D))

def factorized_reduce(x, k1, k2):
    r = jax.nn.relu(x)
    shifted = jnp.pad(r[:, 1:, 1:, :], ((0, 0), (0, 1), (0, 1), (0, 0)))
    return jnp.sum(jnp.concatenate([one_by_one(r, k1), one_by_one(shifted, k2)], axis=-1) ** 2)

jax.jit(factorized_reduce).lower(S(8, 8, 8, 4), S(2, 4, 2), S(2, 4, 2)).compile()
print(json.dumps({"case": "factorized_reduce", "form": form, "jax": jax.__version__, "result": "compiled"}))
"""


def run(argv: list[str], case: dict) -> dict:
    out = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    if out.returncode == 0:
        return json.loads(out.stdout.strip().splitlines()[-1])
    failed = [line for line in out.stderr.splitlines() if "Check failed" in line]
    return {**case, "result": "aborted" if out.returncode < 0 or failed else f"exit {out.returncode}",
            "message": (failed[0].split("] ", 1)[-1] if failed else out.stderr.strip().splitlines()[-1:])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--form", default="both", choices=["matmul", "conv", "both"])
    p.add_argument("--no-step", action="store_true", help="skip jaxnas's own search step")
    args = p.parse_args()
    for form in (("matmul", "conv") if args.form == "both" else (args.form,)):
        print(json.dumps(run([sys.executable, "-c", CHILD, form], {"case": "factorized_reduce", "form": form})),
              flush=True)
    if not args.no_step:
        step = [sys.executable, "-m", "jaxnas.targets", "--target", "h200", "--kind", "search", "--order", "first"]
        print(json.dumps(run(step, {"case": "jaxnas search step (test size)"})), flush=True)


if __name__ == "__main__":
    main()
