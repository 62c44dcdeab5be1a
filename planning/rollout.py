"""Run a collection policy in a task env and record its steps in RLDS form.

`collect_episode` gives the steps one episode of `jepa collect` writes (the tfds builder
`jepa_datasets.robot_episodes`, data/robot_episodes/robot_episodes_dataset_builder.py, has the schema); `observe` is
one step's observation without the image, whose cartesian_position + gripper_position are also the planner's state
(`planning.mpc.observe_state`). Both take a table-top env (planning.envs.tabletop) or a gymnasium adapter
(planning.envs.adapters).
"""
from __future__ import annotations

from typing import Any

import numpy as np


def observe(env) -> dict[str, np.ndarray]:
    """One step's observation dict (without the image) for a table-top env or an adapter."""
    if hasattr(env, "ee_state"):
        ee = env.ee_state()
        return {
            "cartesian_position": ee[:6].astype(np.float32),
            "gripper_position": ee[6:7].astype(np.float32),
            "state": ee.astype(np.float32),
            "object_position": env.cube_pos.astype(np.float32),
        }
    obj = env.object_position()
    return {
        "cartesian_position": np.concatenate([env.ee_position(), np.zeros(3)]).astype(np.float32),
        "gripper_position": np.zeros(1, np.float32),
        "state": np.asarray(env.proprio_state(), np.float32),
        "object_position": np.zeros(3, np.float32) if obj is None else np.asarray(obj, np.float32),
    }


def collect_episode(env, policy, seed: int, steps: int) -> list[dict[str, Any]]:
    """Reset `env` with `seed`, run `policy` for `steps` actions, return the RLDS steps (steps + 1 of them)."""
    env.reset(seed=seed, options={"auto_goal": False})
    out: list[dict[str, Any]] = []
    zero = np.zeros(env.action_dim, np.float32)
    for t in range(steps + 1):
        obs = {"exterior_image_1_left": env.render_image(), **observe(env)}
        last = t == steps
        action = zero if last else np.clip(np.asarray(policy(env), np.float32),
                                           env.action_space.low, env.action_space.high)
        out.append({
            "observation": obs,
            "action": action,
            "reward": np.float32(0.0),
            "discount": np.float32(1.0),
            "is_first": t == 0,
            "is_last": last,
            "is_terminal": False,
            "language_instruction": env.language_instruction,
        })
        if not last:
            env.advance(action)
    return out
