"""Run logging: TensorBoard events, a metrics JSONL, a progress bar, and PNG plots at the end (process 0 only)."""
from __future__ import annotations

import json
import os
from typing import Mapping

import jax
import numpy as np


class RunLogger:
    def __init__(self, workdir: str, *, total_steps: int, initial_step: int = 0, desc: str = "train"):
        self.main = jax.process_index() == 0
        self.workdir = workdir
        self.history: list[dict] = []
        self.tb = self.bar = self.jsonl = None
        if not self.main:  # other processes keep their own metrics file, to check that all processes agree
            os.makedirs(workdir, exist_ok=True)
            self.jsonl = open(os.path.join(workdir, f"metrics.p{jax.process_index()}.jsonl"), "a")
            return
        os.makedirs(workdir, exist_ok=True)
        from tensorboardX import SummaryWriter
        from tqdm import tqdm

        self.tb = SummaryWriter(os.path.join(workdir, "tb"))
        self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
        self.bar = tqdm(total=total_steps, initial=initial_step, desc=desc, dynamic_ncols=True, mininterval=1.0)

    def log(self, step: int, metrics: Mapping[str, float], *, write_tb: bool = True) -> None:
        row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        self.history.append(row)
        if not self.main:
            self.jsonl.write(json.dumps(row) + "\n")
            self.jsonl.flush()
            return
        self.jsonl.write(json.dumps(row) + "\n")
        self.jsonl.flush()
        if write_tb:
            for k, v in metrics.items():
                self.tb.add_scalar(k, float(v), int(step))
        self.bar.update(1)
        shown = {k: metrics[k] for k in ("loss", "lr", "target_std", "clips_per_s") if k in metrics}
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)

    def text(self, tag: str, text: str) -> None:
        if self.main:
            self.tb.add_text(tag, text)
            self.bar.write(text) if self.bar else print(text)

    def close(self, plot_keys=("loss", "target_std", "target_token_std", "lr", "grad_norm")) -> str | None:
        if not self.main:
            self.jsonl.close()
            return None
        self.bar.close()
        self.tb.flush()
        self.tb.close()
        self.jsonl.close()
        return plot_history(read_history(self.workdir), os.path.join(self.workdir, "curves.png"), plot_keys)


def read_history(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    rows = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            rows[r["step"]] = r  # a resumed run rewrites steps after its checkpoint: keep the latest
    return [rows[k] for k in sorted(rows)]


def plot_history(history: list[dict], path: str, keys) -> str | None:
    keys = [k for k in keys if any(k in r for r in history)]
    if not history or not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for ax, k in zip(axes[0], keys):
        xs = [r["step"] for r in history if k in r]
        ys = np.array([r[k] for r in history if k in r], dtype=float)
        ax.plot(xs, ys, lw=0.8, alpha=0.5)
        if len(ys) > 10:
            w = max(2, len(ys) // 20)
            sm = np.convolve(ys, np.ones(w) / w, mode="valid")
            ax.plot(xs[w - 1:], sm, lw=1.6)
        ax.set_title(k)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
