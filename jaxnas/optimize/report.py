"""The comparison report of ``jaxnas optimize``: ``report.json``, ``report.md``, a printed table and plots
(the anytime curve, per-class F1 of both models, their confusion matrices)."""

from __future__ import annotations

import os

import numpy as np

from jaxnas import rundir


def _summary(runs: list[dict]) -> dict:
    acc = np.array([r["test"]["accuracy"] for r in runs])
    f1 = np.array([r["test"]["macro_f1"] for r in runs])
    out = {"accuracy_mean": float(acc.mean()), "accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
           "macro_f1_mean": float(f1.mean()), "macro_f1_std": float(f1.std(ddof=1)) if len(f1) > 1 else 0.0,
           "seeds": [r["seed"] for r in runs]}
    if "top5" in runs[0]["test"]:
        out["top5_mean"] = float(np.mean([r["test"]["top5"] for r in runs]))
    return out


def _model(runs: list[dict], val: float, extra: dict) -> dict:
    first = runs[0]
    return {**extra, "model": first["hparams"]["model"], "hparams": first["hparams"], "val": val,
            "test": {k: first["test"][k] for k in ("accuracy", "macro_f1", "f1", "confusion_matrix", "top5")
                     if k in first["test"]},
            "num_params": first["num_params"], "train_seconds": first["train_seconds"],
            "inference_ms_per_example": first["inference_ms_per_example"], "refit": first["refit"],
            "epochs_used": first["epochs_used"], "over_seeds": _summary(runs), **_learned(first)}


def _learned(first: dict) -> dict:
    """What ``optimize.hyper`` learned in the first seed's fit: the method, the last epoch's example-weight
    summary (with the AUROC against correct labels where the corruption is known) and the learned values."""
    if "hyper" not in first:
        return {}
    last = first["history"][-1] if first.get("history") else {}
    weights = {k: v for k, v in last.get("weights", {}).items() if not k.startswith("hist")}
    hist = last.get("weights", {})
    histogram = {k: hist[f"hist_{k}"] for k in ("edges", "clean", "noisy") if f"hist_{k}" in hist}
    return {"hyper": dict(first["hyper"], weights=weights, values=last.get("hyper", {}),
                          auroc_by_epoch=[h["weights"].get("auroc_clean") for h in first["history"] if "weights" in h],
                          weight_std_by_epoch=[h["weights"]["weight_std"] for h in first["history"] if "weights" in h],
                          values_by_epoch=[h["hyper"] for h in first["history"] if h.get("hyper")],
                          histogram=histogram)}


def build(cfg, pool, split, base_val: dict, result: dict, finals: dict, diff: dict, accesses: dict,
          reads: list[str], seconds: float, corruption: dict | None = None) -> dict:
    """The report; ``reads``: every test prediction the run ever made (model-seed-hyperparameter digest),
    ``accesses``: the ones made by this process."""
    records = result["records"]
    states = [r["state"] for r in records]
    acc = diff["accuracy"]
    better = acc["low"] > 0
    worse = acc["high"] < 0
    verdict = ("the optimized model is more accurate: the confidence interval of the difference excludes zero"
               if better else "the optimized model is less accurate: the interval lies below zero" if worse
               else "no significant difference in accuracy: the confidence interval includes zero")
    return {
        "dataset": pool.name, "num_classes": pool.num_classes, "image_shape": list(pool.image_shape),
        "split": {"train": len(split.train), "val": len(split.val), "test": len(split.test),
                  "test_source": split.test_source, "seed": split.seed, "sha256": split.digest()},
        "metric": cfg.optimize.metric, "tune": cfg.optimize.tune,
        "corruption": {k: v for k, v in (corruption or {"kind": "none"}).items()
                       if k not in ("wrong_indices", "original_labels")},
        "baseline": _model(finals["baseline"], base_val["val"], {"val_curve": base_val["val_curve"]}),
        "optimized": _model(finals["optimized"], result["best"]["value"], {"trial": result["best"]["trial"]}),
        "difference": diff, "verdict": verdict,
        "study": {"trials": len(records), "complete": states.count("complete"), "pruned": states.count("pruned"),
                  "failed": states.count("failed"), "seconds": round(result["seconds"], 1),
                  "anytime": _anytime(records)},
        "test_predictions": reads,
        "test_accesses_this_process": accesses, "seconds": round(seconds, 1),
    }


def _anytime(records: list[dict]) -> list[dict]:
    best, out = None, []
    for r in sorted(records, key=lambda r: r["elapsed"]):
        if r["state"] == "complete" and (best is None or r["value"] > best):
            best = r["value"]
        out.append({"trial": r["trial"], "elapsed": r["elapsed"], "value": r["value"], "best": best})
    return out


def _row(name: str, m: dict) -> list[str]:
    s = m["over_seeds"]
    n = len(s["seeds"])
    acc = f"{m['test']['accuracy']:.4f}" + (f" ({s['accuracy_mean']:.4f} ± {s['accuracy_std']:.4f})" if n > 1 else "")
    f1 = f"{m['test']['macro_f1']:.4f}" + (f" ({s['macro_f1_mean']:.4f} ± {s['macro_f1_std']:.4f})" if n > 1 else "")
    top5 = f"{m['test']['top5']:.4f}" if "top5" in m["test"] else "-"
    return [name, m["model"], f"{m['val']:.4f}", acc, top5, f1, f"{m['num_params']:,}", f"{m['train_seconds']:.1f}",
            f"{m['inference_ms_per_example']:.3f}"]


HEADER = ["model", "architecture", "val", "test accuracy", "top-5", "test macro-F1", "params", "train s",
          "ms/example"]


def table(report: dict) -> str:
    """The printed comparison."""
    rows = [HEADER, _row("baseline", report["baseline"]), _row("optimized", report["optimized"])]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines + comparison(report))


def comparison(report: dict) -> list[str]:
    """The difference with its interval and McNemar's test, and the verdict."""
    d, mc = report["difference"], report["difference"]["mcnemar"]
    conf = int(round(d["accuracy"]["confidence"] * 100))
    seeds = d["accuracy"].get("seeds", 1)
    how = (f"{conf}% paired bootstrap" if seeds == 1 else
           f"mean over {seeds} seeds, {conf}% paired bootstrap over seeds and test examples")
    per_seed = d.get("mcnemar_per_seed", [mc])
    ps = "" if len(per_seed) == 1 else " (seeds 2-: " + ", ".join(f"{m['p_value']:.3g}" for m in per_seed[1:]) + ")"
    return [f"optimized - baseline: accuracy {d['accuracy']['difference']:+.4f} "
              f"[{d['accuracy']['low']:+.4f}, {d['accuracy']['high']:+.4f}] ({how}), "
              f"macro-F1 {d['macro_f1']['difference']:+.4f} [{d['macro_f1']['low']:+.4f}, {d['macro_f1']['high']:+.4f}]; "
              f"McNemar p = {mc['p_value']:.4g} ({mc['only_b']} test examples only the optimized model gets right, "
              f"{mc['only_a']} only the baseline{', first seed' if len(per_seed) > 1 else ''}){ps}",
              f"verdict: {report['verdict']} (test split: {report['split']['test']} examples, "
              f"{len(report['baseline']['over_seeds']['seeds'])} seed(s))"] + _learned_lines(report)


def _learned_lines(report: dict) -> list[str]:
    h = report["optimized"].get("hyper")
    if not h:
        return []
    w = h["weights"]
    parts = []
    if w.get("weight_std", 0) > 0:  # the example weights differ (else none was learned)
        parts.append(f"example weights mean {w.get('weight_mean', 0):.3f}, std {w.get('weight_std', 0):.3f}, "
                     f"{w.get('weight_zero_fraction', 0):.1%} zero")
    if "auroc_clean" in w:
        parts.append(f"AUROC of weight vs correct label {w['auroc_clean']:.3f} (last epoch)")
    if h.get("values"):
        parts.append(", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in h["values"].items()))
    from jaxnas.hyper.methods import METHODS

    summary = METHODS[h["method"]].summary if h["method"] in METHODS else "learned by {name}"
    return [summary.format(name=h["method"]) + ": " + "; ".join(parts)]


def markdown(report: dict) -> str:
    rows = [HEADER, ["---"] * len(HEADER), _row("baseline", report["baseline"]), _row("optimized", report["optimized"])]
    s, st = report["split"], report["study"]
    parts = [f"# Dataset optimization report: {report['dataset']}", "",
             f"Split (stratified, seed {s['seed']}): train {s['train']}, val {s['val']}, test {s['test']} "
             f"(test split {'of the dataset' if s['test_source'] == 'dataset' else 'drawn'}); sha256 {s['sha256'][:16]}…",
             f"Study: {st['trials']} trials ({st['complete']} complete, {st['pruned']} pruned, {st['failed']} failed) "
             f"in {st['seconds']:.0f} s, selected on val {report['metric']}. Whole run: {report['seconds']:.0f} s.", "",
             *("| " + " | ".join(r) + " |" for r in rows), "",
             *(line for c in comparison(report) for line in (c, "")),
             "## Hyperparameters", "", "| | baseline | optimized |", "|---|---|---|"]
    b, o = report["baseline"]["hparams"], report["optimized"]["hparams"]
    parts += [f"| {k} | {b.get(k)} | {o.get(k)} |" for k in sorted(set(b) | set(o))]
    parts += ["", f"Both retrained on {report['baseline']['refit']} by the same trainer; the test split was "
                  f"predicted once per model, seed and hyperparameters: {', '.join(report['test_predictions'])}.",
              "", "Plots: plots/anytime.png, plots/per_class_f1.png, plots/confusion.png"
              + (", plots/weights.png" if report["optimized"].get("hyper") else "")]
    return "\n".join(parts) + "\n"


def plots(report: dict, out: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    paths = []
    any_ = report["study"]["anytime"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, key, label in ((axes[0], "trial", "trial"), (axes[1], "elapsed", "optimization time (s)")):
        xs = [a[key] for a in any_]
        ax.scatter(xs, [a["value"] if a["value"] is not None else np.nan for a in any_], s=12, alpha=0.5,
                   label="complete trial")
        ax.step(xs, [a["best"] if a["best"] is not None else np.nan for a in any_], where="post", label="best so far")
        ax.axhline(report["baseline"]["val"], color="gray", ls="--", label="baseline")
        ax.set_xlabel(label)
        ax.set_ylabel(f"val {report['metric']}")
        values = [a["value"] for a in any_ if a["value"] is not None] + [report["baseline"]["val"]]
        low = max(min(values), report["baseline"]["val"] - 0.1)  # the region that matters; worse trials clipped
        hidden = sum(v < low for v in values)
        ax.set_ylim(low - 0.01, max(values) + 0.01)
        if hidden:
            ax.set_title(f"{hidden} trial(s) below {low:.2f} not shown", fontsize=8)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    paths.append(os.path.join(out, "anytime.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    k = report["num_classes"]
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * k + 2), 3.5))
    for j, name in enumerate(("baseline", "optimized")):
        ax.bar(np.arange(k) + (j - 0.5) * 0.4, report[name]["test"]["f1"], 0.4, label=name)
    ax.set_xlabel("class")
    ax.set_ylabel("test F1")
    ax.set_xticks(np.arange(k))
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(os.path.join(out, "per_class_f1.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, name in zip(axes, ("baseline", "optimized")):
        cm = np.asarray(report[name]["test"]["confusion_matrix"])
        ax.imshow(cm, cmap="Blues")
        ax.set_title(f"{name}: test accuracy {report[name]['test']['accuracy']:.3f}")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if k <= 20:
            for (i, jj), v in np.ndenumerate(cm):
                ax.text(jj, i, str(v), ha="center", va="center", fontsize=6)
    fig.tight_layout()
    paths.append(os.path.join(out, "confusion.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    h = report["optimized"].get("hyper")
    if h:
        paths.append(_weights_figure(plt, h, os.path.join(out, "weights.png")))
    return paths


def _weights_figure(plt, h: dict, path: str) -> str:
    """What ``optimize.hyper`` learned: the spread of example weights and their AUROC against correct
    labels over the epochs, the last epoch's weights of clean and corrupted examples, and the learned
    scalar hyperparameters' trajectories."""
    scalars = sorted({k for v in h["values_by_epoch"] for k, x in v.items() if isinstance(x, float)})
    fig, axes = plt.subplots(1, 3 if scalars else 2, figsize=(13 if scalars else 9, 3.5))
    epochs = np.arange(1, len(h["weight_std_by_epoch"]) + 1)
    axes[0].plot(epochs, h["weight_std_by_epoch"], label="std of example weights")
    auroc = [np.nan if a is None else a for a in h["auroc_by_epoch"]]
    if not np.all(np.isnan(auroc)):
        axes[0].plot(epochs, auroc, label="AUROC weight vs correct label")
        axes[0].axhline(0.5, color="gray", ls=":")
    axes[0].set_xlabel("epoch")
    axes[0].set_title(h["method"])
    axes[0].legend(fontsize=8)
    hist = h.get("histogram") or {}
    if "clean" in hist:
        edges = np.asarray(hist["edges"])
        width = np.diff(edges)
        axes[1].bar(edges[:-1], hist["clean"], width, align="edge", alpha=0.6, label="correct label")
        axes[1].bar(edges[:-1], hist["noisy"], width, align="edge", alpha=0.6, label="corrupted label")
        axes[1].legend(fontsize=8)
    axes[1].set_xlabel("example weight (last epoch)")
    axes[1].set_ylabel("training examples")
    for name in scalars:
        axes[2].plot(np.arange(1, len(h["values_by_epoch"]) + 1), [v.get(name, np.nan) for v in h["values_by_epoch"]],
                     label=name)
    if scalars:
        axes[2].set_yscale("log")
        axes[2].set_xlabel("epoch")
        axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write(report: dict, run_dir: str) -> None:
    rundir.write_json(os.path.join(run_dir, "report.json"), report)
    with open(os.path.join(run_dir, "report.md"), "w") as f:
        f.write(markdown(report))
    plots(report, os.path.join(run_dir, "plots"))
