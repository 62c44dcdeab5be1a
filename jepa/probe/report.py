"""Writes a probe grid's validation results: results.json, results.md and plots of the best probe.

`results` is what `jepa.probe.metrics` returns: `Accumulator.result()` for task 'classification', and
`AnticipationAccumulator.result()` ({'verb', 'noun', 'action'} -> that) for task 'anticipation'. The best probe is the
one with the highest top-1 (classification) or the highest action class-mean Recall@5 (anticipation), as reported by
V-JEPA 2; ties go to the first probe in the grid.

Plots use matplotlib's Agg canvas directly (no pyplot, no global backend switch), so this works headless and does
not disturb a caller's own matplotlib state.
"""
from __future__ import annotations

import json
import math
import os
from typing import Mapping, Sequence

import numpy as np

__all__ = ["best_probe", "write_results", "TASKS"]

TASKS = ("classification", "anticipation")
HEADS = ("verb", "noun", "action")
_SCALARS = ("top1", "top5", "mean_class_recall5")
_NAMES_MAX = 50          # class names on the axes up to this many classes
_CELL_TEXT_MAX = 15      # numbers in the confusion cells up to this many classes


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def best_probe(results: Mapping, task: str) -> int:
    """Index of the reported probe: highest top-1 (classification) or action mean_class_recall5 (anticipation)."""
    _check_task(task)
    score = (np.asarray(results["top1"], np.float64) if task == "classification"
             else np.asarray(results["action"]["mean_class_recall5"], np.float64))
    if np.all(np.isnan(score)):
        return 0
    return int(np.nanargmax(score))          # first maximum


def _split(results: Mapping, task: str) -> tuple[Mapping, dict]:
    """(metrics, extra): classification metrics may come flat or under 'label' ({'label': Accumulator.result(),
    ...}); other keys (clip counts, timings, ...) are kept as JSON 'meta' when they are JSON-serialisable."""
    if task == "classification":
        metrics = results if "top1" in results else results["label"]
        taken = set(metrics) if metrics is results else {"label"}
    else:
        metrics, taken = results, set(HEADS)
    meta = {}
    for k, v in results.items():
        if k in taken or k in ("grid", "task"):
            continue
        v = v.tolist() if isinstance(v, (np.ndarray, np.generic)) else v
        try:
            json.dumps(v, allow_nan=False)
        except (TypeError, ValueError):
            continue
        meta[str(k)] = v
    return metrics, meta


def _num(x) -> float | None:
    """JSON-safe float: NaN and inf become None."""
    x = float(x)
    return x if math.isfinite(x) else None


def _metrics(res: Mapping, h: int) -> dict:
    return {k: _num(np.asarray(res[k])[h]) for k in _SCALARS if k in res}


def _per_class(res: Mapping, h: int) -> list:
    return [_num(v) for v in np.asarray(res["per_class_recall5"])[h]]


def _pct(x) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{100.0 * x:.2f}"


def _summary(results: Mapping, grid: Sequence, task: str, best: int) -> dict:
    probes = []
    for h, (lr, wd) in enumerate(grid):
        entry = {"index": h, "lr": float(lr), "wd": float(wd)}
        if task == "classification":
            entry.update(_metrics(results, h))
        else:
            entry.update({head: _metrics(results[head], h) for head in HEADS})
        probes.append(entry)
    best_entry = dict(probes[best])
    if task == "classification":
        best_entry["per_class_recall5"] = _per_class(results, best)
        count = int(np.asarray(results["count"]))
        class_count = [int(c) for c in np.asarray(results["class_count"])]
        selection = "top1"
    else:
        for head in HEADS:
            best_entry[head] = dict(best_entry[head], per_class_recall5=_per_class(results[head], best))
        count = {head: int(np.asarray(results[head]["count"])) for head in HEADS}
        class_count = {head: [int(c) for c in np.asarray(results[head]["class_count"])] for head in HEADS}
        selection = "action.mean_class_recall5"
    return {"task": task, "selection_metric": selection, "best_index": best, "count": count,
            "class_count": class_count, "probes": probes, "best": best_entry}


def _markdown(summary: dict) -> str:
    task, best = summary["task"], summary["best_index"]
    lines = [f"# Probe grid: {task}", ""]
    if task == "classification":
        lines += [f"{summary['count']} validation examples; best probe by top-1. Metrics in %.", "",
                  "| # | lr | wd | top-1 | top-5 | class-mean R@5 | best |",
                  "|---:|---:|---:|---:|---:|---:|:---:|"]
        for p in summary["probes"]:
            cells = [_pct(p.get(k)) for k in _SCALARS]
            lines.append(_row(p, cells, p["index"] == best))
    else:
        c = summary["count"]
        lines += [f"Validation examples: verb {c['verb']}, noun {c['noun']}, action {c['action']} (action: pairs seen "
                  "in training only); best probe by action class-mean Recall@5. Metrics in % (class-mean R@5).", "",
                  "| # | lr | wd | verb R@5 | noun R@5 | action R@5 | best |",
                  "|---:|---:|---:|---:|---:|---:|:---:|"]
        for p in summary["probes"]:
            cells = [_pct(p[h].get("mean_class_recall5")) for h in HEADS]
            lines.append(_row(p, cells, p["index"] == best))
    return "\n".join(lines) + "\n"


def _row(p: dict, cells: list, is_best: bool) -> str:
    if is_best:
        cells = [f"**{c}**" for c in cells]
    return f"| {p['index']} | {p['lr']:g} | {p['wd']:g} | " + " | ".join(cells) + f" | {'**best**' if is_best else ''} |"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _plot_confusion(path: str, confusion: np.ndarray, class_names, title: str) -> None:
    conf = np.asarray(confusion, np.float64)
    c = conf.shape[0]
    rows = conf.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(rows > 0, conf / rows, np.nan)         # classes without examples: blank rows
    side = float(np.clip(3.0 + 0.09 * c, 6.0, 24.0))
    fig = _figure(side + 1.5, side)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(np.ma.masked_invalid(norm), cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest",
                   aspect="equal")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_xlabel("predicted class (top-1)")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if class_names is not None and c <= _NAMES_MAX:
        size = 9 if c <= 20 else max(4, int(9 - (c - 20) / 6))
        ax.set_xticks(range(c))
        ax.set_yticks(range(c))
        ax.set_xticklabels([str(n) for n in class_names], rotation=90, fontsize=size)
        ax.set_yticklabels([str(n) for n in class_names], fontsize=size)
    if c <= _CELL_TEXT_MAX:
        for i in range(c):
            for j in range(c):
                if np.isfinite(norm[i, j]) and conf[i, j] > 0:
                    ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=8,
                            color="black" if norm[i, j] > 0.6 else "white")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _plot_recall(path: str, per_head: dict, class_names: Mapping | None, title: str) -> None:
    fig = _figure(14.0, 3.6 * len(per_head))
    for i, (head, recall) in enumerate(per_head.items()):
        ax = fig.add_subplot(len(per_head), 1, i + 1)
        recall = np.asarray(recall, np.float64)
        present = np.flatnonzero(np.isfinite(recall))
        order = present[np.argsort(-recall[present], kind="stable")]
        values = recall[order]
        ax.bar(np.arange(len(order)), 100.0 * values, width=1.0 if len(order) > _NAMES_MAX else 0.8,
               color="tab:blue", linewidth=0)
        mean = 100.0 * values.mean() if len(values) else float("nan")
        ax.axhline(mean, color="tab:red", linewidth=1.0, label=f"class mean {mean:.2f}%")
        ax.set_xlim(-0.5, max(len(order), 1) - 0.5)
        ax.set_ylim(0.0, 105.0)
        ax.set_ylabel("Recall@5 (%)")
        ax.set_title(f"{head}: {len(order)} classes present in validation, sorted")
        names = None if class_names is None else class_names.get(head)
        if names is not None and 0 < len(order) <= _NAMES_MAX:
            ax.set_xticks(range(len(order)))
            ax.set_xticklabels([str(names[j]) for j in order], rotation=90, fontsize=7)
        else:
            ax.set_xlabel("classes, sorted by Recall@5")
        ax.legend(loc="upper right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_results(out_dir: str | os.PathLike, results: Mapping, grid: Sequence, task: str,
                  class_names=None) -> dict:
    """Writes out_dir/results.json (every probe's metrics, the best one's per-class Recall@5), results.md (one table
    row per probe, best in bold) and a plot of the best probe: confusion.png (classification; rows normalised, only
    when `results` has 'confusion') or recall5.png (anticipation; sorted per-class Recall@5 of each head).

    `grid` lists (lr, wd) per probe, in the probes' order. `class_names`: a list for classification, a dict
    head -> list for anticipation (any head may be missing); names are drawn only when there are few classes.
    `results` may also be a run's dict that holds the classification metrics under 'label' beside other entries;
    those other entries that JSON can hold go to results.json under 'meta'.
    Returns the dict written to results.json. Fractions in JSON, percentages in Markdown; NaN is written as null."""
    _check_task(task)
    results, meta = _split(results, task)
    grid = [tuple(g) for g in grid]
    num = (np.asarray(results["top1"]).shape[0] if task == "classification"
           else np.asarray(results["action"]["mean_class_recall5"]).shape[0])
    if len(grid) != num:
        raise ValueError(f"grid has {len(grid)} entries for {num} probes")
    os.makedirs(out_dir, exist_ok=True)
    best = best_probe(results, task)
    summary = _summary(results, grid, task, best)
    lr, wd = grid[best]
    title = f"best probe #{best} (lr {lr:g}, wd {wd:g})"

    files = ["results.json", "results.md"]
    if task == "classification":
        if "confusion" in results:
            _plot_confusion(os.path.join(out_dir, "confusion.png"), np.asarray(results["confusion"])[best],
                            class_names, f"{title}: top-1 {_pct(summary['best'].get('top1'))}%")
            files.append("confusion.png")
    else:
        per_head = {h: np.asarray(results[h]["per_class_recall5"])[best] for h in HEADS}
        _plot_recall(os.path.join(out_dir, "recall5.png"), per_head, class_names, title)
        files.append("recall5.png")
    summary["files"] = files
    if meta:
        summary["meta"] = meta

    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(summary, f, indent=1, allow_nan=False)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(_markdown(summary))
    return summary
