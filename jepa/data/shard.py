"""Write examples from the dataset readers as ArrayRecord shards of `jepa.data.records` dicts.

Layout of an output folder for a dataset NAME split into N shards:

    NAME-00000-of-0000N.array_record ...   records.encode(dict), written with group_size:1 (random access)
    NAME.json                              metadata: shards and their record counts, class names, options
    NAME.report.json                       what was skipped (undecodable videos, reader problems) and why

Shards are written as hidden temporary files (`.NAME-00000-of-0000N.array_record.tmp`) and renamed only
when every shard is complete; NAME.json is written last. An interrupted run therefore never leaves files
that look like finished shards (its temporary files are removed, or at worst left with the `.tmp` name).
`write_record_shards` does this; it is the one ArrayRecord shard writer of the project (`jepa.data.synthetic`
and `jepa.data.robot_video` write their shards with it too).

Records (see records.py): the encoded video bytes (`video`), or per-frame JPEGs (`frames`), plus `label`,
`fps`, `num_frames`, `path`, `id` and `extra` (the reader's metadata plus what decoding learnt). EK100
records hold a trimmed, downscaled h264 re-encode of the action and its anticipation context rather than
the hour-long source video; `extra["clip_offset_sec"]` is the time of the clip's first frame and every
time in `extra` is in the ORIGINAL video's timeline (clip frame j is at clip_offset_sec + j / fps).

Decoding runs in a multiprocessing pool (`workers`); results come back in input order, so the output is
deterministic. Examples whose video cannot be decoded are skipped, counted and listed in the report.
"""
from __future__ import annotations

import bisect
import functools
import io
import json
import multiprocessing
import os
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from PIL import Image
from tqdm import tqdm

from jepa.data import ek100, records, videoio
from jepa.data.frametime import frame_index


@dataclass(frozen=True)
class ShardOptions:
    """How videos are stored."""

    frames_as_jpeg: bool = False   # per-frame JPEGs instead of encoded video bytes
    short_side: int | None = None  # downscale so the short side is at most this (None: keep; EK100: 256)
    jpeg_quality: int = 90
    crf: int = 23                  # h264 quality of re-encoded clips
    context_sec: float = 6.0       # EK100: seconds kept before the action start (>= tau_a + observed clip)
    ek100_chunk: int = 16          # EK100: actions decoded per task (one video per task)


@dataclass
class Result:
    """A finished record, or why an example was skipped."""

    record: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


def _error(example: dict, message: str) -> Result:
    return Result(error={"path": example.get("path"), "id": example.get("id"), "error": message})


# --------------------------------------------------------------------------------------- record makers

def video_record(example: dict, options: ShardOptions) -> dict[str, Any]:
    """A record for a whole-video example (CSV lists, SSv2). Raises VideoDecodeError / OSError.

    The source bytes are stored as they are unless JPEG frames are asked for or the video is larger
    than `short_side` (then it is re-encoded as h264 mp4 at that size).
    """
    path = example["path"]
    data = Path(path).read_bytes()
    info = videoio.probe(data, name=path)
    extra = dict(example.get("extra") or {})
    extra.update(width=info.width, height=info.height, codec=info.codec, source_fps=info.fps,
                 source_num_frames=info.num_frames)
    record: dict[str, Any] = {"label": example.get("label", -1), "path": path, "id": example.get("id", path)}
    too_big = options.short_side is not None and min(info.width, info.height) > options.short_side
    if options.frames_as_jpeg or too_big:
        clip = videoio.decode_all(data, short_side=options.short_side, frames_as_jpeg=options.frames_as_jpeg,
                                  jpeg_quality=options.jpeg_quality, crf=options.crf, name=path)
        if clip.frames is not None:
            record["frames"] = clip.frames
        else:
            record["video"] = clip.data
        extra.update(width=clip.width, height=clip.height, reencoded=True)
        record.update(fps=clip.fps, num_frames=clip.num_frames)
    else:
        record.update(video=data, fps=info.fps, num_frames=info.num_frames)
        extra["reencoded"] = False
    record["extra"] = extra
    return record


def video_task(example: dict, options: ShardOptions) -> list[Result]:
    """Worker function for whole-video examples."""
    try:
        return [Result(record=video_record(example, options))]
    except (videoio.VideoDecodeError, OSError) as e:
        return [_error(example, str(e))]


def _ek100_record(example: dict, clip: videoio.Clip, context: float) -> dict[str, Any]:
    """The record of one action. Frame numbers in extra are at the record's fps (the MP4's real rate, or
    the rgb_frames folder's rate for the frames layout), in the original timeline."""
    extra = dict(example["extra"])
    fps = clip.fps
    if extra.get("layout") == "frames":
        extra["frames_fps"] = fps
    elif abs(fps - extra["video_fps"]) > 1e-3 * fps:
        extra["video_info_fps"] = extra["video_fps"]  # EPIC_100_video_info.csv disagrees with the file
        extra["video_fps"] = fps                       # trust the file
    extra.update(
        start_frame=frame_index(extra["start_sec"], fps), stop_frame=frame_index(extra["stop_sec"], fps),
        observed_stop_frame=frame_index(extra["observed_stop_sec"], fps),  # = the anticipation sampler's end
        clip_offset_sec=clip.offset_sec, clip_start_frame=clip.first_frame, clip_stop_frame=clip.last_frame,
        context_sec=context, width=clip.width, height=clip.height)
    record: dict[str, Any] = {"label": example["label"], "fps": fps, "num_frames": clip.num_frames,
                              "path": example["path"], "id": example["id"], "extra": extra}
    if clip.frames is not None:
        record["frames"] = clip.frames
    else:
        record["video"] = clip.data
    return record


@functools.lru_cache(maxsize=8)
def _count_frames(frames_dir: str) -> int:
    return sum(1 for name in os.listdir(frames_dir) if name.startswith("frame_") and name.endswith(".jpg"))


def _frames_clip(example: dict, start: float, stop: float, options: ShardOptions) -> videoio.Clip:
    """Cut [start, stop] out of an rgb_frames folder (JPEGs at the folder's own rate, 1-based names)."""
    frames_dir = example["path"]
    count = _count_frames(frames_dir)
    duration = example["extra"]["video_duration"]
    if count == 0 or duration <= 0:
        raise videoio.VideoDecodeError(f"{frames_dir}: no frame_*.jpg files")
    rate = count / duration  # the frames' own rate (60 / 50 for the official extraction), never assumed
    first, last = frame_index(start, rate), min(count - 1, frame_index(stop, rate))
    if first > last:
        raise videoio.VideoDecodeError(f"{frames_dir}: no frames in [{start:.3f}, {stop:.3f}] s")
    jpegs, width, height = [], 0, 0
    for k in range(first, last + 1):
        path = ek100.frame_file(frames_dir, k)
        try:
            data = videoio.jpeg_resize(path.read_bytes(), options.short_side, options.jpeg_quality)
        except OSError as e:
            raise videoio.VideoDecodeError(f"{path}: cannot read frame: {e}") from e
        if k == first:
            width, height = Image.open(io.BytesIO(data)).size
        jpegs.append(data)
    return videoio.Clip(data=b"", frames=jpegs, fps=rate, num_frames=len(jpegs), first_frame=first,
                        last_frame=last, offset_sec=first / rate, width=width, height=height)


def ek100_task(examples: list[dict], options: ShardOptions) -> list[Result]:
    """Worker function: trimmed clips for several actions of ONE EK100 video (opened once)."""
    short_side = options.short_side if options.short_side is not None else 256
    opts = ShardOptions(**{**asdict(options), "short_side": short_side})
    results = []
    if examples[0]["extra"].get("layout") == "frames":
        for ex in examples:
            start = max(0.0, ex["extra"]["start_sec"] - opts.context_sec)
            try:
                clip = _frames_clip(ex, start, ex["extra"]["stop_sec"], opts)
                results.append(Result(record=_ek100_record(ex, clip, opts.context_sec)))
            except videoio.VideoDecodeError as e:
                results.append(_error(ex, str(e)))
        return results
    path = examples[0]["path"]
    try:
        container = videoio.open_video(path)
    except videoio.VideoDecodeError as e:
        return [_error(ex, str(e)) for ex in examples]
    windows = [(max(0.0, ex["extra"]["start_sec"] - opts.context_sec), ex["extra"]["stop_sec"]) for ex in examples]
    with container:
        try:
            clips = videoio.trim_clips(container, windows, short_side=short_side, frames_as_jpeg=opts.frames_as_jpeg,
                                       jpeg_quality=opts.jpeg_quality, crf=opts.crf, name=path)
        except videoio.VideoDecodeError as e:
            clips = [e] * len(examples)
    for ex, clip in zip(examples, clips):
        if isinstance(clip, videoio.VideoDecodeError):
            results.append(_error(ex, str(clip)))
        else:
            results.append(Result(record=_ek100_record(ex, clip, opts.context_sec)))
    return results


def ek100_tasks(examples: Sequence[dict], chunk: int = 16) -> list[list[dict]]:
    """Group EK100 examples by video (sorted by start time) into tasks of at most `chunk` actions."""
    by_video: dict[str, list[dict]] = defaultdict(list)
    for ex in examples:
        by_video[ex["path"]].append(ex)
    tasks = []
    for path in sorted(by_video):
        group = sorted(by_video[path], key=lambda e: (e["extra"]["start_sec"], e["id"]))
        tasks += [group[i:i + chunk] for i in range(0, len(group), chunk)]
    return tasks


def make_tasks(examples: Sequence[dict], dataset: str, options: ShardOptions) -> tuple[list, Callable]:
    """(tasks, worker function) for a dataset kind ("csv", "ssv2" or "ek100")."""
    if dataset == "ek100":
        return ek100_tasks(examples, options.ek100_chunk), functools.partial(ek100_task, options=options)
    if dataset in ("csv", "ssv2"):
        return list(examples), functools.partial(video_task, options=options)
    raise ValueError(f"unknown dataset kind {dataset!r}; expected csv, ssv2 or ek100")


def run_tasks(tasks: Sequence[Any], fn: Callable[[Any], list[Result]], workers: int = 1,
              max_pending: int | None = None) -> Iterator[Result]:
    """Apply `fn` to every task (in a spawn pool when workers > 1) and yield results in task order.

    At most `max_pending` tasks (default 4 per worker) are in flight or waiting to be consumed, so a slow
    task cannot make finished results pile up in memory.
    """
    if workers <= 1:
        for task in tasks:
            yield from fn(task)
        return
    pending = threading.Semaphore(max_pending or 4 * workers)
    stop = threading.Event()

    def feed() -> Iterator[Any]:  # runs in the pool's task-handler thread
        for task in tasks:
            while not pending.acquire(timeout=0.1):
                if stop.is_set():
                    return
            if stop.is_set():
                return
            yield task

    ctx = multiprocessing.get_context("spawn")  # safe even if the parent imported JAX / threads
    with ctx.Pool(workers) as pool:
        try:
            for results in pool.imap(fn, feed(), chunksize=1):
                pending.release()
                yield from results
        finally:
            stop.set()


def iter_records(examples: Sequence[dict], dataset: str, options: ShardOptions = ShardOptions(),
                 workers: int = 1) -> Iterator[Result]:
    """Records (or skip reasons) for reader examples, in a deterministic order."""
    tasks, fn = make_tasks(examples, dataset, options)
    return run_tasks(tasks, fn, workers)


# -------------------------------------------------------------------------------------------- writer

def shard_name(name: str, index: int, num_shards: int) -> str:
    """`NAME-00003-of-00064.array_record`."""
    return f"{name}-{index:05d}-of-{num_shards:05d}.array_record"


def _temp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp")


def write_record_shards(items: Iterable[dict[str, Any] | bytes], paths: Sequence[str | os.PathLike], *,
                        num_records: int | None = None, replace: Iterable[str | os.PathLike] = ()) -> list[int]:
    """THE ArrayRecord shard writer of the project: write records into the shard files `paths`.

    `items` are `records` dicts (encoded here) or already encoded bytes. Every shard is written with
    group_size:1 (random access) to a hidden temporary file `.NAME.tmp` next to it; only when all items are
    written are the temporaries renamed to `paths` (after deleting the files in `replace` that are not among
    `paths`, e.g. the shards of an earlier run with another shard count). On any error or interruption the
    temporaries are removed, so no file that looks like a finished shard is ever left half written.

    Placement: `num_records` None: round robin, record j to shard j % len(paths). `num_records` n given:
    exactly n records, in contiguous blocks, shard k holding records [k n // K, (k + 1) n // K).
    Returns the number of records written to each shard.
    """
    from array_record.python.array_record_module import ArrayRecordWriter

    finals = [Path(p) for p in paths]
    if not finals:
        raise ValueError("write_record_shards needs at least one shard path")
    num_shards = len(finals)
    bounds = None if num_records is None else [k * num_records // num_shards for k in range(num_shards + 1)]
    temps = [_temp_path(p) for p in finals]
    for folder in {p.parent for p in finals}:
        folder.mkdir(parents=True, exist_ok=True)
    counts = [0] * num_shards
    writers: list[Any] = []
    committed = False
    try:
        writers = [ArrayRecordWriter(str(t), "group_size:1") for t in temps]
        j = 0
        for item in items:
            if bounds is None:
                shard = j % num_shards
            elif j >= num_records:
                raise ValueError(f"write_record_shards: more than the {num_records} records announced")
            else:
                shard = bisect.bisect_right(bounds, j) - 1
            writers[shard].write(item if isinstance(item, bytes) else records.encode(item))
            counts[shard] += 1
            j += 1
        if num_records is not None and j != num_records:
            raise ValueError(f"write_record_shards: {j} records written, {num_records} announced")
        for w in writers:
            w.close()
        writers = []
        for path in replace:
            if Path(path) not in finals:
                Path(path).unlink(missing_ok=True)
        for temp, final in zip(temps, finals):
            os.replace(temp, final)
        committed = True
    finally:
        for w in writers:
            w.close()
        if not committed:
            for temp in temps:
                temp.unlink(missing_ok=True)
    return counts


def _write_json(path: Path, data: dict) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(temp, path)


@dataclass
class ShardSummary:
    """What `write_shards` produced."""

    shards: list[Path]
    counts: list[int]
    skipped: list[dict] = field(default_factory=list)
    metadata_path: Path | None = None
    report_path: Path | None = None

    @property
    def num_records(self) -> int:
        return sum(self.counts)


def write_shards(results: Iterable[Result], *, out_dir: str | os.PathLike, name: str, num_shards: int,
                 metadata: dict[str, Any] | None = None, reader_skipped: Sequence[dict] = (),
                 total: int | None = None, overwrite: bool = False, progress: bool = True) -> ShardSummary:
    """Write record results round-robin into `num_shards` ArrayRecord shards (group_size:1), with NAME.json
    and NAME.report.json (`write_record_shards` writes the shards).

    The j-th written record goes to shard j % num_shards. Skipped results are counted and listed in
    NAME.report.json. Raises FileExistsError if NAME already exists in out_dir (unless overwrite).
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    if not name or "/" in name:
        raise ValueError(f"bad dataset name {name!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta_path, report_path = out / f"{name}.json", out / f"{name}.report.json"
    stale = sorted(out.glob(f"{name}-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9].array_record"))
    if (meta_path.exists() or stale) and not overwrite:
        raise FileExistsError(f"{out}: dataset {name!r} already exists ({meta_path.name}); pass overwrite=True "
                              f"(--overwrite) to replace it")
    finals = [out / shard_name(name, i, num_shards) for i in range(num_shards)]
    skipped: list[dict] = []
    start = time.time()

    def good_records() -> Iterator[dict[str, Any]]:
        bar = tqdm(total=total, desc=f"writing {name}", unit="clip", disable=not progress)
        try:
            for result in results:
                if result.record is not None:
                    yield result.record
                else:
                    skipped.append(result.error)
                    bar.set_postfix(skipped=len(skipped))
                bar.update(1)
        finally:
            bar.close()

    counts = write_record_shards(good_records(), finals, replace=stale)
    elapsed = time.time() - start
    meta = {"name": name, "num_records": sum(counts), "num_shards": num_shards,
            "shards": [{"file": f.name, "num_records": c} for f, c in zip(finals, counts)],
            "record_format": "jepa.data.records (msgpack dict), ArrayRecord group_size:1",
            "num_skipped": len(skipped), "num_reader_skipped": len(reader_skipped),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "elapsed_sec": round(elapsed, 3)}
    meta.update(metadata or {})
    report = {"name": name, "num_records": sum(counts), "num_skipped": len(skipped), "skipped": skipped,
              "num_reader_skipped": len(reader_skipped), "reader_skipped": list(reader_skipped)}
    _write_json(report_path, report)
    _write_json(meta_path, meta)
    return ShardSummary(shards=finals, counts=counts, skipped=skipped, metadata_path=meta_path,
                        report_path=report_path)


def summary_text(summary: ShardSummary, reader_skipped: Sequence[dict] = ()) -> str:
    """A short human-readable summary (printed by `jepa data shard`)."""
    lines = [f"wrote {summary.num_records} records into {len(summary.shards)} shards "
             f"({min(summary.counts)}-{max(summary.counts)} per shard) in {summary.shards[0].parent}",
             f"metadata: {summary.metadata_path}", f"report:   {summary.report_path}"]
    if summary.skipped:
        lines.append(f"skipped {len(summary.skipped)} undecodable video(s):")
        lines += [f"  {s['path']}: {s['error']}" for s in summary.skipped[:20]]
        if len(summary.skipped) > 20:
            lines.append(f"  ... and {len(summary.skipped) - 20} more (see the report)")
    if reader_skipped:
        kinds: dict[str, int] = defaultdict(int)
        for s in reader_skipped:
            kinds[s.get("kind", "error")] += 1
        lines.append("reader skipped: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
    return "\n".join(lines)


def shard_files(metadata_path: str | os.PathLike) -> list[str]:
    """The shard paths listed in a NAME.json (absolute)."""
    path = Path(metadata_path)
    meta = json.loads(path.read_text())
    return [str(path.parent / s["file"]) for s in meta["shards"]]


def shard_examples(examples: Sequence[dict], dataset: str, *, out_dir: str | os.PathLike, name: str,
                   num_shards: int, options: ShardOptions = ShardOptions(), workers: int = 1,
                   metadata: dict[str, Any] | None = None, reader_skipped: Sequence[dict] = (),
                   overwrite: bool = False, progress: bool = True) -> ShardSummary:
    """Decode / trim the examples of a reader (in `workers` processes) and write them as shards."""
    meta = {"dataset": dataset, "options": asdict(options)}
    meta.update(metadata or {})
    results = iter_records(examples, dataset, options, workers)
    return write_shards(results, out_dir=out_dir, name=name, num_shards=num_shards, metadata=meta,
                        reader_skipped=reader_skipped, total=len(examples), overwrite=overwrite,
                        progress=progress)
