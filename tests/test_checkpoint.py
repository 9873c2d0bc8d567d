import os
import shutil

import numpy as np
import pytest

from jaxnas import checkpoint
from jaxnas.errors import JaxnasError


def _tree(scale):
    return {"w": np.arange(6, dtype=np.float32).reshape(2, 3) * scale, "opt": (np.float32(scale), np.int32(3))}


def test_npz_round_trip_and_mismatch(tmp_path):
    path = str(tmp_path / "w.npz")
    checkpoint.save(path, params=_tree(2.0))
    (back,) = checkpoint.load(path, params=_tree(0.0))
    np.testing.assert_array_equal(back["w"], _tree(2.0)["w"])
    with pytest.raises(JaxnasError, match="do not match the model"):
        checkpoint.load(path, params={"w": np.zeros((3, 3), np.float32), "opt": (np.float32(0), np.int32(0))})


def test_keeps_last_k_and_restores_newest(tmp_path):
    ck = checkpoint.Checkpointer(str(tmp_path / "ck"), keep=2, log=lambda *_: None)
    for step in (1, 2, 3):
        ck.save(step, _tree(float(step)), {"step": step, "sums": {"loss": 0.1 * step}})
    ck.wait()
    assert ck.steps() == [2, 3]
    tree, meta, step = checkpoint.Checkpointer(str(tmp_path / "ck"), log=lambda *_: None).restore(_tree(0.0))
    assert step == 3 and meta == {"step": 3, "sums": {"loss": 0.1 * 3}}
    np.testing.assert_array_equal(tree["w"], _tree(3.0)["w"])
    assert tree["opt"][1].dtype == np.int32
    ck.close()


def test_torn_and_damaged_checkpoints_are_never_used(tmp_path):
    d = tmp_path / "ck"
    ck = checkpoint.Checkpointer(str(d), keep=5, log=lambda *_: None)
    ck.save(1, _tree(1.0), {"step": 1})
    ck.save(2, _tree(2.0), {"step": 2})
    ck.close()
    # a write cut short by SIGKILL: orbax's temporary directory, never renamed into place
    shutil.copytree(d / "2", d / "3.orbax-checkpoint-tmp-1234")
    # a finished checkpoint whose files were damaged afterwards: it is skipped with a warning
    for root, _, files in os.walk(d / "2" / "state"):
        for f in files:
            with open(os.path.join(root, f), "wb") as fh:
                fh.write(b"\0garbage")
    warnings = []
    restored = checkpoint.Checkpointer(str(d), log=warnings.append).restore(_tree(0.0))
    tree, meta, step = restored
    assert step == 1 and meta["step"] == 1
    np.testing.assert_array_equal(tree["w"], _tree(1.0)["w"])
    assert any("checkpoint 2" in w for w in warnings)


def test_shape_mismatch_is_named(tmp_path):
    ck = checkpoint.Checkpointer(str(tmp_path / "ck"), log=lambda *_: None)
    ck.save(1, _tree(1.0), {})
    ck.close()
    warnings = []
    bad = {"w": np.zeros((3, 2), np.float32), "opt": (np.float32(0), np.int32(0))}
    assert checkpoint.Checkpointer(str(tmp_path / "ck"), log=warnings.append).restore(bad) is None
    assert "'w' is float32[2, 3], the model expects float32[3, 2]" in warnings[0]


def _damage(step_dir, how):
    files = [os.path.join(r, f) for r, _, fs in os.walk(step_dir) for f in fs]
    for path in files:
        if how == "truncated":
            with open(path, "r+b") as fh:
                fh.truncate(os.path.getsize(path) // 2)
        elif how == "deleted":
            os.remove(path)
        else:
            with open(path, "wb") as fh:
                fh.write(os.urandom(64))


@pytest.mark.parametrize("how", ["truncated", "deleted", "garbage"])
def test_a_damaged_newest_checkpoint_is_set_aside_and_its_step_can_be_written_again(tmp_path, how):
    d = tmp_path / "ck"
    ck = checkpoint.Checkpointer(str(d), keep=3, log=lambda *_: None)
    ck.save(1, _tree(1.0), {"step": 1})
    ck.save(2, _tree(2.0), {"step": 2})
    ck.close()
    _damage(d / "2", how)
    warnings = []
    ck = checkpoint.Checkpointer(str(d), keep=3, log=warnings.append)
    tree, meta, step = ck.restore(_tree(0.0))
    assert step == 1 and meta["step"] == 1 and ck.steps() == [1]
    assert (d / "damaged-2").is_dir() and "moved to" in warnings[0]
    ck.save(2, _tree(4.0), {"step": 2})  # orbax refused this before: "Checkpoint for step 2 already exists"
    ck.close()
    tree, _, step = checkpoint.Checkpointer(str(d), log=lambda *_: None).restore(_tree(0.0))
    assert step == 2 and float(tree["opt"][0]) == 4.0


def test_weights_that_are_not_a_readable_npz_are_one_error(tmp_path):
    path = tmp_path / "w.npz"
    checkpoint.save(str(path), params=_tree(1.0))
    data = path.read_bytes()
    for bad in (data[: len(data) // 2], b"not a zip at all"):
        path.write_bytes(bad)
        with pytest.raises(JaxnasError, match="cannot be read"):
            checkpoint.load(str(path), params=_tree(0.0))
    np.savez(str(path), **{"params:w": np.array([object()], dtype=object)})
    with pytest.raises(JaxnasError, match="cannot be read"):
        checkpoint.load(str(path), params=_tree(0.0))


def test_a_checkpoint_that_cannot_be_written_is_one_error_and_the_written_ones_are_kept(tmp_path, read_only):
    d = tmp_path / "ck"
    ck = checkpoint.Checkpointer(str(d), keep=3, log=lambda *_: None)
    ck.save(1, _tree(1.0), {"step": 1})
    ck.wait()
    read_only(d)
    with pytest.raises(JaxnasError, match=r"could not be written to .*ck.*the checkpoints kept: 1"):
        ck.save(2, _tree(2.0), {"step": 2})
        ck.wait()
    assert checkpoint.Checkpointer(str(d), log=lambda *_: None).steps() == [1]
