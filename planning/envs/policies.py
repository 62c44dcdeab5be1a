"""Scripted experts and exploratory policies for the table-top tasks.

A policy is a callable `policy(env) -> action f32[7]` that reads the env's public state (tcp_pos, tcp_euler,
gripper, grip_command, cube_pos, cube_yaw). The experts are closed-loop and memoryless (their phase is inferred
from the state each step), so they can be switched mid-episode and recover from perturbations.
"""
from __future__ import annotations

import numpy as np

from planning.envs import scene
from planning.envs.workspace import ACTION_HIGH, MAX_DXYZ, WORKSPACE_HIGH, WORKSPACE_LOW

HOVER_Z = 0.085  # TCP height for moving above the cube (fingertips 6.5 cm up, clear of the 5 cm cube)
PUSH_Z = scene.FINGER_BELOW_TCP + 0.002  # TCP height while pushing (fingertips just above the table)
PUSH_OFFSET = scene.CUBE_HALF + 0.02 + 0.012  # TCP distance behind the cube centre before a push
GRASP_Z = scene.CUBE_HALF  # TCP at the cube's centre height


def _move(delta: np.ndarray, limit: float = MAX_DXYZ) -> np.ndarray:
    """Translation command toward `delta` with L-inf norm <= limit."""
    return np.clip(delta, -limit, limit)


def _action(dxyz: np.ndarray, dyaw: float = 0.0, dgrip: float = 0.0) -> np.ndarray:
    a = np.zeros(7, np.float32)
    a[:3] = dxyz
    a[5] = dyaw
    a[6] = dgrip
    return np.clip(a, -ACTION_HIGH, ACTION_HIGH)


def _wrap_quarter(angle: float) -> float:
    """Angle folded into [-pi/4, pi/4): a cube looks the same every quarter turn."""
    return float((angle + np.pi / 4) % (np.pi / 2) - np.pi / 4)


class ReachPolicy:
    """Move the TCP to `target` (xyz) in straight steps; gripper command unchanged; optional Gaussian noise."""

    def __init__(self, target: np.ndarray, rng: np.random.Generator, noise: float = 0.0):
        self.target = np.clip(np.asarray(target, float), WORKSPACE_LOW, WORKSPACE_HIGH)
        self.rng, self.noise = rng, noise

    def __call__(self, env) -> np.ndarray:
        delta = _move(self.target - env.target_pos) + self.noise * self.rng.normal(size=3)
        return _action(delta)


class PushPolicy:
    """Push the cube along the table to `target_xy` with the closed fingers.

    Phases from the state: close the gripper; if the TCP is not behind the cube on the cube->target line, rise to
    HOVER_Z, move above the pre-push point, descend; then push along the line (<= 4 cm per step), steering
    back onto the line when the cube drifts sideways. At the target it rises clear (`finish='rise'`) or stays
    (`finish='hold'`)."""

    def __init__(self, target_xy: np.ndarray, rng: np.random.Generator, noise: float = 0.0, step: float = 0.04,
                 finish: str = "rise"):
        if finish not in ("rise", "hold"):
            raise ValueError(f"finish must be 'rise' or 'hold', got {finish!r}")
        self.target = np.asarray(target_xy, float)
        self.rng, self.noise, self.step, self.finish = rng, noise, step, finish

    def __call__(self, env) -> np.ndarray:
        tcp, cube = env.target_pos, env.cube_pos
        dgrip = 1.0 - env.grip_command
        to_goal = self.target - cube[:2]
        dist = float(np.linalg.norm(to_goal))
        if dist < 0.01:  # done: rise clear of the cube (play data), or stay where the push ended (goal images)
            up = HOVER_Z - tcp[2] if self.finish == "rise" else 0.0
            return _action(_move(np.array([0.0, 0.0, up]), 0.03), dgrip=dgrip)
        u = to_goal / dist
        pre = cube[:2] - u * PUSH_OFFSET
        rel = tcp[:2] - cube[:2]
        along = float(rel @ u)
        lateral = rel - along * u
        behind = along < -(PUSH_OFFSET - 0.02) and np.linalg.norm(lateral) < 0.02
        if behind and tcp[2] < PUSH_Z + 0.015:
            # Push: the TCP heads for the point from which the cube would sit on the target, correcting sideways.
            aim = self.target - u * PUSH_OFFSET
            go = aim - tcp[:2]
            go *= min(1.0, self.step / max(float(np.linalg.norm(go)), 1e-9))  # along the line, at most `step`
            delta = np.append(go - 0.5 * lateral, PUSH_Z - tcp[2])
        elif np.linalg.norm(tcp[:2] - pre) < 0.015:
            delta = np.append(pre - tcp[:2], PUSH_Z - tcp[2])  # descend behind the cube
        elif tcp[2] < HOVER_Z - 0.01 and np.linalg.norm(rel) < 0.09:
            delta = np.array([0.0, 0.0, HOVER_Z - tcp[2]])  # clear the cube before moving around it
        else:
            delta = np.append(pre - tcp[:2], HOVER_Z - tcp[2])
        delta = _move(delta) + self.noise * self.rng.normal(size=3)
        return _action(delta, dgrip=dgrip)


class PickPlacePolicy:
    """Grasp the cube from above (yaw aligned with a cube face) and carry it to `target` (xyz).

    Phases from the state: open and hover above the cube, align yaw, descend to the cube centre, close, then carry
    to the target while keeping the gripper closed. A grasp that failed (closed on nothing / cube not between the
    fingers) is released and retried."""

    def __init__(self, target: np.ndarray, rng: np.random.Generator, noise: float = 0.0):
        self.target = np.clip(np.asarray(target, float), WORKSPACE_LOW, WORKSPACE_HIGH)
        self.rng, self.noise = rng, noise

    def __call__(self, env) -> np.ndarray:
        tcp, cmd_tcp, cube = env.tcp_pos, env.target_pos, env.cube_pos
        closing = env.grip_command > 0.5
        holding = closing and 0.15 < env.gripper < 0.85 and np.linalg.norm(cube - tcp) < 0.03
        dyaw = 0.0
        if holding:
            delta, dgrip = _move(self.target - cmd_tcp), 1.0
        elif closing:
            # Closed on nothing or lost the cube: open and back off upward.
            delta, dgrip = np.array([0.0, 0.0, HOVER_Z - cmd_tcp[2]]), -1.0
        else:
            dgrip = 0.0
            dyaw = _wrap_quarter(env.cube_yaw - env.tcp_euler[2])
            xy_err = cube[:2] - cmd_tcp[:2]
            if np.linalg.norm(xy_err) > 0.012 or abs(dyaw) > 0.15:
                z = HOVER_Z if np.linalg.norm(xy_err) > 0.03 else max(cmd_tcp[2], GRASP_Z + 0.03)
                if cmd_tcp[2] < HOVER_Z - 0.01 and np.linalg.norm(xy_err) > 0.03:
                    xy_err = np.zeros(2)  # rise first, then travel
                delta = np.append(xy_err, z - cmd_tcp[2])
            elif cmd_tcp[2] > GRASP_Z + 0.005:
                delta = np.append(xy_err, GRASP_Z - cmd_tcp[2])
            else:
                delta, dgrip = np.append(xy_err, 0.0), 1.0
        delta = _move(delta) + self.noise * self.rng.normal(size=3)
        return _action(delta, dyaw=np.clip(dyaw, -0.25, 0.25), dgrip=dgrip)


class RandomWalkPolicy:
    """Smoothed random exploration: an AR(1) velocity in xyz (scaled to the step bound), small random yaw, and a
    gripper command that toggles now and then. Covers the workspace (the env clips at its bounds)."""

    def __init__(self, rng: np.random.Generator, smooth: float = 0.7, scale: float = 0.05, toggle_p: float = 0.1):
        self.rng, self.smooth, self.scale, self.toggle_p = rng, smooth, scale, toggle_p
        self.velocity = rng.normal(size=3) * scale

    def __call__(self, env) -> np.ndarray:
        self.velocity = self.smooth * self.velocity + (1 - self.smooth) * self.rng.normal(size=3) * 2 * self.scale
        dgrip = self.rng.choice([-1.0, 1.0]) if self.rng.random() < self.toggle_p else 0.0
        dyaw = self.rng.normal() * 0.05
        return _action(_move(self.velocity), dyaw=dyaw, dgrip=dgrip)


class MixedExplorationPolicy:
    """Data-collection policy with broad coverage including cube contact: the episode is cut into segments of
    5-20 steps, each run by one of {pick-and-place, push, reach (above/at the cube or a random point), random
    walk} with a random target and action noise (std 0-1.5 cm); occasional random gripper toggles."""

    WEIGHTS = {"pickplace": 0.3, "push": 0.3, "reach": 0.15, "random": 0.25}

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.left = 0
        self.current = None
        self.mode = ""

    def _new_segment(self, env) -> None:
        rng = self.rng
        modes = list(self.WEIGHTS)
        self.mode = str(rng.choice(modes, p=np.array(list(self.WEIGHTS.values()))))
        noise = rng.uniform(0.0, 0.015)
        self.left = int(rng.integers(5, 21))
        if self.mode == "pickplace":
            self.current = PickPlacePolicy(sample_raised_target(rng), rng, noise)
        elif self.mode == "push":
            self.current = PushPolicy(sample_push_target(rng, env.cube_pos), rng, noise)
        elif self.mode == "reach":
            if rng.random() < 0.5:
                target = env.cube_pos + np.array([0.0, 0.0, rng.uniform(0.0, 0.08)]) + rng.normal(size=3) * 0.01
            else:
                target = rng.uniform(WORKSPACE_LOW, WORKSPACE_HIGH)
            self.current = ReachPolicy(target, rng, noise)
        else:
            self.current = RandomWalkPolicy(rng)

    def __call__(self, env) -> np.ndarray:
        if self.left <= 0 or self.current is None:
            self._new_segment(env)
        self.left -= 1
        action = self.current(env)
        if self.rng.random() < 0.03:
            action[6] = self.rng.choice([-1.0, 1.0])
        return action


def sample_reach_target(rng: np.random.Generator, tcp: np.ndarray, min_dist: float = 0.08) -> np.ndarray:
    """A TCP target in x, y in [-0.14, 0.14], z in [0.03, 0.15], at least `min_dist` from `tcp`."""
    while True:
        target = rng.uniform([-0.14, -0.14, 0.03], [0.14, 0.14, 0.15])
        if np.linalg.norm(target - tcp) >= min_dist:
            return target


def sample_push_target(rng: np.random.Generator, cube: np.ndarray, lo: float = 0.08, hi: float = 0.18) -> np.ndarray:
    """A cube target xy in [-0.13, 0.13]^2 at distance [lo, hi] from the cube."""
    for _ in range(1000):
        target = rng.uniform(-0.13, 0.13, size=2)
        if lo <= np.linalg.norm(target - cube[:2]) <= hi:
            return target
    return np.clip(cube[:2] + lo * np.array([1.0, 0.0]) * -np.sign(cube[0] or 1.0), -0.13, 0.13)


def sample_raised_target(rng: np.random.Generator) -> np.ndarray:
    """A raised cube target: x, y in [-0.12, 0.12], z in [0.08, 0.14]."""
    return rng.uniform([-0.12, -0.12, 0.08], [0.12, 0.12, 0.14])
