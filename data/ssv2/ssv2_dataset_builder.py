"""Something-Something v2 as a tensorflow-datasets dataset (ArrayRecord; builds and reads without TensorFlow).

Build (from the downloaded files, see MANUAL_DOWNLOAD_INSTRUCTIONS):

    jepa data build ssv2 --manual_dir /data/ssv2 --data_dir ~/tensorflow_datasets

Read:  `tfds.data_source("ssv2", data_dir=...)["train"][i]` -> {"video": webm bytes, "label": int64,
"fps": float32, "num_frames": int64, "path": bytes, "id": bytes, "template": bytes}. The webm files are
stored as they are (VP9, 240 px high); decode them with PyAV. Test examples carry the label of
test-answers.csv when present, else -1. Records whose video is missing or cannot be decoded are skipped
and logged (counts per split).
"""
from __future__ import annotations

from etils import epath
import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from jepa.data import shard, ssv2


class Builder(tfds.core.GeneratorBasedBuilder):
    """Something-Something v2 videos with their class index (174 classes)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: webm bytes + class index, train / validation / test."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download Something-Something v2 from Qualcomm
(https://www.qualcomm.com/developer/software/something-something-v-2-dataset) and extract it into `manual_dir`:
  manual_dir/labels/labels.json, train.json, validation.json, test.json, test-answers.csv
      (older names something-something-v2-labels.json, -train.json, ... are accepted; the files may also sit
      directly in manual_dir)
  manual_dir/20bn-something-something-v2/<id>.webm   (1.webm ... 220847.webm)
"""
    # tfds looks for checksums next to the builder through `importlib_resources`, which this environment
    # lacks; pointing code_path at this file directly avoids that import.
    code_path = tfds.core.utils.classproperty(classmethod(lambda cls: epath.Path(__file__)))

    def __init__(self, *, workers: int = 1, **kwargs):
        kwargs.setdefault("file_format", "array_record")
        self._workers = workers
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        scalar = tfds.features.Tensor
        return tfds.core.DatasetInfo(
            builder=self,
            description="Something-Something v2: 220,847 short videos of 174 template actions.",
            features=tfds.features.FeaturesDict({
                "video": scalar(shape=(), dtype=np.object_),
                "label": scalar(shape=(), dtype=np.int64),
                "fps": scalar(shape=(), dtype=np.float32),
                "num_frames": scalar(shape=(), dtype=np.int64),
                "path": scalar(shape=(), dtype=np.str_),
                "id": scalar(shape=(), dtype=np.str_),
                "template": scalar(shape=(), dtype=np.str_),
            }),
            homepage="https://www.qualcomm.com/developer/software/something-something-v-2-dataset",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        labels_dir, video_dir = ssv2.locate(dl_manager.manual_dir)
        splits = ["train", "validation"]
        if any((labels_dir / n).is_file() for n in ssv2.SPLIT_FILES["test"]):
            splits.append("test")
        return {split: self._generate_examples(str(labels_dir), str(video_dir), split) for split in splits}

    def _generate_examples(self, labels_dir: str, video_dir: str, split: str):
        examples, skipped = ssv2.read_split(labels_dir, split, video_dir, on_error="skip")
        for s in skipped:
            logging.warning("ssv2 %s: skipped %s", split, s["message"])
        undecodable = 0
        for result in shard.iter_records(examples, "ssv2", shard.ShardOptions(), self._workers):
            if result.record is None:
                undecodable += 1
                logging.warning("ssv2 %s: skipped undecodable video %s", split, result.error["error"])
                continue
            r = result.record
            yield r["id"], {"video": r["video"], "label": r["label"], "fps": r["fps"],
                            "num_frames": r["num_frames"], "path": r["path"], "id": r["id"],
                            "template": r["extra"].get("template", "")}
        logging.info("ssv2 %s: %d examples, %d skipped by the reader, %d undecodable", split,
                     len(examples) - undecodable, len(skipped), undecodable)
