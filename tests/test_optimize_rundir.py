"""An optimize run directory is a record that can be trusted: damaged, emptied or deleted parts are
rebuilt from the other record of the same trials (``study.db`` and ``trials.jsonl``), never started
again; a second process on the same run is refused; a full disk is one line and ``--resume`` goes on;
no finished trial is lost or redone."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import optuna
import pytest

from jaxnas import api, cli, rundir
from jaxnas import config as config_lib
from jaxnas.errors import JaxnasError

ARGS = ["--config.optimize.arch=fixed", "--config.optimize.baseline.model=cnn:4", "--config.optimize.baseline.epochs=1",
        "--config.optimize.hparams.model=", "--config.optimize.hparams.epochs=int:1:2",
        "--config.optimize.hparams.batch_size=choice:64", "--config.optimize.hparams.augment=choice:none,crop",
        "--config.optimize.startup_trials=2", "--config.optimize.min_epochs=1", "--config.compare.resamples=200"]


def _records(run_dir) -> list[dict]:
    return [json.loads(line) for line in open(os.path.join(run_dir, "trials.jsonl"))]


def _db_states(run_dir) -> dict:
    s = optuna.load_study(study_name="jaxnas-optimize", storage=f"sqlite:///{run_dir}/study.db")
    return {t.number: t.state.name for t in s.trials}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished optimize run of 3 trials (copied by each test before it damages it)."""
    root = tmp_path_factory.mktemp("optimize")
    cfg = api.load_config(None, ARGS + [f"run.workdir={root}", "run.name=run", "optimize.trials=3"], "optimize")
    run_dir = rundir.create(cfg, "optimize")
    api.run_optimize(cfg, run_dir, log=lambda m: None)
    return run_dir


def _copy(finished, tmp_path) -> str:
    run_dir = str(tmp_path / "run")
    shutil.copytree(finished, run_dir, ignore=shutil.ignore_patterns(".lock"))
    return run_dir


def _resume(run_dir, trials=4, logs=None) -> dict:
    cfg = config_lib.for_resume(run_dir, None, [f"optimize.trials={trials}"], "optimize")
    return api.run_optimize(cfg, run_dir, log=(logs.append if logs is not None else lambda m: None), resume=True)


def _kept_and_grown(before, run_dir, trials=4):
    after = _records(run_dir)
    assert after[:len(before)] == before  # every finished trial kept exactly, none redone
    assert len(after) == trials and [r["trial"] for r in after] == list(range(trials))
    assert all(s == "COMPLETE" or s == "PRUNED" for s in _db_states(run_dir).values())


@pytest.mark.parametrize("damage", ["deleted", "empty", "truncated"])
def test_a_lost_or_damaged_study_db_is_rebuilt_from_trials_jsonl(finished, tmp_path, damage):
    run_dir = _copy(finished, tmp_path)
    before = _records(run_dir)
    db = os.path.join(run_dir, "study.db")
    if damage == "deleted":
        os.remove(db)
    elif damage == "empty":
        open(db, "w").close()
    else:
        size = os.path.getsize(db)
        with open(db, "r+b") as f:
            f.truncate(size // 2)
    logs = []
    _resume(run_dir, logs=logs)
    _kept_and_grown(before, run_dir)
    assert any("added back" in m for m in logs), logs
    if damage == "truncated":  # the damaged file is set aside, not deleted
        assert [f for f in os.listdir(run_dir) if f.startswith("study.db.damaged-")]


def test_a_lost_trials_jsonl_is_rewritten_from_the_database(finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    before = _records(run_dir)
    os.remove(os.path.join(run_dir, "trials.jsonl"))
    _resume(run_dir)
    _kept_and_grown(before, run_dir)


def test_a_cut_last_line_of_trials_jsonl_is_read_back_from_the_database(finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    before = _records(run_dir)
    path = os.path.join(run_dir, "trials.jsonl")
    text = open(path).read()
    open(path, "w").write(text[:-40])  # a kill in the middle of the last append
    _resume(run_dir)
    _kept_and_grown(before, run_dir)


def test_a_damaged_database_without_trials_jsonl_is_one_line_and_changes_nothing(finished, tmp_path, capsys):
    run_dir = _copy(finished, tmp_path)
    db = os.path.join(run_dir, "study.db")
    with open(db, "r+b") as f:
        f.truncate(os.path.getsize(db) // 2)
    os.remove(os.path.join(run_dir, "trials.jsonl"))
    damaged = open(db, "rb").read()
    assert cli.main(["optimize", "--resume", run_dir]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is damaged" in err and "holds no finished trial" in err, err
    assert open(db, "rb").read() == damaged  # left as it was, for the user to restore or inspect
    assert not [f for f in os.listdir(run_dir) if f.startswith(("study.db.", "trials.jsonl"))]


def test_records_that_disagree_are_refused_not_merged(finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    path = os.path.join(run_dir, "trials.jsonl")
    records = _records(run_dir)
    records[1]["seed"] += 1
    open(path, "w").writelines(json.dumps(r, sort_keys=True) + "\n" for r in records)
    with pytest.raises(JaxnasError, match="record trial 1 differently"):
        _resume(run_dir)


def _edit_config(finished, tmp_path, group: str, field: str, value) -> str:
    """A copy of the finished run whose config.json was edited by hand: ``optimize.<group>.<field>``."""
    run_dir = _copy(finished, tmp_path)
    path = os.path.join(run_dir, "config.json")
    cfg = json.load(open(path))
    cfg["optimize"][group][field] = value
    json.dump(cfg, open(path, "w"))
    return run_dir


def test_a_study_drawn_from_other_distributions_is_refused_on_resume(finished, tmp_path):
    run_dir = _edit_config(finished, tmp_path, "hparams", "lr", "log:1e-5:1e-4")
    with pytest.raises(JaxnasError, match="cannot change on resume"):
        _resume(run_dir)


def test_a_hand_edited_baseline_is_refused_on_resume(finished, tmp_path):
    run_dir = _edit_config(finished, tmp_path, "baseline", "epochs", 7)
    with pytest.raises(JaxnasError, match=r"other hyperparameters than the run's config \(optimize.baseline.epochs\)"):
        _resume(run_dir)


def test_a_second_process_on_the_same_run_is_one_line_naming_the_holder(finished, tmp_path, capsys):
    run_dir = _copy(finished, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from jaxnas import rundir
        rundir.lock({run_dir!r})
        print("held", flush=True)
        time.sleep(120)
        """)], stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    try:
        assert holder.stdout.readline().strip() == "held"
        before = open(os.path.join(run_dir, "trials.jsonl")).read()
        assert cli.main(["optimize", "--resume", run_dir]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"is in use by pid {holder.pid}" in err, err
        assert open(os.path.join(run_dir, "trials.jsonl")).read() == before
    finally:
        holder.kill()
        holder.wait()
    rundir.lock(run_dir)  # the holder is gone: its lock went with it
    rundir.unlock(run_dir)


def test_a_running_trial_with_its_record_counts_as_finished(finished, tmp_path):
    """The process died (or the disk filled) between writing a trial's record and telling Optuna."""
    run_dir = _copy(finished, tmp_path)
    before = _records(run_dir)
    storage = optuna.storages.RDBStorage(f"sqlite:///{run_dir}/study.db")
    study = optuna.load_study(study_name="jaxnas-optimize", storage=storage)
    last = study.trials[-1]
    # rewind the last trial to RUNNING, as it was before study.tell
    with storage.scoped_session() as session:
        from optuna.storages._rdb import models

        row = session.query(models.TrialModel).filter_by(number=last.number).one()
        row.state = optuna.trial.TrialState.RUNNING
        session.query(models.TrialValueModel).filter_by(trial_id=row.trial_id).delete()
    storage.engine.dispose()
    _resume(run_dir)
    _kept_and_grown(before, run_dir)


DISK_SCRIPT = r"""
set -u
mount -t tmpfs -o size={size}k tmpfs "$DISK" || exit 77
cd "$WORK"
"$PY" -m jaxnas optimize {args} --config.run.workdir="$DISK" --config.run.name=r >"$WORK/first.out" 2>"$WORK/first.err"
echo $? > "$WORK/first.rc"
cp "$DISK/r/trials.jsonl" "$WORK/before.jsonl" 2>/dev/null
ls -a "$DISK" > "$WORK/listing"
mount -o remount,size=64m "$DISK"
"$PY" -m jaxnas optimize --resume "$DISK/r" >"$WORK/second.out" 2>"$WORK/second.err"
echo $? > "$WORK/second.rc"
cp "$DISK/r/trials.jsonl" "$WORK/after.jsonl" 2>/dev/null
"""


SIMULATED_DISK = r"""
import errno, os, sys
from jaxnas import cli
trials = os.path.join(sys.argv[1], "r", "trials.jsonl")
real_fsync = os.fsync


def fsync(fd):  # the disk fills once three trials are recorded: every later atomic write fails
    if os.path.exists(trials) and sum(1 for _ in open(trials)) >= 3:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_fsync(fd)


os.fsync = fsync
sys.exit(cli.main(sys.argv[2:]))
"""


def _full_disk_on_tmpfs(args: str, disk, work) -> bool:
    """A real full disk: a small tmpfs in a private mount namespace (``unshare``, root or a user
    namespace). False where such a mount cannot be made here."""
    if shutil.which("unshare") is None or os.environ.get("JAXNAS_TEST_SIMULATED_DISK"):
        return False
    # measured: 180 KB fills before the first trial, 200 KB during the study, 230 KB at the plots
    script = DISK_SCRIPT.format(size=200, args=args)
    prefix = ["unshare", "--mount", "--propagation", "private"] if os.geteuid() == 0 else \
        ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"]
    out = subprocess.run(prefix + ["bash", "-c", script], env=dict(os.environ, DISK=str(disk), WORK=str(work),
                                                                 PY=sys.executable, PYTHONPATH=os.getcwd()),
                         capture_output=True, text=True, timeout=900)
    return out.returncode != 77 and (work / "first.rc").exists()


def _full_disk_simulated(args: list[str], disk, work) -> None:
    """Where no tmpfs can be mounted: the same run with ENOSPC raised by every atomic write
    (``rundir``'s fsync) once three trials are recorded, then the resume on a disk with room."""
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    first = subprocess.run([sys.executable, "-c", SIMULATED_DISK, str(disk), "optimize", *args,
                            f"--config.run.workdir={disk}", "--config.run.name=r"],
                           capture_output=True, text=True, timeout=900, env=env, cwd=work)
    (work / "first.rc").write_text(str(first.returncode))
    (work / "first.err").write_text(first.stderr)
    shutil.copy(disk / "r" / "trials.jsonl", work / "before.jsonl")
    second = subprocess.run([sys.executable, "-m", "jaxnas", "optimize", "--resume", str(disk / "r")],
                            capture_output=True, text=True, timeout=900, env=env, cwd=work)
    (work / "second.rc").write_text(str(second.returncode))
    (work / "second.err").write_text(second.stderr)
    shutil.copy(disk / "r" / "trials.jsonl", work / "after.jsonl")


def test_a_full_disk_is_one_line_and_resume_goes_on_with_every_finished_trial(tmp_path):
    """A full disk in the middle of a study: one line, exit 2, and the resume keeps every finished
    trial. On a real tmpfs where one can be mounted, else with ENOSPC from the run's own writes."""
    args = ARGS + ["--config.optimize.trials=6"]
    disk, work = tmp_path / "disk", tmp_path / "work"
    disk.mkdir()
    work.mkdir()
    if not _full_disk_on_tmpfs(" ".join(args), disk, work):
        _full_disk_simulated(args, disk, work)
    first_rc = int((work / "first.rc").read_text())
    first_err = (work / "first.err").read_text()
    assert first_rc == 2, (first_rc, first_err[-2000:])
    assert first_err.count("\n") == 1 and "the disk is full" in first_err and "--resume" in first_err, first_err
    second_rc = int((work / "second.rc").read_text())
    assert second_rc == 0, (work / "second.err").read_text()[-3000:]
    after = [json.loads(line) for line in (work / "after.jsonl").read_text().splitlines()]
    before = [json.loads(line) for line in (work / "before.jsonl").read_text().splitlines()] \
        if (work / "before.jsonl").exists() else []
    assert after[:len(before)] == before and len(after) >= 6
    assert sum(r["state"] != "failed" or "retry_of" in r for r in after) >= 6
