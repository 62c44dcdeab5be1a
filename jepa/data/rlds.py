"""One reader for robot episodes in RLDS form (ArrayRecord, read without TensorFlow).

It serves both
  * the simulator episodes written by `jepa collect` (`data/robot_episodes/`), and
  * DROID-schema RLDS converted with `tfds convert_format --out_file_format=array_record`
    (`droid`, `droid_100`): exact DROID names, float64 features stored as float32 and bools as int64 by tfds,
    camera images as JPEG (`tfds.features.Image`, 180x320x3).

Per episode it returns numpy arrays (`Episode`): frames uint8 [T, H, W, 3] from one camera key, states f32 [T, 7]
= [xyz, Euler xyz, gripper] built from `cartesian_position` (6) + `gripper_position` (1), and actions f32 [T-1, 7]
computed from consecutive states exactly like V-JEPA 2-AC does for DROID (`poses_to_actions`):
[delta xyz, Euler xyz of R_{t+1} R_t^T, delta gripper], after temporal subsampling by a frame stride
(15 Hz DROID -> ~4 fps with stride 4) and resizing to a target size.

Euler convention: "xyz" EXTRINSIC angles (scipy's `Rotation.from_euler("xyz", ...)`, the convention of DROID's
`cartesian_position` and of the V-JEPA 2 reference): R = Rz(c) @ Ry(b) @ Rx(a) for angles (a, b, c).

Image encodings accepted for the camera key: `tfds.features.Image` (JPEG/PNG; decoding is skipped in tfds and done
here with PIL, only for the frames kept after the stride), raw uint8 `Tensor` [H, W, 3], or encoded bytes stored
in a `Tensor(shape=(), dtype=object)`.
"""
from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

# ------------------------------------------------------------------------------------------------- rotations


def euler_xyz_to_matrix(euler: np.ndarray) -> np.ndarray:
    """Rotation matrices [..., 3, 3] from extrinsic xyz Euler angles [..., 3] (radians): Rz(c) Ry(b) Rx(a)."""
    e = np.asarray(euler, dtype=np.float64)
    ca, cb, cc = np.cos(e[..., 0]), np.cos(e[..., 1]), np.cos(e[..., 2])
    sa, sb, sc = np.sin(e[..., 0]), np.sin(e[..., 1]), np.sin(e[..., 2])
    rows = [
        [cb * cc, sa * sb * cc - ca * sc, ca * sb * cc + sa * sc],
        [cb * sc, sa * sb * sc + ca * cc, ca * sb * sc - sa * cc],
        [-sb, sa * cb, ca * cb],
    ]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def matrix_to_euler_xyz(matrix: np.ndarray) -> np.ndarray:
    """Extrinsic xyz Euler angles [..., 3] of rotation matrices [..., 3, 3]; the middle angle lies in [-pi/2, pi/2].

    At gimbal lock (|b| = pi/2) the first angle is set to 0, like scipy does.
    """
    m = np.asarray(matrix, dtype=np.float64)
    sb = np.clip(-m[..., 2, 0], -1.0, 1.0)
    b = np.arcsin(sb)
    locked = np.abs(sb) > 1.0 - 1e-9
    a = np.where(locked, 0.0, np.arctan2(m[..., 2, 1], m[..., 2, 2]))
    c = np.where(locked, np.arctan2(-m[..., 0, 1], m[..., 1, 1]), np.arctan2(m[..., 1, 0], m[..., 0, 0]))
    return np.stack([a, b, c], axis=-1)


def poses_to_actions(states: np.ndarray) -> np.ndarray:
    """V-JEPA 2-AC actions [T-1, 7] from states [T, 7] = [xyz, Euler xyz, gripper].

    action_t = [xyz_{t+1} - xyz_t, euler(R_{t+1} R_t^T), g_{t+1} - g_t]  (float32).
    """
    s = np.asarray(states, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != 7:
        raise ValueError(f"states must be [T, 7] = [xyz, Euler xyz, gripper], got shape {s.shape}")
    rot = euler_xyz_to_matrix(s[:, 3:6])
    rel = rot[1:] @ np.swapaxes(rot[:-1], -1, -2)
    return np.concatenate(
        [s[1:, :3] - s[:-1, :3], matrix_to_euler_xyz(rel), s[1:, 6:7] - s[:-1, 6:7]], axis=1
    ).astype(np.float32)


# --------------------------------------------------------------------------------------------------------- reader


class RLDSError(ValueError):
    """Malformed RLDS input; the message names the dataset directory, episode, step and field."""


@dataclasses.dataclass(frozen=True)
class Episode:
    """One episode after subsampling and resizing.

    frames:   uint8 [T, H, W, 3] from the chosen camera.
    states:   f32 [T, 7] = [xyz, extrinsic xyz Euler, gripper] (cartesian_position + gripper_position).
    actions:  f32 [T-1, 7] V-JEPA 2-AC actions from consecutive states (`poses_to_actions`), or with
              actions='recorded' f32 [T-1, stride * A]: the dataset's own `action` field for the `stride` source
              steps between consecutive kept frames, concatenated (DINO-WM's frameskip convention).
    language_instruction: the first step's instruction ('' if absent).
    index:    episode index in the split.
    source:   '<dataset dir>[<split>][<index>]' plus the episode's file_path metadata when present.
    """

    frames: np.ndarray
    states: np.ndarray
    actions: np.ndarray
    language_instruction: str
    index: int
    source: str


def find_dataset_dir(path: str | os.PathLike) -> str:
    """The tfds dataset directory (holding dataset_info.json) at or below `path`.

    Accepts the version dir itself (`.../droid_100/1.0.0`), a dataset dir with one or more versions (the highest is
    taken), or a data_dir holding exactly one dataset (`<out>` of `jepa collect` with one task)."""
    root = os.fspath(path)
    if not os.path.exists(root):
        raise FileNotFoundError(f"RLDS dataset not found: {root}")
    if os.path.isfile(os.path.join(root, "dataset_info.json")):
        return root
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        depth = os.path.relpath(dirpath, root).count(os.sep)
        if "dataset_info.json" in filenames:
            found.append(dirpath)
            dirnames[:] = []
        elif depth >= 3:
            dirnames[:] = []
        dirnames[:] = [d for d in dirnames if not d.startswith((".", "incomplete", "downloads"))]
    if not found:
        raise FileNotFoundError(f"{root}: no dataset_info.json here or up to 3 levels below (not a tfds dataset)")
    parents = {os.path.dirname(f) for f in found}
    if len(parents) > 1:
        raise RLDSError(f"{root}: several datasets found ({sorted(parents)}); pass one of them")

    def version_key(d: str) -> tuple:
        parts = os.path.basename(d).split(".")
        return tuple(int(p) if p.isdigit() else -1 for p in parts)

    return max(found, key=version_key)


def _is_image_feature(feature: Any) -> bool:
    import tensorflow_datasets as tfds

    if isinstance(feature, tfds.features.Image):
        return True
    if isinstance(feature, tfds.features.Tensor):
        shape = tuple(feature.shape)
        if len(shape) == 3 and shape[-1] == 3 and np.dtype(feature.np_dtype) == np.uint8:
            return True
        if shape == () and np.dtype(feature.np_dtype) == np.object_:
            return True  # encoded image bytes stored as a scalar bytes Tensor
    return False


def decode_image(value: Any) -> np.ndarray:
    """uint8 [H, W, 3] from a decoded array or JPEG / PNG bytes."""
    if isinstance(value, (bytes, bytearray, np.bytes_)):
        from PIL import Image

        with Image.open(io.BytesIO(bytes(value))) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    arr = np.asarray(value)
    if arr.dtype == np.object_ and arr.shape == ():
        return decode_image(arr.item())
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"expected uint8 [H, W, 3] or encoded bytes, got {arr.dtype} {arr.shape}")
    return arr


def resize_frame(frame: np.ndarray, size: tuple[int, int] | None, center_crop: bool = True) -> np.ndarray:
    """Resize uint8 [H, W, 3] to (height, width) with bilinear filtering (antialiased when shrinking); with
    `center_crop` the frame is first cropped to the target aspect ratio. None keeps the frame."""
    if size is None or tuple(frame.shape[:2]) == tuple(size):
        return frame
    from PIL import Image

    h, w = frame.shape[:2]
    th, tw = size
    if center_crop:
        if w * th > h * tw:  # too wide
            cw = max(1, round(h * tw / th))
            x0 = (w - cw) // 2
            frame = frame[:, x0 : x0 + cw]
        else:
            ch = max(1, round(w * th / tw))
            y0 = (h - ch) // 2
            frame = frame[y0 : y0 + ch]
    return np.asarray(Image.fromarray(frame).resize((tw, th), Image.BILINEAR), dtype=np.uint8)


class RLDSEpisodes(Sequence):
    """Random access to the episodes of an RLDS dataset in ArrayRecord form (no TensorFlow).

        eps = RLDSEpisodes("/data/droid_100/1.0.0", camera="exterior_image_1_left", frame_stride=4, size=256)
        ep = eps[0]   # Episode(frames uint8 [T,256,256,3], states f32 [T,7], actions f32 [T-1,7], ...)

    Args:
      path: dataset dir (see `find_dataset_dir`).
      split: tfds split name.
      camera: observation key of the camera ('exterior_image_1_left', 'exterior_image_2_left', 'wrist_image_left'
        in DROID; 'exterior_image_1_left' in `jepa collect` datasets).
      frame_stride: keep every `frame_stride`-th step (DROID 15 Hz -> 3.75 fps with 4, the reference's
        ceil(15 / 4)); `start` is the first kept step.
      size: output frame size (int for square, or (height, width)); None keeps the stored size.
      center_crop: crop to the target aspect ratio before resizing (else stretch).
      actions: 'delta_pose' (V-JEPA 2-AC, from states) or 'recorded' (the stored `action` field, see Episode).
      min_frames: episodes with fewer kept frames raise RLDSError (need >= 2 for one action).

    Picklable (the tfds source is reopened lazily in each process), so it can serve as a grain data source.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        split: str = "train",
        camera: str = "exterior_image_1_left",
        frame_stride: int = 1,
        size: int | tuple[int, int] | None = None,
        center_crop: bool = True,
        actions: str = "delta_pose",
        start: int = 0,
        min_frames: int = 2,
    ):
        if frame_stride < 1 or start < 0:
            raise ValueError(f"frame_stride must be >= 1 and start >= 0, got {frame_stride}, {start}")
        if actions not in ("delta_pose", "recorded"):
            raise ValueError(f"actions must be 'delta_pose' or 'recorded', got {actions!r}")
        self.path = find_dataset_dir(path)
        self.split, self.camera, self.frame_stride, self.start = split, camera, frame_stride, start
        self.size = (size, size) if isinstance(size, int) else (tuple(size) if size is not None else None)
        self.center_crop, self.actions, self.min_frames = center_crop, actions, min_frames
        self._source = None
        self._open()

    # -- opening ----------------------------------------------------------------------------------------------------
    def _open(self) -> None:
        import tensorflow_datasets as tfds

        try:
            builder = tfds.builder_from_directory(self.path)
        except Exception as e:  # noqa: BLE001 - re-raised with the path
            raise RLDSError(f"{self.path}: cannot open as a tfds dataset: {e}") from e
        features = builder.info.features
        if "steps" not in features:
            raise RLDSError(f"{self.path}: not RLDS: no 'steps' feature (features: {sorted(features.keys())})")
        steps = features["steps"]
        step_feature = getattr(steps, "feature", steps)
        if "observation" not in step_feature:
            raise RLDSError(f"{self.path}: steps have no field 'observation' (fields: {sorted(step_feature.keys())})")
        obs = step_feature["observation"]
        cameras = [k for k, f in obs.items() if _is_image_feature(f)]
        if self.camera not in cameras:
            raise RLDSError(f"{self.path}: observation has no camera {self.camera!r} (cameras: {cameras})")
        for key, shape in (("cartesian_position", (6,)), ("gripper_position", (1,))):
            if key not in obs:
                raise RLDSError(f"{self.path}: observation has no field {key!r} (fields: {sorted(obs.keys())})")
            if tuple(obs[key].shape) != shape:
                raise RLDSError(f"{self.path}: observation/{key} has shape {tuple(obs[key].shape)}, expected {shape}")
        if self.actions == "recorded" and "action" not in step_feature:
            raise RLDSError(f"{self.path}: steps have no field 'action' (fields: {sorted(step_feature.keys())})")
        if self.split not in builder.info.splits:
            raise RLDSError(f"{self.path}: no split {self.split!r} (splits: {sorted(builder.info.splits.keys())})")
        # Decode images ourselves, only the kept frames of the chosen camera: skip tfds' decoding of all Images.
        skip = {k: tfds.decode.SkipDecoding() for k, f in obs.items() if isinstance(f, tfds.features.Image)}
        decoders = {"steps": {"observation": skip}} if skip else None
        self._source = builder.as_data_source(split=self.split, decoders=decoders)
        self.cameras = cameras

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_source"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # -- access -----------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        if self._source is None:
            self._open()
        return len(self._source)

    def __iter__(self) -> Iterator[Episode]:
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, index: int) -> Episode:
        if self._source is None:
            self._open()
        n = len(self._source)
        if not -n <= index < n:
            raise IndexError(f"{self.path}: episode {index} out of range ({n} episodes)")
        index = index % n
        where = f"{self.path} [{self.split}] episode {index}"
        try:
            record = self._source[index]
        except Exception as e:  # noqa: BLE001 - re-raised with the location
            raise RLDSError(f"{where}: cannot read the record: {e}") from e
        meta = record.get("episode_metadata", {}) if isinstance(record, dict) else {}
        file_path = _to_str(meta.get("file_path", "")) if isinstance(meta, dict) else ""
        if file_path:
            where += f" ({file_path})"
        steps = record.get("steps") if isinstance(record, dict) else None
        if steps is None:
            raise RLDSError(f"{where}: record has no 'steps'")
        num_steps = len(steps)
        kept = list(range(self.start, num_steps, self.frame_stride))
        if len(kept) < self.min_frames:
            raise RLDSError(f"{where}: {num_steps} steps give {len(kept)} frames at stride {self.frame_stride} "
                            f"from step {self.start}; need >= {self.min_frames}")
        frames, states, instruction = [], [], ""
        for t in kept:
            step = _read_step(steps, t, where)
            obs = _field(step, "observation", where, t)
            try:
                frame = decode_image(_field(obs, self.camera, where, t, "observation/"))
            except RLDSError:
                raise
            except Exception as e:  # noqa: BLE001
                raise RLDSError(f"{where} step {t}: field observation/{self.camera}: cannot decode image: {e}") from e
            frames.append(resize_frame(frame, self.size, self.center_crop))
            states.append(_state(obs, where, t))
            if t == kept[0]:
                instruction = _to_str(step.get("language_instruction", ""))
        if len({f.shape for f in frames}) > 1:
            raise RLDSError(f"{where}: field observation/{self.camera}: frames of different sizes "
                            f"{sorted({f.shape for f in frames})}; pass size= to resize")
        states_arr = np.stack(states).astype(np.float32)
        if self.actions == "delta_pose":
            actions = poses_to_actions(states_arr)
        else:
            actions = self._recorded_actions(steps, kept, where)
        return Episode(np.stack(frames), states_arr, actions, instruction, index, where)

    def _recorded_actions(self, steps: Any, kept: list[int], where: str) -> np.ndarray:
        out = []
        for a, b in zip(kept[:-1], kept[1:]):
            chunk = []
            for t in range(a, b):
                value = np.asarray(_field(_read_step(steps, t, where), "action", where, t), dtype=np.float32)
                if value.ndim != 1:
                    raise RLDSError(f"{where} step {t}: field action has shape {value.shape}, expected [A]")
                chunk.append(value)
            out.append(np.concatenate(chunk))
        return np.stack(out).astype(np.float32)


def _read_step(steps: Any, t: int, where: str) -> dict[str, Any]:
    try:
        step = steps[t]
    except Exception as e:  # noqa: BLE001
        raise RLDSError(f"{where} step {t}: cannot decode the step: {e}") from e
    if not isinstance(step, dict):
        raise RLDSError(f"{where} step {t}: expected a dict of fields, got {type(step).__name__}")
    return step


def _field(container: dict[str, Any], key: str, where: str, t: int, prefix: str = "") -> Any:
    if not isinstance(container, dict) or key not in container:
        keys = sorted(container.keys()) if isinstance(container, dict) else type(container).__name__
        raise RLDSError(f"{where} step {t}: missing field {prefix}{key} (have: {keys})")
    return container[key]


def _state(obs: dict[str, Any], where: str, t: int) -> np.ndarray:
    """[xyz, Euler xyz, gripper] from cartesian_position (6) and gripper_position (1)."""
    parts = []
    for key, n in (("cartesian_position", 6), ("gripper_position", 1)):
        value = np.asarray(_field(obs, key, where, t, "observation/"), dtype=np.float64).reshape(-1)
        if value.shape != (n,):
            raise RLDSError(f"{where} step {t}: field observation/{key} has {value.size} values, expected {n}")
        if not np.all(np.isfinite(value)):
            raise RLDSError(f"{where} step {t}: field observation/{key} is not finite: {value}")
        parts.append(value)
    return np.concatenate(parts)


def _to_str(value: Any) -> str:
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _to_str(value.item())
    return str(value)
