"""The one record format of the project's ArrayRecord shards.

A record is a msgpack-encoded dict. Video is stored encoded (container bytes) or as a list of per-frame
JPEG bytes, never decoded. Fields:

  video:      bytes            encoded container (mp4 / webm / ...), or absent when `frames` is used
  frames:     list[bytes]      per-frame JPEGs (alternative to `video`)
  label:      int | list[int]  class index (or several); -1 when unlabelled
  fps:        float            frames per second of the stored video (frames variant: of the source)
  num_frames: int              number of frames in the stored video
  path:       str              source path (for reports / debugging)
  id:         str              dataset-specific identifier (SSv2 id, EK100 narration_id, ...)
  extra:      dict             dataset-specific metadata (EK100: start_frame, stop_frame, start_sec,
                               stop_sec, verb_class, noun_class, action_class, video_id, ...)
"""
from __future__ import annotations

from typing import Any

import msgpack

REQUIRED = ("label", "fps", "num_frames", "path")


class RecordError(ValueError):
    """A record that cannot be used: bytes that do not decode, missing or malformed fields, an undecodable video.
    The message names the record. Training skips and counts these (jepa.data.faults)."""


def encode(record: dict[str, Any]) -> bytes:
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise ValueError(f"record {record.get('path', '?')!r} lacks fields {missing}")
    if ("video" in record) == ("frames" in record):
        raise ValueError(f"record {record.get('path', '?')!r} needs exactly one of 'video' or 'frames'")
    return msgpack.packb(record, use_bin_type=True)


def decode(data: bytes) -> dict[str, Any]:
    try:
        record = msgpack.unpackb(data, raw=False)
    except Exception as e:  # msgpack raises several unrelated types for damaged bytes
        raise RecordError(f"record of {len(data)} bytes is not a msgpack record ({type(e).__name__}: {e})") from None
    if not isinstance(record, dict):
        raise RecordError(f"record of {len(data)} bytes holds a {type(record).__name__}, not a dict of fields")
    return record
