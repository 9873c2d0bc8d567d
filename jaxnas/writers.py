"""Scalar logs of a run: JSONL files (the record) and TensorBoard event files (tensorboardX).

Only process 0 writes. On resume, records past the restored step are dropped from
the JSONL files and TensorBoard is told to purge them, so the logs of a resumed run
read like those of an uninterrupted one.
"""

from __future__ import annotations

import json
import os

import jax

from jaxnas import rundir


def truncate_jsonl(path: str, keep) -> None:
    """Keep only the records of ``path`` for which ``keep(record)`` is true (atomic rewrite)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        if keep(record):
            kept.append(line if line.endswith("\n") else line + "\n")
    rundir.write_text(path, "".join(kept))


class MetricWriter:
    """``write(file, step, record)``: one JSON line in ``<run_dir>/<file>.jsonl`` and its numbers in TensorBoard."""

    def __init__(self, run_dir: str | None, resume_step: int = 0, tensorboard: bool = True, resume: bool = False):
        self.run_dir = run_dir if jax.process_index() == 0 else None
        self._tb = None
        if self.run_dir and tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(self.run_dir, "tb"),
                                     purge_step=resume_step + 1 if resume or resume_step else None)

    def write(self, file: str, step: int, record: dict) -> None:
        if not self.run_dir:
            return
        with open(os.path.join(self.run_dir, f"{file}.jsonl"), "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "epoch"):
                    self._tb.add_scalar(f"{file}/{k}", v, step)

    def tb_scalars(self, prefix: str, step: int, values: dict) -> None:
        """Numbers for TensorBoard only (e.g. every edge's op weights, which alphas.jsonl already holds)."""
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(f"{prefix}/{k}", v, step)

    def text(self, tag: str, step: int, text: str) -> None:
        if self._tb is not None:
            self._tb.add_text(tag, text, step)

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
