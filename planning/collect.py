"""`jepa collect`: run exploratory policies in a MuJoCo task and write an RLDS dataset (ArrayRecord).

    jepa collect --task push --episodes 200 --out /data/rlds [--steps 50 --size 64 --seed 0 --policy mixed]

writes `<out>/robot_episodes/<task>/1.0.0/` with the tfds builder `robot_episodes` (schema:
data/robot_episodes/robot_episodes_dataset_builder.py; episodes stepped by `planning.rollout.collect_episode`),
readable with `jepa.data.rlds.RLDSEpisodes(<that dir>)`. Tasks: reach, push, pickplace (table-top gripper, 4 Hz
control), reacher, pusher (gymnasium Reacher-v5 / Pusher-v5 adapters). Policies: mixed (default: segments of scripted
pick-place / push / reach toward random targets with action noise and random walks: broad coverage including cube
contact and grasps), scripted (the task's expert with noise), random.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

TASK_CHOICES = ("reach", "push", "pickplace", "reacher", "pusher")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jepa collect", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, choices=TASK_CHOICES)
    p.add_argument("--episodes", type=int, required=True, help="number of episodes")
    p.add_argument("--out", required=True, help="tfds data_dir to write into")
    p.add_argument("--steps", type=int, default=50, help="actions per episode (episodes have steps + 1 frames)")
    p.add_argument("--size", type=int, default=64, help="square image size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--policy", default="mixed", choices=("mixed", "scripted", "random"))
    p.add_argument("--start", default="random", choices=("random", "contact"),
                   help="start states: random, or (push) the closed gripper right behind the cube")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at the same place")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def collect(task: str, episodes: int, out: str | Path, steps: int = 50, size: int = 64, seed: int = 0,
            policy: str = "mixed", overwrite: bool = False, progress: bool = True, start: str = "random") -> Path:
    """Collect and write the dataset; return its directory (`<out>/robot_episodes/<task>/1.0.0`)."""
    from jepa.data.cli import load_builder_class

    builder_cls = load_builder_class("robot_episodes")  # the tfds builder data/robot_episodes (jepa_datasets)
    builder = builder_cls(config=task, data_dir=str(out), file_format="array_record", episodes=episodes, steps=steps,
                          size=size, seed=seed, policy=policy, start=start, progress=progress)
    target = Path(builder.data_dir)
    if target.exists():
        if not overwrite:
            raise FileExistsError(f"{target} already exists; pass --overwrite to replace it")
        shutil.rmtree(target)
        builder = builder_cls(config=task, data_dir=str(out), file_format="array_record", episodes=episodes,
                              steps=steps, size=size, seed=seed, policy=policy, start=start, progress=progress)
    with tempfile.TemporaryDirectory() as downloads:  # nothing is downloaded; keep tfds' empty dirs out of `out`
        builder.download_and_prepare(download_dir=downloads)
    return target


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    try:
        path = collect(args.task, args.episodes, args.out, args.steps, args.size, args.seed, args.policy,
                       args.overwrite, progress=not args.quiet, start=args.start)
    except (FileExistsError, ValueError) as e:
        print(f"jepa collect: error: {e}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - t0
    n = args.episodes * args.steps
    print(f"wrote {args.episodes} episodes ({n} steps, {n / elapsed:.0f} steps/s) to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
