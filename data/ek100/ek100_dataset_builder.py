"""EPIC-KITCHENS-100 action anticipation as a tensorflow-datasets dataset (ArrayRecord; no TensorFlow).

Build (from the downloaded files, see MANUAL_DOWNLOAD_INSTRUCTIONS):

    jepa data build ek100 --manual_dir /data/EPIC-KITCHENS --data_dir ~/tensorflow_datasets --workers 8

One example per action: `video` is a trimmed, downscaled (short side SHORT_SIDE) h264 mp4 re-encode of
[start - CONTEXT_SEC, stop] of the source video at its real frame rate, never the hour-long source.
`clip_offset_sec` is the time of the clip's first frame; every other time is in the ORIGINAL video's
timeline (clip frame j is at clip_offset_sec + j / fps; start_frame / stop_frame / clip_start_frame are
frame indices at `fps` in the original video). `label` = action class (the (verb, noun) pairs seen in
train, numbered in sorted order; see `jepa.data.ek100`), -1 on test. Validation actions whose pair is
unseen in train are dropped. The anticipation protocol observes up to `observed_stop_sec` =
start_sec - tau_a (TAU_A = 1 s). Times are stored as float32 (tfds stores floats as float32; better than
0.3 ms over an hour); the integer frame fields are exact.
"""
from __future__ import annotations

from etils import epath
import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from jepa.data import ek100, shard

SHORT_SIDE = 256
CONTEXT_SEC = 6.0
TAU_A = 1.0

_INT_FIELDS = ("verb_class", "noun_class", "action_class", "start_frame", "stop_frame", "csv_start_frame",
               "csv_stop_frame", "clip_start_frame", "observed_stop_frame")
_FLOAT_FIELDS = ("start_sec", "stop_sec", "clip_offset_sec", "observed_stop_sec", "anticipation_sec")
_STR_FIELDS = ("video_id", "participant_id", "narration", "verb", "noun")


class Builder(tfds.core.GeneratorBasedBuilder):
    """EPIC-KITCHENS-100 actions as short clips with verb / noun / action classes."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: trimmed 256 px h264 clips with 6 s of context, anticipation."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download EPIC-KITCHENS-100 (videos: https://github.com/epic-kitchens/epic-kitchens-download-scripts,
annotations: https://github.com/epic-kitchens/epic-kitchens-100-annotations) into `manual_dir`:
  manual_dir/P01/videos/P01_01.MP4 ...                     (the videos; or manual_dir/EPIC-KITCHENS/P01/...)
  manual_dir/EPIC_100_train.csv, EPIC_100_validation.csv, EPIC_100_test_timestamps.csv (optional),
  EPIC_100_verb_classes.csv, EPIC_100_noun_classes.csv, EPIC_100_video_info.csv
      (or in manual_dir/annotations/ or manual_dir/epic-kitchens-100-annotations/)
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
        features = {
            "video": scalar(shape=(), dtype=np.object_),
            "label": scalar(shape=(), dtype=np.int64),
            "fps": scalar(shape=(), dtype=np.float32),
            "num_frames": scalar(shape=(), dtype=np.int64),
            "path": scalar(shape=(), dtype=np.str_),
            "id": scalar(shape=(), dtype=np.str_),
        }
        features.update({k: scalar(shape=(), dtype=np.int64) for k in _INT_FIELDS})
        features.update({k: scalar(shape=(), dtype=np.float32) for k in _FLOAT_FIELDS})
        features.update({k: scalar(shape=(), dtype=np.str_) for k in _STR_FIELDS})
        return tfds.core.DatasetInfo(
            builder=self,
            description="EPIC-KITCHENS-100 action anticipation: one trimmed clip per action.",
            features=tfds.features.FeaturesDict(features),
            homepage="https://epic-kitchens.github.io/",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual = dl_manager.manual_dir
        annotations = ek100.find_annotations(manual)
        video_root = ek100.find_video_root(manual)
        splits = ["train", "validation"]
        if any((annotations / n).is_file() for n in ek100.SPLIT_FILES["test"]):
            splits.append("test")
        return {split: self._generate_examples(str(annotations), str(video_root), split) for split in splits}

    def _generate_examples(self, annotations: str, video_root: str, split: str):
        examples, skipped = ek100.read_split(annotations, split, video_root, tau_a=TAU_A, on_error="skip")
        for s in skipped:
            if s["kind"] == "error":
                logging.warning("ek100 %s: skipped %s", split, s["message"])
        options = shard.ShardOptions(short_side=SHORT_SIDE, context_sec=CONTEXT_SEC)
        undecodable = 0
        for result in shard.iter_records(examples, "ek100", options, self._workers):
            if result.record is None:
                undecodable += 1
                logging.warning("ek100 %s: skipped %s", split, result.error["error"])
                continue
            r = result.record
            extra = r["extra"]
            example = {"video": r["video"], "label": r["label"], "fps": r["fps"], "num_frames": r["num_frames"],
                       "path": r["path"], "id": r["id"]}
            example.update({k: int(extra.get(k, -1)) for k in _INT_FIELDS})
            example.update({k: float(extra[k]) for k in _FLOAT_FIELDS})
            example.update({k: str(extra.get(k, "")) for k in _STR_FIELDS})
            yield r["id"], example
        logging.info("ek100 %s: %d examples, %d dropped (unseen action), %d reader errors, %d undecodable",
                     split, len(examples) - undecodable, sum(s["kind"] == "unseen_action" for s in skipped),
                     sum(s["kind"] == "error" for s in skipped), undecodable)
