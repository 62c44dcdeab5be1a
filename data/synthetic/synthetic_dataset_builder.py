"""tensorflow-datasets builder of the embedded synthetic motion dataset (see `jepa.data.synthetic`).

Builds and reads WITHOUT TensorFlow: array_record files and only `tfds.features.Tensor` features.

    from jepa_datasets.synthetic.synthetic_dataset_builder import Builder
    builder = Builder(data_dir="~/tensorflow_datasets", config="default")   # or config="tiny"
    builder.download_and_prepare()
    train = builder.as_data_source(split="train")     # or tfds.data_source("synthetic", data_dir=...)
    train[0]  # {'video': b'<mp4 bytes>', 'label': 3, 'fps': 8.0, 'num_frames': 16, 'path': b'synthetic/...'}

In the jepa pipeline: sources=[{'tfds_name': 'synthetic', 'data_dir': ...}] (or 'synthetic/tiny').
The clips are exactly those of `jepa.data.synthetic.make_record` with the config's seed (tfds stores the
examples in its own shuffled order).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from jepa.data import synthetic


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
    num_train: int = 4096
    num_val: int = 512
    size: int = 64
    frames: int = 16
    fps: float = 8.0
    seed: int = 0


class Builder(tfds.core.GeneratorBasedBuilder):
    """Textured shapes moving over textured backgrounds; label = the big target's direction (8 classes)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        SyntheticConfig(name="default", description="4096 train / 512 validation clips, 64x64, 16 frames at 8 fps"),
        SyntheticConfig(name="tiny", description="64 train / 32 validation clips (tests)", num_train=64, num_val=32),
    ]
    DEFAULT_CONFIG_NAME = "default"
    # tfds looks for a checksums file next to `code_path`; its default lookup needs the `importlib_resources`
    # backport, which the project does not install. The builder downloads nothing, so point it here.
    code_path = epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=synthetic.__doc__.split("\n\n")[0],
            features=tfds.features.FeaturesDict({
                "video": tfds.features.Tensor(shape=(), dtype=np.object_),   # h264 mp4 container bytes
                "label": tfds.features.Tensor(shape=(), dtype=np.int64),
                "fps": tfds.features.Tensor(shape=(), dtype=np.float32),
                "num_frames": tfds.features.Tensor(shape=(), dtype=np.int64),
                "path": tfds.features.Tensor(shape=(), dtype=np.str_),
            }),
            supervised_keys=("video", "label"),
            homepage="https://github.com/",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        c = self.builder_config
        return {"train": self._generate_examples("train", c.num_train),
                "validation": self._generate_examples("validation", c.num_val)}

    def _generate_examples(self, split: str, count: int):
        c = self.builder_config
        for i in range(count):
            rec = synthetic.make_record(i, split=split, seed=c.seed, size=c.size, frames=c.frames, fps=c.fps)
            yield rec["path"], {"video": rec["video"], "label": rec["label"], "fps": rec["fps"],
                                "num_frames": rec["num_frames"], "path": rec["path"]}
