"""Metrics of a planning evaluation (the protocol of `../shared/spec/planning.md`): success with a Wilson interval,
distances, planning time, and the rank correlation of the planner's energy with the true distance."""
from __future__ import annotations

import math

import numpy as np

from jepa.stats import wilson_interval  # noqa: F401  (re-exported: the success intervals use it)


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array, ties given their average rank (scipy.stats.rankdata's 'average')."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x), np.float64)
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (nan when either side is constant)."""
    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def summarize(distances: np.ndarray, threshold: float, seconds: np.ndarray, episodes: int,
              model_steps: int) -> dict:
    """Per-controller metrics from true distances [E, T + 1] (column 0 = start) and the wall time of each batched
    act [T] (per episode: divided by the E episodes planned together)."""
    final, initial = distances[:, -1], distances[:, 0]
    success = final < threshold
    k, n = int(success.sum()), int(len(success))
    lo, hi = wilson_interval(k, n)
    per_action = np.asarray(seconds, np.float64) / max(1, episodes)
    return {
        "success_rate": k / n,
        "successes": k,
        "episodes": n,
        "success_ci95": [lo, hi],
        "final_distance_median": float(np.median(final)),
        "final_distance_mean": float(np.mean(final)),
        "min_distance_median": float(np.median(distances.min(1))),
        "final_over_initial_median": float(np.median(final / np.maximum(initial, 1e-9))),
        "seconds_per_action_median": float(np.median(per_action)) if len(per_action) else 0.0,
        "seconds_per_action_p90": float(np.percentile(per_action, 90)) if len(per_action) else 0.0,
        "model_steps_per_action": int(model_steps),
        "per_episode_success": success.astype(int).tolist(),
        "per_episode_final_distance": final.tolist(),
    }
