"""Small dataset fixtures in the REAL on-disk formats (see /work/shared/spec/data-formats.md).

Importable by any test: videos are written with PyAV, annotations byte-for-byte in the layouts the
datasets are distributed in (string ids, string label indices, bracketed templates, CRLF class files
without a trailing newline, quoted Python-list columns, empty narration timestamps, ...).

Every generated video encodes its frame index in a band of black/white blocks along the top (see
`frame_index`), so tests can check which source frames a decoder, sampler or trimmer returned even after
lossy re-encoding and downscaling. The rest of the frame moves (a scrolling gradient and a moving square),
so consecutive frames differ.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

INDEX_BITS = 10  # frame indices up to 1023 survive in the top band
FPS_NTSC_60 = Fraction(60000, 1001)  # 59.94


# ----------------------------------------------------------------------------------------------- videos

def frame_image(index: int, width: int, height: int, bits: int = INDEX_BITS) -> np.ndarray:
    """RGB uint8 [H, W, 3] frame `index`: top quarter = binary code of `index`, the rest moves."""
    y, x = np.mgrid[0:height, 0:width]
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = (x * 3 + index * 7) % 256
    img[..., 1] = (y * 5 + index * 3) % 256
    img[..., 2] = ((x + y) * 2 + index * 11) % 256
    side = max(4, min(width, height) // 5)
    cx = (index * 4) % max(1, width - side)
    img[height - side:, cx:cx + side] = (255, 0, 255)
    band = max(4, height // 4)
    for b in range(bits):  # block b spans columns [b W / bits, (b + 1) W / bits): scale invariant
        on = (index >> (bits - 1 - b)) & 1
        img[:band, round(b * width / bits):round((b + 1) * width / bits)] = 255 if on else 0
    return img


def frame_index(rgb: np.ndarray, bits: int = INDEX_BITS) -> int:
    """Read back the index that `frame_image` coded into the top band of an RGB frame (any size)."""
    height, width = rgb.shape[:2]
    band = max(4, height // 4)
    gray = rgb[band // 4: max(band // 4 + 1, 3 * band // 4)].astype(np.float32).mean(axis=-1)
    block = width / bits
    value = 0
    for b in range(bits):  # the middle half of each block, away from blurred edges
        lo = int(round(b * block + block / 4))
        hi = max(lo + 1, int(round((b + 1) * block - block / 4)))
        value = (value << 1) | int(gray[:, lo:hi].mean() > 127)
    return value


def write_video(path: str | os.PathLike, *, fps: float | Fraction, num_frames: int, width: int,
                height: int, codec: str = "libx264", first_index: int = 0) -> Path:
    """Write a video whose frame j shows index first_index + j (codec: libx264 / libvpx-vp9 / hevc...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    fmt = "webm" if path.suffix.lower() == ".webm" else "mp4"
    with av.open(str(path), mode="w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec.startswith("libvpx"):
            stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": "20", "b": "0"}
        else:
            stream.options = {"preset": "ultrafast", "crf": "18"}
        for j in range(num_frames):
            frame = av.VideoFrame.from_ndarray(frame_image(first_index + j, width, height), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_webm(path: str | os.PathLike, *, num_frames: int = 36, width: int = 320, height: int = 240,
               fps: float = 12) -> Path:
    """An SSv2-like VP9 .webm: 12 fps, 240 px high, given width."""
    return write_video(path, fps=fps, num_frames=num_frames, width=width, height=height, codec="libvpx-vp9")


def write_mp4(path: str | os.PathLike, *, fps: float | Fraction = 50, seconds: float = 2.0,
              width: int = 192, height: int = 108) -> Path:
    """An h264 .mp4 (e.g. 50 or 59.94 fps like Epic-Kitchens, at a tiny size)."""
    return write_video(path, fps=fps, num_frames=int(round(float(fps) * seconds)), width=width,
                       height=height, codec="libx264")


def write_corrupt_video(path: str | os.PathLike) -> Path:
    """A file named like a video that no decoder can open (EBML magic followed by garbage)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    path.write_bytes(b"\x1a\x45\xdf\xa3" + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


def write_truncated_mp4(path: str | os.PathLike) -> Path:
    """An mp4 cut in half (no index): another real-world kind of broken file."""
    path = Path(path)
    full = write_mp4(path.with_suffix(".full.mp4"), fps=25, seconds=1.0)
    data = full.read_bytes()
    full.unlink()
    path.write_bytes(data[: len(data) // 2])
    return path


# ------------------------------------------------------------------------------------------ video lists

@dataclass
class VideoListFixture:
    plain: Path                     # "path label" per line, one space
    spaced: Path                    # "path::label" per line (a path contains spaces)
    entries: list[tuple[str, int]]  # (path, label) of plain + spaced, in order
    corrupt: Path | None = None


def make_video_lists(root: str | os.PathLike, *, with_corrupt: bool = False) -> VideoListFixture:
    """Two V-JEPA video lists: one space-separated, one using the `::` fallback for a path with spaces."""
    root = Path(root)
    a = write_webm(root / "clips" / "a.webm", num_frames=24, width=320)
    b = write_mp4(root / "clips" / "b.mp4", fps=25, seconds=1.0, width=128, height=96)
    c = write_mp4(root / "my clips" / "clip one.mp4", fps=FPS_NTSC_60, seconds=0.5, width=96, height=64)
    plain_entries = [(str(a), 3), (str(b), 7)]
    corrupt = None
    if with_corrupt:
        corrupt = write_corrupt_video(root / "clips" / "broken.mp4")
        plain_entries.append((str(corrupt), 1))
    plain = root / "plain.csv"
    plain.write_text("".join(f"{p} {l}\n" for p, l in plain_entries))
    spaced_entries = [(str(c), 5), (str(a), 0)]
    spaced = root / "spaced.csv"
    spaced.write_text("".join(f"{p}::{l}\n" for p, l in spaced_entries))
    return VideoListFixture(plain=plain, spaced=spaced, entries=plain_entries + spaced_entries, corrupt=corrupt)


# ------------------------------------------------------------------------------------------------- SSv2

SSV2_CLASSES = [  # bracket-free class names as keys of labels.json, indices as strings
    "Approaching something with your camera",
    "Holding something next to something",
    "Moving part of something",
    "Pushing something from left to right",
    "Something falling like a feather or paper",
    "Throwing something",
]

SSV2_TRAIN = [  # (id, template, placeholders, label text)
    ("78687", "Holding [something] next to [something]", ["potato", "vicks vaporub bottle"],
     "holding potato next to vicks vaporub bottle"),
    ("42326", "[Something] falling like a feather or paper", ["tissue"], "tissue falling like a feather or paper"),
    ("100904", "Moving [part] of [something]", ["lid", "box"], "moving lid of box"),
    ("3694", "Pushing [something] from left to right", ["pen"], "pushing pen from left to right"),
    ("5", "Approaching [something] with your camera", ["cup"], "approaching cup with your camera"),
]
SSV2_VALIDATION = [
    ("74225", "Throwing [something]", ["ball"], "throwing ball"),
    ("116154", "Moving [part] of [something]", ["door", "cupboard"], "moving door of cupboard"),
]
SSV2_TEST = [("1420", "Throwing something"), ("220847", "Something falling like a feather or paper")]


@dataclass
class Ssv2Fixture:
    root: Path
    labels_dir: Path
    video_dir: Path
    classes: list[str]
    expected: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> id -> class index


def _ssv2_record(vid: str, template: str, placeholders: list[str], text: str) -> dict:
    return {"id": vid, "label": text, "template": template, "placeholders": placeholders}


def make_ssv2(root: str | os.PathLike, *, old_names: bool = False, corrupt_ids: tuple[str, ...] = (),
              missing_ids: tuple[str, ...] = (), num_frames: int = 18,
              label_ids: tuple[int, ...] | None = None) -> Ssv2Fixture:
    """SSv2 as distributed: `labels/` with labels.json / train.json / validation.json / test.json /
    test-answers.csv (or the older something-something-v2-*.json names) and `20bn-something-something-v2/`
    with `<id>.webm` (VP9, 12 fps, 240 px high, width varying).

    `label_ids`: labels.json holds only these classes, with their original indices (a class-subset labels
    file, its indices with gaps); `expected` then lists only the records of those classes."""
    root = Path(root)
    labels_dir = root / "labels"
    video_dir = root / "20bn-something-something-v2"
    labels_dir.mkdir(parents=True, exist_ok=True)
    video_dir.mkdir(parents=True, exist_ok=True)
    index = {name: str(i) for i, name in enumerate(SSV2_CLASSES) if label_ids is None or i in label_ids}
    prefix = "something-something-v2-" if old_names else ""
    (labels_dir / f"{prefix}labels.json").write_text(json.dumps(index, indent=4))
    (labels_dir / f"{prefix}train.json").write_text(json.dumps([_ssv2_record(*r) for r in SSV2_TRAIN]))
    (labels_dir / f"{prefix}validation.json").write_text(json.dumps([_ssv2_record(*r) for r in SSV2_VALIDATION]))
    (labels_dir / f"{prefix}test.json").write_text(json.dumps([{"id": vid} for vid, _ in SSV2_TEST]))
    (labels_dir / "test-answers.csv").write_text("".join(f"{vid};{name}\n" for vid, name in SSV2_TEST))
    widths = [320, 427, 356, 300, 428]
    all_ids = [r[0] for r in SSV2_TRAIN + SSV2_VALIDATION] + [vid for vid, _ in SSV2_TEST]
    for i, vid in enumerate(all_ids):
        if vid in missing_ids:
            continue
        if vid in corrupt_ids:
            write_corrupt_video(video_dir / f"{vid}.webm")
        else:
            write_webm(video_dir / f"{vid}.webm", num_frames=num_frames + i, width=widths[i % len(widths)])
    strip = lambda t: t.replace("[", "").replace("]", "")  # noqa: E731
    expected = {
        "train": {r[0]: SSV2_CLASSES.index(strip(r[1])) for r in SSV2_TRAIN},
        "validation": {r[0]: SSV2_CLASSES.index(strip(r[1])) for r in SSV2_VALIDATION},
        "test": {vid: SSV2_CLASSES.index(name) for vid, name in SSV2_TEST},
    }
    if label_ids is not None:
        expected = {split: {vid: c for vid, c in ids.items() if c in label_ids} for split, ids in expected.items()}
    return Ssv2Fixture(root=root, labels_dir=labels_dir, video_dir=video_dir, classes=list(SSV2_CLASSES),
                       expected=expected)


# ------------------------------------------------------------------------------------------- EK100

EK100_COLUMNS = ["narration_id", "participant_id", "video_id", "narration_timestamp", "start_timestamp",
                 "stop_timestamp", "start_frame", "stop_frame", "narration", "verb", "verb_class", "noun",
                 "noun_class", "all_nouns", "all_noun_classes"]

EK100_VERBS = [  # id, key, instances, category
    (0, "take", ["take", "grab", "pick", "get", "fetch", "pick-up"], "retrieve"),
    (1, "put", ["put", "put-down", "put-back", "leave", "place"], "leave"),
    (2, "wash", ["wash", "clean", "wipe", "rinse"], "clean"),
    (3, "open", ["open", "unscrew", "unwrap"], "access"),
    (4, "close", ["close", "shut", "screw"], "block"),
]
EK100_NOUNS = [
    (0, "tap", ["tap", "tap:water", "faucet"], "appliances"),
    (1, "spoon", ["spoon", "spoon:wooden", "teaspoon"], "cutlery"),
    (2, "plate", ["plate", "plate:dinner", "dish"], "crockery"),
    (3, "door", ["door", "door:fridge"], "furniture"),
    (4, "cupboard", ["cupboard", "cabinet"], "furniture"),
]

# video_id -> (fps, seconds, width, height, fps as written in EPIC_100_video_info.csv).
# P01_11 is from EK-55 (59.94 fps MP4, CSV frames at 60 fps), P09_07 too but its MP4 is 29.97 fps (as the
# real one; CSV frames still at 60 fps), P01_101 is from the extension (50 fps MP4, CSV frames at 50 fps).
EK100_VIDEOS = {
    "P01_11": (FPS_NTSC_60, 8.0, 192, 108, "59.9400599400599"),
    "P01_101": (Fraction(50), 6.0, 160, 90, "50.0"),
    "P09_07": (Fraction(30000, 1001), 6.0, 160, 90, "29.97002997002997"),
}


def _ts(t: float) -> str:
    """HH:MM:SS.ff as in the EK100 CSVs."""
    h, rem = divmod(round(t * 100), 360000)
    m, rem = divmod(rem, 6000)
    return f"{h:02d}:{m:02d}:{rem // 100:02d}.{rem % 100:02d}"


def _csv_frame(video_id: str, t: float) -> int:
    """The official CSVs' frame numbers: round(t x 60) for EK-55 videos, x 50 for extension videos, >= 1."""
    rate = 50 if len(video_id.split("_")[1]) == 3 else 60
    return max(1, round(t * rate))


# (narration_id suffix, video, narration_time or None, start, stop, narration, verb_class, noun_classes)
EK100_TRAIN = [
    ("P01_11", 0, 0.56, 0.00, 1.89, "take plate", 0, [2]),
    ("P01_11", 1, 2.10, 2.50, 4.20, "put plate in cupboard", 1, [2, 4]),
    ("P01_11", 2, None, 4.80, 6.10, "open tap", 3, [0]),
    ("P01_101", 0, 1.20, 1.10, 2.35, "wash spoon", 2, [1]),
    ("P01_101", 1, 3.05, 3.00, 5.20, "close door", 4, [3]),
    ("P01_101", 2, 4.10, 3.90, 4.60, "take spoon", 0, [1]),
    ("P09_07", 0, 3.90, 3.75, 5.10, "wash plate", 2, [2]),
]
EK100_VALIDATION = [
    ("P01_11", 3, 3.33, 3.20, 4.70, "take plate", 0, [2]),       # seen pair (0, 2)
    ("P01_11", 4, None, 6.20, 7.40, "open plate", 3, [2]),       # unseen pair (3, 2): dropped
    ("P01_101", 3, 2.60, 2.45, 3.95, "close door", 4, [3]),      # seen pair (4, 3)
    ("P09_07", 1, None, 2.20, 3.10, "take spoon", 0, [1]),        # seen pair (0, 1), 29.97 fps video
]
EK100_TEST = [("P01_101", 4, 4.00, 4.20, 5.50)]


@dataclass
class Ek100Fixture:
    root: Path                 # videos: root/PXX/videos/PXX_YY.MP4
    annotations: Path          # EPIC_100_*.csv
    video_fps: dict[str, float]
    train_actions: list[tuple[int, int]]  # (verb, noun) pairs of train, sorted


def _ek100_rows(rows) -> list[list[str]]:
    out = []
    for vid, n, nts, start, stop, narration, verb_class, nouns in rows:
        verb = narration.split()[0]
        noun_keys = [EK100_NOUNS[c][1] for c in nouns]
        out.append([f"{vid}_{n}", vid.split("_")[0], vid, "" if nts is None else _narration_ts(nts),
                    _ts(start), _ts(stop), str(_csv_frame(vid, start)), str(_csv_frame(vid, stop)), narration,
                    verb, str(verb_class), noun_keys[0], str(nouns[0]), str(noun_keys),
                    str(nouns)])
    return out


def _narration_ts(t: float) -> str:
    h, rem = divmod(round(t * 1000), 3600000)
    m, rem = divmod(rem, 60000)
    return f"{h:02d}:{m:02d}:{rem // 1000:02d}.{rem % 1000:03d}"


def _write_csv(path: Path, header: list[str], rows: list[list[str]], *, crlf: bool = False,
               trailing_newline: bool = True) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n" if crlf else "\n")
    writer.writerow(header)
    writer.writerows(rows)
    text = buf.getvalue()
    if not trailing_newline:
        text = text[: -len("\r\n" if crlf else "\n")]
    path.write_bytes(text.encode())


def make_ek100(root: str | os.PathLike, *, with_frames: bool = False, corrupt_video: str | None = None,
               missing_video: str | None = None, verb_ids: tuple[int, ...] | None = None,
               noun_ids: tuple[int, ...] | None = None) -> Ek100Fixture:
    """EPIC-KITCHENS-100 as distributed (tiny): annotation CSVs + PXX/videos/PXX_YY.MP4 (h264 at
    59.94 / 50 fps), optionally the PXX/rgb_frames/PXX_YY/frame_0000000001.jpg variant (at the CSVs' frame
    rate, 60 / 50 fps, 1-based).

    `verb_ids` / `noun_ids`: the class files hold only these ids (class-subset files, ids with gaps)."""
    root = Path(root)
    ann = root / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    _write_csv(ann / "EPIC_100_train.csv", EK100_COLUMNS, _ek100_rows(EK100_TRAIN))
    _write_csv(ann / "EPIC_100_validation.csv", EK100_COLUMNS, _ek100_rows(EK100_VALIDATION))
    test_rows = [[f"{vid}_{n}", vid.split("_")[0], vid, _narration_ts(nts), _ts(start), _ts(stop),
                  str(_csv_frame(vid, start)), str(_csv_frame(vid, stop))] for vid, n, nts, start, stop in EK100_TEST]
    _write_csv(ann / "EPIC_100_test_timestamps.csv", EK100_COLUMNS[:8], test_rows)
    for fname, table, keep in (("EPIC_100_verb_classes.csv", EK100_VERBS, verb_ids),
                               ("EPIC_100_noun_classes.csv", EK100_NOUNS, noun_ids)):
        _write_csv(ann / fname, ["id", "key", "instances", "category"],
                   [[str(i), key, str(inst), cat] for i, key, inst, cat in table if keep is None or i in keep],
                   crlf=True, trailing_newline=False)
    info_rows = []
    for vid, (fps, seconds, w, h, fps_text) in EK100_VIDEOS.items():
        info_rows.append([vid, repr(round(int(round(float(fps) * seconds)) / float(fps), 6)), fps_text, f"{w}x{h}"])
    _write_csv(ann / "EPIC_100_video_info.csv", ["video_id", "duration", "fps", "resolution"], info_rows)
    for vid, (fps, seconds, w, h, _) in EK100_VIDEOS.items():
        path = root / vid.split("_")[0] / "videos" / f"{vid}.MP4"
        if vid == missing_video:
            continue
        if vid == corrupt_video:
            write_corrupt_video(path)
        else:
            write_mp4(path, fps=fps, seconds=seconds, width=w, height=h)
        if with_frames:
            rate = 50 if len(vid.split("_")[1]) == 3 else 60
            frames_dir = root / vid.split("_")[0] / "rgb_frames" / vid
            frames_dir.mkdir(parents=True, exist_ok=True)
            duration = int(round(float(fps) * seconds)) / float(fps)
            for j in range(int(round(rate * duration))):
                # rgb_frames are extracted at the CSV rate: jpg j+1 shows the video frame nearest j / rate
                src = int(round(j / rate * float(fps)))
                Image.fromarray(frame_image(src, w, h)).save(frames_dir / f"frame_{j + 1:010d}.jpg", quality=95)
    pairs = sorted({(r[6], r[7][0]) for r in EK100_TRAIN})  # (verb_class, first noun class)
    return Ek100Fixture(root=root, annotations=ann, video_fps={v: float(f[0]) for v, f in EK100_VIDEOS.items()},
                        train_actions=pairs)

