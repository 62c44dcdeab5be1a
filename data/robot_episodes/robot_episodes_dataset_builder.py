"""RLDS dataset of simulated robot episodes (tensorflow-datasets, ArrayRecord, no TensorFlow needed).

One builder config per task (reach, push, pickplace: the table-top gripper; reacher, pusher: the gymnasium adapters).
Written by `jepa collect` (planning/collect.py; the steps come from `planning.rollout.collect_episode`); read by
`jepa.data.rlds.RLDSEpisodes`. Layout on disk:
`<data_dir>/robot_episodes/<task>/1.0.0/{dataset_info.json, features.json, metadata.json,
robot_episodes-train.array_record-*}`.

Schema (RLDS; DROID's names where they apply). Each episode: `steps` (a `tfds.features.Dataset`, which builds and
reads without TensorFlow for array_record) and `episode_metadata`. A collected episode with S actions has S + 1
steps: step t holds observation o_t and the action a_t taken from it; the last step (is_last) has a zero action.
  observation/exterior_image_1_left  uint8 [H, W, 3]  the task camera (raw pixels, zlib-compressed Tensor; lossless)
  observation/cartesian_position     f32 [6]  end effector xyz + extrinsic xyz Euler (adapters: xyz + zeros)
  observation/gripper_position       f32 [1]  closedness, 0 open .. 1 closed (adapters: 0)
  observation/state                  f32 [D]  table-top: [xyz, Euler, gripper] (D=7); adapters: joint pos + vel
  observation/object_position        f32 [3]  cube / Pusher object position (Reacher: zeros)
  action                             f32 [A]  the executed action (table-top: 7-d Cartesian deltas; adapters:
                                              joint torques)
  reward f32 (0: play data has no goal), discount f32 (1), is_first / is_last / is_terminal bool (is_terminal
  is always False: episodes end by time limit), language_instruction str.
  episode_metadata: file_path str, task str, policy str, seed int64 (the episode's reset seed), episode_index int64.
Deviation from DROID: images are raw uint8 Tensors instead of JPEG `tfds.features.Image` (exact pixels at small
sizes; `tfds.features.Image` would also work without TensorFlow when given pre-encoded bytes).
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tqdm.auto import tqdm

from planning.rollout import collect_episode, observe

TASKS = ("reach", "push", "pickplace", "reacher", "pusher")
POLICIES = ("mixed", "scripted", "random")


def _episode_seeds(seed: int, episodes: int) -> list[int]:
    """Independent per-episode seeds derived from the collection seed."""
    children = np.random.SeedSequence(seed).spawn(episodes)
    return [int(c.generate_state(1, dtype=np.uint32)[0]) for c in children]


class Builder(tfds.core.GeneratorBasedBuilder):
    """Simulated robot episodes in RLDS form. Construct with the collection parameters, then
    `download_and_prepare()`; pass `file_format='array_record'`."""

    name = "robot_episodes"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=t, description=f"task {t}") for t in TASKS]
    # tfds finds its checksums file next to `code_path`; the default lookup imports `importlib_resources`, which is
    # not installed here. There are no downloads, so point it at this file.
    code_path = epath.Path(__file__)

    def __init__(self, *, episodes: int = 10, steps: int = 50, size: int = 64, seed: int = 0,
                 policy: str = "mixed", start: str = "random", progress: bool = True, **kwargs: Any):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        if episodes < 1 or steps < 1 or size < 8:
            raise ValueError(f"need episodes >= 1, steps >= 1, size >= 8; got {episodes}, {steps}, {size}")
        self.episodes, self.steps, self.size, self.seed, self.policy = episodes, steps, size, seed, policy
        self.start = start
        self.progress = progress
        self._env = None
        super().__init__(**kwargs)

    def _make_env(self):
        import planning.envs as envs

        if self._env is None:
            kwargs = {} if self.start == "random" else {"start": self.start}  # the adapters have no start option
            self._env = envs.make(self.builder_config.name, size=self.size, auto_goal=False, **kwargs)
        return self._env

    def _info(self) -> tfds.core.DatasetInfo:
        env = self._make_env()
        state_dim = int(np.asarray(observe(env)["state"]).shape[0])
        T = tfds.features.Tensor
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "steps": tfds.features.Dataset({
                    "observation": tfds.features.FeaturesDict({
                        "exterior_image_1_left": T(shape=(self.size, self.size, 3), dtype=np.uint8,
                                                   encoding=tfds.features.Encoding.ZLIB),
                        "cartesian_position": T(shape=(6,), dtype=np.float32),
                        "gripper_position": T(shape=(1,), dtype=np.float32),
                        "state": T(shape=(state_dim,), dtype=np.float32),
                        "object_position": T(shape=(3,), dtype=np.float32),
                    }),
                    "action": T(shape=(env.action_dim,), dtype=np.float32),
                    "reward": T(shape=(), dtype=np.float32),
                    "discount": T(shape=(), dtype=np.float32),
                    "is_first": T(shape=(), dtype=np.bool_),
                    "is_last": T(shape=(), dtype=np.bool_),
                    "is_terminal": T(shape=(), dtype=np.bool_),
                    "language_instruction": T(shape=(), dtype=np.str_),
                }),
                "episode_metadata": tfds.features.FeaturesDict({
                    "file_path": T(shape=(), dtype=np.str_),
                    "task": T(shape=(), dtype=np.str_),
                    "policy": T(shape=(), dtype=np.str_),
                    "seed": T(shape=(), dtype=np.int64),
                    "episode_index": T(shape=(), dtype=np.int64),
                }),
            }),
            metadata=tfds.core.MetadataDict(
                task=self.builder_config.name, episodes=self.episodes, steps=self.steps, size=self.size,
                seed=self.seed, policy=self.policy, start=self.start, control_hz=1.0 / env.dt,
                action_dim=env.action_dim,
                camera="exterior_image_1_left",
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        return {"train": self._generate_examples()}

    def _generate_examples(self) -> Iterator[tuple[str, dict[str, Any]]]:
        env = self._make_env()
        task = self.builder_config.name
        seeds = _episode_seeds(self.seed, self.episodes)
        bar = tqdm(total=self.episodes * self.steps, desc=f"collect {task}", unit="step", disable=not self.progress)
        for index, ep_seed in enumerate(seeds):
            policy = env.collection_policy(self.policy, np.random.default_rng(ep_seed))
            steps = collect_episode(env, policy, ep_seed, self.steps)
            bar.update(self.steps)
            yield f"{index:06d}", {
                "steps": steps,
                "episode_metadata": {
                    "file_path": f"sim://{task}/seed={self.seed}/episode={index:06d}",
                    "task": task,
                    "policy": self.policy,
                    "seed": ep_seed,
                    "episode_index": index,
                },
            }
        bar.close()
