"""The run driver: the epoch/step/log/checkpoint/signal loop, written once for every run.

``run_epochs`` calls a run's hooks (``step``, ``log_step``, ``end_epoch``, ``save``) in
order; a run (search, retraining) is its set-up plus those hooks. Around them the driver
stops cleanly on SIGTERM/Ctrl-C (checkpoint, then ``Preempted``), checks every step's
numbers one step late without stalling the device (``FiniteGuard``), checkpoints every
``checkpoint_every`` steps and at epoch ends, shows progress with rate and ETA, and on
resume restores the newest good checkpoint and trims the logs written after it.
"""

from __future__ import annotations

import abc
import contextlib
import math
import os
import signal
import sys
import time
from collections.abc import Callable

import jax

from jaxnas import checkpoint, rundir, tracing, writers
from jaxnas.errors import JaxnasError


class Preempted(Exception):
    """Raised after a signal asked the run to stop and its checkpoint has been written."""

    def __init__(self, signum: int, step: int, run_dir: str | None):
        self.signum, self.step, self.run_dir = signum, step, run_dir
        name = signal.Signals(signum).name
        super().__init__(f"{name}: checkpoint written at step {step}" +
                         (f"; continue with --resume {run_dir}" if run_dir else ""))


class Stopped(Exception):
    """Raised at once by a signal (``raise_on_signal``) in a run whose finished work is already on
    disk, such as an optimize study's trials: the unfinished part is redone on ``--resume``."""

    def __init__(self, signum: int, run_dir: str | None, kept: str = "everything finished so far is kept"):
        self.signum, self.run_dir = signum, run_dir
        super().__init__(f"{signal.Signals(signum).name}: {kept}" +
                         (f"; continue with --resume {run_dir}" if run_dir else ""))


@contextlib.contextmanager
def raise_on_signal(run_dir: str | None, kept: str = "everything finished so far is kept"):
    """SIGTERM (a scheduler's preemption, ``kill``) inside the body raises ``Stopped`` where the program
    is, as Ctrl-C raises ``KeyboardInterrupt``; outside the main thread signals are left alone."""
    def handler(signum, frame):
        raise Stopped(signum, run_dir, kept)

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class StopOnSignal:
    """Context manager: SIGTERM and SIGINT set ``self.signum`` instead of killing the process.

    The loop checks ``signum`` after each step, writes a checkpoint and raises
    ``Preempted``. A second signal of the same kind is not caught (so a second Ctrl-C kills).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self._old = {}

    def _handler(self, signum, frame):
        self.signum = signum
        signal.signal(signum, self._old.get(signum, signal.SIG_DFL))

    def __enter__(self):
        try:
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handler)
        except ValueError:  # not the main thread: leave signals alone
            self._old = {}
        return self

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)
        return False


class FiniteGuard:
    """Checks each step's metrics one step late, so the host never waits on the step just dispatched.

    ``push(step, metrics)`` checks the previous step's metrics and keeps these;
    ``flush()`` checks the pending ones now (call it before writing a checkpoint).
    A NaN or Inf raises a JaxnasError naming the step and the quantity, or what
    ``error(step, ["name=value", ...])`` returns.
    """

    def __init__(self, error: Callable[[int, list[str]], Exception] | None = None):
        self._pending = None
        self._error = error

    def push(self, step: int, metrics: dict) -> None:
        self.flush()
        self._pending = (step, metrics)

    def flush(self) -> dict | None:
        if self._pending is None:
            return None
        step, metrics = self._pending
        self._pending = None
        values = {k: float(v) for k, v in metrics.items()}
        bad = [f"{k}={v}" for k, v in values.items() if not math.isfinite(v)]
        if bad:
            raise (self._error or _nonfinite)(step, bad)
        return values


def _nonfinite(step: int, bad: list[str]) -> JaxnasError:
    return JaxnasError(f"non-finite {', '.join(bad)} at step {step}; stopping. The last good checkpoint is "
                       f"kept (lower the learning rate, or check the data)")


def eta(done: int, total: int, elapsed: float) -> str:
    """``h:mm:ss`` left at the current rate."""
    if done <= 0 or total <= done:
        return "0:00:00"
    s = int(elapsed / done * (total - done))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """A tqdm bar over all steps of a run (on a terminal), plus rate and ETA for the log lines.

    Rate and ETA count from the end of the first step, which includes compiling."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool = True):
        self.total, self.start, self.t0 = total, initial, time.time()
        self.done = initial
        self._first: tuple[int, float] | None = None  # (steps done, time) after the first step
        self._bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, leave=False)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._first is None:
            self._first = (self.done, time.time())
        if self._bar is not None:
            self._bar.update(n)

    def _since(self) -> tuple[int, float]:
        if self._first is not None and self.done > self._first[0]:
            return self._first
        return self.start, self.t0

    def rate(self) -> float:
        """Steps per second since the first step of this process (or since its start, before the second)."""
        n0, t0 = self._since()
        return (self.done - n0) / max(time.time() - t0, 1e-9)

    def eta(self) -> str:
        n0, t0 = self._since()
        return eta(self.done - n0, self.total - n0, time.time() - t0)

    def write(self, msg: str, log) -> None:
        if self._bar is not None:
            self._bar.clear()
        log(msg)
        if self._bar is not None:
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def restore_run(ckpt, template, steps: int, devices: int, run_dir: str, log, epoch_logs=("metrics.jsonl",),
                config: dict | None = None):
    """Resume a run: ``(tree, meta, start, history)`` from the newest good checkpoint (``template``: the
    state's structure, or a function of a checkpoint's meta returning it), or
    ``(None, None, 0, [])`` when there is none. Log records written after the checkpoint are
    dropped from ``steps.jsonl`` (by step) and from ``epoch_logs`` (by epoch).

    ``config`` (the fields that decide the numbers, as saved in every checkpoint's meta) must
    equal what the checkpoint was made with: a hand-edited config.json is an error naming the
    field, and checkpoints that exist but none of which can be used are an error, never a
    silent restart from step 0."""
    had = ckpt.steps()
    newest = ckpt.meta(had[-1]) if had else None
    if config is not None and newest is not None and newest.get("config") not in (None, config):
        _config_mismatch(newest["config"], config, had[-1], run_dir)
    restored = ckpt.restore(template if callable(template) else jax.device_get(template))
    if restored is None and had:
        raise JaxnasError(f"none of the checkpoints in {ckpt.directory} ({', '.join(map(str, had))}) can be used "
                          f"(see the warnings above); move that folder away to start the run over")
    if restored is None:
        log(f"no checkpoint in {ckpt.directory}; starting from step 0")
        tree, meta, start = None, None, 0
    else:
        tree, meta, start = restored
    saved = (meta or {}).get("config")
    if tree is not None and config is not None and saved is not None and saved != config:
        _config_mismatch(saved, config, start, run_dir)
    if tree is not None and meta["steps_per_epoch"] != steps:
        raise JaxnasError(f"checkpoint {start} was written with {meta['steps_per_epoch']} steps per epoch, "
                          f"this run has {steps}; was the dataset changed?")
    if tree is not None and meta.get("devices") != devices:
        log(f"warning: the run used {meta.get('devices')} devices, resuming on {devices}: the result will not be "
            f"bit-identical to an uninterrupted run (see docs/determinism.md)")
    epochs_done = start // steps
    if jax.process_index() == 0:
        writers.truncate_jsonl(os.path.join(run_dir, "steps.jsonl"), lambda r: r["step"] <= start)
        for name in epoch_logs:
            writers.truncate_jsonl(os.path.join(run_dir, name), lambda r: r["epoch"] <= epochs_done)
    path = os.path.join(run_dir, "metrics.jsonl")
    history = [r for r in rundir.read_jsonl(path) if r["epoch"] <= epochs_done] if os.path.exists(path) else []
    if tree is not None:
        log(f"resumed from the checkpoint at step {start} (epoch {epochs_done + 1}, step {start % steps + 1} next)")
    return tree, meta, start, history


def _config_mismatch(saved: dict, config: dict, step: int, run_dir: str) -> None:
    diff = [k for k in sorted(set(saved) | set(config)) if saved.get(k) != config.get(k)]
    shown = "; ".join(f"{k}: checkpoint {step} has {saved.get(k)!r}, the config now {config.get(k)!r}" for k in diff[:3])
    raise JaxnasError(f"--resume {run_dir!r}: the run's config.json no longer matches its checkpoints ({shown}"
                      f"{'; ...' if len(diff) > 3 else ''}); restore config.json or start a new run")


def checkpoint_due(step: int, every: int, stop: StopOnSignal) -> bool:
    """Mid-epoch checkpoint: every ``every`` steps, or now because a signal asked to stop."""
    return bool(stop.signum or (every and step % every == 0))


def stop_if_asked(stop: StopOnSignal, ckpt, step: int, run_dir: str | None) -> None:
    """After a checkpoint: if a signal asked to stop, wait for the write to finish and raise Preempted."""
    if stop.signum:
        if ckpt is not None:
            ckpt.wait()
        raise Preempted(stop.signum, step, run_dir)


def close_run(progress: Progress, writer, ckpt) -> None:
    """End of a run, normal or not: close the bar and the writer, let pending checkpoint writes finish."""
    progress.close()
    writer.close()
    if ckpt is not None:
        ckpt.close()


def checkpointer(run_dir: str | None, keep: int, log) -> checkpoint.Checkpointer | None:
    """The run's checkpoint manager (``<run_dir>/checkpoints``), or None without a run directory."""
    return checkpoint.Checkpointer(os.path.join(run_dir, "checkpoints"), keep, log) if run_dir else None


def run_epochs(*, epochs: int, steps: int, start: int, log_every: int, checkpoint_every: int, progress: Progress,
               ckpt, run_dir: str | None, writer, step: Callable[[int, int], dict],
               log_step: Callable[[int, int, int, dict], None], end_epoch: Callable[[int, int, float], None],
               save: Callable[[int], None], begin_epoch: Callable[[int, int], None] | None = None,
               catch_signals: bool = True, nonfinite: Callable[[int, list[str]], Exception] | None = None,
               finished: Callable[[], bool] | None = None, trace: tracing.StepTrace | None = None) -> None:
    """The loop of every run, from global step ``start`` to ``epochs * steps``.

    Per epoch: ``begin_epoch(epoch, first_step)``; per step i: ``step(epoch, i) -> metrics``
    (device values, checked for NaN/Inf one step late), every ``log_every`` steps and at the
    epoch's last step ``log_step(epoch, i, global_step, checked host metrics)``, and a
    checkpoint (``save(global_step)``) every ``checkpoint_every`` steps or when a signal asked
    to stop; at the epoch's end ``end_epoch(epoch, global_step, seconds)`` then ``save``.
    Whatever happens, the progress bar and the writer are closed and pending checkpoint
    writes finish. ``catch_signals=False`` leaves SIGTERM and SIGINT to the caller;
    ``nonfinite(step, bad)`` gives the error a NaN/Inf raises. ``finished()`` true after a step
    (a budget spent early) ends the run there, as if that step ended its epoch. ``trace`` records a
    profiler trace of its window of steps.
    """
    guard = FiniteGuard(nonfinite)
    trace = trace or tracing.StepTrace(0, 1, run_dir)
    try:
        with (StopOnSignal() if catch_signals else contextlib.nullcontext(StopOnSignal())) as stop:
            for epoch in range(start // steps, epochs):
                first = start - epoch * steps if epoch == start // steps else 0
                if begin_epoch is not None:
                    begin_epoch(epoch, first)
                t_epoch, done, gstep = time.time(), False, epoch * steps + first
                for i in range(first, steps):
                    gstep = epoch * steps + i + 1
                    trace.before(gstep)
                    out = step(epoch, i)
                    trace.after(gstep, out)
                    guard.push(gstep, out)
                    progress.update()
                    done = finished is not None and finished()
                    if (i + 1) % log_every == 0 or i + 1 == steps or done:
                        log_step(epoch, i, gstep, guard.flush())
                    if done:
                        break
                    if i + 1 < steps and checkpoint_due(gstep, checkpoint_every, stop):
                        guard.flush()
                        save(gstep)
                        stop_if_asked(stop, ckpt, gstep, run_dir)
                guard.flush()
                end_epoch(epoch, gstep, time.time() - t_epoch)
                save(gstep)
                stop_if_asked(stop, ckpt, gstep, run_dir)
                if done:
                    return
    finally:  # pending checkpoint writes finish even when the run stops with an error
        trace.close()
        close_run(progress, writer, ckpt)


class Loop(abc.ABC):
    """A run as one object, which ``run`` drives (the search, the retraining). Its setup (``__init__``,
    then restoring any checkpoint) sets:

    * ``epochs``, ``steps`` (per epoch), ``start`` (the global step it continues from);
    * ``log_every``, ``checkpoint_every``; ``profile_step``, ``profile_steps`` (a profiler trace of those
      global steps, ``jaxnas.tracing``; 0: none); ``catch_signals`` (False: SIGTERM and SIGINT are the caller's);
    * ``progress`` (a ``Progress``, ``start_progress``), ``ckpt`` (a ``Checkpointer`` or None), ``run_dir``,
      ``writer``, ``log``.

    The loop calls ``begin_epoch``, ``step`` (returning the step's device metrics), ``log_step`` with the
    checked host metrics, ``end_epoch`` and ``save`` (a checkpoint at a global step), as ``run_epochs``
    describes."""

    epochs: int
    steps: int
    start: int = 0
    log_every: int = 1
    checkpoint_every: int = 0
    profile_step: int = 0
    profile_steps: int = 1
    catch_signals: bool = True
    log: Callable[[str], None] = staticmethod(print)
    run_dir: str | None = None
    ckpt = None
    progress: Progress
    writer: object

    def begin_epoch(self, epoch: int, first: int) -> None:
        """Before epoch ``epoch``, whose first step to run is ``first`` (non-zero after a mid-epoch resume)."""

    @abc.abstractmethod
    def step(self, epoch: int, i: int) -> dict:
        """One step of epoch ``epoch`` (its i-th); returns the step's device metrics."""

    def log_step(self, epoch: int, i: int, gstep: int, metrics: dict) -> None:
        """Every ``log_every`` steps and at an epoch's last step, with NaN/Inf-checked host metrics."""

    def end_epoch(self, epoch: int, gstep: int, seconds: float) -> None:
        """After an epoch's last step (evaluation, logs), before its checkpoint."""

    def save(self, gstep: int) -> None:
        """A checkpoint at global step ``gstep`` (nothing without a checkpointer)."""

    def finished(self) -> bool:
        """True after a step when the run is done before its last step (a budget spent early)."""
        return False

    def nonfinite(self, gstep: int, bad: list[str]) -> Exception:
        """The error a NaN or Inf metric (``bad``: ``"name=value"``) at ``gstep`` raises: by default the
        driver's own, naming the step and that the last good checkpoint is kept."""
        return _nonfinite(gstep, bad)

    def start_progress(self, name: str, shown: bool, compiling: str) -> None:
        """The progress bar over every step from ``start`` (shown on process 0 when ``shown``), the note that
        the first step compiles ``compiling`` when steps remain, and the clock of the run's ``time_s``."""
        total = self.epochs * self.steps
        self.progress = Progress(total, self.start, name, shown and jax.process_index() == 0)
        if self.start < total:
            self.log(f"compiling {compiling} (the first step; XLA's persistent cache shortens later runs)")
        self.t0 = time.time()


class StepLoop(Loop):
    """A run with nothing to checkpoint, as one ``Loop``: ``step(epoch, i) -> metrics`` for ``epochs`` x
    ``steps``, then ``end_epoch(epoch, seconds)`` when given; a NaN/Inf metric raises
    ``nonfinite(epoch)`` (an exception); signals are left to the caller. The evaluators' training
    (a discrete strategy's architectures, the weight-sharing supernet) runs through it."""

    catch_signals = False

    def __init__(self, epochs: int, steps: int, step: Callable[[int, int], dict],
                 nonfinite: Callable[[int], Exception], end_epoch: Callable[[int, float], None] | None = None,
                 progress: Progress | None = None, log=print):
        self.epochs, self.steps, self.log_every, self.log = epochs, steps, steps, log
        self._step, self._nonfinite, self._end = step, nonfinite, end_epoch
        self.progress = progress or Progress(epochs * steps, 0, "", enabled=False)
        self.writer = writers.MetricWriter(None)

    def step(self, epoch: int, i: int) -> dict:
        return self._step(epoch, i)

    def end_epoch(self, epoch: int, gstep: int, seconds: float) -> None:
        if self._end is not None:
            self._end(epoch, seconds)

    def nonfinite(self, gstep: int, bad: list[str]) -> Exception:
        return self._nonfinite((gstep - 1) // self.steps + 1)


def run(loop: Loop) -> None:
    """Drive ``loop`` from ``loop.start`` to ``loop.epochs * loop.steps`` (``run_epochs``): signals, the
    NaN/Inf guard, checkpoints, progress, and closing everything whatever happens."""
    run_epochs(epochs=loop.epochs, steps=loop.steps, start=loop.start, log_every=loop.log_every,
               checkpoint_every=loop.checkpoint_every, progress=loop.progress, ckpt=loop.ckpt, run_dir=loop.run_dir,
               writer=loop.writer, step=loop.step, log_step=loop.log_step, end_epoch=loop.end_epoch, save=loop.save,
               begin_epoch=loop.begin_epoch, catch_signals=loop.catch_signals,
               nonfinite=loop.nonfinite, finished=loop.finished,
               trace=tracing.StepTrace(loop.profile_step, loop.profile_steps, loop.run_dir, loop.log))
