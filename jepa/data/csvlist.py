"""V-JEPA video lists: CSV files without a header, one `path label` per line.

The separator is ONE space. A list whose paths contain spaces uses `::` instead (`my clip.mp4::3`); as in
the reference loader the fallback applies to the whole file: if any line does not split into exactly
`path label` with one space, the file is re-read with `::` as the separator. Blank lines are skipped;
labels are integers (ignored for pretraining). A mixture is several lists with sampling weights.

Each example is a plain dict with the `jepa.data.records` fields known before decoding:
`{"path", "label", "id", "extra": {"list": <csv path>, "line": <1-based line>, "list_index": <i>}}`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np


class VideoListError(ValueError):
    """A malformed video list; the message names the file and line."""


def _parse_lines(lines: list[str], sep: str) -> list[tuple[int, str, int]] | tuple[int, str]:
    """Parse with one separator: the entries, or (line number, reason) of the first bad line."""
    out = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if sep == " ":
            fields = line.split(" ")
        else:
            head, found, tail = line.rpartition(sep)
            fields = [head, tail] if found else [line]
        if len(fields) != 2:
            return number, f"expected 'path{sep}label', found {len(fields)} field(s)"
        video, label = fields
        if not video:
            return number, "empty path"
        try:
            out.append((number, video, int(label)))
        except ValueError:
            return number, f"label {label!r} is not an integer"
    return out


def read_video_list(path: str | os.PathLike, *, root: str | os.PathLike | None = None,
                    list_index: int = 0) -> list[dict]:
    """Read one V-JEPA CSV video list into example dicts.

    Relative video paths are joined to `root` when given (else kept as written). Raises VideoListError
    naming the file and line when a line fits neither `path label` nor `path::label`.
    """
    path = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise VideoListError(f"{path}: cannot read video list: {e}") from e
    lines = [line.rstrip("\r\n") for line in text.split("\n")]
    if text.endswith("\n"):
        lines = lines[:-1]
    parsed = _parse_lines(lines, " ")
    if isinstance(parsed, tuple):
        number, reason = parsed
        if not any("::" in line for line in lines):
            raise VideoListError(f"{path}:{number}: {reason} in {lines[number - 1]!r} (a list whose paths contain "
                                 f"spaces must use 'path::label' on every line)")
        space_error = parsed
        parsed = _parse_lines(lines, "::")
        if isinstance(parsed, tuple):
            number, reason = parsed
            raise VideoListError(
                f"{path}:{number}: {reason} in {lines[number - 1]!r} (the file uses '::' but is not a 'path::label' "
                f"list on every line; as a one-space 'path label' list it fails at line {space_error[0]}: "
                f"{space_error[1]})")
    examples = []
    for number, video, label in parsed:
        if root is not None and not os.path.isabs(video):
            video = os.path.join(os.fspath(root), video)
        examples.append({"path": video, "label": label, "id": video,
                         "extra": {"list": path, "line": number, "list_index": list_index}})
    return examples


@dataclass(frozen=True)
class Mixture:
    """Several video lists sampled with weights (weights need not sum to 1)."""

    paths: tuple[str, ...]
    weights: tuple[float, ...]

    def __post_init__(self):
        if not self.paths:
            raise VideoListError("a mixture needs at least one video list")
        if len(self.paths) != len(self.weights):
            raise VideoListError(f"{len(self.paths)} video lists but {len(self.weights)} weights")
        if any(not np.isfinite(w) or w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise VideoListError(f"mixture weights must be >= 0 with a positive sum, got {list(self.weights)}")


def mixture(paths: Sequence[str | os.PathLike], weights: Sequence[float] | None = None) -> Mixture:
    """A Mixture of lists; equal weights when none are given."""
    paths = tuple(os.fspath(p) for p in paths)
    return Mixture(paths, tuple(float(w) for w in (weights if weights is not None else [1.0] * len(paths))))


def parse_mixture(spec: str) -> Mixture:
    """Parse `a.csv:0.3,b.csv:0.7` (a weight-less entry gets weight 1)."""
    paths, weights = [], []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        head, sep, tail = item.rpartition(":")
        if sep:
            try:
                weights.append(float(tail))
                paths.append(head)
                continue
            except ValueError:
                pass
        paths.append(item)
        weights.append(1.0)
    return mixture(paths, weights)


def read_mixture(mix: Mixture, *, root: str | os.PathLike | None = None) -> tuple[list[dict], np.ndarray]:
    """All examples of a mixture and each example's sampling weight (w_list / n_list, as the reference).

    Sampling examples with these weights picks list i with probability w_i / sum(w).
    """
    examples, sample_weights = [], []
    for i, (path, weight) in enumerate(zip(mix.paths, mix.weights)):
        part = read_video_list(path, root=root, list_index=i)
        if not part:
            raise VideoListError(f"{path}: empty video list")
        examples += part
        sample_weights += [weight / len(part)] * len(part)
    return examples, np.asarray(sample_weights, np.float64)
