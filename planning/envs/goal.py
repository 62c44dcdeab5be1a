"""The goal-image task API shared by the table-top tasks and the gymnasium adapters.

Goals are reachable by construction (the V-JEPA 2-AC / DINO-WM protocol): from the current state a scripted or
random policy runs K steps, the goal image is rendered and the goal quantities recorded, then the start state is
restored exactly. `GoalTaskMixin.sample_goal` implements that once on top of a few primitives. The mixin itself
provides the full MuJoCo state save/restore from the env's `model`, `data` and `_state_size`
(= mujoco.mj_stateSize(model, STATE_SPEC)):

    get_state() -> np.ndarray            full simulator state (float64 vector)
    set_state(state) -> None             restore it exactly (renders and later steps reproduce)

and each env provides:

    advance(action) -> None              one control step of physics, no rendering, no goal bookkeeping
    render_image() -> np.ndarray         uint8 [H, W, 3] from the task camera (whatever the render_mode)
    proprio_state() -> np.ndarray        the agent's own state vector (Goal.state)
    achieved() -> np.ndarray             the quantity the success predicate compares with the goal's
    object_position() -> np.ndarray|None the manipulated object's position (None if there is none)
    make_policy(kind, rng) -> callable   'scripted' / 'random' policy: policy(env) -> action
    goal_distance(achieved, goal) -> float
    success_threshold: float
    place_target(achieved) -> None       optional: move the env's own goal marker (gymnasium adapters), done
                                         in the goal's sim_state and by set_goal, so a replay of goal.actions
                                         after set_goal(goal) reaches goal.sim_state exactly
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import mujoco
import numpy as np

# Everything that determines the future of a simulation: time, qpos, qvel, act, warm start, ctrl, mocap, ...
STATE_SPEC = mujoco.mjtState.mjSTATE_INTEGRATION

Policy = Callable[[Any], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Goal:
    """A goal reached by a policy from a start state.

    image:     uint8 [H, W, 3] goal image from the task camera.
    state:     the agent's state at the goal (table-top: f32 [7] = [xyz, Euler xyz, gripper]).
    achieved:  what the success predicate compares (reach: TCP xyz; push: cube xy; pick-place: cube xyz;
               Reacher: fingertip xy; Pusher: object xy).
    cube_pos:  position of the manipulated object at the goal (cube / Pusher object), None for Reacher.
    sim_state: full simulator state at the goal (`get_state()` vector).
    actions:   [K, action_dim] actions the generating policy executed from the start state.
    policy:    'scripted' or 'random'.
    visible:   the share of the manipulated object's pixels the goal image shows (the rest hidden by the agent),
               None where the task does not measure it.
    """

    image: np.ndarray
    state: np.ndarray
    achieved: np.ndarray
    cube_pos: np.ndarray | None
    sim_state: np.ndarray
    actions: np.ndarray
    policy: str
    visible: float | None = None

    @property
    def steps(self) -> int:
        return int(self.actions.shape[0])


def as_rng(rng: np.random.Generator | int | None, default: np.random.Generator) -> np.random.Generator:
    """A Generator from a Generator, an integer seed, or None (then `default`)."""
    if rng is None:
        return default
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(int(rng))


class GoalTaskMixin:
    """Goal sampling, distances and an oracle rollout helper on top of the primitives listed in the module doc."""

    goal: Goal | None = None
    success_threshold: float = 0.05
    default_goal_steps: int = 10

    def object_visibility(self) -> float | None:
        """The share of the manipulated object's pixels the camera sees now (None: not measured by this task)."""
        return None

    # -- simulator state ----------------------------------------------------------------------------------------
    def get_state(self) -> np.ndarray:
        """Full simulator state (float64 [n]): see STATE_SPEC."""
        out = np.empty(self._state_size, dtype=np.float64)
        mujoco.mj_getState(self.model, self.data, out, STATE_SPEC)
        return out

    def set_state(self, state: np.ndarray) -> None:
        """Restore a `get_state()` vector exactly (then recompute derived quantities for rendering / accessors)."""
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (self._state_size,):
            raise ValueError(f"state must have shape ({self._state_size},), got {state.shape}")
        mujoco.mj_setState(self.model, self.data, state, STATE_SPEC)
        mujoco.mj_forward(self.model, self.data)

    # -- goal API -----------------------------------------------------------------------------------------------
    def sample_goal(
        self,
        rng: np.random.Generator | int | None = None,
        steps: int | None = None,
        policy: str = "scripted",
        set_goal: bool = True,
    ) -> Goal:
        """Run `steps` steps of the 'scripted' or 'random' policy from the current state, render the goal image,
        record the goal, restore the start state exactly, and (by default) make it the active goal."""
        if policy not in ("scripted", "random"):
            raise ValueError(f"policy must be 'scripted' or 'random', got {policy!r}")
        steps = self.default_goal_steps if steps is None else int(steps)
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        rng = as_rng(rng, self.np_random)
        start = self.get_state()
        actor = self.make_policy(policy, rng)
        actions = []
        for _ in range(steps):
            action = np.asarray(actor(self), dtype=np.float32)
            self.advance(action)
            actions.append(action)
        achieved = np.asarray(self.achieved(), dtype=np.float64).copy()
        self.place_target(achieved)
        obj = self.object_position()
        goal = Goal(
            image=self.render_image(),
            state=np.asarray(self.proprio_state(), dtype=np.float32).copy(),
            achieved=achieved,
            cube_pos=None if obj is None else np.asarray(obj, dtype=np.float64).copy(),
            sim_state=self.get_state(),
            actions=np.asarray(actions, dtype=np.float32).reshape(steps, self.action_dim),
            policy=policy,
            visible=self.object_visibility(),
        )
        self.set_state(start)
        if set_goal:
            self.set_goal(goal)
        return goal

    def set_goal(self, goal: Goal | None) -> None:
        """Make `goal` the active goal (used by distance_to_goal / is_success / info) and place the env's own
        target marker there (`place_target`; a no-op for the table-top tasks)."""
        self.goal = goal
        if goal is not None:
            self.place_target(goal.achieved)

    def place_target(self, achieved: np.ndarray) -> None:
        """Move the env's own (non-colliding) goal marker to `achieved`; a no-op unless the env has one."""

    def distance_to_goal(self) -> float:
        """Distance between the achieved quantity and the active goal's (nan when no goal is set)."""
        if self.goal is None:
            return float("nan")
        return float(self.goal_distance(self.achieved(), self.goal.achieved))

    def is_success(self) -> bool:
        """distance_to_goal() < success_threshold."""
        return bool(self.distance_to_goal() < self.success_threshold)

    def goal_info(self) -> dict[str, Any]:
        distance = self.distance_to_goal()
        return {"distance": distance, "is_success": bool(distance < self.success_threshold)}

    # -- oracle ---------------------------------------------------------------------------------------------------
    def rollout_distances(self, state: np.ndarray, action_sequences: np.ndarray) -> np.ndarray:
        """True distance to the active goal after each candidate action sequence [N, H, action_dim] run from
        `state` (no rendering). The env's current state is restored afterwards. Returns float64 [N]."""
        seqs = np.asarray(action_sequences, dtype=np.float32)
        if seqs.ndim != 3 or seqs.shape[-1] != self.action_dim:
            raise ValueError(f"action_sequences must be [N, H, {self.action_dim}], got {seqs.shape}")
        current = self.get_state()
        out = np.empty(seqs.shape[0], dtype=np.float64)
        for i, seq in enumerate(seqs):
            self.set_state(state)
            for action in seq:
                self.advance(action)
            out[i] = self.distance_to_goal()
        self.set_state(current)
        return out
