"""An embedded procedural video dataset with a motion-sensitive label (needs no download).

Scene `MovingShapes`: a textured or noisy background; 2-4 small textured distractor shapes that move, bounce
off the walls and off each other, and appear / disappear at random times; and one larger textured TARGET
shape that moves in a straight line (wrapping around the frame edges). The label is the target's direction
of motion, one of 8 compass directions (0 = right, counter-clockwise in 45 degree steps, +-10 degree jitter),
balanced across a split.

No single frame can tell the label: every random draw of a clip (background, shapes, textures, positions,
distractor motion, the target's speed) is made before and independently of the label, which only sets the
target's heading, so clips with different labels from the same seed have IDENTICAL first frames
(`tests/test_synthetic.py` checks this). The task needs motion and object identity, in the spirit of SSv2.
Beware: a horizontal flip changes the label (use flip=False when probing on it).

Scenes are pluggable: `write_synthetic(..., scenes=[...])` takes any objects with `name`, `class_names` and
`render(rng, label, size=, frames=)`; labels of several scenes are offset so they do not collide (e.g. a
robot-play scene can be added later).

Records are `jepa.data.records` dicts (h264 4:4:4 mp4 bytes, or per-frame JPEGs with codec="jpeg") written to
ArrayRecord shards `synthetic-{split}-{k:05d}-of-{n:05d}.array_record` (group_size 1, contiguous blocks of
clips) by `jepa.data.shard.write_record_shards`: under temporary names, renamed when complete.
`save_preview` writes a PNG / GIF grid of clips with their class names.

Command line: `python -m jepa.data.synthetic OUT_DIR --train 4096 --val 512 [--preview out.gif]`.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import itertools
import math
import os
from collections.abc import Iterator, Sequence
from fractions import Fraction
from typing import Any, Protocol

import numpy as np

from jepa.data import records

SPLITS = ("train", "validation")
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
DIRECTIONS = ("right", "up-right", "up", "up-left", "left", "down-left", "down", "down-right")


class SceneGenerator(Protocol):
    """A procedural scene: renders uint8 [frames, size, size, 3] clips of a given class."""

    name: str

    @property
    def class_names(self) -> Sequence[str]: ...

    def render(self, rng: np.random.Generator, label: int, *, size: int, frames: int) -> np.ndarray: ...


# --------------------------------------------------------------------------------------------- drawing


def shape_mask(kind: str, diameter: int) -> np.ndarray:
    """Boolean [d, d] mask of a shape centred in its box."""
    c = (np.arange(diameter) + 0.5) / diameter * 2.0 - 1.0
    y, x = np.meshgrid(c, c, indexing="ij")
    r = np.hypot(x, y)
    if kind == "circle":
        return r <= 1.0
    if kind == "square":
        return (np.abs(x) <= 0.8) & (np.abs(y) <= 0.8)
    if kind == "triangle":  # apex up
        return (y <= 0.85) & (y >= -0.85 + 2.0 * np.abs(x) * 0.95)
    if kind == "diamond":
        return np.abs(x) + np.abs(y) <= 1.0
    if kind == "cross":
        return ((np.abs(x) <= 0.33) & (np.abs(y) <= 0.95)) | ((np.abs(y) <= 0.33) & (np.abs(x) <= 0.95))
    if kind == "ring":
        return (r <= 1.0) & (r >= 0.5)
    raise ValueError(f"unknown shape {kind!r}; known: {SHAPES}")


def random_colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated random RGB colour (float32, 0-255)."""
    hue = rng.uniform(0.0, 6.0)
    sat, val = rng.uniform(0.5, 1.0), rng.uniform(0.55, 1.0)
    c = val * sat
    x = c * (1 - abs(hue % 2 - 1))
    rgb = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(hue) % 6]
    return (np.array(rgb) + (val - c)).astype(np.float32) * 255.0


def random_texture(rng: np.random.Generator, h: int, w: int, *, low_contrast: bool = False) -> np.ndarray:
    """float32 [h, w, 3] texture: solid, stripes, checker, smooth noise or gradient between two colours."""
    a, b = random_colour(rng), random_colour(rng)
    if low_contrast:
        b = 0.6 * a + 0.4 * b
    kind = rng.integers(0, 5)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:  # solid
        t = np.zeros((h, w), np.float32)
    elif kind == 1:  # stripes at a random angle
        ang, period = rng.uniform(0, np.pi), rng.uniform(5.0, 10.0)  # survives 4:2:0 chroma
        t = (np.sin((x * np.cos(ang) + y * np.sin(ang)) * 2 * np.pi / period) > 0).astype(np.float32)
    elif kind == 2:  # checker
        cell = int(rng.integers(3, 7))
        t = ((y // cell + x // cell) % 2).astype(np.float32)
    elif kind == 3:  # smooth noise
        t = _smooth_noise(rng, h, w, cells=int(rng.integers(2, 6)))
    else:  # gradient
        ang = rng.uniform(0, 2 * np.pi)
        t = x * np.cos(ang) + y * np.sin(ang)
        t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
    return a[None, None] * (1 - t[..., None]) + b[None, None] * t[..., None]


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Bilinearly upsampled uniform noise in [0, 1], [h, w]."""
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    gy = np.linspace(0, cells, h, dtype=np.float32)
    gx = np.linspace(0, cells, w, dtype=np.float32)
    y0 = np.minimum(gy.astype(int), cells - 1)
    x0 = np.minimum(gx.astype(int), cells - 1)
    fy, fx = (gy - y0)[:, None], (gx - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bot = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bot * fy


def paste(canvas: np.ndarray, sprite: np.ndarray, mask: np.ndarray, top: int, left: int, *, wrap: bool = False):
    """Draw `sprite` where `mask` is set with its top-left corner at (top, left); clipped or wrapped."""
    H, W = canvas.shape[:2]
    h, w = mask.shape
    if wrap:
        top, left = top % H, left % W
        offsets = [(dy, dx) for dy in (0, -H) for dx in (0, -W)]
    else:
        offsets = [(0, 0)]
    for dy, dx in offsets:
        y0, x0 = top + dy, left + dx
        ys, xs = max(0, y0), max(0, x0)
        ye, xe = min(H, y0 + h), min(W, x0 + w)
        if ys >= ye or xs >= xe:
            continue
        m = mask[ys - y0:ye - y0, xs - x0:xe - x0]
        region = canvas[ys:ye, xs:xe]
        region[m] = sprite[ys - y0:ye - y0, xs - x0:xe - x0][m]


# --------------------------------------------------------------------------------------------- scenes


@dataclasses.dataclass(frozen=True)
class MovingShapes:
    """Textured shapes over a textured background; the label is the big target shape's heading."""

    name: str = "moving_shapes"
    num_distractors: tuple[int, int] = (2, 4)
    target_size: tuple[float, float] = (0.26, 0.32)      # diameter as a fraction of the frame side
    distractor_size: tuple[float, float] = (0.11, 0.19)
    speed: tuple[float, float] = (0.025, 0.05)           # frame sides per frame
    angle_jitter_deg: float = 10.0
    noise_std: tuple[float, float] = (0.0, 8.0)           # per-frame pixel noise (0-255 scale)
    appear_prob: float = 0.5                              # chance a distractor is visible only part of the clip

    @property
    def class_names(self) -> Sequence[str]:
        return tuple(f"target moving {d}" for d in DIRECTIONS)

    def render(self, rng: np.random.Generator, label: int, *, size: int = 64, frames: int = 16) -> np.ndarray:
        """uint8 [frames, size, size, 3] clip of class `label` (all randomness drawn before the label is used)."""
        return self.draw(self.sample_scene(rng, size=size, frames=frames), label)

    def sample_scene(self, rng: np.random.Generator, *, size: int = 64, frames: int = 16) -> dict[str, Any]:
        """Every random draw of a clip: background, noise, distractors, target look, start, speed, jitter."""
        background = random_texture(rng, size, size, low_contrast=bool(rng.random() < 0.5))
        noise_std = float(rng.uniform(*self.noise_std))
        n_dis = int(rng.integers(self.num_distractors[0], self.num_distractors[1] + 1))
        objects = []
        for _ in range(n_dis):
            d = max(3, int(round(rng.uniform(*self.distractor_size) * size)))
            ang = rng.uniform(0, 2 * np.pi)
            spd = rng.uniform(*self.speed) * size
            on, off = 0, frames
            if rng.random() < self.appear_prob:
                cut = int(rng.integers(1, frames)) if frames > 1 else 1
                on, off = (cut, frames) if rng.random() < 0.5 else (0, cut)
            objects.append(dict(
                d=d, mask=shape_mask(SHAPES[rng.integers(len(SHAPES))], d), tex=random_texture(rng, d, d),
                pos=rng.uniform(0, size - d, 2), vel=spd * np.array([-np.sin(ang), np.cos(ang)]), on=on, off=off))
        td = max(5, int(round(rng.uniform(*self.target_size) * size)))
        target_mask = shape_mask(SHAPES[rng.integers(len(SHAPES))], td)
        target_tex = random_texture(rng, td, td)
        if np.abs(target_tex.mean((0, 1)) - background.mean((0, 1))).sum() < 120:  # keep the target visible
            target_tex = 255.0 - target_tex
        return dict(
            size=size, frames=frames, background=background, noise_std=noise_std, objects=objects,
            target_mask=target_mask, target_tex=target_tex,
            target_start=rng.uniform(0, size, 2),                       # (y, x) of the target's centre
            target_speed=float(rng.uniform(*self.speed) * size),        # pixels per frame
            jitter=float(np.deg2rad(rng.uniform(-self.angle_jitter_deg, self.angle_jitter_deg))),
            noise=rng.standard_normal((frames, size, size, 3), dtype=np.float32) if noise_std > 0 else None)

    def target_track(self, scene: dict[str, Any], label: int) -> np.ndarray:
        """Integer (top, left) of the target's box per frame (before wrapping), [frames, 2].

        Heading = label * 45 degrees + jitter, counter-clockwise from 'right'; screen y points down.
        """
        if not 0 <= label < len(DIRECTIONS):
            raise ValueError(f"label must be in [0, {len(DIRECTIONS)}), got {label}")
        heading = label * np.pi / 4 + scene["jitter"]
        vel = scene["target_speed"] * np.array([-np.sin(heading), np.cos(heading)])
        t = np.arange(scene["frames"])[:, None]
        return np.round(scene["target_start"] + t * vel - scene["target_mask"].shape[0] / 2).astype(int)

    def draw(self, scene: dict[str, Any], label: int) -> np.ndarray:
        """Render a sampled scene with the target heading of class `label`."""
        track = self.target_track(scene, label)
        objects = [dict(o, pos=o["pos"].copy(), vel=o["vel"].copy()) for o in scene["objects"]]
        size, frames = scene["size"], scene["frames"]
        video = np.empty((frames, size, size, 3), np.float32)
        for t in range(frames):
            canvas = video[t]
            canvas[:] = scene["background"]
            for o in objects:
                if o["on"] <= t < o["off"]:
                    y, x = np.round(o["pos"]).astype(int)
                    paste(canvas, o["tex"], o["mask"], y, x)
            paste(canvas, scene["target_tex"], scene["target_mask"], track[t, 0], track[t, 1], wrap=True)
            _step_distractors(objects, size)
        if scene["noise"] is not None:
            video += scene["noise_std"] * scene["noise"]
        video += 0.5
        return np.clip(video, 0, 255, out=video).astype(np.uint8)


def _step_distractors(objects: list[dict[str, Any]], size: int) -> None:
    """Advance distractors one frame: move, bounce off the walls, swap velocities on collision."""
    for o in objects:
        o["pos"] = o["pos"] + o["vel"]
        for ax in range(2):
            hi = size - o["d"]
            if o["pos"][ax] < 0 or o["pos"][ax] > hi:
                o["pos"][ax] = np.clip(o["pos"][ax], 0, hi)
                o["vel"][ax] = -o["vel"][ax]
    for i in range(len(objects)):
        for j in range(i + 1, len(objects)):
            a, b = objects[i], objects[j]
            ca, cb = a["pos"] + a["d"] / 2, b["pos"] + b["d"] / 2
            gap = ca - cb
            if np.hypot(*gap) < (a["d"] + b["d"]) / 2 and np.dot(a["vel"] - b["vel"], gap) < 0:
                a["vel"], b["vel"] = b["vel"].copy(), a["vel"].copy()  # equal-mass elastic head-on exchange


# ------------------------------------------------------------------------------ label-exact symmetries

# The direction task is equivariant under the square's symmetries and time reversal: each maps a clip of heading
# class k to a valid clip of a known class. name -> (transform of [..., T, H, W, C], class map k -> k').
_GENERATORS = {
    "hflip": (lambda v: v[..., :, ::-1, :], lambda k: (4 - k) % 8),              # heading a -> 180 - a
    "vflip": (lambda v: v[..., ::-1, :, :], lambda k: (8 - k) % 8),              # a -> -a
    "transpose": (lambda v: np.swapaxes(v, -3, -2), lambda k: (14 - k) % 8),     # a -> -90 - a
    "reverse": (lambda v: v[..., ::-1, :, :, :], lambda k: (k + 4) % 8),         # a -> a + 180
}


def direction_symmetries() -> list[tuple[str, ...]]:
    """The 16 label-exact symmetries of MovingShapes' direction classes (the square's 8 times time reversal), as
    tuples of generator names applied in order; () is the identity."""
    names = ("hflip", "vflip", "transpose", "reverse")
    return [tuple(n for i, n in enumerate(names) if (m >> i) & 1) for m in range(16)]


def apply_symmetry(video: np.ndarray, labels: np.ndarray, symmetry: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Clips [..., T, H, W, C] of MovingShapes direction classes and their labels under `symmetry` (a tuple from
    direction_symmetries()). Only for the direction labels (a single MovingShapes scene)."""
    labels = np.asarray(labels)
    for name in symmetry:
        f, m = _GENERATORS[name]
        video, labels = f(video), m(labels)
    return np.ascontiguousarray(video), labels


def default_scenes() -> tuple[SceneGenerator, ...]:
    return (MovingShapes(),)


def class_names(scenes: Sequence[SceneGenerator] | None = None) -> list[str]:
    """Global class names of a scene list (labels of later scenes are offset by earlier class counts)."""
    return [n for s in (scenes or default_scenes()) for n in s.class_names]


# --------------------------------------------------------------------------------------------- encoding


def encode_video(frames: np.ndarray, fps: float, *, codec: str = "h264", crf: int = 18) -> bytes:
    """uint8 [T, H, W, 3] -> mp4 container bytes (codec 'h264' or 'mpeg4'); H and W must be even."""
    import av

    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"h264/mpeg4 need even frame sizes, got {h}x{w}")
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264" if codec == "h264" else codec,
                                      rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv444p" if codec == "h264" else "yuv420p"  # 4:4:4 keeps small colour detail
        if codec == "h264":
            # mbtree off: x264's macroblock-tree ratecontrol made the output differ (rarely) between runs of
            # the same clip; without it the bytes are reproducible.
            stream.options = {"crf": str(crf), "preset": "veryfast", "x264-params": "mbtree=0"}
        else:
            stream.bit_rate = int(w * h * fps * 2)
        stream.codec_context.thread_count = 1
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = i  # explicit timestamps in the encoder's 1 / fps time base
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def encode_jpegs(frames: np.ndarray, quality: int = 90) -> list[bytes]:
    from PIL import Image

    out = []
    for frame in frames:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=quality, subsampling=0)
        out.append(buf.getvalue())
    return out


def clip_seed(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLITS.index(split) if split in SPLITS else 7 + len(split), index])


def clip_label(index: int, scenes: Sequence[SceneGenerator]) -> tuple[int, int, int]:
    """(scene index, label within the scene, global label) of clip `index`: round robin, so balanced."""
    s = index % len(scenes)
    within = (index // len(scenes)) % len(scenes[s].class_names)
    offset = sum(len(sc.class_names) for sc in scenes[:s])
    return s, within, offset + within


def make_record(index: int, *, split: str = "train", seed: int = 0, size: int = 64, frames: int = 16,
                fps: float = 8.0, codec: str = "h264", scenes: Sequence[SceneGenerator] | None = None,
                ) -> dict[str, Any]:
    """The records.py dict of synthetic clip `index` of `split` (deterministic in its arguments)."""
    scenes = tuple(scenes or default_scenes())
    s, within, label = clip_label(index, scenes)
    clip = scenes[s].render(clip_seed(seed, split, index), within, size=size, frames=frames)
    rec: dict[str, Any] = dict(label=label, fps=float(fps), num_frames=int(frames),
                               path=f"synthetic/{split}/{index:07d}", id=f"{split}-{index}",
                               extra=dict(scene=scenes[s].name, class_name=scenes[s].class_names[within]))
    if codec == "jpeg":
        rec["frames"] = encode_jpegs(clip)
    else:
        rec["video"] = encode_video(clip, fps, codec=codec)
    return rec


def render_clip(index: int, *, split: str = "train", seed: int = 0, size: int = 64, frames: int = 16,
                scenes: Sequence[SceneGenerator] | None = None) -> tuple[np.ndarray, int]:
    """The uint8 clip and global label of `index` (what make_record encodes), without encoding."""
    scenes = tuple(scenes or default_scenes())
    s, within, label = clip_label(index, scenes)
    return scenes[s].render(clip_seed(seed, split, index), within, size=size, frames=frames), label


# --------------------------------------------------------------------------------------------- writing


def shard_paths(out_dir: str | os.PathLike, split: str, num_shards: int) -> list[str]:
    from jepa.data.shard import shard_name

    return [os.path.join(os.fspath(out_dir), shard_name(f"synthetic-{split}", k, num_shards))
            for k in range(num_shards)]


def _encode_chunk(args: tuple[str, int, int, dict[str, Any]]) -> list[bytes]:
    split, start, stop, kw = args
    return [records.encode(make_record(i, split=split, **kw)) for i in range(start, stop)]


def write_synthetic(out_dir: str | os.PathLike, num_train: int = 4096, num_val: int = 512, num_shards: int = 4,
                    seed: int = 0, size: int = 64, frames: int = 16, fps: float = 8.0, codec: str = "h264",
                    scenes: Sequence[SceneGenerator] | None = None, num_proc: int | None = None,
                    progress: bool = True) -> dict[str, list[str]]:
    """Write train and validation ArrayRecord shards; returns {split: [shard paths]}.

    Clips are split into contiguous blocks per shard. Output is identical whatever `num_proc` (worker
    processes; default: up to the CPU count).
    """
    from tqdm import tqdm

    from jepa.data.shard import write_record_shards

    if size % 2 or size < 8:
        raise ValueError(f"size must be even and >= 8, got {size}")
    if frames < 1 or num_shards < 1 or num_train < 0 or num_val < 0:
        raise ValueError("frames and num_shards must be >= 1, num_train / num_val >= 0")
    if codec not in ("h264", "mpeg4", "jpeg"):
        raise ValueError(f"codec must be 'h264', 'mpeg4' or 'jpeg', got {codec!r}")
    os.makedirs(out_dir, exist_ok=True)
    kw = dict(seed=seed, size=size, frames=frames, fps=fps, codec=codec, scenes=tuple(scenes or default_scenes()))
    num_proc = max(1, num_proc if num_proc is not None else min(os.cpu_count() or 1, 8))
    chunk = 32
    jobs = [(split, a, min(n, a + chunk), kw) for split, n in (("train", num_train), ("validation", num_val))
            for a in range(0, n, chunk)]
    written: dict[str, list[str]] = {}
    bar = tqdm(total=num_train + num_val, desc=f"synthetic clips -> {out_dir}", unit="clip", disable=not progress)
    pool = None
    if num_proc > 1 and len(jobs) > 1:
        import multiprocessing as mp
        pool = mp.get_context("spawn").Pool(num_proc)
        results: Iterator[list[bytes]] = pool.imap(_encode_chunk, jobs)
    else:
        results = map(_encode_chunk, jobs)
    encoded = itertools.chain.from_iterable(results)  # train clips, then validation clips, in order

    def take(n: int) -> Iterator[bytes]:
        for rec in itertools.islice(encoded, n):
            yield rec
            bar.update(1)

    try:
        for split, n in (("train", num_train), ("validation", num_val)):
            paths = shard_paths(out_dir, split, num_shards)
            write_record_shards(take(n), paths, num_records=n)  # contiguous blocks of clips per shard
            written[split] = paths
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    return written


# --------------------------------------------------------------------------------------------- reading


def synthetic_config(data_dir: str | os.PathLike, **overrides: Any) -> "ml_collections.ConfigDict":
    """A pipeline config for `jepa.data.synthetic` shards in data_dir (64 px, 16 frames at stride 1, no flip:
    a flip would change the direction labels)."""
    from jepa.data.pipeline import PipelineConfigError, default_config

    c = default_config()
    c.sources = [{"glob": os.path.join(os.fspath(data_dir), "synthetic-{split}-*.array_record")}]
    c.stride = 1
    c.crop_size = 64
    c.flip = False
    for k, v in overrides.items():
        if k not in c:
            raise PipelineConfigError(f"pipeline config: unknown key {k!r}")
        c[k] = v
    return c


# --------------------------------------------------------------------------------------------- viewing


def load_clips(paths: Sequence[str], count: int) -> tuple[list[np.ndarray], list[int], list[str]]:
    """Decode the first `count` records of ArrayRecord shards: (uint8 clips, labels, class names)."""
    import grain

    from jepa.data.video import decode_record

    source = grain.sources.ArrayRecordDataSource(list(paths))
    clips, labels, names = [], [], []
    for i in range(min(count, len(source))):
        rec = records.decode(source[i])
        n = len(rec["frames"]) if "frames" in rec else int(rec["num_frames"])
        clips.append(decode_record(rec, np.arange(n)))
        labels.append(int(rec["label"]))
        names.append(str((rec.get("extra") or {}).get("class_name", rec["label"])))
    return clips, labels, names


def save_preview(clips: Sequence[np.ndarray], captions: Sequence[str], path: str | os.PathLike, *,
                 scale: int = 3, max_frames: int = 8) -> str:
    """Save clips as a grid: '.gif' = animated, one cell per clip; other suffixes = a still PNG, one row per
    clip showing up to `max_frames` evenly spaced frames. Captions are drawn above each clip."""
    from PIL import Image, ImageDraw

    path = os.fspath(path)
    if not clips:
        raise ValueError("save_preview needs at least one clip")
    h, w = clips[0].shape[1:3]
    ch, cw, cap = h * scale, w * scale, 12

    def up(frame: np.ndarray) -> Image.Image:
        return Image.fromarray(frame).resize((cw, ch), Image.NEAREST)

    if path.lower().endswith(".gif"):
        cols = min(4, len(clips))
        rows = math.ceil(len(clips) / cols)
        n_t = max(c.shape[0] for c in clips)
        images = []
        for t in range(n_t):
            img = Image.new("RGB", (cols * (cw + 4), rows * (ch + cap + 4)), "white")
            draw = ImageDraw.Draw(img)
            for k, (clip, text) in enumerate(zip(clips, captions)):
                r, c = divmod(k, cols)
                x, y = c * (cw + 4), r * (ch + cap + 4)
                draw.text((x + 1, y), str(text)[: max(4, cw // 6)], fill="black")
                img.paste(up(clip[min(t, clip.shape[0] - 1)]), (x, y + cap))
            images.append(img)
        images[0].save(path, save_all=True, append_images=images[1:], duration=125, loop=0)
        return path
    n_t = min(max_frames, max(c.shape[0] for c in clips))
    img = Image.new("RGB", (n_t * (cw + 2), len(clips) * (ch + cap + 4)), "white")
    draw = ImageDraw.Draw(img)
    for r, (clip, text) in enumerate(zip(clips, captions)):
        y = r * (ch + cap + 4)
        draw.text((1, y), str(text), fill="black")
        for j, t in enumerate(np.linspace(0, clip.shape[0] - 1, n_t).round().astype(int)):
            img.paste(up(clip[t]), (j * (cw + 2), y + cap))
    img.save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jepa.data.synthetic", description=__doc__.split("\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--train", type=int, default=4096)
    p.add_argument("--val", type=int, default=512)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--codec", default="h264", choices=("h264", "mpeg4", "jpeg"))
    p.add_argument("--procs", type=int, default=None)
    p.add_argument("--preview", default=None, help="also save a .gif/.png grid of a few validation clips here")
    a = p.parse_args(argv)
    out = write_synthetic(a.out_dir, a.train, a.val, a.shards, a.seed, a.size, a.frames, a.fps, a.codec,
                          num_proc=a.procs)
    for split, paths in out.items():
        print(f"{split}: {len(paths)} shards in {a.out_dir}")
    if a.preview:
        clips, _, names = load_clips(out["validation"] or out["train"], 8)
        print("preview:", save_preview(clips, names, a.preview))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
