"""The table-top arm simulator as a gymnasium.Env: Cartesian end-effector control like DROID.

Action (7, float32), one control step = `substeps` physics steps (default 50 x 5 ms = 0.25 s, i.e. 4 Hz,
like DROID sampled at 4 fps for V-JEPA 2-AC):
  [dx, dy, dz]      TCP translation (m), clipped to |.| <= 0.075
  [droll, dpitch, dyaw]  rotation as extrinsic xyz Euler angles of R_new R_old^T (rad), clipped to |.| <= 0.25
  [dgripper]        change of the gripper command in closedness units, clipped to |.| <= 1
The commanded pose (the mocap body) integrates the actions: target = previous target + delta, kept inside the
workspace box and within `MAX_LEAD` of the actual TCP (so pushing against something does not wind up); roll and
pitch are limited to +-MAX_TILT and yaw to +-pi/2 (a parallel gripper is symmetric under a half turn); these limits
are in planning.envs.workspace. The commanded pose is ramped over the first 60% of the substeps. The gripper
command g in [0, 1] drives both finger position actuators to an opening of FINGER_TRAVEL * (1 - g); a grasped cube
stops the fingers early and is squeezed.

State (7, float32), DROID's layout: [TCP xyz (m), TCP orientation as extrinsic xyz Euler (rad), gripper_position],
gripper_position = measured closedness in [0, 1] (0 = fully open, 1 = fully closed: DROID's convention).

Observation: {'state': f32[7], 'cube_pos': f32[3]}. Images come from `render()` (render_mode='rgb_array') or
`render_image()` (any render_mode), from the fixed 'front' camera, uint8 [size, size, 3].

Full simulator state (`get_state` / `set_state`): MuJoCo's mjSTATE_INTEGRATION vector (time, qpos, qvel, act,
warm-start accelerations, ctrl, applied forces, mocap pose, equality activations, ...), so a round trip reproduces
renders and subsequent steps bit for bit. Stepping never renders; `advance()` is the bare physics step used by the
goal sampler and the oracle (`rollout_distances`).
"""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from jepa.data.rlds import euler_xyz_to_matrix, matrix_to_euler_xyz  # noqa: E402
from planning.envs import policies, scene  # noqa: E402
from planning.envs.goal import STATE_SPEC, GoalTaskMixin  # noqa: E402
from planning.envs.rendering import new_renderer  # noqa: E402
from planning.envs.workspace import (ACTION_HIGH, MAX_LEAD, MAX_TILT, MAX_YAW, WORKSPACE_HIGH,  # noqa: E402
                                     WORKSPACE_LOW)

_RAMP_FRACTION = 0.6
_RAMP_CHUNKS = 6


def _ramp_schedule(substeps: int) -> list[tuple[int, float]]:
    """(number of substeps, fraction of the commanded motion) chunks: a ramp over the first 60%, then hold."""
    ramp = max(1, int(round(substeps * _RAMP_FRACTION)))
    edges = np.linspace(0, ramp, min(_RAMP_CHUNKS, ramp) + 1).round().astype(int)
    chunks = [(int(hi - lo), hi / ramp) for lo, hi in zip(edges[:-1], edges[1:])]
    if substeps > ramp:
        chunks.append((substeps - ramp, 1.0))
    return chunks


class TableTopEnv(GoalTaskMixin, gym.Env):
    """Table-top gripper + cube. Subclasses (planning.envs.tasks) define the goal quantity and the experts."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}
    task = "tabletop"
    starts: tuple[str, ...] = ("random",)  # start-state distributions `reset` offers (see reset)
    goal_min_visible: float = 0.0  # a sampled goal image must show at least this share of the cube (see reset)
    max_start_draws: int = 100
    language_instruction = ""

    def __init__(
        self,
        render_mode: str | None = None,
        size: int | tuple[int, int] = 64,
        substeps: int = 50,
        auto_goal: bool = True,
        goal_steps: int | None = None,
        goal_policy: str = "scripted",
        blob_shadows: bool = True,
        start: str = "random",
    ):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if start not in self.starts:
            raise ValueError(f"start must be one of {self.starts} for {type(self).__name__}, got {start!r}")
        self.start = start
        self._start_target: np.ndarray | None = None  # the contact start's push target, for the goal's expert
        self.render_mode = render_mode
        self.height, self.width = (size, size) if isinstance(size, int) else tuple(size)
        self.substeps = int(substeps)
        self.auto_goal = auto_goal
        self.goal_steps = self.default_goal_steps if goal_steps is None else int(goal_steps)
        self.goal_policy = goal_policy
        self.blob_shadows = blob_shadows
        self.model = mujoco.MjModel.from_xml_string(scene.tabletop_mjcf(max(640, self.height, self.width)))
        self.data = mujoco.MjData(self.model)
        self.metadata = {**self.metadata, "render_fps": round(1.0 / self.dt)}
        m = self.model
        self._mocap = int(m.body("mocap").mocapid[0])
        self._hand_body = m.body("hand").id
        self._cube_body = m.body("cube").id
        self._tcp_site = m.site("tcp").id
        self._hand_qpos = int(m.jnt_qposadr[m.joint("hand").id])
        self._cube_qpos = int(m.jnt_qposadr[m.joint("cube").id])
        self._finger_qpos = np.array([m.jnt_qposadr[m.joint(n).id] for n in ("finger_left", "finger_right")])
        self._state_size = mujoco.mj_stateSize(m, STATE_SPEC)
        self._renderer: mujoco.Renderer | None = None
        self._ramp = _ramp_schedule(self.substeps)
        self.action_space = gym.spaces.Box(-ACTION_HIGH, ACTION_HIGH, dtype=np.float32)
        self.observation_space = gym.spaces.Dict(
            {
                "state": gym.spaces.Box(-np.inf, np.inf, (7,), np.float32),
                "cube_pos": gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
            }
        )
        self.action_dim = 7
        self.goal = None
        mujoco.mj_forward(m, self.data)

    # -- properties -------------------------------------------------------------------------------------------------
    @property
    def dt(self) -> float:
        """Seconds per control step."""
        return self.substeps * self.model.opt.timestep

    @property
    def tcp_pos(self) -> np.ndarray:
        return self.data.site_xpos[self._tcp_site].copy()

    @property
    def tcp_euler(self) -> np.ndarray:
        return matrix_to_euler_xyz(self.data.xmat[self._hand_body].reshape(3, 3))

    @property
    def gripper(self) -> float:
        """Measured closedness in [0, 1] (0 open, 1 closed)."""
        opening = float(np.mean(self.data.qpos[self._finger_qpos]))
        return float(np.clip(1.0 - opening / scene.FINGER_TRAVEL, 0.0, 1.0))

    @property
    def grip_command(self) -> float:
        """Commanded closedness in [0, 1] (stored in the actuator controls, part of the simulator state)."""
        return float(1.0 - self.data.ctrl[0] / scene.FINGER_TRAVEL)

    @property
    def cube_pos(self) -> np.ndarray:
        return self.data.xpos[self._cube_body].copy()

    @property
    def cube_yaw(self) -> float:
        mat = self.data.xmat[self._cube_body].reshape(3, 3)
        return float(np.arctan2(mat[1, 0], mat[0, 0]))

    @property
    def target_pos(self) -> np.ndarray:
        """Commanded TCP position (the mocap body)."""
        return self.data.mocap_pos[self._mocap].copy()

    def ee_state(self) -> np.ndarray:
        """f32 [7] = [TCP xyz, TCP Euler xyz, gripper closedness]."""
        return np.concatenate([self.tcp_pos, self.tcp_euler, [self.gripper]]).astype(np.float32)

    # -- GoalTaskMixin primitives ---------------------------------------------------------------------------------
    def proprio_state(self) -> np.ndarray:
        return self.ee_state()

    def object_position(self) -> np.ndarray:
        return self.cube_pos

    def advance(self, action: np.ndarray) -> None:
        """One control step of physics for `action` (clipped); no rendering."""
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(7), -ACTION_HIGH, ACTION_HIGH)
        d = self.data
        pos0 = d.mocap_pos[self._mocap].copy()
        quat0 = d.mocap_quat[self._mocap].copy()
        tcp = d.site_xpos[self._tcp_site]
        target = np.clip(pos0 + a[:3], WORKSPACE_LOW, WORKSPACE_HIGH)
        target = np.clip(target, tcp - MAX_LEAD, tcp + MAX_LEAD)
        if a[3:6].any():
            rot0 = np.empty(9)
            mujoco.mju_quat2Mat(rot0, quat0)
            euler = matrix_to_euler_xyz(euler_xyz_to_matrix(a[3:6]) @ rot0.reshape(3, 3))
            euler = np.clip(euler, [-MAX_TILT, -MAX_TILT, -MAX_YAW], [MAX_TILT, MAX_TILT, MAX_YAW])
            quat1 = np.empty(4)
            mujoco.mju_mat2Quat(quat1, euler_xyz_to_matrix(euler).reshape(9))
            if np.dot(quat0, quat1) < 0:
                quat1 = -quat1
        else:
            quat1 = quat0
        grip = float(np.clip(self.grip_command + a[6], 0.0, 1.0))
        d.ctrl[:] = scene.FINGER_TRAVEL * (1.0 - grip)
        for n, f in self._ramp:
            d.mocap_pos[self._mocap] = pos0 + f * (target - pos0)
            if quat1 is not quat0:
                q = quat0 + f * (quat1 - quat0)
                d.mocap_quat[self._mocap] = q / np.linalg.norm(q)
            mujoco.mj_step(self.model, d, nstep=n)
        # mj_step leaves position-dependent quantities one substep stale; refresh them for the accessors.
        mujoco.mj_kinematics(self.model, d)

    def collection_policy(self, kind: str, rng: np.random.Generator):
        """Policy for data collection: 'mixed' (segments of pick-place / push / reach / random walk with noise, see
        planning.envs.policies.MixedExplorationPolicy), 'scripted' (this task's expert with 5 mm action noise) or
        'random' (a smoothed random walk)."""
        if kind == "mixed":
            return policies.MixedExplorationPolicy(rng)
        if kind == "scripted":
            return self.expert(rng, noise=0.005)
        if kind == "random":
            return policies.RandomWalkPolicy(rng)
        raise ValueError(f"unknown policy {kind!r}: choose mixed, scripted or random")

    # -- gymnasium API ----------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Random start (`start='random'`): TCP in x, y in [-0.12, 0.12], z in [0.07, 0.14], yaw in [-pi/4, pi/4],
        gripper open; cube flat at x, y in [-0.12, 0.12] (>= 7 cm from the TCP in xy), random yaw.
        Contact start (`start='contact'`, push only): a push target is drawn (`contact_target`), and the closed
        gripper stands at push height right behind the cube on the line from the target, where the push expert
        starts pushing. Then, if `auto_goal` (or options['auto_goal']), a goal is sampled with `goal_policy` for
        `goal_steps` steps (`options['start']` overrides the env's start too). Tasks with `goal_min_visible` > 0
        draw start and goal again while the goal image hides more of the cube than that allows (behind the hand, a
        goal image does not say where the cube should be)."""
        super().reset(seed=seed)
        options = options or {}
        start = options.get("start", self.start)
        if start not in self.starts:
            raise ValueError(f"start must be one of {self.starts} for {type(self).__name__}, got {start!r}")
        rng = self.np_random
        self.goal = None
        for _ in range(self.max_start_draws):
            self._place_start(rng, start)
            if not options.get("auto_goal", self.auto_goal):
                break
            goal = self.sample_goal(rng, steps=options.get("goal_steps", self.goal_steps),
                                    policy=options.get("goal_policy", self.goal_policy))
            if goal.visible is None or goal.visible >= self.goal_min_visible:
                break
        else:
            raise RuntimeError(f"{type(self).__name__}: no goal image showing >= {self.goal_min_visible:.0%} of the "
                               f"cube in {self.max_start_draws} draws")
        return self._obs(), self._info()

    def _place_start(self, rng: np.random.Generator, start: str) -> None:
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        tcp = rng.uniform([-0.12, -0.12, 0.07], [0.12, 0.12, 0.14])
        yaw = rng.uniform(-np.pi / 4, np.pi / 4)
        while True:
            cube_xy = rng.uniform(-0.12, 0.12, size=2)
            if np.linalg.norm(cube_xy - tcp[:2]) >= 0.07:
                break
        cube_yaw = rng.uniform(-np.pi, np.pi)
        opening = scene.FINGER_TRAVEL
        self._start_target = None
        if start == "contact":
            tcp, yaw, opening, self._start_target, cube_yaw = self.contact_start(rng, cube_xy)
        hand_quat = np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])
        d.qpos[self._hand_qpos : self._hand_qpos + 3] = tcp
        d.qpos[self._hand_qpos + 3 : self._hand_qpos + 7] = hand_quat
        d.qpos[self._cube_qpos : self._cube_qpos + 3] = [*cube_xy, scene.CUBE_HALF]
        d.qpos[self._cube_qpos + 3 : self._cube_qpos + 7] = [np.cos(cube_yaw / 2), 0.0, 0.0, np.sin(cube_yaw / 2)]
        d.qpos[self._finger_qpos] = opening
        d.ctrl[:] = opening
        d.mocap_pos[self._mocap] = tcp
        d.mocap_quat[self._mocap] = hand_quat
        mujoco.mj_forward(m, d)
        self.advance(np.zeros(7, np.float32))  # settle contacts

    def contact_start(self, rng: np.random.Generator,
                      cube_xy: np.ndarray) -> tuple[np.ndarray, float, float, np.ndarray, float]:
        """(TCP position, yaw, finger opening, push target, cube yaw) of a contact start; only tasks that offer
        one."""
        raise ValueError(f"{type(self).__name__} has no contact start")

    def step(self, action: np.ndarray):
        self.advance(action)
        info = self._info()
        reward = -info["distance"] if self.goal is not None else 0.0
        return self._obs(), float(reward), False, False, info

    def _obs(self) -> dict[str, np.ndarray]:
        return {"state": self.ee_state(), "cube_pos": self.cube_pos.astype(np.float32)}

    def _info(self) -> dict[str, Any]:
        return {**self.goal_info(), "tcp_pos": self.tcp_pos, "cube_pos": self.cube_pos, "gripper": self.gripper}

    # -- rendering --------------------------------------------------------------------------------------------------
    def render(self) -> np.ndarray | None:
        return self.render_image() if self.render_mode == "rgb_array" else None

    def render_image(self) -> np.ndarray:
        """uint8 [H, W, 3] from the 'front' camera (independent of render_mode)."""
        if self._renderer is None:
            self._renderer = new_renderer(self.model, self.height, self.width)
        r = self._renderer
        r.update_scene(self.data, camera="front")
        if self.blob_shadows:
            self._add_blob_shadows(r.scene)
        return r.render().copy()

    def object_visibility(self) -> float | None:
        """The share of the cube's pixels the camera sees now: its segmentation with the hand vs without it (None
        where the task sets no `goal_min_visible`)."""
        if not self.goal_min_visible:
            return None
        if self._renderer is None:
            self._renderer = new_renderer(self.model, self.height, self.width)
        r, cube = self._renderer, self.model.geom("cube").id
        no_hand = mujoco.MjvOption()
        no_hand.geomgroup[scene.HAND_GROUP] = 0
        r.enable_segmentation_rendering()
        try:
            counts = []
            for opt in (None, no_hand):
                r.update_scene(self.data, camera="front", scene_option=opt)
                seg = r.render()
                counts.append(int(np.sum((seg[..., 0] == cube) & (seg[..., 1] == mujoco.mjtObj.mjOBJ_GEOM))))
        finally:
            r.disable_segmentation_rendering()
        return counts[0] / max(counts[1], 1)

    def _add_blob_shadows(self, scn: mujoco.MjvScene) -> None:
        """Flat translucent footprints on the table under the gripper and the cube: a cheap height cue."""
        hand = self.data.xmat[self._hand_body].reshape(3, 3)
        cube = self.data.xmat[self._cube_body].reshape(3, 3)
        blobs = [
            (self.tcp_pos, hand, np.array([0.065, 0.022, 0.0004])),
            (self.cube_pos, cube, np.array([scene.CUBE_HALF, scene.CUBE_HALF, 0.0004])),
        ]
        for pos, mat, half in blobs:
            if scn.ngeom >= scn.maxgeom:
                return
            yaw = np.arctan2(mat[1, 0], mat[0, 0])
            c, s = np.cos(yaw), np.sin(yaw)
            flat = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
            mujoco.mjv_initGeom(
                scn.geoms[scn.ngeom],
                mujoco.mjtGeom.mjGEOM_BOX,
                half,
                np.array([pos[0], pos[1], 0.0006]),
                flat.reshape(9),
                np.array([0.0, 0.0, 0.0, 0.3], np.float32),
            )
            scn.ngeom += 1

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
