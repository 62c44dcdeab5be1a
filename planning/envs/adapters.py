"""gymnasium's own Reacher-v5 and Pusher-v5 as goal-image tasks with the table-top tasks' goal API.

Each adapter is a gymnasium.Env holding the unwrapped gymnasium env as `.inner` (no TimeLimit: the planner owns
the step budget; `env.unwrapped` is the adapter itself, with the goal API) and adds
get_state / set_state (MuJoCo mjSTATE_INTEGRATION), `advance` (one env step, no rendering), `render_image` from a
fixed free camera at a configurable size with shadows off, and `sample_goal` / `distance_to_goal` / `is_success`
(planning.envs.goal). Actions are the env's own joint torques: `action_dim` is 2 (Reacher) / 7 (Pusher).

The env's own target marker (Reacher's red ball, Pusher's red disc) is made invisible: the goal is given only as an
image. When a goal is set, the env's internal target is moved to the goal's achieved position, so the env's own
reward agrees with `distance_to_goal` (the markers have no collision, so this does not change the dynamics).

Success thresholds:
  GoalReacher  |fingertip xy - goal fingertip xy| < 0.02 m  (fingertip sphere 1 cm + target sphere 0.9 cm touching)
  GoalPusher   |object xy - goal object xy|       < 0.05 m  (the object's radius)
"""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import sys  # noqa: E402
import types  # noqa: E402
from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402


def _ensure_imageio() -> None:
    """gymnasium.envs.mujoco imports `imageio` (its `gymnasium[mujoco]` extra) at module level, only to save
    screenshots from the interactive viewer. This project does not pin imageio; when it is missing, a placeholder
    module whose `imwrite` raises is installed so the env classes import. Nothing here renders through it."""
    try:
        import imageio  # noqa: F401
    except ImportError:
        shim = types.ModuleType("imageio")

        def imwrite(*args: Any, **kwargs: Any) -> None:
            raise ImportError("imageio is not installed (pip install imageio, the gymnasium[mujoco] extra)")

        shim.imwrite = imwrite
        sys.modules["imageio"] = shim


_ensure_imageio()
from gymnasium.envs.mujoco.pusher_v5 import PusherEnv  # noqa: E402
from gymnasium.envs.mujoco.reacher_v5 import ReacherEnv  # noqa: E402

from planning.envs.goal import STATE_SPEC, GoalTaskMixin  # noqa: E402
from planning.envs.rendering import new_renderer  # noqa: E402



class _GoalAdapter(GoalTaskMixin, gym.Env):
    """Common machinery: state save / restore, rendering, goal bookkeeping. Subclasses set the camera, the goal
    quantity and the policies."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    camera: dict[str, Any] = {}
    marker_geom = ""
    target_joints: tuple[str, str] = ("", "")  # slide joints (x, y) of the env's target body
    target_body = ""

    def __init__(
        self,
        env: gym.Env,
        render_mode: str | None = None,
        size: int | tuple[int, int] = 64,
        auto_goal: bool = True,
        goal_steps: int | None = None,
        goal_policy: str = "scripted",
    ):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.inner = env
        self.action_space = env.action_space
        self.observation_space = env.observation_space
        self.metadata = {**self.metadata, "render_fps": round(1.0 / env.dt)}
        self.render_mode = render_mode
        self.height, self.width = (size, size) if isinstance(size, int) else tuple(size)
        self.auto_goal = auto_goal
        self.goal_steps = self.default_goal_steps if goal_steps is None else int(goal_steps)
        self.goal_policy = goal_policy
        self.model: mujoco.MjModel = env.model
        self.data: mujoco.MjData = env.data
        self.model.geom_rgba[self.model.geom(self.marker_geom).id, 3] = 0.0
        self.action_dim = int(np.prod(env.action_space.shape))
        self._state_size = mujoco.mj_stateSize(self.model, STATE_SPEC)
        self._renderer: mujoco.Renderer | None = None
        self._cam = mujoco.MjvCamera()
        self._cam.type = mujoco.mjtCamera.mjCAMERA_FREE
        self._cam.lookat[:] = self.camera["lookat"]
        self._cam.distance = self.camera["distance"]
        self._cam.azimuth = self.camera["azimuth"]
        self._cam.elevation = self.camera["elevation"]
        self._target_qpos = np.array([self.model.jnt_qposadr[self.model.joint(j).id] for j in self.target_joints])
        self._target_dof = np.array([self.model.jnt_dofadr[self.model.joint(j).id] for j in self.target_joints])
        self.goal = None

    @property
    def dt(self) -> float:
        return float(self.inner.unwrapped.dt)

    # -- GoalTaskMixin primitives ---------------------------------------------------------------------------------
    def advance(self, action: np.ndarray) -> None:
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(self.action_dim),
                    self.action_space.low, self.action_space.high)
        self.inner.do_simulation(a, self.inner.frame_skip)
        mujoco.mj_kinematics(self.model, self.data)

    def place_target(self, achieved: np.ndarray) -> None:
        """Move the env's (invisible, non-colliding) target body to `achieved` (xy) so its own reward agrees."""
        body = self.model.body(self.target_body)
        # Slide joints along world x and y: shifting qpos shifts the body by the same amount.
        self.data.qpos[self._target_qpos] += np.asarray(achieved)[:2] - self.data.xpos[body.id][:2]
        self.data.qvel[self._target_dof] = 0.0
        mujoco.mj_forward(self.model, self.data)

    def collection_policy(self, kind: str, rng: np.random.Generator):
        """Policy for data collection: 'mixed' (segments of 5-20 steps, each the expert toward a fresh random target
        with torque noise, or random torques), 'scripted' (the expert with a little noise) or 'random'."""
        if kind == "mixed":
            return _MixedAdapterPolicy(self, rng)
        if kind == "scripted":
            return self.expert(rng, noise=0.05)
        if kind == "random":
            return RandomTorquePolicy(rng, self.action_space.low, self.action_space.high)
        raise ValueError(f"unknown policy {kind!r}: choose mixed, scripted or random")

    # -- gymnasium API ----------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = options or {}
        obs, info = self.inner.reset(seed=seed)
        self.goal = None
        if options.get("auto_goal", self.auto_goal):
            self.sample_goal(
                self.np_random,
                steps=options.get("goal_steps", self.goal_steps),
                policy=options.get("goal_policy", self.goal_policy),
            )
            obs = self.inner._get_obs()
        return obs, {**info, **self.goal_info()}

    def step(self, action: np.ndarray):
        """The inner env's step (its observation and reward), computed after refreshing the kinematics so that
        positions are those of the new state (gymnasium's own step reads them one physics substep stale)."""
        a = np.asarray(action, dtype=np.float64)
        self.advance(a)
        obs = self.inner._get_obs()
        reward, info = self.inner._get_rew(a)
        return obs, float(reward), False, False, {**info, **self.goal_info()}

    def render(self) -> np.ndarray | None:
        return self.render_image() if self.render_mode == "rgb_array" else None

    def render_image(self) -> np.ndarray:
        if self._renderer is None:
            self._renderer = new_renderer(self.model, self.height, self.width)
        self._renderer.update_scene(self.data, camera=self._cam)
        return self._renderer.render().copy()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self.inner.close()


# ------------------------------------------------------------------------------------------------------ Reacher
REACHER_L1, REACHER_L2 = 0.1, 0.11  # link lengths to the elbow and to the fingertip (reacher.xml)


class ReacherPolicy:
    """Scripted Reacher expert: analytic 2-link inverse kinematics to a target point (the elbow branch closest to
    the current configuration), then a PD torque law; `noise` adds Gaussian torque noise."""

    def __init__(self, target_xy: np.ndarray, rng: np.random.Generator, kp: float = 2.0, kd: float = 0.25,
                 noise: float = 0.0):
        self.target = np.asarray(target_xy, float)
        self.rng, self.kp, self.kd, self.noise = rng, kp, kd, noise

    def __call__(self, env: GoalReacher) -> np.ndarray:
        q, dq = env.data.qpos[:2], env.data.qvel[:2]
        x, y = self.target
        r2 = np.clip(x * x + y * y, (REACHER_L2 - REACHER_L1 + 1e-3) ** 2, (REACHER_L1 + REACHER_L2 - 1e-3) ** 2)
        c1 = np.clip((r2 - REACHER_L1**2 - REACHER_L2**2) / (2 * REACHER_L1 * REACHER_L2), -1.0, 1.0)
        best = None
        for q1 in (np.arccos(c1), -np.arccos(c1)):
            q0 = np.arctan2(y, x) - np.arctan2(REACHER_L2 * np.sin(q1), REACHER_L1 + REACHER_L2 * np.cos(q1))
            err = np.array([_wrap(q0 - q[0]), q1 - q[1]])
            if best is None or np.abs(err).sum() < np.abs(best).sum():
                best = err
        torque = self.kp * best - self.kd * dq + self.noise * self.rng.normal(size=2)
        return np.clip(torque, -1.0, 1.0).astype(np.float32)


class RandomTorquePolicy:
    """Uniform random torques in the action box, held for `hold` steps (smoother, wider-ranging motion)."""

    def __init__(self, rng: np.random.Generator, low: np.ndarray, high: np.ndarray, hold: int = 3):
        self.rng, self.low, self.high, self.hold = rng, low, high, hold
        self.count, self.action = 0, None

    def __call__(self, env) -> np.ndarray:
        if self.count % self.hold == 0:
            self.action = self.rng.uniform(self.low, self.high).astype(np.float32)
        self.count += 1
        return self.action


class _MixedAdapterPolicy:
    """Segments of 5-20 steps: the env's expert toward a fresh random target (torque noise 0-0.2) with probability
    0.6, else random torques."""

    def __init__(self, env: _GoalAdapter, rng: np.random.Generator):
        self.env, self.rng = env, rng
        self.left, self.current = 0, None

    def __call__(self, env) -> np.ndarray:
        if self.left <= 0 or self.current is None:
            self.left = int(self.rng.integers(5, 21))
            if self.rng.random() < 0.6:
                self.current = self.env.expert(self.rng, noise=self.rng.uniform(0.0, 0.2))
            else:
                self.current = RandomTorquePolicy(self.rng, env.action_space.low, env.action_space.high)
        self.left -= 1
        return self.current(env)


def _wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


class GoalReacher(_GoalAdapter):
    """Reacher-v5 (2-link arm, joint torques) with a goal image: bring the fingertip where the goal shows it."""

    camera = {"lookat": (0.0, 0.0, 0.0), "distance": 0.62, "azimuth": 90.0, "elevation": -90.0}
    marker_geom = "target"
    target_joints = ("target_x", "target_y")
    target_body = "target"
    success_threshold = 0.02
    default_goal_steps = 25
    language_instruction = "move the fingertip to the goal"
    task = "reacher"

    def __init__(self, render_mode: str | None = None, size: int | tuple[int, int] = 64, auto_goal: bool = True,
                 goal_steps: int | None = None, goal_policy: str = "scripted", **env_kwargs: Any):
        super().__init__(ReacherEnv(**env_kwargs), render_mode, size, auto_goal, goal_steps, goal_policy)

    def fingertip(self) -> np.ndarray:
        return self.data.xpos[self.model.body("fingertip").id].copy()

    def ee_position(self) -> np.ndarray:
        """End-effector position (the fingertip), world xyz."""
        return self.fingertip()

    def proprio_state(self) -> np.ndarray:
        return np.concatenate([self.data.qpos[:2], self.data.qvel[:2]]).astype(np.float32)

    def achieved(self) -> np.ndarray:
        return self.fingertip()[:2]

    def object_position(self) -> None:
        return None

    def goal_distance(self, achieved: np.ndarray, goal: np.ndarray) -> float:
        return float(np.linalg.norm(achieved[:2] - goal[:2]))

    def expert(self, rng: np.random.Generator, noise: float = 0.0) -> ReacherPolicy:
        """Expert toward a random reachable point (radius 0.05-0.2 m, >= 5 cm from the fingertip)."""
        tip = self.fingertip()[:2]
        while True:
            radius, angle = rng.uniform(0.05, 0.2), rng.uniform(-np.pi, np.pi)
            target = radius * np.array([np.cos(angle), np.sin(angle)])
            if np.linalg.norm(target - tip) >= 0.05:
                return ReacherPolicy(target, rng, noise=noise)

    def make_policy(self, kind: str, rng: np.random.Generator):
        if kind == "scripted":
            return self.expert(rng)
        return RandomTorquePolicy(rng, self.action_space.low, self.action_space.high)


# ------------------------------------------------------------------------------------------------------- Pusher
PUSHER_POSTURE = np.array([0.0, 0.3, 0.0, -1.2, 0.0, -0.5, 0.0])  # a comfortable bent-elbow configuration


class PusherPolicy:
    """Scripted Pusher expert: operational-space control of the centre of the U-shaped end effector's cross bar
    (`tips_arm`): a damped-least-squares Jacobian step toward the wanted point plus a null-space posture term that
    keeps the elbow and wrist bent (the straight arm sits on their joint limits, a singular configuration), and joint
    damping. Phases from the state: hover above the point 15 cm behind the object (seen from the target; far enough
    that the tilted bar clears it), lower to the object's height, then sweep toward the target at 2 cm per step,
    pushing the object with the bar. Pusher-v5's object is heavily damped and its contact soft, so the sweep must be
    slow. Measured: the object moves >= 5 cm in 55-75% of starts within 100 steps (about 10 cm left to the target):
    a modest expert, good enough to make non-trivial reachable goals and contact-rich data."""

    def __init__(self, target_xy: np.ndarray, rng: np.random.Generator, kp: float = 8.0, kd: float = 0.6,
                 noise: float = 0.0, step: float = 0.02):
        self.target = np.asarray(target_xy, float)
        self.rng, self.kp, self.kd, self.noise, self.step = rng, kp, kd, noise, step

    def __call__(self, env: GoalPusher) -> np.ndarray:
        m, d = env.model, env.data
        tip_id = m.body("tips_arm").id
        tip = d.xpos[tip_id].copy()
        obj = d.xpos[m.body("object").id].copy()
        low, high = obj[2], obj[2] + 0.1
        to_goal = self.target - obj[:2]
        dist = np.linalg.norm(to_goal)
        u = to_goal / max(dist, 1e-9)
        behind = obj[:2] - 0.15 * u
        rel = tip[:2] - obj[:2]
        along = rel @ u
        lateral = np.linalg.norm(rel - along * u)
        gap = np.linalg.norm(tip[:2] - behind)
        if dist < 0.01:
            want = np.array([*tip[:2], high])
        elif along < 0.0 and lateral < 0.05 and tip[2] < low + 0.04:
            move = (self.target - 0.07 * u) - tip[:2]
            move *= min(1.0, self.step / max(np.linalg.norm(move), 1e-9))
            want = np.array([*(tip[:2] + move), low])
        elif gap < 0.03 or (gap < 0.06 and tip[2] < high - 0.03):  # hysteresis: once lowering, keep lowering
            want = np.array([*behind, low])
        else:
            want = np.array([*behind, high])
        err = np.clip(want - tip, -0.1, 0.1)
        jacp = np.zeros((3, m.nv))
        mujoco.mj_jacBody(m, d, jacp, None, tip_id)
        jac = jacp[:, :7]
        dq = jac.T @ np.linalg.solve(jac @ jac.T + 1e-3 * np.eye(3), err)  # damped least-squares IK step
        null = np.eye(7) - np.linalg.pinv(jac) @ jac
        posture = null @ (PUSHER_POSTURE - d.qpos[:7])
        torque = self.kp * dq + 0.5 * posture - self.kd * d.qvel[:7] + self.noise * self.rng.normal(size=7)
        return np.clip(torque, -2.0, 2.0).astype(np.float32)


class GoalPusher(_GoalAdapter):
    """Pusher-v5 (7-DoF arm, joint torques) with a goal image: push the object to where the goal shows it."""

    camera = {"lookat": (0.35, -0.3, -0.2), "distance": 1.4, "azimuth": 135.0, "elevation": -50.0}
    marker_geom = None  # set in __init__ (the goal disc has no name)
    target_joints = ("goal_slidex", "goal_slidey")
    target_body = "goal"
    success_threshold = 0.05
    default_goal_steps = 100
    language_instruction = "push the object to the goal"
    task = "pusher"

    def __init__(self, render_mode: str | None = None, size: int | tuple[int, int] = 64, auto_goal: bool = True,
                 goal_steps: int | None = None, goal_policy: str = "scripted", **env_kwargs: Any):
        env = PusherEnv(**env_kwargs)
        goal_geoms = np.flatnonzero(env.model.geom_bodyid == env.model.body("goal").id)
        self.marker_geom = int(goal_geoms[0])
        super().__init__(env, render_mode, size, auto_goal, goal_steps, goal_policy)

    def proprio_state(self) -> np.ndarray:
        return np.concatenate([self.data.qpos[:7], self.data.qvel[:7]]).astype(np.float32)

    def object_pos(self) -> np.ndarray:
        return self.data.xpos[self.model.body("object").id].copy()

    def ee_position(self) -> np.ndarray:
        """End-effector position (the centre of the U's cross bar, body `tips_arm`), world xyz."""
        return self.data.xpos[self.model.body("tips_arm").id].copy()

    def achieved(self) -> np.ndarray:
        return self.object_pos()[:2]

    def object_position(self) -> np.ndarray:
        return self.object_pos()

    def goal_distance(self, achieved: np.ndarray, goal: np.ndarray) -> float:
        return float(np.linalg.norm(achieved[:2] - goal[:2]))

    def expert(self, rng: np.random.Generator, noise: float = 0.0) -> PusherPolicy:
        """Expert toward a random object target 10-20 cm away, within +-45 degrees of "away from the shoulder",
        0.45-0.72 m from the shoulder (where the U reaches the table)."""
        obj = self.object_pos()[:2]
        shoulder = self.data.xpos[self.model.body("r_shoulder_pan_link").id][:2]
        away = np.arctan2(*(obj - shoulder)[::-1])
        target = obj
        for _ in range(1000):
            angle = away + rng.uniform(-np.pi / 4, np.pi / 4)
            target = obj + rng.uniform(0.1, 0.2) * np.array([np.cos(angle), np.sin(angle)])
            if 0.45 < np.linalg.norm(target - shoulder) < 0.72:
                break
        return PusherPolicy(target, rng, noise=noise)

    def make_policy(self, kind: str, rng: np.random.Generator):
        if kind == "scripted":
            return self.expert(rng)
        return RandomTorquePolicy(rng, self.action_space.low, self.action_space.high)
