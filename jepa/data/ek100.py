"""EPIC-KITCHENS-100 annotations, as distributed, for action anticipation.

Files (in the annotations folder):
  * `EPIC_100_train.csv`, `EPIC_100_validation.csv`: header + 15 columns (`narration_id, participant_id,
    video_id, narration_timestamp, start_timestamp, stop_timestamp, start_frame, stop_frame, narration,
    verb, verb_class, noun, noun_class, all_nouns, all_noun_classes`); lists are Python literals, quoted
    when they hold a comma (`['plate']`, `"['plate', 'cupboard']"`); `narration_timestamp` may be empty.
  * `EPIC_100_test_timestamps.csv`: only the first 8 columns (no labels). A leading `uid` column, present
    in some releases, is accepted and ignored.
  * `EPIC_100_verb_classes.csv` / `EPIC_100_noun_classes.csv`: `id,key,instances,category`, CRLF line
    endings, no trailing newline. Ids are kept as they are and may have gaps (a file restricted to a
    subset of the classes); tables indexed by id (`class_keys`, `Vocabulary.to_json`) then have max id + 1
    entries, the unused ids named `<unused i>`.
  * `EPIC_100_video_info.csv`: `video_id,duration,fps,resolution`, the real per-video frame rate (59.94,
    50, 29.97, 47.95, 90, ...). The fps is never assumed.
Timestamps are `HH:MM:SS.ff`. The CSVs' `start_frame`/`stop_frame` are at 60 fps (EK-55 videos `PXX_YY`)
or 50 fps (extension videos `PXX_1YY`) whatever the MP4's real rate, so they are kept only as
`csv_start_frame`/`csv_stop_frame`; `start_frame`/`stop_frame` are recomputed from the timestamps with the
video's real fps: the 0-based index of the decoded frame nearest the time, round(t * fps)
(`jepa.data.frametime.frame_index`, the rule the shard writer and the pipeline's samplers use too).

Videos: `<root>/PXX/videos/PXX_YY.MP4` (layout "videos"), or JPEG frames
`<root>/PXX/rgb_frames/PXX_YY/frame_0000000001.jpg` (layout "frames", 1-based file numbering).

Anticipation protocol: action classes are the (verb_class, noun_class) pairs seen in train, numbered in
sorted order; validation rows whose pair is unseen are dropped (and counted); the observed clip ends
tau_a seconds (default 1) before the action starts (`extra["observed_stop_sec"]`).

Each example is a plain dict with the `jepa.data.records` fields known before decoding: `{"path", "label"
(= action class, -1 when unknown), "id" (= narration_id), "extra": {...}}`; all times in `extra` are in the
original video's timeline.
"""
from __future__ import annotations

import ast
import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from jepa.data.frametime import frame_index

OnError = Literal["raise", "skip"]

COLUMNS = ("narration_id", "participant_id", "video_id", "narration_timestamp", "start_timestamp",
           "stop_timestamp", "start_frame", "stop_frame", "narration", "verb", "verb_class", "noun",
           "noun_class", "all_nouns", "all_noun_classes")
TEST_COLUMNS = COLUMNS[:8]
SPLIT_FILES = {
    "train": ("EPIC_100_train.csv",),
    "validation": ("EPIC_100_validation.csv",),
    "test": ("EPIC_100_test_timestamps.csv", "EPIC_100_test.csv"),
}
VIDEO_INFO_FILE = "EPIC_100_video_info.csv"
VERB_CLASSES_FILE = "EPIC_100_verb_classes.csv"
NOUN_CLASSES_FILE = "EPIC_100_noun_classes.csv"
ANNOTATION_DIRS = (".", "annotations", "epic-kitchens-100-annotations")
VIDEO_ROOTS = (".", "EPIC-KITCHENS", "videos")

_TIMESTAMP = re.compile(r"^(\d+):([0-5]\d):([0-5]\d(?:\.\d+)?)$")


class Ek100FormatError(ValueError):
    """Malformed EPIC-KITCHENS-100 annotations; the message names the file, line and field."""


def parse_timestamp(text: str) -> float:
    """`HH:MM:SS.ff` (any number of decimals) -> seconds."""
    match = _TIMESTAMP.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a HH:MM:SS.ff timestamp")
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def find_annotations(root: str | os.PathLike) -> Path:
    """The folder holding EPIC_100_train.csv under `root` (itself or a usual sub-folder)."""
    root = Path(root)
    for sub in ANNOTATION_DIRS:
        if (root / sub / SPLIT_FILES["train"][0]).is_file():
            return (root / sub).resolve()
    raise Ek100FormatError(f"{root}: no {SPLIT_FILES['train'][0]} in {[str(root / d) for d in ANNOTATION_DIRS]}")


def find_video_root(root: str | os.PathLike) -> Path:
    """The folder holding the participants' `PXX/` folders under `root`."""
    root = Path(root)
    for sub in VIDEO_ROOTS:
        if any(p.is_dir() and re.fullmatch(r"P\d+", p.name) for p in (root / sub).glob("P*")):
            return (root / sub).resolve()
    return root.resolve()


def _find(directory: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (directory / name).is_file():
            return directory / name
    raise Ek100FormatError(f"{directory}: none of {list(names)} found")


def _rows(path: Path, required: tuple[str, ...]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """(header, [(line number, row dict)]) of a CSV with a header; checks columns and field counts."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise Ek100FormatError(f"{path}: cannot read: {e}") from e
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise Ek100FormatError(f"{path}:1: empty file, expected a header with columns {list(required)}") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise Ek100FormatError(f"{path}:1: missing column(s) {missing}; the header has {header}")
    rows = []
    for fields in reader:
        line = reader.line_num
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            raise Ek100FormatError(f"{path}:{line}: expected {len(header)} fields like the header, found {len(fields)}")
        rows.append((line, dict(zip(header, fields))))
    return header, rows


@dataclass(frozen=True)
class VideoInfo:
    """One line of EPIC_100_video_info.csv."""

    video_id: str
    duration: float
    fps: float
    width: int
    height: int


def read_video_info(path: str | os.PathLike) -> dict[str, VideoInfo]:
    """EPIC_100_video_info.csv -> {video_id: VideoInfo}."""
    path = Path(path)
    _, rows = _rows(path, ("video_id", "duration", "fps", "resolution"))
    info = {}
    for line, row in rows:
        field = "duration"
        try:
            duration = float(row["duration"])
            field = "fps"
            fps = float(row["fps"])
            if not fps > 0:
                raise ValueError("must be > 0")
            field = "resolution"
            width, height = (int(v) for v in row["resolution"].lower().split("x"))
        except ValueError as e:
            raise Ek100FormatError(f"{path}:{line}: field {field!r}: bad value {row[field]!r} ({e})") from None
        info[row["video_id"].strip()] = VideoInfo(row["video_id"].strip(), duration, fps, width, height)
    return info


@dataclass(frozen=True)
class ClassEntry:
    """One line of EPIC_100_verb_classes.csv / EPIC_100_noun_classes.csv."""

    id: int
    key: str
    instances: tuple[str, ...]
    category: str


def read_classes(path: str | os.PathLike) -> list[ClassEntry]:
    """A verb or noun class file, ordered by id.

    Ids are the dataset's own and are kept: they need not be contiguous (a class file restricted to a
    subset of the classes keeps the subset's original ids; see `class_keys`). A repeated id or key, or an
    id that is not a non-negative integer, raises Ek100FormatError naming the file, line and field.
    """
    path = Path(path)
    _, rows = _rows(path, ("id", "key", "instances", "category"))
    entries = []
    id_line: dict[int, int] = {}
    key_line: dict[str, int] = {}
    for line, row in rows:
        try:
            cid = int(row["id"])
        except ValueError:
            raise Ek100FormatError(f"{path}:{line}: field 'id': {row['id']!r} is not an integer") from None
        if cid < 0:
            raise Ek100FormatError(f"{path}:{line}: field 'id': {row['id']!r} is negative")
        if cid in id_line:
            raise Ek100FormatError(f"{path}:{line}: field 'id': {cid} appears twice (also on line {id_line[cid]})")
        key = row["key"]
        if key in key_line:
            raise Ek100FormatError(f"{path}:{line}: field 'key': {key!r} appears twice "
                                   f"(also on line {key_line[key]})")
        id_line[cid], key_line[key] = line, line
        try:
            instances = ast.literal_eval(row["instances"])
            if not isinstance(instances, (list, tuple)):
                raise ValueError("not a list")
        except (ValueError, SyntaxError):
            raise Ek100FormatError(f"{path}:{line}: field 'instances': {row['instances']!r} is not a list") from None
        entries.append(ClassEntry(cid, key, tuple(str(i) for i in instances), row["category"]))
    entries.sort(key=lambda e: e.id)
    return entries


def unused_name(index: int) -> str:
    """Placeholder name of an id that no entry of a (subset) class file uses."""
    return f"<unused {index}>"


def class_keys(entries: list[ClassEntry]) -> list[str]:
    """Class keys indexed by id (`class_keys(entries)[i]` is the key of id i): max id + 1 entries, ids
    missing from the file (a subset of the classes) named `<unused i>`."""
    keys = [unused_name(i) for i in range(max((e.id for e in entries), default=-1) + 1)]
    for e in entries:
        keys[e.id] = e.key
    return keys


def _int_list(text: str) -> list[int]:
    value = ast.literal_eval(text)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) for v in value):
        raise ValueError("not a list of integers")
    return list(value)


def _str_list(text: str) -> list[str]:
    value = ast.literal_eval(text)
    if not isinstance(value, (list, tuple)):
        raise ValueError("not a list")
    return [str(v) for v in value]


def read_annotations(path: str | os.PathLike, *, labelled: bool = True) -> list[dict[str, Any]]:
    """Parse an EK100 annotation CSV into row dicts (times in seconds, classes as ints).

    Keys: line, narration_id, participant_id, video_id, narration_sec (None when empty), start_sec,
    stop_sec, csv_start_frame, csv_stop_frame and, when `labelled`, narration, verb, verb_class, noun,
    noun_class, all_nouns, all_noun_classes. Raises Ek100FormatError naming file, line and field.
    """
    path = Path(path)
    _, rows = _rows(path, COLUMNS if labelled else TEST_COLUMNS)
    parsed = []
    for line, row in rows:
        out: dict[str, Any] = {"line": line}
        field = ""
        try:
            for field in ("narration_id", "participant_id", "video_id"):
                out[field] = row[field].strip()
                if not out[field]:
                    raise ValueError("empty")
            field = "narration_timestamp"
            text = row[field].strip()
            out["narration_sec"] = parse_timestamp(text) if text else None
            field = "start_timestamp"
            out["start_sec"] = parse_timestamp(row[field])
            field = "stop_timestamp"
            out["stop_sec"] = parse_timestamp(row[field])
            field = "start_frame"
            out["csv_start_frame"] = int(row[field])
            field = "stop_frame"
            out["csv_stop_frame"] = int(row[field])
            if labelled:
                for field in ("narration", "verb", "noun"):
                    out[field] = row[field]
                for field in ("verb_class", "noun_class"):
                    out[field] = int(row[field])
                field = "all_nouns"
                out[field] = _str_list(row[field])
                field = "all_noun_classes"
                out[field] = _int_list(row[field])
            field = "stop_timestamp"
            if out["stop_sec"] < out["start_sec"]:
                raise ValueError(f"stop {row['stop_timestamp']} is before start {row['start_timestamp']}")
        except (ValueError, SyntaxError) as e:
            raise Ek100FormatError(f"{path}:{line}: field {field!r}: bad value {row.get(field)!r} ({e})") from None
        parsed.append(out)
    return parsed


def action_classes(train_rows: list[dict[str, Any]]) -> dict[tuple[int, int], int]:
    """(verb_class, noun_class) pairs seen in train -> action id, numbered in sorted pair order."""
    pairs = sorted({(r["verb_class"], r["noun_class"]) for r in train_rows})
    return {pair: i for i, pair in enumerate(pairs)}


def action_names(actions: dict[tuple[int, int], int], verbs: list[ClassEntry],
                 nouns: list[ClassEntry]) -> list[str]:
    """`"<verb key> <noun key>"` per action id (the class number where a class file lacks the id)."""
    verb_key = {v.id: v.key for v in verbs}
    noun_key = {n.id: n.key for n in nouns}
    names = [""] * len(actions)
    for (v, n), a in actions.items():
        names[a] = f"{verb_key.get(v, v)} {noun_key.get(n, n)}"
    return names


def video_path(video_root: str | os.PathLike, video_id: str, layout: str = "videos") -> Path:
    """`<root>/PXX/videos/PXX_YY.MP4` ("videos") or `<root>/PXX/rgb_frames/PXX_YY` ("frames").

    For "videos", `<root>/PXX/PXX_YY.MP4` (another common layout) is used when only it exists.
    """
    participant = video_id.split("_")[0]
    root = Path(video_root)
    if layout == "frames":
        return root / participant / "rgb_frames" / video_id
    if layout != "videos":
        raise ValueError(f"layout must be 'videos' or 'frames', got {layout!r}")
    path = root / participant / "videos" / f"{video_id}.MP4"
    flat = root / participant / f"{video_id}.MP4"
    return flat if not path.exists() and flat.exists() else path


def frame_file(frames_dir: str | os.PathLike, index: int) -> Path:
    """The JPEG of 0-based frame `index` in an rgb_frames folder (files are numbered from 1)."""
    return Path(frames_dir) / f"frame_{index + 1:010d}.jpg"


def _skip(on_error: OnError, skipped: list[dict], *, file: Path, line: int, row: dict, field: str,
          reason: str, kind: str = "error") -> None:
    message = f"{file}:{line}: narration {row.get('narration_id')!r}: field {field!r}: {reason}"
    if on_error == "raise" and kind == "error":
        raise Ek100FormatError(message)
    skipped.append({"kind": kind, "file": str(file), "line": line, "id": row.get("narration_id"),
                    "field": field, "reason": reason, "message": message})


def read_split(annotations_dir: str | os.PathLike, split: str, video_root: str | os.PathLike, *,
               layout: str = "videos", tau_a: float = 1.0, on_error: OnError = "raise",
               check_videos: bool = True) -> tuple[list[dict], list[dict]]:
    """Examples of one split ("train", "validation", "test") and the rows skipped (with reasons).

    Skipped rows have `kind` "unseen_action" (validation pairs not seen in train: always dropped, counted)
    or "error" (video missing from EPIC_100_video_info.csv or from disk: raised unless on_error="skip").
    """
    if split not in SPLIT_FILES:
        raise ValueError(f"unknown EK100 split {split!r}; expected one of {list(SPLIT_FILES)}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    ann = Path(annotations_dir)
    info = read_video_info(_find(ann, (VIDEO_INFO_FILE,)))
    train_rows = read_annotations(_find(ann, SPLIT_FILES["train"]))
    actions = action_classes(train_rows)
    split_file = _find(ann, SPLIT_FILES[split])
    labelled = split != "test"
    rows = train_rows if split == "train" else read_annotations(split_file, labelled=labelled)
    examples, skipped = [], []
    checked: dict[str, bool] = {}
    for row in rows:
        report = dict(on_error=on_error, skipped=skipped, file=split_file, line=row["line"], row=row)
        vid = row["video_id"]
        action = -1
        if labelled:
            action = actions.get((row["verb_class"], row["noun_class"]), -1)
            if action < 0:
                _skip(**report, field="verb_class,noun_class", kind="unseen_action",
                      reason=f"action ({row['verb_class']}, {row['noun_class']}) not seen in train")
                continue
        if vid not in info:
            _skip(**report, field="video_id", reason=f"video {vid!r} is not in {VIDEO_INFO_FILE}")
            continue
        path = video_path(video_root, vid, layout)
        if check_videos:
            if vid not in checked:
                checked[vid] = (frame_file(path, 0).is_file() if layout == "frames" else path.is_file())
            if not checked[vid]:
                _skip(**report, field="video_id", reason=f"video not found: {path}")
                continue
        fps = info[vid].fps
        start, stop = row["start_sec"], row["stop_sec"]
        extra = {k: row[k] for k in ("participant_id", "video_id", "narration_sec", "start_sec", "stop_sec",
                                     "csv_start_frame", "csv_stop_frame")}
        extra.update(
            split=split, layout=layout, video_fps=fps, video_duration=info[vid].duration,
            start_frame=frame_index(start, fps), stop_frame=frame_index(stop, fps),
            anticipation_sec=float(tau_a), observed_stop_sec=start - tau_a,
            observed_stop_frame=frame_index(start - tau_a, fps),
            verb_class=row.get("verb_class", -1), noun_class=row.get("noun_class", -1), action_class=action)
        if labelled:
            extra.update({k: row[k] for k in ("narration", "verb", "noun", "all_nouns", "all_noun_classes")})
        examples.append({"path": str(path), "label": action, "id": row["narration_id"], "extra": extra})
    return examples, skipped


@dataclass(frozen=True)
class Vocabulary:
    """Class tables of an EK100 annotation folder (for metadata files and probes)."""

    verbs: list[ClassEntry]
    nouns: list[ClassEntry]
    actions: dict[tuple[int, int], int]

    @property
    def action_names(self) -> list[str]:
        return action_names(self.actions, self.verbs, self.nouns)

    @property
    def verb_keys(self) -> list[str]:
        """Verb keys indexed by verb id (`<unused i>` where the class file has no id i)."""
        return class_keys(self.verbs)

    @property
    def noun_keys(self) -> list[str]:
        """Noun keys indexed by noun id (`<unused i>` where the class file has no id i)."""
        return class_keys(self.nouns)

    @property
    def num_verbs(self) -> int:
        """Size of a verb classifier: the largest verb id + 1 (class ids may have gaps)."""
        return len(self.verb_keys)

    @property
    def num_nouns(self) -> int:
        """Size of a noun classifier: the largest noun id + 1 (class ids may have gaps)."""
        return len(self.noun_keys)

    def to_json(self) -> dict[str, Any]:
        pairs = sorted(self.actions, key=self.actions.get)
        return {"verb_classes": self.verb_keys, "noun_classes": self.noun_keys,
                "num_verb_classes": self.num_verbs, "num_noun_classes": self.num_nouns,
                "action_classes": [list(p) for p in pairs], "action_names": self.action_names}


def read_vocabulary(annotations_dir: str | os.PathLike) -> Vocabulary:
    """Verb / noun class files and the train action pairs of an annotation folder."""
    ann = Path(annotations_dir)
    return Vocabulary(read_classes(_find(ann, (VERB_CLASSES_FILE,))), read_classes(_find(ann, (NOUN_CLASSES_FILE,))),
                      action_classes(read_annotations(_find(ann, SPLIT_FILES["train"]))))
