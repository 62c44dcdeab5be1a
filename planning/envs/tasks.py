"""The three table-top tasks: what the goal is, how it is measured, and which expert reaches it.

Success thresholds (also `env.success_threshold`; `info['is_success']` is distance < threshold):
  Reach      distance = |TCP xyz - goal TCP xyz|          < 0.05 m
  Push       distance = |cube xy - goal cube xy|          < 0.05 m
  PickPlace  distance = |cube xyz - goal cube xyz|        < 0.05 m  (goal cube raised 8-14 cm by the expert)
Goals come from `sample_goal` (planning.envs.goal): K steps of the task's expert toward a random target
(reach: a TCP point >= 8 cm away; push: a cube position 8-18 cm away; pick-place: a raised point), or of a random
walk; the goal is what was actually achieved after K steps, so it is reachable by construction.
"""
from __future__ import annotations

import numpy as np

from planning.envs import policies
from planning.envs.tabletop import TableTopEnv


class ReachEnv(TableTopEnv):
    """Move the gripper's TCP to the goal position."""

    task = "reach"
    language_instruction = "move the gripper to the goal"
    success_threshold = 0.05
    default_goal_steps = 5

    def achieved(self) -> np.ndarray:
        return self.tcp_pos

    def goal_distance(self, achieved: np.ndarray, goal: np.ndarray) -> float:
        return float(np.linalg.norm(achieved - goal))

    def expert(self, rng: np.random.Generator, noise: float = 0.0) -> policies.ReachPolicy:
        return policies.ReachPolicy(policies.sample_reach_target(rng, self.tcp_pos), rng, noise)

    def make_policy(self, kind: str, rng: np.random.Generator):
        return self.expert(rng) if kind == "scripted" else policies.RandomWalkPolicy(rng)


class PushEnv(TableTopEnv):
    """Push the cube along the table to the goal position (xy).

    start='random' (default): the gripper starts anywhere, and the goal is 20 steps of the push expert (approach,
    then push). start='contact': the closed gripper starts right behind the cube, and the goal is `goal_steps`
    steps of the expert pushing toward a target 14-20 cm away (default 4 steps: the cube moves about 9-14 cm)."""

    task = "push"
    language_instruction = "push the red cube to the goal"
    success_threshold = 0.05
    default_goal_steps = 20
    contact_goal_steps = 4
    contact_cube_turn = 0.2  # rad: the cube's face toward the gripper is turned by up to this much
    contact_gap = (0.03, 0.05)  # the gripper stands this much further back than where a push starts (m)
    goal_min_visible = 0.5  # goal images show at least half of the cube (not hidden behind the hand)
    starts = ("random", "contact")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.start == "contact" and kwargs.get("goal_steps") is None:
            self.goal_steps = self.contact_goal_steps

    def contact_start(self, rng: np.random.Generator,
                      cube_xy: np.ndarray) -> tuple[np.ndarray, float, float, np.ndarray, float]:
        """The closed gripper at push height behind the cube, on the line from a push target 14-20 cm away, turned
        so that its closed fingers (4 cm across the hand's x axis) face the cube broadside; `contact_gap` further
        back than where the expert's push begins."""
        target = policies.sample_push_target(rng, np.append(cube_xy, 0.0), lo=0.14, hi=0.2)
        u = (target - cube_xy) / np.linalg.norm(target - cube_xy)
        gap = rng.uniform(*self.contact_gap)
        tcp = np.append(cube_xy - u * (policies.PUSH_OFFSET + gap), policies.PUSH_Z)
        heading = float(np.arctan2(u[1], u[0]))
        yaw = float((heading + np.pi) % np.pi - np.pi / 2)  # hand x perpendicular to u, |yaw| <= pi/2
        cube_yaw = heading + rng.uniform(-self.contact_cube_turn, self.contact_cube_turn)  # a face toward the gripper
        return tcp, yaw, 0.0, target, cube_yaw

    def achieved(self) -> np.ndarray:
        return self.cube_pos[:2]

    def goal_distance(self, achieved: np.ndarray, goal: np.ndarray) -> float:
        return float(np.linalg.norm(achieved[:2] - goal[:2]))

    def expert(self, rng: np.random.Generator, noise: float = 0.0) -> policies.PushPolicy:
        if self._start_target is not None:  # a contact start: push the way the gripper stands, stay at the end
            return policies.PushPolicy(self._start_target, rng, noise, finish="hold")
        return policies.PushPolicy(policies.sample_push_target(rng, self.cube_pos), rng, noise)

    def make_policy(self, kind: str, rng: np.random.Generator):
        return self.expert(rng) if kind == "scripted" else policies.RandomWalkPolicy(rng)


class PickPlaceEnv(TableTopEnv):
    """Pick the cube up and hold it at the raised goal position."""

    task = "pickplace"
    language_instruction = "pick up the red cube and place it at the goal"
    success_threshold = 0.05
    default_goal_steps = 12

    def achieved(self) -> np.ndarray:
        return self.cube_pos

    def goal_distance(self, achieved: np.ndarray, goal: np.ndarray) -> float:
        return float(np.linalg.norm(achieved - goal))

    def expert(self, rng: np.random.Generator, noise: float = 0.0) -> policies.PickPlacePolicy:
        return policies.PickPlacePolicy(policies.sample_raised_target(rng), rng, noise)

    def make_policy(self, kind: str, rng: np.random.Generator):
        return self.expert(rng) if kind == "scripted" else policies.RandomWalkPolicy(rng)
