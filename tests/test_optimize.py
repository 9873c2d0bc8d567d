"""Dataset optimization: the split, the statistics, the search space, the models, the workflow
(test split read once per model and seed, pruned trials, resume after SIGKILL) and bad data."""

import json
import os
import signal
import subprocess
import sys
import time

import hypothesis
import hypothesis.strategies as st
import numpy as np
import optuna
import pytest

from jaxnas import api, cli, config, rundir
from jaxnas.errors import JaxnasError
from jaxnas.optimize import hpspace, model_spec, models, stats, study, workflow
from jaxnas.optimize import split as split_lib


def _pool(n_per_class=(30, 20, 10), test=None, seed=0):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.full(n, c) for c, n in enumerate(n_per_class)]).astype(np.int32)
    x = rng.random((len(y), 8, 8, 1)).astype(np.float32)
    if test is None:
        return split_lib.pool_from_arrays("t", x, y)
    yt = np.arange(test) % len(n_per_class)
    return split_lib.pool_from_arrays("t", x, y, rng.random((test, 8, 8, 1)).astype(np.float32), yt)


# --- the split --------------------------------------------------------------------------------------

def test_split_is_stratified_disjoint_complete_and_reproducible_from_its_seed():
    pool = _pool((40, 20, 10))
    s = split_lib.stratified_split(pool, 0.2, 0.1, seed=3)
    parts = [s.train, s.val, s.test]
    assert sum(map(len, parts)) == len(pool.y_train)
    assert len(set(np.concatenate(parts))) == len(pool.y_train)  # disjoint and covering
    assert s.test_source == "drawn"
    for c, n in enumerate((40, 20, 10)):  # per class: round(n * fraction), at least 1
        assert (pool.y_train[s.test] == c).sum() == max(1, round(n * 0.1))
        assert (pool.y_train[s.val] == c).sum() == max(1, round(n * 0.2))
    again = split_lib.stratified_split(pool, 0.2, 0.1, seed=3)
    assert again.digest() == s.digest()
    assert split_lib.stratified_split(pool, 0.2, 0.1, seed=4).digest() != s.digest()


def test_a_dataset_with_its_own_test_split_keeps_it_and_draws_only_train_and_val(tmp_path):
    pool = _pool((12, 12), test=7)
    s = split_lib.stratified_split(pool, 0.25, 0.3, seed=0)
    assert s.test_source == "dataset"
    np.testing.assert_array_equal(s.test, np.arange(7))
    assert len(s.train) + len(s.val) == 24 and (pool.y_train[s.val] == 0).sum() == 3
    split_lib.save(s, pool, str(tmp_path / "split.json"), (0.25, 0.3))
    saved = json.loads((tmp_path / "split.json").read_text())
    assert saved["indices"]["val"] == s.val.tolist() and saved["split_sha256"] == s.digest()
    assert saved["class_counts"]["test"] == [4, 3]


# --- the statistics, against hand-computed values ---------------------------------------------------

def test_mcnemar_exact_p_values_by_hand():
    y = np.zeros(10, int)
    a = np.array([0, 1, 1, 1, 1, 1, 1, 0, 0, 0])  # wrong on 6
    b = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 0])  # wrong on 1
    r = stats.mcnemar(y, a, b)
    assert (r["only_a"], r["only_b"]) == (1, 6)
    assert r["p_value"] == pytest.approx(2 * (1 + 7) / 2 ** 7)  # 2 P(X <= 1), X ~ Bin(7, 1/2) = 0.125
    assert stats.mcnemar(y, b, b)["p_value"] == 1.0


def test_paired_bootstrap_interval_matches_the_binomial_quantiles():
    # 10 examples only B gets right, 10 both get right: the resampled difference is K/20 with
    # K ~ Binomial(20, 1/2); P(K <= 5) = 0.0207 < 0.025 < P(K <= 6) = 0.0577, so the 95% percentile
    # interval is [6/20, 14/20].
    y = np.zeros(20, int)
    a = np.r_[np.ones(10, int), np.zeros(10, int)]
    b = np.zeros(20, int)
    r = stats.paired_bootstrap(y, a, b, 2, "accuracy", resamples=20000, seed=1)
    assert r["difference"] == 0.5
    assert (r["low"], r["high"]) == (pytest.approx(0.30), pytest.approx(0.70))
    f = stats.paired_bootstrap(y, a, b, 2, "macro_f1", resamples=200, seed=1)
    assert f["low"] <= f["difference"] <= f["high"]


def test_several_seeds_report_the_mean_paired_difference_and_resample_the_seeds():
    # seed 1: B right on every example, A on none (difference +1); seed 2: identical models (0). The
    # mean is +0.5. Per-seed differences do not depend on which examples are drawn, so a resample is
    # (c1 * 1 + c2 * 0) / 2 with c1 ~ Binomial(2, 1/2): 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4; its
    # 95% interval is [0, 1] and its 40% one [0.5, 0.5]. A bootstrap over examples alone would give [0.5, 0.5].
    y = np.zeros(50, int)
    a = np.stack([np.ones(50, int), np.zeros(50, int)])
    b = np.stack([np.zeros(50, int), np.zeros(50, int)])
    r = stats.paired_bootstrap(y, a, b, 2, "accuracy", resamples=4000, seed=0)
    assert r["difference"] == 0.5 and r["per_seed"] == [1.0, 0.0] and r["seeds"] == 2
    assert (r["low"], r["high"]) == (0.0, 1.0)
    narrow = stats.paired_bootstrap(y, a, b, 2, "accuracy", resamples=4000, confidence=0.4, seed=0)
    assert (narrow["low"], narrow["high"]) == (0.5, 0.5)
    f = stats.paired_bootstrap(y, a, b, 2, "macro_f1", resamples=400, seed=0)
    assert f["per_seed"][1] == 0.0 and f["low"] == 0.0 and f["difference"] == pytest.approx(f["per_seed"][0] / 2)


def test_seed_resampling_widens_the_interval_only_when_seeds_disagree():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 300)
    a = np.where(rng.random(300) < 0.7, y, (y + 1) % 3)
    b = np.where(rng.random(300) < 0.8, y, (y + 2) % 3)
    one = stats.paired_bootstrap(y, a, b, 3, "accuracy", resamples=4000, seed=1)
    same = stats.paired_bootstrap(y, np.stack([a, a, a]), np.stack([b, b, b]), 3, "accuracy", resamples=4000, seed=1)
    assert same["difference"] == pytest.approx(one["difference"])
    assert same["low"] == pytest.approx(one["low"], abs=0.01) and same["high"] == pytest.approx(one["high"], abs=0.01)
    b2 = np.where(rng.random(300) < 0.6, y, (y + 2) % 3)  # a second seed far worse: more spread
    apart = stats.paired_bootstrap(y, np.stack([a, a]), np.stack([b, b2]), 3, "accuracy", resamples=4000, seed=1)
    assert apart["high"] - apart["low"] > 1.5 * (one["high"] - one["low"])


def test_resampled_macro_f1_equals_the_metric_on_the_repeated_examples():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 80), rng.integers(0, 4, 80)
    p[y == 3] = 0  # a class never predicted
    counts = rng.multinomial(80, np.full(80, 1 / 80))
    repeated = np.repeat(np.arange(80), counts)
    assert stats._macro_f1_counts(y, p, counts.astype(float), 4) == pytest.approx(
        stats.macro_f1(y[repeated], p[repeated], 4))


# --- the declared search space ----------------------------------------------------------------------

def test_hyperparameter_groups_order_by_condition_and_a_condition_gates_its_search():
    H = hpspace
    hparams = {"momentum": H.uniform(0.8, 0.99, when={"optimizer": "sgd"}), "optimizer": H.choice("sgd", "adamw"),
               "lr": H.log_uniform(1e-4, 0.3), "epochs": H.not_searched(), "model": H.choice("cnn", "cnn:8,16")}
    params = hpspace.params(hparams)
    assert [p.name for p in params] == ["optimizer", "lr", "model", "momentum"]
    assert params[2].choices == ("cnn", "cnn:8,16")
    fixed = {"momentum": 0.9, "epochs": 7}
    hp = hpspace.suggest(optuna.trial.FixedTrial({"optimizer": "adamw", "lr": 0.01, "model": "cnn"}), params, fixed)
    assert hp == {"optimizer": "adamw", "lr": 0.01, "momentum": 0.9, "epochs": 7, "model": "cnn"}
    hp = hpspace.suggest(optuna.trial.FixedTrial({"optimizer": "sgd", "lr": 0.01, "momentum": 0.85,
                                                  "model": "cnn"}), params, fixed)
    assert hp["momentum"] == 0.85
    with pytest.raises(JaxnasError, match="not searched"):
        hpspace.params({"momentum": H.uniform(0.8, 0.9, when={"optimizer": "sgd"})})
    with pytest.raises(JaxnasError, match="can never hold"):
        hpspace.params({"optimizer": H.choice("adamw"), "momentum": H.uniform(0.8, 0.9, when={"optimizer": "sgd"})})
    with pytest.raises(JaxnasError, match="cycle"):
        hpspace.params({"a": H.choice(1, 2, when={"b": 1}), "b": H.choice(1, 2, when={"a": 1})})


def test_the_short_form_is_parsed_once_into_the_group_a_python_config_writes():
    H = hpspace
    for text, group in [("log:1e-4:0.3", H.log_uniform(1e-4, 0.3)), ("float:0:0.2", H.uniform(0, 0.2)),
                        ("int:5:30", H.integer(5, 30)), ("logint:16:256", H.integer(16, 256, log=True)),
                        ("choice:sgd,adamw", H.choice("sgd", "adamw")), ("choice:32,64", H.choice(32, 64)),
                        ("choice:cnn:4,8|cnn:8", H.choice("cnn:4,8", "cnn:8")), ("", H.not_searched()),
                        ("float:0.8:0.99 if optimizer=sgd", H.uniform(0.8, 0.99, when={"optimizer": "sgd"})),
                        ("float:0:1 if batch_size=64", H.uniform(0, 1, when={"batch_size": 64}))]:
        parsed = H.parse(text, "f")
        assert parsed.to_dict() == H.check(group, "f").to_dict(), text
        assert H.parse(H.describe(parsed).strip("'"), "f").to_dict() == parsed.to_dict()
    for spec in ("log:0:1", "uniform:1:2", "int:1.5:3", "float:2:1", "choice:", "log:1e-3 if x", "choice:1,1"):
        with pytest.raises(JaxnasError, match="optimize.hparams.lr"):
            H.parse(spec, "optimize.hparams.lr")
    for bad, match in [(dict(kind="log", low=1, high=2, step=1), "unknown field"), (dict(kind="beta"), "allowed"),
                       (dict(kind="float", low=float("nan"), high=1.0), "finite"),
                       (dict(kind="none", when={"optimizer": "sgd"}), "no condition"),
                       (dict(kind="float", low=0, high=1, choices=[1]), "kind=choice"), ("log:2:1", "low < high")]:
        with pytest.raises(JaxnasError, match=match):
            H.check(bad, "optimize.hparams.lr")
    # a config's groups: the command line's short form, a field inside a group, and a JSON round trip
    cfg = config.apply_overrides(api.load_config(None, kind="optimize"),
                                 ["optimize.hparams.lr=log:1e-4:0.1 if optimizer=sgd", "optimize.hparams.epochs.high=9"])
    assert cfg.optimize.hparams.lr.to_dict() == H.log_uniform(1e-4, 0.1, when={"optimizer": "sgd"}).to_dict()
    assert (cfg.optimize.hparams.epochs.low, cfg.optimize.hparams.epochs.high) == (5.0, 9.0)
    back = config.from_dict(json.loads(config.to_json(cfg)), "optimize")
    assert config.flatten(back) == config.flatten(cfg)
    with pytest.raises(JaxnasError, match="optimize.hparams.epochs: needs low < high"):
        config.apply_overrides(cfg, ["optimize.hparams.epochs.high=2"])


@pytest.mark.parametrize("space, arch", [("chain", "conv3x3-32 > maxpool > conv3x3-16 > maxpool"),
                                         ("nb201", "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|"
                                                   "nor_conv_1x1~1|skip_connect~2|")])
def test_an_architecture_is_drawn_decision_by_decision_and_a_warm_start_draws_it_back(space, arch):
    from jaxnas.config import space_group
    from jaxnas.optimize import study
    from jaxnas.spaces import discrete_space

    d = discrete_space(space_group(space), (8, 8, 1))
    params = study.arch_params(d, arch)
    assert d.encode(study.suggest_arch(optuna.trial.FixedTrial(params), d)) == d.encode(d.decode(arch))
    drawn = study.suggest_arch(optuna.trial.FixedTrial(params), d)
    assert len(params) == d.num_decisions(drawn) and d.encode(drawn) == d.encode(d.decode(arch))
    if space == "chain":
        with pytest.raises(JaxnasError, match="decision 2 is 'conv3x3-64'"):
            study.arch_params(d, "conv3x3-32 > maxpool > conv3x3-64")


@hypothesis.given(st.one_of(st.text(max_size=40), st.builds(
    lambda kind, a, b, cond: f"{kind}:{a}:{b}{cond}", st.sampled_from(hpspace.KINDS + ("x",)),
    st.one_of(st.floats(allow_nan=True), st.text(max_size=4)), st.one_of(st.integers(), st.floats(), st.text(max_size=4)),
    st.sampled_from(["", " if optimizer=sgd", " if", " if =", " if a=b"]))))
@hypothesis.settings(max_examples=int(os.environ.get("JAXNAS_HYPOTHESIS_EXAMPLES", "200")), deadline=None,
                     derandomize=True, database=None)
def test_any_hyperparameter_spec_is_parsed_or_refused_with_one_line(spec):
    # a spec is accepted only if every value it can draw is one the trainer takes; anything else is a
    # JaxnasError (one line), never another exception
    cfg = api.load_config(None, kind="optimize")
    try:
        cfg = config.apply_overrides(cfg, [f"optimize.hparams.lr={spec}"])
        params = study.check(cfg.optimize)
    except JaxnasError as e:
        assert "\n" not in str(e)
        return
    lr = next((p for p in params if p.name == "lr"), None)
    if lr is not None and lr.kind != "choice":
        assert 0 < lr.low < lr.high < float("inf")

def test_the_plain_cnn_has_the_hand_counted_parameters():
    from flax import nnx

    from jaxnas.nn import count_params

    cfg = api.load_config(None, kind="optimize")
    m = models.build("cnn", (8, 8, 1), 10, nnx.Rngs(0), cfg)
    # conv 3x3x1x32 + 32, conv 3x3x32x64 + 64, linear (2*2*64) x 10 + 10
    assert count_params(m) == (9 * 32 + 32) + (9 * 32 * 64 + 64) + (256 * 10 + 10)
    with pytest.raises(JaxnasError, match="unknown model"):
        models.build("vgg16", (8, 8, 1), 10, nnx.Rngs(0), cfg)


def test_a_model_is_a_name_and_an_argument_and_a_drawn_architecture_is_never_decoded_again():
    from flax import nnx

    from jaxnas.config import space_group
    from jaxnas.nn import count_params
    from jaxnas.spaces import discrete_space

    assert model_spec.parse("cnn:32, 64", "f").to_dict() == {"name": "cnn", "arg": "32, 64"}
    assert str(model_spec.of(model_spec.group("genotype", "DARTS_V2"))) == "genotype:DARTS_V2"
    assert str(model_spec.of({"name": "cnn", "arg": ""})) == "cnn"
    for bad in ({"name": ""}, {"name": "cnn", "arg": 3}, {"name": "cnn", "width": 3}, 5):
        with pytest.raises(JaxnasError, match="optimize.baseline.model"):
            model_spec.check(bad, "optimize.baseline.model")
    cfg = config.apply_overrides(api.load_config(None, kind="optimize"), ["optimize.baseline.model=cnn:4,8"])
    assert cfg.optimize.baseline.model.to_dict() == {"name": "cnn", "arg": "4,8"}
    assert workflow.baseline_hparams(cfg)["model"] == "cnn:4,8"  # recorded in its short form
    space = discrete_space(space_group("chain"), (8, 8, 1))
    arch = space.decode("conv3x3-32 > maxpool")
    # the architecture object is what is built: the text beside it is only the record's
    m = models.build(model_spec.Spec("chain", "not an architecture", arch), (8, 8, 1), 10, nnx.Rngs(0), cfg)
    ref = models.build("chain:conv3x3-32 > maxpool", (8, 8, 1), 10, nnx.Rngs(0), cfg)
    assert count_params(m) == count_params(ref)
    with pytest.raises(JaxnasError, match="chain"):
        models.build(model_spec.Spec("chain", "not an architecture"), (8, 8, 1), 10, nnx.Rngs(0), cfg)


def test_search_overrides_are_a_group_checked_against_the_search_config_and_refused_unless_searching():
    cfg = config.apply_overrides(api.load_config(None, kind="optimize"),
                                 ["optimize.search_overrides=search.epochs=3; space.C=4"])
    assert cfg.optimize.search_overrides.to_dict() == {"search": {"epochs": "3"}, "space": {"C": "4"}}
    scfg = workflow.search_config(cfg, 10, 20)
    assert (scfg.search.epochs, scfg.space.C) == (3, 4)  # typed by the search config's fields
    cfg.optimize.search_overrides = config._check_search_overrides({"search": {"epochs": 2}}, "f")
    assert workflow.search_config(cfg, 10, 20).search.epochs == 2
    for text, match in (("search.epoks=3", "unknown config field 'search.epoks'"),
                        ("search.epochs=x", "must be an integer"), ("search.epochs=0", "must be >= 1")):
        cfg = config.apply_overrides(cfg, [f"optimize.search_overrides={text}"])
        with pytest.raises(JaxnasError, match=match):
            workflow.search_config(cfg, 10, 20)
    with pytest.raises(JaxnasError, match="must look like field.path=value"):
        config.apply_overrides(cfg, ["optimize.search_overrides=search.epochs"])
    with pytest.raises(JaxnasError, match="are for optimize.arch=search"):
        workflow.setup(cfg)  # optimize.arch=space: the overrides would be silently unused


def test_a_registered_model_is_built_from_its_spec():
    from flax import nnx

    from jaxnas.nn import count_params

    @models.register_model("test_mlp")
    def _mlp(arg, in_shape, num_classes, rngs, cfg):
        return nnx.Sequential(lambda x: x.reshape(x.shape[0], -1),
                              nnx.Linear(int(np.prod(in_shape)), int(arg or 8), rngs=rngs),
                              nnx.Linear(int(arg or 8), num_classes, rngs=rngs))

    try:
        m = models.build("test_mlp:5", (8, 8, 1), 10, nnx.Rngs(0), api.load_config(None, kind="optimize"))
        assert count_params(m) == (64 * 5 + 5) + (5 * 10 + 10)
    finally:
        del models.MODELS["test_mlp"]


# --- the workflow -----------------------------------------------------------------------------------

def _tiny(tmp_path, **over):
    cfg = api.load_config(None, kind="optimize")
    cfg.optimize.arch = "fixed"
    cfg.optimize.baseline.model, cfg.optimize.baseline.epochs = model_spec.group("cnn", "4,8"), 2
    cfg.optimize.hparams.model = hpspace.choice("cnn:4,8", "cnn:8")
    cfg.optimize.hparams.epochs = hpspace.integer(1, 2)
    cfg.optimize.hparams.batch_size = hpspace.choice(64)
    cfg.optimize.hparams.augment = hpspace.choice("none", "crop_cutout")
    cfg.optimize.trials, cfg.optimize.startup_trials, cfg.optimize.min_epochs = 4, 2, 1
    cfg.compare.resamples = 200
    cfg.run.workdir = str(tmp_path)
    return config.set_fields(cfg, list(over.items()))
    return cfg


def test_the_workflow_reads_the_test_split_once_per_model_and_seed_and_records_pruned_trials(tmp_path, monkeypatch):
    calls = []
    real = workflow.TestSplit.predict
    monkeypatch.setattr(workflow.TestSplit, "predict", lambda self, name, f: calls.append(name) or real(self, name, f))
    cfg = _tiny(tmp_path, **{"compare.seeds": 2, "optimize.pruner": "median", "optimize.startup_trials": 1,
                             "optimize.hparams.lr": hpspace.choice(0.001, 1e-9), "optimize.trials": 5, "run.name": "run"})
    run_dir = rundir.create(cfg, "optimize")
    report = api.run_optimize(cfg, run_dir, log=lambda m: None)
    assert sorted(c.rsplit("-", 1)[0] for c in calls) == ["baseline-seed1000", "baseline-seed2000",
                                                         "optimized-seed1000", "optimized-seed2000"]
    assert report["test_accesses_this_process"] == {c: 1 for c in calls}
    assert report["test_predictions"] == sorted(calls)
    records = [json.loads(line) for line in open(os.path.join(run_dir, "trials.jsonl"))]
    assert [r["trial"] for r in records] == list(range(5))
    assert records[0]["params"]["lr"] == 0.001  # the first trial is the baseline's hyperparameters
    tiny_lr = [r for r in records if r["params"]["lr"] == 1e-9]
    assert tiny_lr and all(r["state"] == "pruned" and r["epochs_run"] == 1 for r in tiny_lr)
    study = optuna.load_study(study_name="jaxnas-optimize", storage=f"sqlite:///{run_dir}/study.db")
    assert {t.number: t.state.name.lower() for t in study.trials} == {r["trial"]: r["state"] for r in records}
    assert report["optimized"]["val"] == max(r["value"] for r in records if r["state"] == "complete")
    assert len(report["baseline"]["over_seeds"]["seeds"]) == 2
    diff = report["difference"]["accuracy"]
    finals = {n: sorted((json.load(open(os.path.join(run_dir, "final", f))) for f in os.listdir(
        os.path.join(run_dir, "final")) if f.startswith(n)), key=lambda r: r["seed"]) for n in ("baseline", "optimized")}
    per_seed = [o["test"]["accuracy"] - b["test"]["accuracy"] for b, o in zip(finals["baseline"], finals["optimized"])]
    assert diff["seeds"] == 2 and diff["per_seed"] == pytest.approx(per_seed)
    assert diff["difference"] == pytest.approx(np.mean(per_seed)) and diff["low"] <= diff["difference"] <= diff["high"]
    assert len(report["difference"]["mcnemar_per_seed"]) == 2
    for name in ("report.json", "report.md", "split.json", "plots/anytime.png", "plots/confusion.png",
                 "plots/per_class_f1.png"):
        assert os.path.exists(os.path.join(run_dir, name)), name
    from jaxnas import plot

    assert len(plot.plot_run(run_dir, str(tmp_path / "redrawn"))) == 3  # jaxnas plot on an optimize run
    with pytest.raises(RuntimeError, match="already used"):
        t = workflow.TestSplit(np.zeros((2, 8, 8, 1)), np.zeros(2, int))
        t.accesses["x"] += 1
        t.predict("x", None)


def test_tune_by_gradient_on_noisy_labels_reports_what_was_learned(tmp_path):
    cfg = _tiny(tmp_path, **{"optimize.tune": "gradient", "optimize.hyper.method": "hypergrad",
                             "optimize.hyper.learn": "example_weights,weight_decay", "compare.refit": "train",
                             "data.corrupt.kind": "symmetric", "data.corrupt.rate": 0.3, "run.name": "g"})
    run_dir = rundir.create(cfg, "optimize")
    report = api.run_optimize(cfg, run_dir, log=lambda m: None)
    saved = json.load(open(os.path.join(run_dir, "split.json")))
    pool = split_lib.load_pool("digits")
    wrong = np.asarray(saved["corruption"]["wrong_indices"])
    assert saved["corruption"]["kind"] == "symmetric" and len(wrong) == saved["corruption"]["wrong_labels"] > 0
    assert not set(wrong) & set(saved["indices"]["test"])  # the test labels are never corrupted
    assert set(wrong) <= set(saved["indices"]["train"])     # nor val (data.corrupt.val is off)
    assert np.array_equal(pool.y_train[wrong], saved["corruption"]["original_labels"])
    assert report["tune"] == "gradient" and report["study"]["trials"] == 0
    assert report["corruption"]["wrong_labels"] == len(wrong) and "wrong_indices" not in report["corruption"]
    h = report["optimized"]["hyper"]
    assert h["method"] == "hypergrad" and 0.0 <= h["weights"]["auroc_clean"] <= 1.0
    assert len(h["auroc_by_epoch"]) == 2 and "weight_decay" in h["values"]
    assert "hyper" not in report["baseline"]
    assert "learned by hypergrad" in open(os.path.join(run_dir, "report.md")).read()
    lines = [json.loads(line) for line in open(os.path.join(run_dir, "hyper-optimized-seed1000.jsonl"))]
    assert [r["epoch"] for r in lines] == [1, 2] and "auroc_clean" in lines[-1]["weights"]
    from test_search import read_tensorboard  # tests/ is on sys.path (pytest rootdir conftest)

    tb = read_tensorboard(os.path.join(run_dir, "tb", "hyper-optimized-seed1000"))
    assert [v for _, v in tb["weights/auroc_clean"]] == pytest.approx([r["weights"]["auroc_clean"] for r in lines])
    assert [s for s, _ in tb["hyper/weight_decay"]] == [1, 2]
    assert os.path.exists(os.path.join(run_dir, "plots", "weights.png"))
    from jaxnas import plot

    assert len(plot.plot_run(run_dir, str(tmp_path / "redrawn"))) == 4


def test_tune_by_gradient_needs_the_validation_split_as_meta_data(tmp_path):
    cfg = _tiny(tmp_path, **{"optimize.tune": "gradient"})
    with pytest.raises(JaxnasError, match="set compare.refit=train"):
        api.check_optimize(cfg)


def test_the_oracle_needs_label_noise(tmp_path, capsys):
    code = cli.main(["optimize", "--check", "--config.optimize.tune=gradient", "--config.compare.refit=train",
                     "--config.optimize.hyper.method=oracle", "--config.data.corrupt.kind=longtail",
                     "--config.data.corrupt.factor=10", f"--config.run.workdir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and "method=oracle" in err and "got 'longtail'" in err and err.count("\n") == 1, err


def test_run_optimize_takes_in_memory_arrays(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    x = (rng.random((120, 8, 8)) * 0.2 + (y[:, None, None] == np.arange(8)[None, :, None]) * 0.8).astype(np.float32)
    cfg = _tiny(tmp_path, **{"optimize.trials": 2})
    report = api.run_optimize(cfg, data={"x": x, "y": y}, log=lambda m: None)
    assert report["dataset"] == "arrays" and report["num_classes"] == 3
    assert report["split"]["test"] == 18 and report["baseline"]["test"]["accuracy"] > 0.5


def test_an_architecture_search_on_train_and_val_then_hyperparameters_for_what_it_found(tmp_path, monkeypatch):
    cfg = _tiny(tmp_path, **{"optimize.arch": "search", "optimize.trials": 2, "optimize.model.C": 4,
                             "optimize.model.layers": 2, "optimize.hparams.model": "",
                             "optimize.search_overrides": "space.C=4;space.layers=1;space.nodes=2;"
                             "space.allow_no_normal_cell=true;space.ops=none,skip_connect,sep_conv_3x3;"
                             "search.epochs=1;search.batch_size=32;run.log_every=1000"})
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    from jaxnas.optimize import workflow

    handed = []
    real = workflow.get_strategy

    def spy(name):
        strategy = real(name)
        return lambda *a, **k: handed.append(k["data"]) or strategy(*a, **k)

    monkeypatch.setattr(workflow, "get_strategy", spy)
    report = api.run_optimize(cfg, run_dir, log=lambda m: None)
    found = f"genotype:{run_dir}/arch_search/genotype.json"
    assert json.load(open(os.path.join(run_dir, "arch_search.json")))["model"] == found
    records = [json.loads(line) for line in open(os.path.join(run_dir, "trials.jsonl"))]
    assert {r["params"]["model"] for r in records} == {found} == {report["optimized"]["model"]}
    # the search saw train (its search-train split) and val (search-val) and nothing of the test split
    split = json.load(open(os.path.join(run_dir, "split.json")))["indices"]
    pool = split_lib.load_pool("digits")
    (data,) = handed  # in memory: no file of the arrays is written
    assert not os.path.exists(os.path.join(run_dir, "search_data.npz"))
    np.testing.assert_array_equal(data.dataset.x_train[data.train_idx], pool.x_train[split["train"]])
    np.testing.assert_array_equal(data.dataset.x_train[data.val_idx], pool.x_train[split["val"]])
    np.testing.assert_array_equal(data.dataset.x_test, pool.x_train[split["val"]])  # its "test" is our val, never our test


def test_a_trial_killed_mid_fit_goes_on_from_its_last_epoch_with_its_first_seed(tmp_path, monkeypatch):
    from jaxnas import config as config_lib
    from jaxnas.optimize import trainer

    over = {"optimize.hparams.epochs": hpspace.choice(3), "optimize.trials": 2, "optimize.pruner": "none"}
    ref_cfg = _tiny(tmp_path, **over, **{"run.name": "ref"})
    ref_dir = rundir.create(ref_cfg, "optimize")
    api.run_optimize(ref_cfg, ref_dir, log=lambda m: None)
    ref = [json.loads(line) for line in open(os.path.join(ref_dir, "trials.jsonl"))]

    class Killed(BaseException):
        pass

    real_end = trainer.Fit.end_epoch
    epochs_trained = []

    def end_epoch(self, epoch, gstep, seconds):
        real_end(self, epoch, gstep, seconds)  # writes the epoch's state, then reports it
        if self.on_epoch is not None:  # a trial's fit (the baseline's and final fits have none)
            epochs_trained.append((self.seed_of_trial, epoch + 1))
            if kill and self.seed_of_trial == cfg.seed + 2 and epoch + 1 == 2:
                raise Killed  # as SIGKILL in trial 1's third epoch: two epochs saved

    real_init = trainer.Fit.__init__

    def init(self, spec, hp, x, y, train_idx, num_classes, seed, *a, **k):
        self.seed_of_trial = seed
        real_init(self, spec, hp, x, y, train_idx, num_classes, seed, *a, **k)

    monkeypatch.setattr(trainer.Fit, "end_epoch", end_epoch)
    monkeypatch.setattr(trainer.Fit, "__init__", init)
    cfg, kill = _tiny(tmp_path, **over, **{"run.name": "cut"}), True
    run_dir = rundir.create(cfg, "optimize")
    with pytest.raises(Killed):
        api.run_optimize(cfg, run_dir, log=lambda m: None)
    assert os.listdir(os.path.join(run_dir, "trials")) == ["1.ckpt"]  # trial 0's state went with its record
    kill, epochs_trained[:] = False, []
    api.run_optimize(config_lib.for_resume(run_dir, None, [], "optimize"), run_dir, log=lambda m: None, resume=True)
    assert epochs_trained == [(cfg.seed + 2, 3)]  # only the epoch it had not finished
    after = [json.loads(line) for line in open(os.path.join(run_dir, "trials.jsonl"))]
    retry = after[-1]
    assert (retry["trial"], retry["retry_of"], retry["seed"]) == (2, 1, ref[1]["seed"])
    for k in ("value", "val_curve", "params", "epochs_run", "num_params"):
        assert retry[k] == ref[1][k], k  # as if it had never stopped
    assert os.listdir(os.path.join(run_dir, "trials")) == []


def _launch(args, cwd):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return subprocess.Popen([sys.executable, "-m", "jaxnas", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_killed_optimize_run_resumes_without_redoing_finished_trials(tmp_path):
    args = ["optimize", "--config.run.name=r", f"--config.run.workdir={tmp_path}", "--config.optimize.arch=fixed",
            "--config.optimize.baseline.model=cnn:4,8", "--config.optimize.baseline.epochs=2",
            "--config.optimize.hparams.epochs=int:2:3", "--config.optimize.hparams.model=choice:cnn:4,8|cnn:8",
            "--config.optimize.trials=5", "--config.compare.resamples=200"]
    run = tmp_path / "r"
    p = _launch(args, tmp_path)
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None:
        path = run / "trials.jsonl"
        if path.exists() and len(path.read_text().splitlines()) >= 2:
            break
        time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    before = [json.loads(line) for line in (run / "trials.jsonl").read_text().splitlines()]
    assert 2 <= len(before) < 5, before
    out = subprocess.run([sys.executable, "-m", "jaxnas", "optimize", "--resume", str(run)], cwd=tmp_path,
                         env=dict(os.environ, PYTHONPATH=os.getcwd()), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    after = [json.loads(line) for line in (run / "trials.jsonl").read_text().splitlines()]
    assert after[:len(before)] == before  # finished trials are kept as they were, not redone
    assert sum(r["state"] != "failed" or "retry_of" in r for r in after) == 5
    assert len({r["trial"] for r in after}) == len(after)
    assert "resuming after" in out.stdout and (run / "report.json").exists()


# --- bad data: one line, exit 2 ---------------------------------------------------------------------

@pytest.mark.parametrize("arrays, message", [
    (dict(x=np.zeros((5, 8, 8)), y=np.array([0, 0, 0, 1, 1])), "class 1 has 2 training example"),
    (dict(x=np.zeros((4, 8, 8)), y=np.zeros(5, int)), "4 images but 5 labels"),
    (dict(x=np.full((6, 8, 8), np.nan), y=np.array([0, 0, 0, 1, 1, 1])), "NaN or Inf"),
    (dict(x=np.zeros((6, 8, 8)), y=np.array([0, 0, 0, 1, 1, 7])), "label 7 is outside 0..2"),
])
def test_bad_data_is_one_line_and_exit_code_2(tmp_path, capsys, arrays, message):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    code = cli.main(["optimize", "--check", f"--config.data.name={path}", "--config.data.num_classes=3"
                     if "label 7" in message else "--config.data.num_classes=0"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
