"""`jepa plan --config configs/plan/<task>.py --workdir DIR`: closed-loop planning on one episode, watched.

Observe, re-plan (CEM in the world model's representation space), execute the first action, until the step budget.
The episode is number `--episode` of the config's fixed seeds (its goal image is reached from the start state by
the task's expert), or `--goal image.png` replaces the goal image (then no true distance is known). Writes
plan.gif (observation | goal, with the true distance and the planner's energy per step), curves.png and plan.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import numpy as np


def read_goal_image(path: str, size: int) -> np.ndarray:
    """A goal image file as uint8 [size, size, 3]; one clear error for a missing, unreadable or wrong-size image."""
    from PIL import Image, UnidentifiedImageError

    from planning.evaluate import PlanningError

    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"))
    except FileNotFoundError as e:
        raise PlanningError(f"goal image {path!r}: no such file") from e
    except (UnidentifiedImageError, OSError) as e:
        raise PlanningError(f"goal image {path!r}: not a readable image ({e})") from e
    if arr.shape[:2] != (size, size):
        raise PlanningError(f"goal image {path!r} is {arr.shape[1]}x{arr.shape[0]}; the world model plans with "
                            f"{size}x{size} images (resize it, or set --config.image_size)")
    return arr


def plan_episode(cfg, workdir: str, *, episode: int = 0, goal_path: str | None = None, progress: bool = True) -> dict:
    from tqdm.auto import tqdm

    from planning import evaluate, mpc, pictures

    s = evaluate.setup(cfg)
    if episode < 0:
        raise evaluate.PlanningError(f"--episode must be >= 0, got {episode}")
    ep = mpc.make_episodes(s.env, episode + 1, int(cfg.seed), float(cfg.min_distance))[episode]
    if goal_path:
        image = read_goal_image(goal_path, int(cfg.image_size))
        nan = np.full_like(ep.goal.achieved, np.nan)
        ep = dataclasses.replace(ep, goal=dataclasses.replace(ep.goal, image=image, achieved=nan),
                                 initial_distance=float("nan"))
    batch = mpc.EpisodeBatch(s.env, [ep], s.action_repeat)
    ctrl = mpc.LatentCEM(evaluate.make_planner(s))
    os.makedirs(workdir, exist_ok=True)
    bar = tqdm(total=int(cfg.steps), desc=f"plan {cfg.task}", unit="step", disable=not progress)
    tr = mpc.run(batch, ctrl, int(cfg.steps), seed=int(cfg.seed) + episode, record_frames=True, progress=bar.update)
    bar.close()
    dist, energy = tr.distances[0], tr.energies[0]
    title = f"{cfg.task} seed {ep.seed}"
    pictures.episode_gif(tr.frames[0], ep.goal.image, os.path.join(workdir, "plan.gif"), distances=dist,
                         energies=energy, threshold=batch.threshold, title=title)
    pictures.plan_curves_png(dist, energy, batch.threshold, os.path.join(workdir, "curves.png"), title=title)
    final = float(dist[-1])
    out = {"task": cfg.task, "seed": ep.seed, "goal_image": goal_path or "expert", "steps": int(cfg.steps),
           "distance": dist.tolist(), "energy": energy.tolist(), "actions": tr.actions[0].tolist(),
           "success": bool(final < batch.threshold) if np.isfinite(final) else None,
           "seconds_per_step": tr.seconds.tolist()}
    with open(os.path.join(workdir, "plan.json"), "w") as f:
        json.dump(out, f, indent=2)
    return out


def main(argv: list[str]) -> int:
    from jepa.cli import USER_ERRORS, error_line
    from jepa.config import load_config, split_args

    rest, overrides = split_args(argv)
    ap = argparse.ArgumentParser(prog="jepa plan", description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="configs/plan/<task>.py")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--episode", type=int, default=0, help="which of the config's episodes (0-based)")
    ap.add_argument("--goal", default=None, help="a goal image (PNG) instead of the episode's own")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(rest)
    try:
        cfg = load_config(args.config, overrides)
        out = plan_episode(cfg, args.workdir, episode=args.episode, goal_path=args.goal, progress=not args.quiet)
    except USER_ERRORS as e:  # one line, exit 2 (jepa.cli)
        print(f"jepa plan: error: {error_line(e)}", file=sys.stderr)
        return 2
    d = out["distance"]
    verdict = "" if out["success"] is None else (" (reached)" if out["success"] else " (not reached)")
    print(f"[plan] {out['task']} seed {out['seed']}: distance {100 * d[0]:.1f} -> {100 * d[-1]:.1f} cm{verdict}; "
          f"{args.workdir}/plan.gif, curves.png, plan.json")
    return 0
