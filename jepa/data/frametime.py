"""The one rule that turns a time in seconds into a frame index.

Frame k of a video at `fps` frames per second is shown at time k / fps. `frame_index(t, fps)` is the frame
NEAREST to time t: round(t * fps) (Python's round of the float product), never below 0.

Every place that turns a time into a frame uses this function, so that they agree to the frame: the EK100
reader (`start_frame`, `stop_frame`, `observed_stop_frame`), the shard writer (the same fields at the stored
clip's rate, and which source frames a trimmed clip keeps, via `videoio.frame_at`) and the pipeline's
samplers in `jepa.data.video` (the action window and the last observed frame of an anticipation clip).

Why nearest and not "last frame at or before t": it is the convention of the datasets and of the reference
code. The EK100 CSVs' own frame columns are round(t x 60) (EK-55 videos) or round(t x 50) (extensions), see
/work/shared/spec/data-formats.md; EPIC-KITCHENS' loaders and the V-JEPA 2 anticipation evaluation work on
those frame numbers, and where they convert a timestamp themselves they use int(round(t * fps)). With a
floor instead, a 29.97 fps EK-55 video whose action starts at 00:00:03.60 would observe up to frame 77
(2.6 s x 29.97 = 77.92) while the CSV convention and the shard metadata say 78.

A stored clip that was trimmed out of a longer video starts at source frame `first = frame_index(offset)`
(its `clip_offset_sec` is first / fps), so time t is stored frame frame_index(t) - first: the difference of
two indices, never the rounding of a shifted time, so stored and source frame numbers agree exactly.
"""
from __future__ import annotations


def frame_index(t_sec: float, fps: float) -> int:
    """0-based index of the frame nearest to time `t_sec` (seconds) of a video at `fps`; 0 for t <= 0."""
    return max(0, int(round(t_sec * fps)))


def stored_frame(t_sec: float, fps: float, clip_offset_sec: float = 0.0) -> int:
    """Frame of a stored clip that starts at `clip_offset_sec` of the original timeline nearest to time
    `t_sec` of that timeline: frame_index(t_sec) - frame_index(clip_offset_sec). Negative when t_sec is
    before the clip, past the clip's end when after it (callers clamp)."""
    return frame_index(t_sec, fps) - frame_index(clip_offset_sec, fps)
