"""Video probing, trimming and re-encoding with PyAV, for the dataset writers.

The shard writer (`jepa.data.shard`) and the tfds builders (`data/ssv2`, `data/ek100`) need only a few
operations on source videos, all here:

  * `probe`: frame rate, frame count, size and codec of a video, decoding every frame so that an
    undecodable file is detected before it is written anywhere;
  * `trim_clips`: decode the frames of time windows of an (hour-long, 1080p) video, downscale them and
    re-encode each window as a small h264 mp4 (EK100 stores one such clip per action); overlapping
    windows share one decoding pass;
  * `encode_frames_jpeg` / `reencode`: per-frame JPEGs or a downscaled h264 copy of a whole video.

Times are seconds from the start of the video stream (pts relative to the stream's start_time). Frame
index `k` is the frame displayed at time k / fps; `frame_at(t, fps)` = round(t * fps) maps a time to the
nearest frame (the convention the EK100 CSVs use for their frame columns).
"""
from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import av
import numpy as np
from PIL import Image

from jepa.data.frametime import frame_index

Source = str | os.PathLike | bytes


@dataclass(frozen=True)
class VideoProbe:
    """What `probe` learnt about a video."""

    fps: float
    num_frames: int
    width: int
    height: int
    duration_sec: float
    codec: str


@dataclass(frozen=True)
class Clip:
    """An encoded clip cut from a longer video (all times in the source's timeline)."""

    data: bytes                  # encoded container bytes (mp4/h264), or b"" when `frames` is used
    frames: list[bytes] | None   # per-frame JPEGs instead of `data`
    fps: float                   # frame rate of the clip == frame rate of the source
    num_frames: int
    first_frame: int             # source frame index of the clip's first frame
    last_frame: int              # source frame index of the clip's last frame (inclusive)
    offset_sec: float            # source time of the clip's first frame
    width: int
    height: int


class VideoDecodeError(RuntimeError):
    """A video could not be opened or decoded (the message names the file)."""


def frame_at(t: float, fps: float) -> int:
    """Index of the frame nearest to time `t` (seconds) at `fps` (never negative): `frametime.frame_index`."""
    return frame_index(t, fps)


def scaled_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) with the short side scaled down to `short_side` (never up), both even (h264)."""
    if short_side is None or min(width, height) <= short_side:
        w, h = width, height
    elif width <= height:
        w, h = short_side, round(height * short_side / width)
    else:
        w, h = round(width * short_side / height), short_side
    return max(2, w - w % 2), max(2, h - h % 2)


def _open(source: Source, name: str | None = None) -> av.container.InputContainer:
    path = None if isinstance(source, bytes) else os.fspath(source)
    name = name or path or "<bytes>"
    try:
        return av.open(io.BytesIO(source) if path is None else path, mode="r")
    except (av.FFmpegError, OSError, ValueError) as e:
        raise VideoDecodeError(f"{name}: cannot open video: {e}") from e


def _video_stream(container: av.container.InputContainer, name: str) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise VideoDecodeError(f"{name}: no video stream")
    stream = container.streams.video[0]
    if not stream.codec_context.is_open:
        stream.thread_type = "AUTO"
    return stream


def stream_fps(stream: av.video.stream.VideoStream, name: str = "<video>") -> Fraction:
    """The stream's frame rate (average, else guessed, else base rate), as an exact Fraction."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    raise VideoDecodeError(f"{name}: the video stream declares no frame rate")


def _frame_time(frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> float:
    start = stream.start_time or 0
    return float((frame.pts - start) * stream.time_base)


def probe(source: Source, *, name: str | None = None) -> VideoProbe:
    """Open and fully decode a video; raises `VideoDecodeError` (naming the file) if it cannot be.

    `num_frames` is the number of decoded frames (container headers are often wrong or absent, e.g. webm).
    """
    name = name or ("<bytes>" if isinstance(source, bytes) else os.fspath(source))
    with _open(source, name) as container:
        stream = _video_stream(container, name)
        fps = stream_fps(stream, name)
        count, last_t = 0, 0.0
        try:
            for frame in container.decode(stream):
                count += 1
                if frame.pts is not None:
                    last_t = _frame_time(frame, stream)
        except (av.FFmpegError, ValueError) as e:
            raise VideoDecodeError(f"{name}: decoding failed after {count} frames: {e}") from e
        if count == 0:
            raise VideoDecodeError(f"{name}: no decodable frames")
        return VideoProbe(fps=float(fps), num_frames=count, width=stream.codec_context.width,
                          height=stream.codec_context.height, duration_sec=last_t + 1.0 / float(fps),
                          codec=stream.codec_context.name)


def _resize(frame: av.VideoFrame, size: tuple[int, int]) -> av.VideoFrame:
    if (frame.width, frame.height) == size and frame.format.name == "yuv420p":
        return frame
    return frame.reformat(width=size[0], height=size[1], format="yuv420p", interpolation="AREA")


def to_jpeg(frame: av.VideoFrame, size: tuple[int, int], quality: int = 90) -> bytes:
    """One frame, resized to `size`, as JPEG bytes."""
    image = frame.reformat(width=size[0], height=size[1], format="rgb24", interpolation="AREA").to_image()
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def jpeg_resize(data: bytes, short_side: int | None, quality: int = 90) -> bytes:
    """A JPEG downscaled to `short_side` (returned unchanged when already small enough)."""
    image = Image.open(io.BytesIO(data))
    size = scaled_size(image.width, image.height, short_side)
    if size == (image.width, image.height):
        return data
    buf = io.BytesIO()
    image.convert("RGB").resize(size, Image.Resampling.BOX).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


class H264Writer:
    """Encodes frames into an in-memory h264 mp4 at a fixed frame rate (frame j at time j / fps)."""

    def __init__(self, size: tuple[int, int], fps: Fraction, *, crf: int = 23, preset: str = "veryfast"):
        self._buf = io.BytesIO()
        self._out = av.open(self._buf, mode="w", format="mp4")
        self._stream = self._out.add_stream("libx264", rate=fps)
        self._stream.width, self._stream.height = size
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(crf), "preset": preset}
        self._size = size
        self._time_base = Fraction(1) / fps
        self._stream.codec_context.time_base = self._time_base
        self._count = 0

    def add(self, frame: av.VideoFrame) -> None:
        frame = _resize(frame, self._size)
        frame.pts = self._count  # frame j at time j / fps
        frame.time_base = self._time_base
        for packet in self._stream.encode(frame):
            self._out.mux(packet)
        self._count += 1

    @property
    def num_frames(self) -> int:
        return self._count

    def finish(self) -> bytes:
        for packet in self._stream.encode():
            self._out.mux(packet)
        self._out.close()
        return self._buf.getvalue()


def iter_window(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                fps: float, first: int, last: int) -> Iterator[tuple[int, av.VideoFrame]]:
    """Yield (source frame index, frame) for frames first..last (inclusive) of an open container.

    Seeks to the key frame at or before `first`, then decodes forward. Frames past the end of the video
    are simply absent.
    """
    start = stream.start_time or 0
    target = start + int(math.floor((first - 0.5) / fps / stream.time_base)) if first > 0 else start
    container.seek(max(start, target), stream=stream, backward=True, any_frame=False)
    for frame in container.decode(stream):
        if frame.pts is None:
            continue
        k = frame_at(_frame_time(frame, stream), fps)
        if k < first:
            continue
        if k > last:
            break
        yield k, frame


def _runs(spans: list[tuple[int, int]], max_gap: int) -> list[list[int]]:
    """Group window indices (sorted by first frame) into runs whose frames are decoded in one pass: a
    window joins the current run when it starts at most `max_gap` frames after the run's last frame."""
    order = sorted(range(len(spans)), key=lambda i: spans[i])
    runs: list[list[int]] = []
    run_last = -1
    for i in order:
        if runs and spans[i][0] <= run_last + max_gap:
            runs[-1].append(i)
            run_last = max(run_last, spans[i][1])
        else:
            runs.append([i])
            run_last = spans[i][1]
    return runs


def trim_clips(container: av.container.InputContainer, windows: list[tuple[float, float]], *,
               short_side: int | None = 256, frames_as_jpeg: bool = False, jpeg_quality: int = 90,
               crf: int = 23, name: str = "<video>", max_gap_sec: float = 2.0) -> list[Clip | VideoDecodeError]:
    """Cut several [start_sec, stop_sec] windows out of an open video, decoding each frame once.

    Window w keeps the source frames frame_at(start)..frame_at(stop) (same fps), downscaled to
    `short_side`, as an h264 mp4 or per-frame JPEGs. Overlapping or nearby windows (gaps up to
    `max_gap_sec`) share one seek and one decoding pass; each frame is resized (and JPEG-encoded) once.
    Returns, per window, its Clip or the VideoDecodeError (naming the file and window) that prevented it.
    """
    stream = _video_stream(container, name)
    rate = stream_fps(stream, name)
    fps = float(rate)
    size = scaled_size(stream.codec_context.width, stream.codec_context.height, short_side)
    spans = [(frame_at(a, fps), frame_at(b, fps)) for a, b in windows]
    out: list[Clip | VideoDecodeError] = [VideoDecodeError("not decoded")] * len(windows)

    def where(i: int) -> str:
        return f"{name}: window [{windows[i][0]:.3f}, {windows[i][1]:.3f}] s"

    for run in _runs(spans, max(1, int(round(max_gap_sec * fps)))):
        writers = {i: None if frames_as_jpeg else H264Writer(size, rate, crf=crf) for i in run}
        jpegs: dict[int, list[bytes]] = {i: [] for i in run}
        indices: dict[int, list[int]] = {i: [] for i in run}
        first, last = min(spans[i][0] for i in run), max(spans[i][1] for i in run)
        try:
            for k, frame in iter_window(container, stream, fps, first, last):
                shared: av.VideoFrame | bytes | None = None
                for i in run:
                    if not spans[i][0] <= k <= spans[i][1] or (indices[i] and k <= indices[i][-1]):
                        continue  # outside the window, or a duplicate timestamp (keep the first)
                    if shared is None:
                        shared = to_jpeg(frame, size, jpeg_quality) if frames_as_jpeg else _resize(frame, size)
                    indices[i].append(k)
                    if frames_as_jpeg:
                        jpegs[i].append(shared)
                    else:
                        writers[i].add(shared)
        except (av.FFmpegError, ValueError) as e:
            for i in run:
                out[i] = VideoDecodeError(f"{where(i)}: decoding failed: {e}")
            continue
        for i in run:
            if not indices[i]:
                out[i] = VideoDecodeError(f"{where(i)}: no frames decoded")
                continue
            data = b"" if frames_as_jpeg else writers[i].finish()
            out[i] = Clip(data=data, frames=jpegs[i] if frames_as_jpeg else None, fps=fps,
                          num_frames=len(indices[i]), first_frame=indices[i][0], last_frame=indices[i][-1],
                          offset_sec=indices[i][0] / fps, width=size[0], height=size[1])
    return out


def trim_clip(container: av.container.InputContainer, start_sec: float, stop_sec: float, **kwargs) -> Clip:
    """One window of `trim_clips` (same keyword arguments); raises its VideoDecodeError."""
    (clip,) = trim_clips(container, [(start_sec, stop_sec)], **kwargs)
    if isinstance(clip, VideoDecodeError):
        raise clip
    return clip


def open_video(source: Source) -> av.container.InputContainer:
    """Open a video for `trim_clips` (raises `VideoDecodeError` naming the file)."""
    return _open(source)


def decode_all(source: Source, *, short_side: int | None = None, frames_as_jpeg: bool = False,
               jpeg_quality: int = 90, crf: int = 23, name: str | None = None) -> Clip:
    """Decode a whole video and re-encode it (downscaled h264 mp4, or per-frame JPEGs)."""
    name = name or ("<bytes>" if isinstance(source, bytes) else os.fspath(source))
    with _open(source, name) as container:
        stream = _video_stream(container, name)
        rate = stream_fps(stream, name)
        size = scaled_size(stream.codec_context.width, stream.codec_context.height, short_side)
        writer = None if frames_as_jpeg else H264Writer(size, rate, crf=crf)
        jpegs: list[bytes] = []
        count = 0
        try:
            for frame in container.decode(stream):
                count += 1
                if writer is None:
                    jpegs.append(to_jpeg(frame, size, jpeg_quality))
                else:
                    writer.add(frame)
        except (av.FFmpegError, ValueError) as e:
            raise VideoDecodeError(f"{name}: decoding failed after {count} frames: {e}") from e
        if count == 0:
            raise VideoDecodeError(f"{name}: no decodable frames")
        data = b"" if writer is None else writer.finish()
        return Clip(data=data, frames=jpegs if writer is None else None, fps=float(rate), num_frames=count,
                    first_frame=0, last_frame=count - 1, offset_sec=0.0, width=size[0], height=size[1])


def decode_rgb(source: Source) -> tuple[np.ndarray, float]:
    """All frames of a (small) video as uint8 [T, H, W, 3] and its fps. For tests and debugging."""
    with _open(source) as container:
        stream = _video_stream(container, "<video>")
        fps = float(stream_fps(stream))
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return np.stack(frames), fps
