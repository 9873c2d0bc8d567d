"""A profiler trace of chosen steps of a run (``run.profile_step``, ``run.profile_steps``).

``jax.profiler`` records what the host and every device do over the steps, with each XLA kernel
(fusions, cuDNN convolutions, collectives) on the device's timeline. The trace goes to
``<run dir>/profile/plugins/profile/<time>/``: ``*.xplane.pb`` for TensorBoard's profile plugin
(``tensorboard --logdir <run dir>/profile``) or XProf, and ``*.trace.json.gz`` for Perfetto
(ui.perfetto.dev). The first step compiles, so a window that starts later shows the steady state.
Only process 0 traces (its host's devices).
"""

from __future__ import annotations

import os
from typing import Any

import jax

from jaxnas.errors import JaxnasError


class StepTrace:
    """Traces global steps ``first`` .. ``first + count - 1`` (1-based, as the driver counts them);
    ``first=0`` traces nothing; a window no step of this run reaches (past its end, or before the step
    it resumed from) is logged, not traced. ``before(gstep)`` starts the trace at the first; ``after(gstep, out)``
    waits for the last step's device values, then stops it; ``close`` stops a trace still open."""

    def __init__(self, first: int, count: int, run_dir: str | None, log=print):
        self.first, self.last, self.log, self.active, self.seen = first, first + count - 1, log, False, first
        self.dir = os.path.join(run_dir, "profile") if run_dir else None
        if first and run_dir is None:
            raise JaxnasError(f"run.profile_step={first} needs a run directory to write the trace to")
        self.enabled, self.started = bool(first) and jax.process_index() == 0, False

    def before(self, gstep: int) -> None:
        if self.enabled and gstep == self.first:
            jax.profiler.start_trace(self.dir)
            self.active = self.started = True

    def after(self, gstep: int, out: Any) -> None:
        if self.active:
            self.seen = gstep
            if gstep >= self.last:
                jax.block_until_ready(out)
                self.close()

    def close(self) -> None:
        if self.enabled and not self.started:
            self.enabled = False
            self.log(f"run.profile_step={self.first}: this run did not go through that step, no trace written")
        if self.active:
            jax.profiler.stop_trace()
            self.active = False
            self.log(f"profile of steps {self.first}-{self.seen} written to {self.dir} "
                     f"(tensorboard --logdir {self.dir}, or its trace.json.gz in ui.perfetto.dev)")
