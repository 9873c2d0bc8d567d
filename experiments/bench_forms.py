"""Compare the XLA forms of DARTS's separable block on each accelerator target, without the device.

    python experiments/bench_forms.py                       # every target with a plugin, every form
    python experiments/bench_forms.py --targets h200 --C 16 --edges 2 --batch 64 --image 32

The block is what every ``sep_conv``/``dil_conv`` edge of the supernet runs (``kernels.separable``:
ReLU, depthwise kxk, pointwise 1x1, for the E edges that read one state), differentiated in x and
both kernels as the weight step does. Each form (``jaxnas.kernels.reference.FORMS``) is compiled for
each target in its own process; per form it prints XLA's FLOPs per step, the bytes its kernels move,
the roofline bound at the target's peak, temporaries, compile time and the library calls it lowers
to (cuDNN's convolutions, Triton's fusions). ``kernels.AUTO`` picks the form per backend from this.
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
from jaxnas.kernels import reference
target, form, B, H, C, E, k, dil, order = sys.argv[1:10]
B, H, C, E, k, dil = map(int, (B, H, C, E, k, dil))
m = targets.mesh(target, 1)
rep, dat = NamedSharding(m, P()), NamedSharding(m, P("data"))
pad = dil * (k - 1) // 2
def block(x, dw, pw):
    return reference.separable(jax.nn.relu(x), dw, pw, 1, dil, pad, form)
def loss(x, dw, pw):
    return jnp.sum(jnp.sin(block(x, dw, pw)))
f = jax.grad(loss, argnums=(0, 1, 2))
if order == "second":  # the exact second-order step differentiates the weight gradient again
    g = f
    f = jax.grad(lambda x, dw, pw: sum(jnp.vdot(t, t) for t in jax.tree.leaves(g(x, dw, pw))), argnums=(0, 1, 2))
args = (jax.ShapeDtypeStruct((B, H, H, C), jnp.float32, sharding=dat),
        jax.ShapeDtypeStruct((E, k, k, C), jnp.float32, sharding=rep),
        jax.ShapeDtypeStruct((E, C, C), jnp.float32, sharding=rep))
r = targets.compile(jax.jit(f), args, target)
print(json.dumps({"target": target, "form": form, "order": order, **r.summary()}))
"""


def main() -> None:
    from jaxnas import targets
    from jaxnas.kernels.reference import FORMS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", default=",".join(targets.NAMES))
    p.add_argument("--forms", default=",".join(FORMS))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--image", type=int, default=32)
    p.add_argument("--C", type=int, default=16)
    p.add_argument("--edges", type=int, default=2, help="edges reading one state (2 for a cell's inputs)")
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--dilation", type=int, default=1)
    p.add_argument("--order", default="first", choices=["first", "second"])
    args = p.parse_args()
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    env.pop("XLA_FLAGS", None)
    for target in args.targets.split(","):
        missing = targets.available(target)
        if missing:
            print(json.dumps({"target": target, "skipped": missing}), flush=True)
            continue
        for form in args.forms.split(","):
            cmd = [sys.executable, "-c", CHILD, target, form, str(args.batch), str(args.image), str(args.C),
                   str(args.edges), str(args.k), str(args.dilation), args.order]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if out.returncode:
                print(json.dumps({"target": target, "form": form, "failed": out.returncode,
                                  "message": out.stderr.strip().splitlines()[-1:]}), flush=True)
                continue
            print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
