"""Decoding of stored video records and the choice of which frames to decode.

A record (see `jepa.data.records`) holds either encoded container bytes in `record['video']` (mp4 / webm /
...) or per-frame JPEG bytes in `record['frames']`. `decode_record(record, indices)` returns those frames as
uint8 [T, H, W, 3]; frames are decoded in order up to the last one needed (seeking first when the clip starts
far into the video), only the frames asked for are converted to RGB, and an optional `short_side` downscales
them at decode time.

Frame sampling is in frame indices of the STORED video. Times in `record['extra']` (`start_sec`,
`stop_sec`, ...) are in the ORIGINAL video's timeline; a stored clip trimmed out of a longer video starts at
`extra.get('clip_offset_sec', 0)` of that timeline. Time t maps to the stored frame nearest to it,
frame_index(t) - frame_index(offset) (`jepa.data.frametime`, the same rule as the shard metadata's frame
fields, so an anticipation clip ends at the record's `observed_stop_frame`).

Sampling modes (`sample_frame_indices`):
  'clip'          the whole stored video (pretraining, SSv2).
  'action'        the window [extra.start_sec, extra.stop_sec] (EK100 action recognition).
  'anticipation'  a clip whose last frame is the one nearest to extra.start_sec - tau_a (EK100 anticipation;
                  tau_a = 1 s by default); frames before the video's start repeat the first frame.
Within a window, a clip of `num_frames` frames at `stride` spans (num_frames - 1) * stride + 1 frames; its start
is random (training, an `rng` is given) or centred (evaluation); several segments are evenly spaced (evaluation)
or, in training, one at a random start in each of that many equal parts of the window; a window (or part)
shorter than the span repeats its last frame.
"""
from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jepa.data import frametime
from jepa.data.records import RecordError

MODES = ("clip", "action", "anticipation")
# Seek instead of decoding from the start when the first needed frame is at least this many frames in.
SEEK_MIN_FRAMES = 48
_EPS = 1e-6


class VideoDecodeError(RecordError):
    """A record's video could not be decoded; the message names the record."""


def record_name(record: Mapping[str, Any]) -> str:
    """A short human-readable name of a record for error messages."""
    name = repr(record.get("path", "?"))
    if record.get("id") not in (None, ""):
        name += f" (id {record['id']!r})"
    return name


# ----------------------------------------------------------------------------------------------- sampling


def frame_stride(video_fps: float, *, target_fps: float | None = None, stride: int | None = None) -> int:
    """Frame step in the stored video: `stride` if given, else ceil(video_fps) // target_fps (at least 1).

    This is the reference's rule: a 29.97 fps video sampled at 4 fps uses every 7th frame.
    """
    if stride is not None:
        if int(stride) < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        return int(stride)
    if target_fps is None or target_fps <= 0:
        raise ValueError(f"need a positive target_fps or a stride, got target_fps={target_fps}, stride={stride}")
    if not video_fps or video_fps <= 0:
        raise ValueError(f"video fps must be positive, got {video_fps}")
    return max(1, int(math.ceil(video_fps - _EPS) // target_fps))


def clip_span(num_frames: int, stride: int) -> int:
    """Number of stored frames a clip of `num_frames` at `stride` covers."""
    return (num_frames - 1) * stride + 1


def window_clip(lo: int, hi: int, num_frames: int, stride: int, start: int) -> np.ndarray:
    """`num_frames` indices from `start` every `stride`, held at hi - 1 (the window's last frame) past it."""
    idx = start + stride * np.arange(num_frames, dtype=np.int64)
    return np.clip(idx, lo, hi - 1)


def window_starts(lo: int, hi: int, num_frames: int, stride: int, num_segments: int = 1,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """Start frames of the clips taken from the window [lo, hi).

    One segment: uniform random start when `rng` is given, else the centred clip. Several segments: evenly
    spaced from the window's first possible start to its last (deterministic). A window shorter than the
    clip span starts every clip at lo.
    """
    slack = (hi - lo) - clip_span(num_frames, stride)
    if slack <= 0:
        return np.full((num_segments,), lo, dtype=np.int64)
    if num_segments == 1:
        offset = int(rng.integers(0, slack + 1)) if rng is not None else slack // 2
        return np.array([lo + offset], dtype=np.int64)
    return lo + np.round(np.linspace(0, slack, num_segments)).astype(np.int64)


def time_to_frame(t_sec: float, fps: float, clip_offset_sec: float = 0.0) -> int:
    """Stored frame nearest to original-timeline time `t_sec` (`jepa.data.frametime`, the rule the shard
    metadata's frame fields use too); may lie outside the stored video (callers clamp)."""
    return frametime.stored_frame(t_sec, fps, clip_offset_sec)


def action_window(start_sec: float, stop_sec: float, fps: float, num_frames: int,
                  clip_offset_sec: float = 0.0) -> tuple[int, int]:
    """[lo, hi) stored frames from the frame nearest start_sec to the frame nearest stop_sec (at least one
    frame): the record's extra start_frame..stop_frame, shifted to the stored clip."""
    lo = time_to_frame(start_sec, fps, clip_offset_sec)
    hi = time_to_frame(stop_sec, fps, clip_offset_sec) + 1
    lo = min(max(lo, 0), num_frames - 1)
    hi = min(max(hi, lo + 1), num_frames)
    return lo, hi


def anticipation_clip(action_start_sec: float, tau_a: float, fps: float, video_num_frames: int,
                      num_frames: int, stride: int, clip_offset_sec: float = 0.0) -> np.ndarray:
    """Indices of a clip whose last frame is the frame nearest to action_start_sec - tau_a (the record's
    extra observed_stop_frame when tau_a is the shard's), every `stride` frames before it.

    Frames before the video's first frame repeat frame 0; an end past the video's end holds its last frame.
    """
    end = time_to_frame(action_start_sec - tau_a, fps, clip_offset_sec)
    idx = end - stride * np.arange(num_frames - 1, -1, -1, dtype=np.int64)
    return np.clip(idx, 0, video_num_frames - 1)


def sample_frame_indices(record: Mapping[str, Any], *, num_frames: int, target_fps: float | None = None,
                         stride: int | None = None, mode: str = "clip", num_segments: int = 1,
                         tau_a: float = 1.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """Frame indices [num_segments, num_frames] of the stored video of `record` for one example.

    `rng` None (evaluation): the centred clip, or `num_segments` evenly spaced clips. `rng` given (training): one
    clip at a random start; with several segments, the window is split into `num_segments` equal consecutive parts
    and each segment is a clip at a random start within its own part (a part shorter than the clip span repeats
    its last frame), so segment i's frames all lie in part i.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    name = record_name(record)
    n = int(record.get("num_frames") or 0)
    if "frames" in record:
        n = len(record["frames"])
    if n <= 0:
        raise VideoDecodeError(f"record {name}: field 'num_frames' must be positive, got {record.get('num_frames')!r}")
    fps = float(record.get("fps") or 0.0)
    if fps <= 0 and (stride is None or mode != "clip"):
        raise VideoDecodeError(f"record {name}: field 'fps' must be positive, got {record.get('fps')!r}")
    step = frame_stride(fps, target_fps=target_fps, stride=stride)
    extra = record.get("extra") or {}
    offset = float(extra.get("clip_offset_sec", 0.0) or 0.0)

    def need(key: str) -> float:
        if key not in extra:
            raise VideoDecodeError(f"record {name}: mode {mode!r} needs field extra[{key!r}]")
        return float(extra[key])

    if mode == "anticipation":
        if num_segments != 1:
            raise ValueError("mode 'anticipation' takes exactly one segment")
        idx = anticipation_clip(need("start_sec"), tau_a, fps, n, num_frames, step, offset)
        return idx[None]
    lo, hi = (0, n) if mode == "clip" else action_window(need("start_sec"), need("stop_sec"), fps, n, offset)
    if rng is not None and num_segments > 1:
        # Part i: [lo + i * L // S, lo + (i + 1) * L // S), at least one frame (L < S: parts share frames).
        bounds = [lo + i * (hi - lo) // num_segments for i in range(num_segments + 1)]
        parts = [(a, max(b, a + 1)) for a, b in zip(bounds[:-1], bounds[1:])]
        return np.stack([window_clip(a, b, num_frames, step, int(window_starts(a, b, num_frames, step, 1, rng)[0]))
                         for a, b in parts])
    starts = window_starts(lo, hi, num_frames, step, num_segments, rng)
    return np.stack([window_clip(lo, hi, num_frames, step, int(s)) for s in starts])


# ----------------------------------------------------------------------------------------------- decoding


def scaled_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """(height, width) with the short side reduced to `short_side` (never enlarged), aspect kept."""
    if not short_side or min(height, width) <= short_side:
        return height, width
    s = short_side / min(height, width)
    return max(1, int(round(height * s))), max(1, int(round(width * s)))


def decode_record(record: Mapping[str, Any], indices: Sequence[int] | np.ndarray, *,
                  short_side: int | None = None, threads: int = 1) -> np.ndarray:
    """Frames `indices` (any shape of non-negative ints) of a record as uint8 [*indices.shape, H, W, 3].

    `threads`: decoder threads for a video container (0: FFmpeg's automatic frame + slice threading). One is
    best where worker processes already decode in parallel; the frames do not depend on it.

    Indices past the video's real end repeat its last decoded frame (container frame counts are not always
    exact). Errors name the record.
    """
    idx = np.asarray(indices, dtype=np.int64)
    name = record_name(record)
    if idx.size == 0:
        raise ValueError(f"record {name}: no frame indices to decode")
    if idx.min() < 0:
        raise ValueError(f"record {name}: negative frame index {int(idx.min())}")
    wanted = np.unique(idx)
    try:
        if "frames" in record:
            got = _decode_jpegs(record["frames"], wanted, short_side)
        elif "video" in record:
            got = _decode_container(record["video"], wanted, short_side, threads)
        else:
            raise VideoDecodeError("has neither field 'video' nor 'frames'")
    except VideoDecodeError as e:
        raise VideoDecodeError(f"record {name}: {e}") from None
    except Exception as e:  # av.error.*, PIL.UnidentifiedImageError, ...
        raise VideoDecodeError(f"record {name}: cannot decode field "
                               f"{'frames' if 'frames' in record else 'video'}: {type(e).__name__}: {e}") from e
    table = np.stack([got[int(i)] for i in wanted])
    return table[np.searchsorted(wanted, idx)]


def _decode_jpegs(frames: Sequence[bytes], wanted: np.ndarray, short_side: int | None) -> dict[int, np.ndarray]:
    from PIL import Image

    if not len(frames):
        raise VideoDecodeError("field 'frames' is empty")
    out = {}
    for i in wanted:
        j = min(int(i), len(frames) - 1)
        img = Image.open(io.BytesIO(frames[j]))
        h, w = scaled_size(img.height, img.width, short_side)
        if (h, w) != (img.height, img.width):
            img.draft("RGB", (w, h))  # JPEG DCT-domain downscale: much faster decode
        img = img.convert("RGB")
        if (img.height, img.width) != (h, w):
            img = img.resize((w, h), Image.BILINEAR)
        out[int(i)] = np.asarray(img)
    return out


def _decode_container(data: bytes, wanted: np.ndarray, short_side: int | None,
                      threads: int) -> dict[int, np.ndarray]:
    import av

    def open_stream():
        container = av.open(io.BytesIO(data), mode="r")
        if not container.streams.video:
            container.close()
            raise VideoDecodeError("container has no video stream")
        stream = container.streams.video[0]
        if threads != 1:
            stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        return container, stream

    first, last = int(wanted[0]), int(wanted[-1])
    container, stream = open_stream()
    rate = stream.average_rate or stream.guessed_rate
    start_pts = stream.start_time or 0
    if first >= SEEK_MIN_FRAMES and rate and stream.time_base:
        # Seek to the keyframe at or before the first wanted frame; frame indices then come from timestamps.
        try:
            target = start_pts + int(first / float(rate) / float(stream.time_base))
            container.seek(target, stream=stream, backward=True, any_frame=False)
            out, ok = _collect(container, stream, wanted, last, short_side, rate, start_pts, from_pts=True)
        except av.error.FFmpegError:
            out, ok = {}, False
        if ok:
            container.close()
            return out
        container.close()  # seeking did not land before the first frame: decode from the start instead
        container, stream = open_stream()
    try:
        out, _ = _collect(container, stream, wanted, last, short_side, rate, start_pts, from_pts=False)
    finally:
        container.close()
    if not out:
        raise VideoDecodeError("decoded no frames")
    return out


def _collect(container, stream, wanted, last, short_side, rate, start_pts, *, from_pts):
    """Decode in order up to frame `last`, converting only the wanted frames; returns (frames, ok).

    Sequential mode counts frames from 0. After a seek (`from_pts`), the first frame's index comes from its
    timestamp and the count continues from there; ok is False when that lands past the first wanted frame
    (the caller then decodes from the start). Wanted frames past the video's real end repeat its last frame.
    """
    from av.video.reformatter import VideoReformatter

    want = set(int(i) for i in wanted)
    out: dict[int, np.ndarray] = {}
    size = None
    k = -1
    tail = None  # the last decoded (not yet converted) frame

    # One reformatter for the whole clip keeps libswscale's context: a fresh one per frame costs ~1 ms each.
    reformatter = VideoReformatter()

    def rgb(frame) -> np.ndarray:
        nonlocal size
        if size is None:
            size = scaled_size(frame.height, frame.width, short_side)
        h, w = size
        if (h, w) == (frame.height, frame.width):
            return reformatter.reformat(frame, format="rgb24").to_ndarray()
        return reformatter.reformat(frame, width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()

    for frame in container.decode(stream):
        if k < 0 and from_pts:
            if frame.pts is None:
                return {}, False
            k = int(round(float((frame.pts - start_pts) * stream.time_base) * float(rate)))
            if k > int(wanted[0]):
                return {}, False
        else:
            k += 1
        tail = frame
        if k in want:
            out[k] = rgb(frame)
        if k >= last:
            break
    if tail is None:
        return {}, not from_pts
    missing = want.difference(out)
    if missing:
        if min(missing) <= k:  # cannot happen with a sequential count; guard against it anyway
            raise VideoDecodeError(f"frame {min(missing)} missing from the decoded stream")
        end = out[k] if k in out else rgb(tail)
        for i in missing:
            out[i] = end
    return out, True
