"""Saving and loading model state as .npz of named arrays: plain data, never pickle."""

from __future__ import annotations

import contextlib
import json
import os
import zipfile

import jax
import numpy as np

from jaxnas.errors import JaxnasError


def _flat(tree) -> dict[str, np.ndarray]:
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        key = "/".join(str(getattr(p, "key", getattr(p, "idx", getattr(p, "name", p)))) for p in path)
        out[key] = np.asarray(leaf)
    return out


def save(path: str, **trees) -> None:
    """Write each named pytree's leaves to one .npz atomically (temp file, then rename)."""
    arrays = {f"{name}:{k}": v for name, tree in trees.items() for k, v in _flat(tree).items()}
    tmp = f"{path}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load(path: str, **templates):
    """Fill each template pytree's leaves from ``path``; shapes and names must match exactly."""
    if not os.path.isfile(path):
        raise JaxnasError(f"no saved weights at {path!r}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:  # truncated, not a zip, object arrays
        raise JaxnasError(f"saved weights {path!r} cannot be read ({type(e).__name__}: {e})") from None
    out = []
    for name, tree in templates.items():
        leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
        flat = _flat(tree)
        values = []
        for key, (_, leaf) in zip(flat, leaves):
            full = f"{name}:{key}"
            if full not in arrays or arrays[full].shape != np.shape(leaf):
                raise JaxnasError(f"saved weights {path!r} do not match the model at {full!r}")
            values.append(arrays[full])
        out.append(jax.tree_util.tree_unflatten(treedef, values))
    return out


class Checkpointer:
    """Periodic, atomic checkpoints of a run's full state with orbax, keeping the last ``keep``.

    A checkpoint is a flat dict of named numpy arrays (the template pytree's key paths)
    plus a JSON ``meta`` dict (position in the data order, running sums, ...). Orbax
    writes into a temporary directory and renames it when complete, so a write cut
    short by SIGKILL is never listed. A finished checkpoint that fails to load (files
    truncated, deleted or overwritten) is moved aside to ``damaged-<step>`` with a warning
    and the one before it is used, so the resumed run can write that step again; one
    that loads but does not fit the model is skipped and kept. Saving copies the arrays
    to host memory first, so the caller may donate or overwrite its buffers at once.
    """

    def __init__(self, directory: str, keep: int = 3, log=print):
        import orbax.checkpoint as ocp

        if keep < 1:
            raise JaxnasError(f"run.keep_checkpoints must be at least 1, got {keep}")
        self._ocp = ocp
        self.directory = os.path.abspath(directory)
        self.log = log
        self._mngr = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                                 enable_async_checkpointing=True))

    def steps(self) -> list[int]:
        return sorted(self._mngr.all_steps())

    def save(self, step: int, tree, meta: dict) -> None:
        """Start writing checkpoint ``step`` (asynchronously, after a synchronous copy to host). A write
        that failed (the previous one, in the background, or this one) stops the run with one error
        naming the folder; the checkpoints already written are kept."""
        ocp = self._ocp
        arrays = {k: np.array(v, copy=True) for k, v in _flat(tree).items()}
        meta = json.loads(json.dumps(meta))  # a snapshot: the caller's dicts change while orbax writes
        with self._failing(f"checkpoint {step}"):
            self._mngr.check_for_errors()
            self._probe()  # before orbax starts a write it could not finish (its threads would wait for it)
            self._mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(arrays),
                                                          meta=ocp.args.JsonSave(meta)), force=True)

    @contextlib.contextmanager
    def _failing(self, what: str):
        try:
            yield
        except JaxnasError:
            raise
        except Exception as e:  # orbax and tensorstore raise many kinds for a folder that cannot be written
            kept = [s for s in self._listed() if s is not None]
            raise JaxnasError(f"{what} could not be written to {self.directory} ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); the checkpoints kept: "
                              f"{', '.join(map(str, kept)) or 'none'}") from None

    def _probe(self) -> None:
        """Raise OSError now if the folder cannot take a new checkpoint."""
        probe = os.path.join(self.directory, f".write-test-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)

    def _listed(self) -> list[int]:
        try:
            return self.steps()
        except Exception:  # the folder itself is unreadable
            return []

    def restore(self, template):
        """``(tree, meta, step)`` from the newest loadable checkpoint, or None when there is none.
        ``template``: the tree's structure, or a function of the checkpoint's meta that returns it."""
        ocp = self._ocp
        for step in reversed(self.steps()):
            try:
                out = self._mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                                       meta=ocp.args.JsonRestore()))
                if not isinstance(out["meta"], dict):
                    raise ValueError(f"its meta is {type(out['meta']).__name__}, not a JSON object")
            except Exception as e:  # damaged files (orbax, tensorstore and JSON raise many kinds): set aside
                self._set_aside(step, e)
                continue
            try:
                tree = _unflat(template(out["meta"]) if callable(template) else template, out["state"],
                               f"checkpoint {step}")
            except JaxnasError as e:  # intact, but not this model's: keep it, try an older one
                self.log(f"warning: {e}; trying an older one")
                continue
            return tree, out["meta"], step
        return None

    def meta(self, step: int) -> dict | None:
        """The JSON meta of checkpoint ``step`` alone, or None when it cannot be read."""
        ocp = self._ocp
        try:
            out = self._mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except Exception:  # damaged: restore() sets it aside
            return None
        return out["meta"] if isinstance(out["meta"], dict) else None

    def _set_aside(self, step: int, error: Exception) -> None:
        """Move a damaged checkpoint out of orbax's sight (``damaged-<step>``), so its step can be written again."""
        src, dest = os.path.join(self.directory, str(step)), os.path.join(self.directory, f"damaged-{step}")
        n = 1
        while os.path.exists(dest):
            dest, n = os.path.join(self.directory, f"damaged-{step}.{n}"), n + 1
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        if jax.process_index() == 0 and os.path.isdir(src):
            os.replace(src, dest)
            self.log(f"warning: checkpoint {step} in {self.directory} cannot be loaded ({reason}); moved to "
                     f"{dest}; trying an older one")
        else:
            self.log(f"warning: checkpoint {step} in {self.directory} cannot be loaded ({reason}); trying an older one")
        self._mngr.reload()

    def wait(self) -> None:
        with self._failing("a checkpoint"):
            self._mngr.wait_until_finished()
            self._mngr.check_for_errors()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._mngr.close()


def _unflat(template, arrays: dict, where: str):
    leaves, treedef = jax.tree_util.tree_flatten(template)
    values = []
    for (key, ref), leaf in zip(_flat(template).items(), leaves):
        if key not in arrays:
            raise JaxnasError(f"{where} has no array {key!r}")
        value = np.asarray(arrays[key])
        if value.shape != ref.shape or value.dtype != ref.dtype:
            raise JaxnasError(f"{where}: {key!r} is {value.dtype}{list(value.shape)}, "
                              f"the model expects {ref.dtype}{list(ref.shape)}")
        values.append(value)
    return jax.tree_util.tree_unflatten(treedef, values)
