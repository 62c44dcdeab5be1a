"""MuJoCo goal-image tasks for planning with world models.

Importing this package sets MUJOCO_GL=egl (headless rendering) unless it is already set, and registers:

  jepa/Reach-v0        table-top gripper: move the TCP to a goal position      (planning.envs.tasks.ReachEnv)
  jepa/Push-v0         table-top gripper: push the cube to a goal position     (planning.envs.tasks.PushEnv)
  jepa/PickPlace-v0    table-top gripper: lift the cube to a raised goal       (planning.envs.tasks.PickPlaceEnv)
  jepa/GoalReacher-v0  gymnasium Reacher-v5 as a goal-image task               (planning.envs.adapters.GoalReacher)
  jepa/GoalPusher-v0   gymnasium Pusher-v5 as a goal-image task                (planning.envs.adapters.GoalPusher)

`gym.make(id, render_mode='rgb_array', size=64)`; gymnasium 1.x wrappers do not forward attributes, so use
`env.unwrapped` for the goal API (sample_goal, get_state, set_state, distance_to_goal, is_success, ...).
"""
from __future__ import annotations

import os
import sys

_GL_CHOSEN_BY_USER = "MUJOCO_GL" in os.environ
_MUJOCO_IMPORTED_FIRST = "mujoco" in sys.modules
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import gymnasium as gym  # noqa: E402

from planning.envs.goal import Goal, GoalTaskMixin  # noqa: E402
from planning.envs.rendering import use_egl_if_headless  # noqa: E402

if _MUJOCO_IMPORTED_FIRST and not _GL_CHOSEN_BY_USER:
    use_egl_if_headless()  # mujoco picked GLFW before we could set MUJOCO_GL

TASKS = {
    "jepa/Reach-v0": ("planning.envs.tasks:ReachEnv", 30),
    "jepa/Push-v0": ("planning.envs.tasks:PushEnv", 60),
    "jepa/PickPlace-v0": ("planning.envs.tasks:PickPlaceEnv", 60),
    "jepa/GoalReacher-v0": ("planning.envs.adapters:GoalReacher", 100),
    "jepa/GoalPusher-v0": ("planning.envs.adapters:GoalPusher", 100),
}
# Short names accepted by `jepa collect --task`.
ALIASES = {"reach": "jepa/Reach-v0", "push": "jepa/Push-v0", "pickplace": "jepa/PickPlace-v0",
           "reacher": "jepa/GoalReacher-v0", "pusher": "jepa/GoalPusher-v0"}


def _register() -> None:
    for env_id, (entry_point, max_steps) in TASKS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, max_episode_steps=max_steps)


def make(task: str, **kwargs):
    """The unwrapped env for a registered id or a short name (reach, push, pickplace, reacher, pusher)."""
    env_id = ALIASES.get(task, task)
    if env_id not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(ALIASES)} or {sorted(TASKS)}")
    return gym.make(env_id, disable_env_checker=True, **kwargs).unwrapped


_register()

__all__ = ["Goal", "GoalTaskMixin", "TASKS", "ALIASES", "make"]
