"""Something-Something v2 annotations, as distributed.

Files (in the labels folder; older releases prefix them with `something-something-v2-`):
  * `labels.json`: {"<class name>": "<index as a STRING>", ...}, 174 classes, names without brackets;
  * `train.json` / `validation.json`: a list of {"id": "78687", "label": "<filled-in text>",
    "template": "Holding [something] next to [something]", "placeholders": [...]} (ids are strings);
  * `test.json`: a list of {"id": "1420"}; `test-answers.csv`: lines `1420;Throwing something`.
Videos: `<video_dir>/<id>.webm` (the `20bn-something-something-v2` folder).

A record's class: delete `[` and `]` from its template, look the result up in labels.json, int() it.
Class indices are the file's own and are kept: a labels.json restricted to a subset of the classes (for
quick experiments, class-subset benchmarks) may have gaps; `num_classes` is then the largest index + 1 and
`class_names` names the unused indices `<unused i>`. Records of classes missing from such a file are
"unknown template" records (raised, or skipped with on_error="skip").

Each example is a plain dict with the `jepa.data.records` fields known before decoding:
`{"path", "label", "id", "extra": {"template", "placeholders", "text", "split"}}` (test without answers:
label -1). Record-level problems (missing field, unknown template, missing video) raise or are skipped and
counted (`on_error="skip"`); file-level problems (unreadable / bad JSON) always raise. Every message names
the file and the record (index and id) or line.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

OnError = Literal["raise", "skip"]

LABEL_FILES = ("labels.json", "something-something-v2-labels.json")
SPLIT_FILES = {
    "train": ("train.json", "something-something-v2-train.json"),
    "validation": ("validation.json", "something-something-v2-validation.json"),
    "test": ("test.json", "something-something-v2-test.json"),
}
ANSWER_FILES = ("test-answers.csv", "something-something-v2-test-answers.csv")
VIDEO_DIRS = ("20bn-something-something-v2", "videos", ".")
LABEL_DIRS = ("labels", "annotations", ".")


class Ssv2FormatError(ValueError):
    """Malformed SSv2 annotations; the message names the file and the record or line."""


def class_name(template: str) -> str:
    """Class name of a template: the brackets deleted, the words kept."""
    return template.replace("[", "").replace("]", "")


def find_file(directory: str | os.PathLike, names: tuple[str, ...]) -> Path:
    """The first of `names` that exists in `directory` (new names before old ones)."""
    for name in names:
        candidate = Path(directory) / name
        if candidate.is_file():
            return candidate
    raise Ssv2FormatError(f"{directory}: none of {list(names)} found")


def locate(root: str | os.PathLike) -> tuple[Path, Path]:
    """(labels_dir, video_dir) under an SSv2 root, accepting the usual layouts
    (`labels/` + `20bn-something-something-v2/`, or everything in one folder)."""
    root = Path(root)
    labels_dir = next((root / d for d in LABEL_DIRS
                       if any((root / d / n).is_file() for n in LABEL_FILES)), None)
    if labels_dir is None:
        raise Ssv2FormatError(f"{root}: no {' or '.join(LABEL_FILES)} in {[str(root / d) for d in LABEL_DIRS]}")
    video_dir = next((root / d for d in VIDEO_DIRS if (root / d).is_dir() and any((root / d).glob("*.webm"))),
                     root / VIDEO_DIRS[0])
    return labels_dir.resolve(), video_dir.resolve()


def _load_json(path: Path, **kwargs: Any) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise Ssv2FormatError(f"{path}: cannot read: {e}") from e
    try:
        return json.loads(text, **kwargs)
    except json.JSONDecodeError as e:
        raise Ssv2FormatError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg} (at character {e.pos})") from e


class _Pairs(list):
    """The (key, value) pairs of a JSON object, in file order, repeated keys included."""


def _class_index(value: Any) -> int:
    """A labels.json index: an int or a string holding one (not a bool, not a float)."""
    if isinstance(value, bool):
        raise ValueError("not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return int(value.strip())
    raise ValueError("not an integer")


def read_labels(path: str | os.PathLike) -> dict[str, int]:
    """labels.json: class name -> index (the file stores indices as strings).

    The indices are the dataset's own and are kept as they are: they need not be contiguous (a labels file
    restricted to a subset of the classes keeps the subset's original indices; see `num_classes` and
    `class_names`). A name or an index that appears twice, and an index that is not a non-negative integer,
    raise Ssv2FormatError naming the file, the class and the field.
    """
    path = Path(path)
    pairs = _load_json(path, object_pairs_hook=_Pairs)  # keeps repeated names, which a dict would drop
    if not isinstance(pairs, _Pairs):
        raise Ssv2FormatError(f"{path}: expected a JSON object mapping class names to indices, "
                              f"got {type(pairs).__name__}")
    labels: dict[str, int] = {}
    owner: dict[int, str] = {}
    for name, index in pairs:
        try:
            cid = _class_index(index)
        except (TypeError, ValueError):
            raise Ssv2FormatError(f"{path}: class {name!r}: index {index!r} is not an integer") from None
        if cid < 0:
            raise Ssv2FormatError(f"{path}: class {name!r}: index {index!r} is negative")
        if name in labels:
            raise Ssv2FormatError(f"{path}: class {name!r}: class name appears twice "
                                  f"(indices {labels[name]} and {cid})")
        if cid in owner:
            raise Ssv2FormatError(f"{path}: class {name!r}: index {cid} appears twice (also class {owner[cid]!r})")
        labels[name] = cid
        owner[cid] = name
    return labels


def num_classes(labels: dict[str, int]) -> int:
    """Size of a classifier over these classes: the largest index + 1 (ids may have gaps)."""
    return max(labels.values(), default=-1) + 1


def unused_name(index: int) -> str:
    """Placeholder name of an index that no class of the labels file uses."""
    return f"<unused {index}>"


def class_names(labels: dict[str, int]) -> list[str]:
    """Class names indexed by class index: `class_names(labels)[i]` is the class of index i.

    The list has `num_classes(labels)` entries; indices missing from the labels file (a subset of the
    classes) are named `<unused i>`.
    """
    names = [unused_name(i) for i in range(num_classes(labels))]
    for name, index in labels.items():
        names[index] = name
    return names


def _read_answer_lines(path: Path) -> dict[str, tuple[int, str]]:
    """test-answers.csv -> {id: (line number, class name)}."""
    answers = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise Ssv2FormatError(f"{path}: cannot read: {e}") from e
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        vid, sep, name = line.partition(";")
        if not sep or not vid.strip():
            raise Ssv2FormatError(f"{path}:{number}: expected 'id;class name', got {line!r}")
        answers[vid.strip()] = (number, class_name(name.strip()))
    return answers


def read_test_answers(path: str | os.PathLike, labels: dict[str, int]) -> dict[str, int]:
    """test-answers.csv (`id;class name` per line) -> {id: class index}."""
    path = Path(path)
    answers = {}
    for vid, (number, name) in _read_answer_lines(path).items():
        if name not in labels:
            raise Ssv2FormatError(f"{path}:{number}: class {name!r} (id {vid}) is not in labels.json")
        answers[vid] = labels[name]
    return answers


def _skip_or_raise(on_error: OnError, skipped: list[dict], *, file: Path, index: int, vid: Any, field: str,
                   reason: str) -> None:
    where = f"{file}: record {index}" + (f" (id {vid!r})" if vid is not None else "")
    message = f"{where}: field {field!r}: {reason}"
    if on_error == "raise":
        raise Ssv2FormatError(message)
    skipped.append({"file": str(file), "record": index, "id": None if vid is None else str(vid),
                    "field": field, "reason": reason, "message": message})


def read_split(labels_dir: str | os.PathLike, split: str, video_dir: str | os.PathLike, *,
               on_error: OnError = "raise", check_videos: bool = True) -> tuple[list[dict], list[dict]]:
    """Examples of one split ("train", "validation" or "test") and the records skipped (with reasons).

    `on_error="skip"` skips records with a missing field, an unknown template or a missing video and
    reports them in the second list; "raise" stops at the first with Ssv2FormatError.
    """
    if split not in SPLIT_FILES:
        raise ValueError(f"unknown SSv2 split {split!r}; expected one of {list(SPLIT_FILES)}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    labels_dir, video_dir = Path(labels_dir), Path(video_dir)
    labels = read_labels(find_file(labels_dir, LABEL_FILES))
    split_file = find_file(labels_dir, SPLIT_FILES[split])
    records = _load_json(split_file)
    if not isinstance(records, list):
        raise Ssv2FormatError(f"{split_file}: expected a JSON list of records, got {type(records).__name__}")
    answers: dict[str, tuple[int, str]] = {}
    answer_file = next((labels_dir / n for n in ANSWER_FILES if (labels_dir / n).is_file()), None)
    if split == "test" and answer_file is not None:
        answers = _read_answer_lines(answer_file)
    examples, skipped = [], []
    for index, record in enumerate(records):
        report = dict(on_error=on_error, skipped=skipped, file=split_file, index=index)
        if not isinstance(record, dict):
            _skip_or_raise(**report, vid=None, field="id", reason=f"expected an object, got {type(record).__name__}")
            continue
        vid = record.get("id")
        if vid is None or str(vid).strip() == "":
            _skip_or_raise(**report, vid=None, field="id", reason="missing")
            continue
        vid = str(vid).strip()
        extra: dict[str, Any] = {"split": split}
        if split == "test":
            label = -1
            if vid in answers:
                number, name = answers[vid]
                if name not in labels:  # e.g. a labels file restricted to a subset of the classes
                    _skip_or_raise(**report, vid=vid, field="id",
                                   reason=f"{answer_file}:{number}: class {name!r} is not in labels.json")
                    continue
                label = labels[name]
        else:
            template = record.get("template")
            if not isinstance(template, str):
                _skip_or_raise(**report, vid=vid, field="template",
                               reason="missing" if template is None else f"not a string: {template!r}")
                continue
            name = class_name(template)
            if name not in labels:
                _skip_or_raise(**report, vid=vid, field="template",
                               reason=f"unknown template {template!r} (class {name!r} is not in labels.json)")
                continue
            label = labels[name]
            extra.update(template=template, placeholders=list(record.get("placeholders") or []),
                         text=str(record.get("label", "")))
        video = video_dir / f"{vid}.webm"
        if check_videos and not video.is_file():
            _skip_or_raise(**report, vid=vid, field="id", reason=f"video not found: {video}")
            continue
        examples.append({"path": str(video), "label": label, "id": vid, "extra": extra})
    return examples, skipped
