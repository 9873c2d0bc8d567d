"""Figures of a run (``jaxnas plot <run dir>``): the final cells as DAGs with op names on the
edges (as in the DARTS paper's figures), every edge's softmax(alpha) over the epochs, and the
loss/accuracy curves, each as PNG and SVG (SVG text kept as text, so it can be searched)."""

from __future__ import annotations

import json
import os
import re

import numpy as np

from jaxnas import config as config_lib
from jaxnas import rundir
from jaxnas.errors import JaxnasError
from jaxnas.ops import resolve_op_set
from jaxnas.spaces import get_space

FORMATS = ("png", "svg")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"
    import matplotlib.pyplot as plt

    return plt


def _save(fig, base: str) -> list[str]:
    out = []
    for fmt in FORMATS:
        path = f"{base}.{fmt}"
        fig.savefig(path, dpi=150, bbox_inches="tight")
        out.append(path)
    _plt().close(fig)
    return out


def _layout(triples) -> dict[str, tuple[float, float]]:
    """Sources stacked on the left, then every other state in its own column (in order of
    appearance, a topological order for cells), zig-zagging up and down, the sink last."""
    states = list(dict.fromkeys([s for s, _, _ in triples] + [t for _, t, _ in triples]))
    targets = {t for _, t, _ in triples}
    sources = sorted(s for s in states if s not in targets)  # the same order in every cell: c_{k-1} on top
    pos = {s: (0.0, (len(sources) - 1) / 2 * 1.6 - j * 1.6) for j, s in enumerate(sources)}
    rest = [s for s in states if s in targets]
    for j, s in enumerate(rest):
        last = j == len(rest) - 1
        pos[s] = (1.9 * (j + 1), 0.0 if last or len(rest) < 3 else (0.9 if j % 2 == 0 else -0.9))
    return pos


def cell_figure(triples, title: str):
    """Draw a cell DAG: boxes for states, arrows for edges, the op name on each edge."""
    from matplotlib.patches import FancyArrowPatch

    plt = _plt()
    pos = _layout(triples)
    xs, ys = zip(*pos.values())
    fig, ax = plt.subplots(figsize=(2.0 + 1.6 * (max(xs) - min(xs)) / 2.2, 1.6 + 1.1 * (max(ys) - min(ys))))
    colors = {"c_{k-2}": "#a6d5a6", "c_{k-1}": "#a6d5a6", "c_{k}": "#f2d589"}
    seen, placed = {}, list(pos.values())  # label centres so far, the state boxes included
    for s, t, op in triples:
        k = seen[(s, t)] = seen.get((s, t), -1) + 1
        rad = 0.25 * (k + 1) * (-1) ** k if k or sum(1 for a, b, _ in triples if (a, b) == (s, t)) > 1 else 0.12
        (x0, y0), (x1, y1) = pos[s], pos[t]
        arrow = FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=12, shrinkA=16, shrinkB=16,
                                connectionstyle=f"arc3,rad={rad}", color="0.35" if op else "0.6", lw=1.0)
        ax.add_patch(arrow)
        if op:  # on the arc, where the label is farthest from the labels and boxes already placed
            dx, dy = x1 - x0, y1 - y0

            def point(f):  # matplotlib's arc3 is a quadratic Bezier with control midpoint + rad * (dy, -dx)
                bulge = 2 * f * (1 - f) * rad
                return x0 + f * dx + bulge * dy, y0 + f * dy - bulge * dx

            def clearance(f):
                px, py = point(f)
                return min([((px - qx) / 1.1) ** 2 + ((py - qy) / 0.3) ** 2 for qx, qy in placed] + [1e9])

            mx, my = point(max((0.5, 0.4, 0.6, 0.3, 0.7, 0.25, 0.75), key=clearance))
            placed.append((mx, my))
            ax.text(mx, my, op, ha="center", va="center", fontsize=7, color="#8b1a1a",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})
    for s, (x, y) in pos.items():
        ax.text(x, y, f"${s}$" if "_" in s else s, ha="center", va="center", fontsize=9,
                bbox={"boxstyle": "round,pad=0.35", "fc": colors.get(s, "#a9c7e8"), "ec": "0.3"})
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(min(ys) - 0.9, max(ys) + 0.9)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=10)
    ax.axis("off")
    return fig


def alphas_figure(records: list[dict], key: str, op_names, title: str, edge_names=None):
    """One panel per edge: softmax(alpha) of each op against the epoch (``edge_names``: the panels' labels)."""
    plt = _plt()
    w = np.asarray([r[f"{key}_softmax"] for r in records])  # epochs x edges x ops
    epochs = [r["epoch"] for r in records]
    n_edges = w.shape[1]
    cols = min(n_edges, 5)
    rows = -(-n_edges // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.0 * rows), sharex=True, sharey=True, squeeze=False)
    for e in range(rows * cols):
        ax = axes[e // cols][e % cols]
        if e >= n_edges:
            ax.axis("off")
            continue
        for o, name in enumerate(op_names):
            ax.plot(epochs, w[:, e, o], label=name, lw=1.2)
        label = re.sub(r"c\{(k-[12])\}", r"$c_{\1}$", edge_names[e]) if edge_names else ""
        ax.set_title(f"edge {e}: {label}" if label else f"edge {e}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.ticklabel_format(axis="y", useOffset=False)
        if e // cols == rows - 1 or e + cols >= n_edges:
            ax.set_xlabel("epoch", fontsize=8)
    axes[0][0].set_ylabel("softmax(alpha)", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(op_names), 4), fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, -0.02 - 0.03 * (len(op_names) > 4)))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def curves_figure(steps: list[dict], epochs: list[dict]):
    """Loss and accuracy against the step (train/val per logged step, and per-epoch evaluations)."""
    plt = _plt()
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(10, 3.6))
    for prefix in ("train", "val", ""):
        lk, ak = (f"{prefix}_loss", f"{prefix}_acc") if prefix else ("loss", "acc")
        pts = [r for r in steps if lk in r]
        if pts:
            x = [r["step"] for r in pts]
            ax_l.plot(x, [r[lk] for r in pts], lw=1, label=f"{prefix or 'train'} (batch)")
            ax_a.plot(x, [r[ak] for r in pts], lw=1, label=f"{prefix or 'train'} (batch)")
    for lk, ak, label in (("search_val_loss", "search_val_acc", "search-val (epoch)"),
                          ("train_loss", "train_acc", "train (epoch mean)")):
        pts = [r for r in epochs if lk in r and "step" in r]
        if pts:
            ax_l.plot([r["step"] for r in pts], [r[lk] for r in pts], "o-", ms=3, label=label)
            ax_a.plot([r["step"] for r in pts], [r[ak] for r in pts], "o-", ms=3, label=label)
    for ax, name in ((ax_l, "loss"), (ax_a, "accuracy")):
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _read_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def plot_run(run_dir: str, out_dir: str | None = None, imports: str = "") -> list[str]:
    """Write every figure the run's files allow into ``<run_dir>/plots``; returns the paths. Nothing the
    run names is imported: a run made with ``run.imports`` needs ``imports`` (already imported) to match."""
    cfg_path, meta_path = os.path.join(run_dir, "config.json"), os.path.join(run_dir, "meta.json")
    if not (os.path.exists(cfg_path) and os.path.exists(meta_path)):
        raise JaxnasError(f"{run_dir!r} is not a jaxnas run directory (config.json and meta.json expected)")
    kind = rundir.read_json(meta_path, "run file").get("kind", "search")
    out_dir = out_dir or os.path.join(run_dir, "plots")
    os.makedirs(out_dir, exist_ok=True)
    if kind == "optimize":  # the report's figures, redrawn from report.json
        from jaxnas.optimize import report as report_lib

        path = os.path.join(run_dir, "report.json")
        if not os.path.exists(path):
            raise JaxnasError(f"{run_dir!r} has nothing to plot yet (no report.json: the optimize run has not ended)")
        try:
            return report_lib.plots(rundir.read_json(path, "report"), out_dir)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise JaxnasError(f"{path!r} is not a readable optimize report ({type(e).__name__}: {e})") from None
    written = []
    cfg = config_lib.from_dict(rundir.read_json(cfg_path, "run config"), kind)
    config_lib.check_run_imports(cfg.run.imports, imports, run_dir)
    space = get_space(cfg.space.name) if kind == "search" else get_space("darts")
    metrics = _read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    g_path = os.path.join(run_dir, "genotype.json")
    raw = None
    if os.path.exists(g_path):
        raw = rundir.read_json(g_path, "genotype file")
    elif metrics and "genotype" in metrics[-1]:
        raw = metrics[-1]["genotype"]
    if raw is not None:
        for stem, title, edges in space.drawings(space.arch_from_dict(raw)):
            written += _save(cell_figure(edges, title), os.path.join(out_dir, stem))
    alphas = _read_jsonl(os.path.join(run_dir, "alphas.jsonl"))
    if alphas and kind == "search":
        op_names = alphas[-1].get("ops") or resolve_op_set(cfg.space.ops)
        for key in (k for k in alphas[-1] if k.startswith("alphas") and not k.endswith("_softmax")):
            names = space.edge_names(key, len(alphas[-1][key]))
            fig = alphas_figure(alphas, key, op_names, f"{key}: softmax weights per edge", names)
            written += _save(fig, os.path.join(out_dir, key))
    history = _read_jsonl(os.path.join(run_dir, "history.jsonl"))
    if history:
        written += best_so_far(history, out_dir)
    steps = _read_jsonl(os.path.join(run_dir, "steps.jsonl"))
    if steps or metrics:
        written += _save(curves_figure(steps, metrics), os.path.join(out_dir, "curves"))
    if not written:
        raise JaxnasError(f"{run_dir!r} has nothing to plot yet (no genotype, alphas or metrics)")
    return written


def best_so_far(history: list[dict], out_dir: str) -> list[str]:
    """Best score so far against evaluations, wall time and budget spent (PNG and SVG)."""
    if not history:
        return []
    plt = _plt()
    os.makedirs(out_dir, exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4), sharey=True)
    best = [r["best_score"] for r in history]
    axes[0].plot([r["eval"] for r in history], [r["score"] for r in history], ".", color="0.7", ms=4,
                 label="score")
    for ax, key, label in zip(axes, ("eval", "wall_s", "spent"),
                              ("evaluations", "wall time (s)", "budget spent (s; the table's costs if given)")):
        ax.step([r[key] for r in history], best, where="post", label="best so far")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("score")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, os.path.join(out_dir, "best_so_far"))
