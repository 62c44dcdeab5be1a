"""Table-top MuJoCo tasks and the Reacher-v5 / Pusher-v5 goal adapters (planning.envs)."""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import planning.envs as envs  # noqa: E402
from jepa.data.rlds import poses_to_actions  # noqa: E402
from planning.envs.policies import PickPlacePolicy  # noqa: E402
from planning.envs.workspace import MAX_DXYZ  # noqa: E402

TABLETOP_IDS = ["jepa/Reach-v0", "jepa/Push-v0", "jepa/PickPlace-v0"]
ADAPTER_IDS = ["jepa/GoalReacher-v0", "jepa/GoalPusher-v0"]


def _random_actions(env, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(env.action_space.low, env.action_space.high, size=(n, env.action_dim)).astype(np.float32)


def _color_pixels(img: np.ndarray, rgb_min: tuple, rgb_max: tuple) -> int:
    lo, hi = np.array(rgb_min), np.array(rgb_max)
    return int(np.all((img >= lo) & (img <= hi), axis=-1).sum())


# ------------------------------------------------------------------------------------------------ gymnasium API
@pytest.mark.parametrize("env_id", TABLETOP_IDS + ADAPTER_IDS)
def test_registered_reset_step(env_id):
    env = gym.make(env_id, render_mode="rgb_array")  # with gymnasium's passive env checker
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert np.isfinite(info["distance"]) and isinstance(info["is_success"], bool)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs) and np.isfinite(reward)
    assert terminated is False and "distance" in info
    frame = env.render()
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
    u = env.unwrapped
    assert u.action_dim == {"jepa/GoalReacher-v0": 2, "jepa/GoalPusher-v0": 7}.get(env_id, 7)
    assert u.goal is not None and u.goal.image.shape == (64, 64, 3)
    env.close()


@pytest.mark.parametrize("task", ["reach", "push", "pickplace", "reacher", "pusher"])
def test_seeded_reset_is_deterministic(task):
    a, b = envs.make(task), envs.make(task)
    a.reset(seed=7)
    b.reset(seed=7)
    np.testing.assert_array_equal(a.get_state(), b.get_state())
    np.testing.assert_array_equal(a.goal.sim_state, b.goal.sim_state)
    np.testing.assert_array_equal(a.goal.image, b.goal.image)
    b.reset(seed=8)
    assert not np.array_equal(a.get_state(), b.get_state())


# ---------------------------------------------------------------------------------------------- state round trip
@pytest.mark.parametrize("task", ["pickplace", "reacher", "pusher"])
def test_state_round_trip_is_exact(task):
    env = envs.make(task, render_mode="rgb_array")
    env.reset(seed=1)
    for a in _random_actions(env, 3, seed=0):
        env.step(a)
    saved, frame = env.get_state(), env.render()
    actions = _random_actions(env, 5, seed=1)
    states, frames = [], []
    for a in actions:
        env.step(a)
        states.append(env.get_state())
        frames.append(env.render())
    env.set_state(saved)
    np.testing.assert_array_equal(env.get_state(), saved)
    np.testing.assert_array_equal(env.render(), frame)
    for a, s, f in zip(actions, states, frames):
        env.step(a)
        np.testing.assert_array_equal(env.get_state(), s)
        np.testing.assert_array_equal(env.render(), f)
    with pytest.raises(ValueError, match="shape"):
        env.set_state(saved[:-1])


def test_state_round_trip_through_grasp():
    """Restoring mid-grasp (contacts active, cube held) reproduces the continuation bit for bit."""
    env = envs.make("pickplace")
    env.reset(seed=2, options={"auto_goal": False})
    expert = env.expert(np.random.default_rng(0))
    for _ in range(8):
        env.advance(expert(env))
    assert env.cube_pos[2] > 0.04, "the expert should be holding the cube up by now"
    saved = env.get_state()
    rest = []
    for _ in range(4):
        a = expert(env)
        env.advance(a)
        rest.append((a, env.get_state()))
    env.set_state(saved)
    for a, s in rest:
        env.advance(a)
        np.testing.assert_array_equal(env.get_state(), s)


# --------------------------------------------------------------------------------------------------------- goals
@pytest.mark.parametrize("task", ["reach", "push", "pickplace", "reacher", "pusher"])
@pytest.mark.parametrize("policy", ["scripted", "random"])
def test_goal_is_reached_by_its_policy_and_start_restored(task, policy):
    env = envs.make(task, auto_goal=False)
    env.reset(seed=3)
    start = env.get_state()
    start_image = env.render_image()
    goal = env.sample_goal(np.random.default_rng(5), steps=6, policy=policy, set_goal=False)
    # The start state is restored exactly ...
    np.testing.assert_array_equal(env.get_state(), start)
    np.testing.assert_array_equal(env.render_image(), start_image)
    assert goal.steps == 6 and goal.actions.shape == (6, env.action_dim) and goal.policy == policy
    # ... and replaying the recorded actions from it reaches the goal exactly (set_goal only moves the adapters'
    # invisible, non-colliding target marker, which the goal's sim_state also has at the goal).
    env.set_goal(goal)
    np.testing.assert_array_equal(env.render_image(), start_image)
    for a in goal.actions:
        env.advance(a)
    np.testing.assert_array_equal(env.get_state()[1:], goal.sim_state[1:])  # [0] is time, also equal:
    assert env.get_state()[0] == goal.sim_state[0]
    np.testing.assert_array_equal(env.render_image(), goal.image)
    np.testing.assert_array_equal(env.achieved(), goal.achieved)
    assert env.distance_to_goal() == 0.0 and env.is_success()


@pytest.mark.parametrize("task,steps,need", [("reach", 5, 4), ("push", 20, 4), ("pickplace", 12, 4),
                                             ("reacher", 25, 4), ("pusher", 100, 2)])
def test_scripted_goals_are_not_trivial(task, steps, need):
    """The experts move what the task measures: scripted goals start unsolved (goal farther than the threshold) in
    most cases (the Pusher expert is weaker: its object is heavily damped)."""
    env = envs.make(task, auto_goal=False)
    far = 0
    for seed in range(5):
        env.reset(seed=seed)
        env.sample_goal(seed, steps=steps)
        far += env.distance_to_goal() > env.success_threshold
    assert far >= need, f"only {far}/5 scripted {task} goals are away from the start"


def test_pickplace_goal_is_raised_cube():
    env = envs.make("pickplace", auto_goal=False)
    raised = 0
    for seed in range(4):
        env.reset(seed=seed)
        goal = env.sample_goal(seed, steps=12)
        raised += goal.cube_pos[2] > 0.06 and abs(goal.state[6] - 0.5) < 0.35  # lifted, fingers on the cube
    assert raised >= 3


def test_success_predicates_and_thresholds():
    env = envs.make("reach", auto_goal=False)
    env.reset(seed=0)
    assert np.isnan(env.distance_to_goal()) and not env.is_success()
    env.sample_goal(0, steps=0)  # goal = here
    assert env.distance_to_goal() == 0.0 and env.is_success()
    assert env.success_threshold == 0.05
    env.step(np.array([0.03, 0, 0, 0, 0, 0, 0], np.float32))
    assert 0.02 < env.distance_to_goal() < 0.05 and env.is_success()
    _, _, _, _, info = env.step(np.array([0.05, 0, 0, 0, 0, 0, 0], np.float32))
    assert info["distance"] > 0.05 and info["is_success"] is False
    push = envs.make("push", auto_goal=False)
    push.reset(seed=0)
    push.sample_goal(0, steps=0)
    push.step(np.array([0, 0, 0.05, 0, 0, 0, 0], np.float32))  # the gripper moves, the cube does not
    assert push.distance_to_goal() < 1e-3 and push.is_success()
    assert envs.make("pickplace").success_threshold == 0.05
    assert envs.make("reacher").success_threshold == 0.02 and envs.make("pusher").success_threshold == 0.05


def test_rollout_distances_oracle_restores_state():
    env = envs.make("push")
    env.reset(seed=4)
    here = env.get_state()
    seqs = np.zeros((3, 2, 7), np.float32)
    seqs[1, :, 0] = 0.05
    d = env.rollout_distances(here, seqs)
    assert d.shape == (3,) and d[0] == pytest.approx(env.distance_to_goal())
    np.testing.assert_array_equal(env.get_state(), here)


# ------------------------------------------------------------------------------------------------ control & image
def test_cartesian_control_and_action_convention():
    env = envs.make("reach", auto_goal=False)
    env.reset(seed=0)
    s0 = env.ee_state()
    env.step(np.array([1.0, -1.0, 0.02, 0, 0, 0.2, 0], np.float32))  # clipped to 0.075 per axis
    s1 = env.ee_state()
    np.testing.assert_allclose(s1[:3] - s0[:3], [MAX_DXYZ, -MAX_DXYZ, 0.02], atol=0.004)
    # V-JEPA 2-AC action recovered from the two states ~ the commanded delta (free motion, no contact).
    a = poses_to_actions(np.stack([s0, s1]))[0]
    np.testing.assert_allclose(a[:3], [MAX_DXYZ, -MAX_DXYZ, 0.02], atol=0.004)
    np.testing.assert_allclose(a[3:6], [0, 0, 0.2], atol=0.01)
    # Zero actions hold the pose (gravity-compensated hand, no drift).
    for _ in range(5):
        env.step(np.zeros(7, np.float32))
    np.testing.assert_allclose(env.ee_state()[:6], s1[:6], atol=1e-3)
    # The gripper closes and opens.
    env.step(np.array([0, 0, 0, 0, 0, 0, 1.0], np.float32))
    assert env.gripper > 0.95
    env.step(np.array([0, 0, 0, 0, 0, 0, -1.0], np.float32))
    assert env.gripper < 0.05


def test_grasp_and_lift():
    env = envs.make("pickplace", auto_goal=False)
    env.reset(seed=5)
    target = np.array([0.0, 0.0, 0.12])
    expert = PickPlacePolicy(target, np.random.default_rng(0))
    for _ in range(20):
        env.step(expert(env))
    assert np.linalg.norm(env.cube_pos - target) < 0.02
    for _ in range(4):  # holds still with zero Cartesian motion, gripper kept closed
        env.step(np.zeros(7, np.float32))
    assert np.linalg.norm(env.cube_pos - target) < 0.02


@pytest.mark.parametrize("size", [64, 128, 256])
def test_frame_shows_gripper_and_cube(size):
    env = envs.make("push", render_mode="rgb_array", size=size, auto_goal=False)
    env.reset(seed=0)
    img = env.render()
    assert img.shape == (size, size, 3) and img.dtype == np.uint8
    assert img.std() > 20
    scale = (size / 64) ** 2
    assert _color_pixels(img, (150, 0, 0), (255, 80, 80)) >= 15 * scale, "red cube not visible"
    assert _color_pixels(img, (0, 40, 150), (90, 140, 255)) >= 25 * scale, "blue gripper palm not visible"
    # Moving the gripper changes the picture.
    env.step(np.array([0.07, 0.07, 0, 0, 0, 0, 0], np.float32))
    assert np.abs(env.render().astype(int) - img).sum() > 0


@pytest.mark.parametrize("task,body", [("reacher", "target"), ("pusher", "goal")])
def test_adapter_frames_and_target(task, body):
    env = envs.make(task, render_mode="rgb_array", size=96)
    env.reset(seed=0)
    img = env.render()
    assert img.shape == (96, 96, 3) and img.std() > 5
    # The env's own (invisible) target sits at the goal, so its own reward agrees with distance_to_goal.
    target = env.data.xpos[env.model.body(body).id]
    np.testing.assert_allclose(target[:2], env.goal.achieved, atol=1e-9)
    _, _, _, _, info = env.step(np.zeros(env.action_dim, np.float32))
    if task == "reacher":
        assert info["reward_dist"] == pytest.approx(-info["distance"], abs=1e-9)


def test_reacher_expert_reaches():
    env = envs.make("reacher", auto_goal=False)
    env.reset(seed=0)
    expert = env.expert(np.random.default_rng(0))
    for _ in range(40):
        env.step(expert(env))
    assert np.linalg.norm(env.achieved() - expert.target) < 0.01


def test_headless_render_when_mujoco_was_imported_first():
    """MuJoCo picks its GL backend at import; planning.envs switches to EGL if it came too late to set MUJOCO_GL."""
    import subprocess
    import sys

    code = ("import mujoco, planning.envs as E; env = E.make('reach', render_mode='rgb_array'); env.reset(seed=0); "
            "print(env.render().std() > 20)")
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "DISPLAY")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("True")
