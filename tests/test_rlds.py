"""RLDS episodes: `jepa collect` writer -> reader round trip, a DROID-schema fixture, the action convention."""
from __future__ import annotations

import io
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402
from etils import epath  # noqa: E402
from PIL import Image  # noqa: E402

from jepa.data.rlds import (  # noqa: E402
    RLDSEpisodes,
    RLDSError,
    euler_xyz_to_matrix,
    matrix_to_euler_xyz,
    poses_to_actions,
)


# ------------------------------------------------------------------------------------------ hand-built rotations
def _rx(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def test_euler_convention_is_extrinsic_xyz():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b, c = rng.uniform(-np.pi, np.pi), rng.uniform(-1.5, 1.5), rng.uniform(-np.pi, np.pi)
        expected = _rz(c) @ _ry(b) @ _rx(a)  # extrinsic x, then y, then z (scipy "xyz")
        np.testing.assert_allclose(euler_xyz_to_matrix([a, b, c]), expected, atol=1e-12)
        np.testing.assert_allclose(matrix_to_euler_xyz(expected), [a, b, c], atol=1e-9)
    # Gimbal lock: the angles are not unique, the rotation is.
    locked = _rz(0.4) @ _ry(np.pi / 2) @ _rx(0.1)
    np.testing.assert_allclose(euler_xyz_to_matrix(matrix_to_euler_xyz(locked)), locked, atol=1e-9)


def test_actions_match_hand_computation():
    # state = [xyz, Euler xyz, gripper]; action = [dxyz, euler(R_{t+1} R_t^T), dgripper]
    e0, e1, e2 = [0.3, -0.2, 1.0], [0.3, -0.2, 1.25], [0.1, 0.4, -2.0]
    states = np.array([[0.1, 0.2, 0.3, *e0, 0.0], [0.15, 0.2, 0.25, *e1, 0.5], [0.0, 0.0, 0.0, *e2, 1.0]])
    acts = poses_to_actions(states)
    assert acts.shape == (2, 7) and acts.dtype == np.float32
    r0 = _rz(e0[2]) @ _ry(e0[1]) @ _rx(e0[0])
    r1 = _rz(e1[2]) @ _ry(e1[1]) @ _rx(e1[0])
    r2 = _rz(e2[2]) @ _ry(e2[1]) @ _rx(e2[0])
    np.testing.assert_allclose(acts[0, :3], [0.05, 0.0, -0.05], atol=1e-6)
    # Only yaw changed by +0.25 and the rotation is extrinsic: R1 R0^T = Rz(0.25) exactly.
    np.testing.assert_allclose(acts[0, 3:6], [0.0, 0.0, 0.25], atol=1e-6)
    np.testing.assert_allclose(r1 @ r0.T, _rz(0.25), atol=1e-12)
    np.testing.assert_allclose(acts[0, 6], 0.5, atol=1e-6)
    # General case: the action's Euler angles rebuild R2 R1^T.
    a = acts[1, 3:6].astype(np.float64)
    np.testing.assert_allclose(_rz(a[2]) @ _ry(a[1]) @ _rx(a[0]), r2 @ r1.T, atol=1e-6)
    np.testing.assert_allclose(acts[1, [0, 1, 2, 6]], [-0.15, -0.2, -0.25, 0.5], atol=1e-6)
    with pytest.raises(ValueError, match=r"\[T, 7\]"):
        poses_to_actions(np.zeros((3, 6)))


# ------------------------------------------------------------------------------------------------- DROID fixture
DROID_CAMERAS = ("exterior_image_1_left", "exterior_image_2_left", "wrist_image_left")
CAMERA_TINT = {"exterior_image_1_left": (0, 0), "exterior_image_2_left": (200, 0), "wrist_image_left": (0, 200)}


def droid_features(image_feature=None) -> tfds.features.FeaturesDict:
    """DROID's RLDS features (tfds `droid` / `droid_100` 1.0.0): exact names, shapes and dtypes."""
    T = tfds.features.Tensor
    image = image_feature or (lambda: tfds.features.Image(shape=(180, 320, 3), dtype=np.uint8,
                                                          encoding_format="jpeg"))
    return tfds.features.FeaturesDict({
        "steps": tfds.features.Dataset({
            "observation": tfds.features.FeaturesDict({
                "exterior_image_1_left": image(),
                "exterior_image_2_left": image(),
                "wrist_image_left": image(),
                "cartesian_position": T(shape=(6,), dtype=np.float64),
                "gripper_position": T(shape=(1,), dtype=np.float64),
                "joint_position": T(shape=(7,), dtype=np.float64),
            }),
            "action_dict": tfds.features.FeaturesDict({
                "cartesian_position": T(shape=(6,), dtype=np.float64),
                "cartesian_velocity": T(shape=(6,), dtype=np.float64),
                "gripper_position": T(shape=(1,), dtype=np.float64),
                "gripper_velocity": T(shape=(1,), dtype=np.float64),
                "joint_position": T(shape=(7,), dtype=np.float64),
                "joint_velocity": T(shape=(7,), dtype=np.float64),
            }),
            "action": T(shape=(7,), dtype=np.float64),
            "discount": tfds.features.Scalar(dtype=np.float32),
            "reward": tfds.features.Scalar(dtype=np.float32),
            "is_first": tfds.features.Scalar(dtype=np.bool_),
            "is_last": tfds.features.Scalar(dtype=np.bool_),
            "is_terminal": tfds.features.Scalar(dtype=np.bool_),
            "language_instruction": tfds.features.Text(),
            "language_instruction_2": tfds.features.Text(),
            "language_instruction_3": tfds.features.Text(),
        }),
        "episode_metadata": tfds.features.FeaturesDict({
            "file_path": tfds.features.Text(),
            "recording_folderpath": tfds.features.Text(),
        }),
    })


def droid_pose(t: int, episode: int) -> np.ndarray:
    """A known trajectory: xyz moves, yaw turns, roll / pitch vary, gripper closes."""
    return np.array([0.4 + 0.01 * t, -0.1 + 0.002 * t * t, 0.3 - 0.005 * t,
                     np.pi - 0.1 * episode + 0.02 * t,  # roll near +-pi, as for a Franka pointing down
                     0.05 * np.sin(t), 0.3 + 0.1 * t])


def jpeg(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def droid_frame(t: int, camera: str) -> np.ndarray:
    """A flat frame whose red channel encodes the step and green / blue the camera."""
    g, b = CAMERA_TINT[camera]
    frame = np.zeros((180, 320, 3), np.uint8)
    frame[..., 0], frame[..., 1], frame[..., 2] = 10 * t, g, b
    return frame


def droid_step(t: int, steps: int, episode: int, encode=jpeg, cartesian_size: int = 6) -> dict:
    pose = droid_pose(t, episode)
    return {
        "observation": {
            **{cam: encode(droid_frame(t, cam)) for cam in DROID_CAMERAS},
            "cartesian_position": pose[:cartesian_size],
            "gripper_position": np.array([min(1.0, 0.1 * t)]),
            "joint_position": np.zeros(7),
        },
        "action_dict": {k: np.zeros(n) for k, n in [("cartesian_position", 6), ("cartesian_velocity", 6),
                                                     ("gripper_position", 1), ("gripper_velocity", 1),
                                                     ("joint_position", 7), ("joint_velocity", 7)]},
        "action": np.full(7, 0.01 * t),
        "discount": 1.0,
        "reward": float(t == steps - 1),
        "is_first": t == 0,
        "is_last": t == steps - 1,
        "is_terminal": t == steps - 1,
        "language_instruction": f"put the marker in the cup {episode}",
        "language_instruction_2": "",
        "language_instruction_3": "",
    }


class DroidFixture(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """droid_100-like fixture: DROID's features, written with tfds (float64 -> float32 and bool -> int64 on disk,
    JPEG images), in ArrayRecord form like `tfds convert_format --out_file_format=array_record` produces."""

    name = "droid_100"
    VERSION = tfds.core.Version("1.0.0")
    code_path = epath.Path(__file__)  # no checksums lookup (needs importlib_resources)

    def __init__(self, *, episode_steps=(13, 9), features=None, step_fn=droid_step, **kwargs):
        self.episode_steps, self._features, self.step_fn = episode_steps, features, step_fn
        super().__init__(**kwargs)

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=self._features or droid_features())

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for e, n in enumerate(self.episode_steps):
            yield str(e), {
                "steps": [self.step_fn(t, n, e) for t in range(n)],
                "episode_metadata": {"file_path": f"/droid/ep{e}/trajectory.h5", "recording_folderpath": f"/r{e}"},
            }


def write_droid(tmp_path, **kwargs) -> str:
    builder = DroidFixture(data_dir=str(tmp_path), file_format="array_record", **kwargs)
    builder.download_and_prepare()
    return str(builder.data_dir)


def test_droid_fixture_read(tmp_path):
    path = write_droid(tmp_path)
    eps = RLDSEpisodes(tmp_path, camera="exterior_image_2_left", frame_stride=4, size=(36, 64))
    assert len(eps) == 2 and eps.path == path
    assert set(eps.cameras) == set(DROID_CAMERAS)
    ep = eps[0]  # 13 steps at stride 4 -> steps 0, 4, 8, 12
    assert ep.frames.shape == (4, 36, 64, 3) and ep.frames.dtype == np.uint8
    np.testing.assert_allclose(ep.frames[..., 0].mean(axis=(1, 2)), [0, 40, 80, 120], atol=3)
    np.testing.assert_allclose(ep.frames[..., 1].mean(), 200, atol=3)  # the chosen camera's tint
    np.testing.assert_allclose(ep.frames[..., 2].mean(), 0, atol=3)
    kept = [0, 4, 8, 12]
    expected_states = np.array([[*droid_pose(t, 0), min(1.0, 0.1 * t)] for t in kept])
    # tfds stores DROID's float64 as float32 on disk.
    np.testing.assert_array_equal(ep.states, expected_states.astype(np.float32))
    assert ep.states.dtype == np.float32 and ep.actions.shape == (3, 7)
    # Actions by hand: xyz and gripper differences; rotation R_{t+1} R_t^T rebuilt from the action's Euler angles.
    f32 = expected_states.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(ep.actions[:, :3], np.diff(f32[:, :3], axis=0), atol=1e-6)
    np.testing.assert_allclose(ep.actions[:, 6], np.diff(f32[:, 6]), atol=1e-6)
    for i in range(3):
        r0 = _rz(f32[i, 5]) @ _ry(f32[i, 4]) @ _rx(f32[i, 3])
        r1 = _rz(f32[i + 1, 5]) @ _ry(f32[i + 1, 4]) @ _rx(f32[i + 1, 3])
        a = ep.actions[i, 3:6].astype(np.float64)
        np.testing.assert_allclose(_rz(a[2]) @ _ry(a[1]) @ _rx(a[0]), r1 @ r0.T, atol=1e-5)
    assert ep.language_instruction == "put the marker in the cup 0"
    assert "episode 0" in ep.source and "ep0/trajectory.h5" in ep.source
    # Native size, stride 1, another camera; the second episode.
    full = RLDSEpisodes(path, camera="wrist_image_left")[1]
    assert full.frames.shape == (9, 180, 320, 3) and full.actions.shape == (8, 7)
    np.testing.assert_allclose(full.frames[..., 2].mean(), 200, atol=3)
    # Recorded actions, concatenated over the stride (DINO-WM frameskip convention).
    rec = RLDSEpisodes(path, frame_stride=4, actions="recorded")[0]
    assert rec.actions.shape == (3, 28)
    np.testing.assert_allclose(rec.actions[1], np.repeat([0.04, 0.05, 0.06, 0.07], 7), atol=1e-6)


def test_droid_images_as_encoded_bytes_tensor(tmp_path):
    """Encoded JPEG bytes stored in a scalar object Tensor (instead of tfds Image) are accepted too."""
    features = droid_features(lambda: tfds.features.Tensor(shape=(), dtype=np.object_))
    write_droid(tmp_path, features=features, episode_steps=(5,))
    ep = RLDSEpisodes(tmp_path, camera="exterior_image_1_left", frame_stride=2, size=32)[0]
    assert ep.frames.shape == (3, 32, 32, 3)
    np.testing.assert_allclose(ep.frames[..., 0].mean(axis=(1, 2)), [0, 20, 40], atol=3)


# ----------------------------------------------------------------------------------------------- malformed input
def test_missing_path_and_camera(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        RLDSEpisodes(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="dataset_info.json"):
        RLDSEpisodes(tmp_path / "empty")
    path = write_droid(tmp_path / "d", episode_steps=(3,))
    with pytest.raises(RLDSError, match=r"no camera 'front_image'.*exterior_image_1_left") as e:
        RLDSEpisodes(path, camera="front_image")
    assert path in str(e.value)
    with pytest.raises(RLDSError, match="frames at stride 4"):
        RLDSEpisodes(path, frame_stride=4)[0]


def test_wrong_state_shape_is_named(tmp_path):
    feats = droid_features()
    bad = tfds.features.FeaturesDict({
        "steps": tfds.features.Dataset({
            **{k: v for k, v in feats["steps"].feature.items() if k != "observation"},
            "observation": tfds.features.FeaturesDict({
                **{k: v for k, v in feats["steps"].feature["observation"].items() if k != "cartesian_position"},
                "cartesian_position": tfds.features.Tensor(shape=(5,), dtype=np.float64),
            }),
        }),
        "episode_metadata": feats["episode_metadata"],
    })
    path = write_droid(tmp_path, features=bad, episode_steps=(2,),
                       step_fn=lambda t, n, e: droid_step(t, n, e, cartesian_size=5))
    with pytest.raises(RLDSError, match=r"observation/cartesian_position has shape \(5,\), expected \(6,\)"):
        RLDSEpisodes(path)


def test_corrupt_jpeg_is_named(tmp_path):
    features = droid_features(lambda: tfds.features.Tensor(shape=(), dtype=np.object_))

    def step(t, n, e):
        s = droid_step(t, n, e)
        if e == 1 and t == 2:
            s["observation"]["exterior_image_1_left"] = b"\xff\xd8 not really a jpeg"
        return s

    path = write_droid(tmp_path, features=features, episode_steps=(3, 4), step_fn=step)
    eps = RLDSEpisodes(path)
    assert eps[0].frames.shape == (3, 180, 320, 3)
    with pytest.raises(RLDSError) as e:
        eps[1]
    msg = str(e.value)
    assert path in msg and "episode 1" in msg and "step 2" in msg and "observation/exterior_image_1_left" in msg
    with pytest.raises(IndexError):
        eps[2]


# ------------------------------------------------------------------------------------------ collect -> reader
def test_collect_writer_reader_round_trip(tmp_path):
    import planning.envs as envs
    from planning.collect import main

    out = tmp_path / "rlds"
    argv = ["--task", "pickplace", "--episodes", "2", "--steps", "6", "--out", str(out), "--seed", "3", "--quiet"]
    assert main(argv) == 0
    assert main(argv) == 2  # refuses to overwrite without --overwrite
    eps = RLDSEpisodes(out)
    assert len(eps) == 2 and eps.cameras == ["exterior_image_1_left"]
    raw = tfds.builder_from_directory(eps.path).as_data_source(split="train")
    env = envs.make("pickplace", auto_goal=False)
    for i in range(2):
        ep = eps[i]
        record = raw[i]
        steps = [record["steps"][t] for t in range(7)]
        assert ep.frames.shape == (7, 64, 64, 3) and ep.states.shape == (7, 7) and ep.actions.shape == (6, 7)
        assert ep.language_instruction == env.language_instruction
        assert [bool(s["is_first"]) for s in steps] == [True] + [False] * 6
        assert [bool(s["is_last"]) for s in steps] == [False] * 6 + [True]
        np.testing.assert_array_equal(ep.states, np.stack([s["observation"]["state"] for s in steps]))
        np.testing.assert_array_equal(ep.actions, poses_to_actions(ep.states))
        # Replaying the recorded actions from the episode's reset seed reproduces every stored frame and state.
        env.reset(seed=int(record["episode_metadata"]["seed"]), options={"auto_goal": False})
        for t, s in enumerate(steps):
            np.testing.assert_array_equal(env.render_image(), ep.frames[t])
            np.testing.assert_array_equal(env.ee_state(), ep.states[t])
            np.testing.assert_array_equal(env.cube_pos.astype(np.float32), s["observation"]["object_position"])
            if t < 6:
                env.advance(s["action"])
        assert not np.any(steps[-1]["action"])
    # Subsampled and resized view of the same data.
    sub = RLDSEpisodes(out, frame_stride=3, size=32)[0]
    assert sub.frames.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(sub.states, eps[0].states[::3])


def test_collect_mixed_policy_touches_the_cube(tmp_path):
    """The exploration data covers contact: the cube moves in most mixed-policy episodes."""
    from planning.collect import collect

    path = collect("push", episodes=4, out=tmp_path, steps=25, seed=0, policy="mixed", progress=False)
    raw = tfds.builder_from_directory(str(path)).as_data_source(split="train")
    moved = 0
    for i in range(4):
        steps = raw[i]["steps"]
        first = steps[0]["observation"]["object_position"]
        last = steps[len(steps) - 1]["observation"]["object_position"]
        moved += np.linalg.norm(last - first) > 0.01
    assert moved >= 2
