"""Pictures of planning runs: episode GIFs (observation | goal), energy vs true-distance landscapes, success bars."""
from __future__ import annotations

import os

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = os.fspath(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def episode_gif(frames: np.ndarray, goal: np.ndarray, path: str | os.PathLike, *, distances: np.ndarray | None = None,
                energies: np.ndarray | None = None, threshold: float | None = None, title: str = "",
                scale: int = 3, ms_per_frame: int = 400) -> str:
    """An animated GIF of one episode: each frame shows the observation beside the goal image, with the step, the
    true distance to the goal (green once below the success threshold) and the planner's energy.
    frames uint8 [T + 1, H, W, 3], goal [H, W, 3], distances [T + 1], energies [T] (energy of the plan made at
    each step)."""
    from PIL import Image, ImageDraw

    h, w = goal.shape[:2]
    cw, ch, cap = w * scale, h * scale, 28
    goal_img = Image.fromarray(goal).resize((cw, ch), Image.NEAREST)
    images = []
    for t, frame in enumerate(frames):
        img = Image.new("RGB", (2 * cw + 6, ch + cap), "white")
        img.paste(Image.fromarray(frame).resize((cw, ch), Image.NEAREST), (0, cap))
        img.paste(goal_img, (cw + 6, cap))
        draw = ImageDraw.Draw(img)
        line = f"{title} step {t}"
        colour = "black"
        if distances is not None:
            line += f"  dist {100 * distances[t]:.1f} cm"
            if threshold is not None and distances[t] < threshold:
                colour = "green"
        draw.text((2, 1), line, fill=colour)
        if energies is not None and t < len(energies) and np.isfinite(energies[t]):
            draw.text((2, 14), f"energy {energies[t]:.4f}", fill="black")
        draw.text((cw + 8, 14), "goal", fill="black")
        images.append(img)
    images += [images[-1]] * 2  # linger on the end
    path = os.fspath(path)
    images[0].save(path, save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0)
    return path


def landscape_png(grid: np.ndarray, energy: np.ndarray, distance: np.ndarray, path: str | os.PathLike, *,
                  labels: tuple[str, str] = ("dx (m)", "dy (m)"), title: str = "") -> str:
    """Side-by-side heat maps over a 2-D slice of first actions: the planner's energy and the true distance to the
    goal after executing them. grid [G] (values of both axes), energy / distance [G, G] indexed [y, x]."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.8))
    half = (grid[1] - grid[0]) / 2 if len(grid) > 1 else 0.5
    ext = [grid[0] - half, grid[-1] + half, grid[0] - half, grid[-1] + half]  # cells centred on the grid values
    for ax, z, name in ((axes[0], energy, "planner energy (latent L1)"), (axes[1], distance, "true distance (m)")):
        im = ax.imshow(z, origin="lower", extent=ext, cmap="viridis", aspect="equal")
        iy, ix = np.unravel_index(np.nanargmin(z), z.shape)
        ax.plot(grid[ix], grid[iy], "r*", ms=12, label="minimum")
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
        ax.set_title(name, fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046)
    axes[0].legend(loc="upper right", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def success_bars(results: dict[str, dict[str, dict]], path: str | os.PathLike, title: str = "") -> str:
    """Grouped bars of success rate with Wilson 95% intervals: results[task][method] = summarize(...)."""
    plt = _plt()
    tasks = list(results)
    methods = list(dict.fromkeys(m for t in tasks for m in results[t]))
    width = 0.8 / max(1, len(methods))
    colours = {"latent_cem": "#3b75af", "oracle_cem": "#55a868", "random": "#999999", "zero": "#cccccc"}
    fig, ax = plt.subplots(figsize=(1.6 + 1.9 * len(tasks), 3.8))
    for j, m in enumerate(methods):
        xs, ys, lo, hi = [], [], [], []
        for i, t in enumerate(tasks):
            if m not in results[t]:
                continue
            r = results[t][m]
            xs.append(i + (j - (len(methods) - 1) / 2) * width)
            ys.append(100 * r["success_rate"])
            lo.append(100 * (r["success_rate"] - r["success_ci95"][0]))
            hi.append(100 * (r["success_ci95"][1] - r["success_rate"]))
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=m, color=colours.get(m))
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels(tasks)
    ax.set_ylabel("success (%), 95% Wilson CI")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=len(methods))
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plan_curves_png(distances: np.ndarray, energies: np.ndarray, threshold: float, path: str | os.PathLike,
                    title: str = "") -> str:
    """One episode's true distance per step and the planner's energy per re-plan (two y axes)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(np.arange(len(distances)), 100 * np.asarray(distances), "o-", label="true distance (cm)")
    ax.axhline(100 * threshold, ls="--", c="g", lw=1, label="success threshold")
    ax.set_xlabel("step")
    ax.set_ylabel("distance to goal (cm)")
    ax2 = ax.twinx()
    ax2.plot(np.arange(len(energies)), energies, "s:", c="tab:orange", label="planner energy")
    ax2.set_ylabel("energy (latent L1)")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)
