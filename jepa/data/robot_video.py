"""Robot episodes (RLDS) as a video pretraining source: one `jepa.data.records` record per episode.

    write_robot_clips(["runs/demo/robot"], "runs/demo/robot_video", camera="exterior_image_1_left", size=64,
                      num_shards=4, seed=0)
    -> {'train': ['.../robot-train-00000-of-00004.array_record', ...], 'validation': [...]}

Episodes are read with `jepa.data.rlds.RLDSEpisodes` (simulated `jepa collect` episodes or DROID-schema RLDS in
ArrayRecord form) from one camera, resized (centre crop to square, then bilinear) to `size`, optionally
subsampled by `frame_stride`, and stored whole: the pipeline samples clips from them (mode 'clip'). Records:

  video       h264 (4:4:4) mp4 of the whole episode, or `frames` (per-frame JPEGs) with codec='jpeg'
  label       -1 (unlabelled)
  fps         fps / frame_stride: `fps` is the rate of the RLDS steps (4 Hz for `jepa collect`, 15 for DROID)
  num_frames  frames stored
  path        the episode's source ('<dataset dir> [<split>] episode <i> (<file_path>)', see rlds.Episode)
  id          '<dataset name>-<episode index>'
  extra       {'task': language instruction ('' if none), 'dataset': dataset dir, 'episode_index': int,
               'camera': camera key}

Episodes of all `rlds_paths` are split by episode into 'train' and 'validation' (`split_episodes`: a seeded
draw of round(split_fraction * total) episodes, kept in source order). Each split is written to
`robot-{split}-{k:05d}-of-{n:05d}.array_record` (contiguous blocks of episodes, group_size 1, temporary names
renamed when complete: `jepa.data.shard.write_record_shards`; n = min(num_shards, episodes in the split), no
file for an empty split). The output does not depend on `num_proc`. Use as a pretraining source:
`{'glob': '<out_dir>/robot-{split}-*.array_record', 'weight': ...}` (jepa.data.pipeline).

Command line: `python -m jepa.data.robot_video OUT_DIR RLDS_DIR [RLDS_DIR ...] --size 64 [--codec jpeg]`.
"""
from __future__ import annotations

import argparse
import glob
import itertools
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from jepa.data import records
from jepa.data.synthetic import encode_jpegs, encode_video

SPLITS = ("train", "validation")
CODECS = ("h264", "jpeg")


def shard_paths(out_dir: str | os.PathLike, split: str, num_shards: int) -> list[str]:
    from jepa.data.shard import shard_name

    return [os.path.join(os.fspath(out_dir), shard_name(f"robot-{split}", k, num_shards))
            for k in range(num_shards)]


def split_episodes(counts: Sequence[int], split_fraction: float, seed: int) -> dict[str, list[tuple[int, int]]]:
    """Assign the episodes of several datasets (`counts[d]` episodes in dataset d) to train / validation.

    Returns {split: [(dataset, episode), ...]} in source order. round(split_fraction * total) episodes, drawn
    with `seed`, go to validation (at least one when split_fraction > 0 and there are two or more episodes).
    """
    if not 0.0 <= split_fraction < 1.0:
        raise ValueError(f"split_fraction must be in [0, 1), got {split_fraction}")
    episodes = [(d, i) for d, n in enumerate(counts) for i in range(n)]
    n_val = int(round(len(episodes) * split_fraction))
    if split_fraction > 0 and n_val == 0 and len(episodes) > 1:
        n_val = 1
    val = set(np.random.default_rng([seed, 0x70b07]).choice(len(episodes), n_val, replace=False).tolist())
    return {"train": [e for k, e in enumerate(episodes) if k not in val],
            "validation": [e for k, e in enumerate(episodes) if k in val]}


def episode_record(episode: Any, *, dataset: str, camera: str, fps: float, codec: str = "h264", crf: int = 18,
                   quality: int = 95) -> dict[str, Any]:
    """The records.py dict of one `jepa.data.rlds.Episode` (whole episode, label -1)."""
    frames = episode.frames
    rec: dict[str, Any] = dict(
        label=-1, fps=float(fps), num_frames=int(len(frames)), path=episode.source,
        id=f"{os.path.basename(os.path.dirname(dataset.rstrip(os.sep))) or dataset}-{episode.index}",
        extra=dict(task=episode.language_instruction, dataset=dataset, episode_index=int(episode.index),
                   camera=camera))
    if codec == "jpeg":
        rec["frames"] = encode_jpegs(frames, quality=quality)
    else:
        rec["video"] = encode_video(frames, fps, codec=codec, crf=crf)
    return rec


def _open(path: str, reader: dict[str, Any]):
    from jepa.data.rlds import RLDSEpisodes

    return RLDSEpisodes(path, min_frames=1, **reader)


def _encode_chunk(job: tuple[list[str], dict[str, Any], list[tuple[int, int]], dict[str, Any]]) -> list[bytes]:
    """Worker: read and encode a list of (dataset, episode) -> records.py bytes, in order."""
    paths, reader, episodes, kw = job
    sources: dict[int, Any] = {}
    out = []
    for d, i in episodes:
        if d not in sources:
            sources[d] = _open(paths[d], reader)
        ep = sources[d][i]
        out.append(records.encode(episode_record(ep, dataset=sources[d].path, camera=reader["camera"], **kw)))
    return out


def write_robot_clips(rlds_paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
                      camera: str = "exterior_image_1_left", size: int = 64, num_shards: int = 4,
                      split_fraction: float = 0.1, seed: int = 0, codec: str = "h264", fps: float = 4.0,
                      frame_stride: int = 1, rlds_split: str = "train", crf: int = 18, quality: int = 95,
                      num_proc: int = 1, overwrite: bool = False, progress: bool = True) -> dict[str, list[str]]:
    """Write the episodes of RLDS datasets as video records; returns {split: [shard paths]} (see module doc).

    Args:
      rlds_paths: RLDS dataset dirs (anything `jepa.data.rlds.find_dataset_dir` accepts).
      out_dir: output directory; existing `robot-*.array_record` shards there raise unless `overwrite`
        (then they are deleted first, so a glob never mixes two writes).
      camera: observation key of the camera.
      size: square frame side (even for h264).
      num_shards: shards per split (fewer if a split has fewer episodes).
      split_fraction, seed: the train / validation split by episode (`split_episodes`).
      codec: 'h264' (mp4, crf `crf`) or 'jpeg' (per-frame JPEGs, quality `quality`).
      fps: rate of the RLDS steps; the records' fps is fps / frame_stride.
      frame_stride: keep every frame_stride-th step.
      rlds_split: the tfds split of the RLDS datasets to read.
      num_proc: worker processes reading and encoding episodes.
    """
    from tqdm import tqdm

    from jepa.data.shard import write_record_shards

    if codec not in CODECS:
        raise ValueError(f"codec must be one of {CODECS}, got {codec!r}")
    if not isinstance(size, (int, np.integer)) or size < 2 or (codec == "h264" and size % 2):
        raise ValueError(f"size must be an integer >= 2 (even for h264), got {size!r}")
    if num_shards < 1 or frame_stride < 1 or not fps > 0:
        raise ValueError(f"num_shards and frame_stride must be >= 1 and fps > 0, got {num_shards}, {frame_stride}, "
                         f"{fps}")
    if not rlds_paths:
        raise ValueError("no RLDS dataset given")
    paths = [os.fspath(p) for p in rlds_paths]
    reader = dict(split=rlds_split, camera=camera, frame_stride=frame_stride, size=int(size))
    counts = [len(_open(p, reader)) for p in paths]  # checks every dataset (camera, fields) before writing

    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    old = sorted(glob.glob(os.path.join(out_dir, "robot-*.array_record")))
    if old:
        if not overwrite:
            raise FileExistsError(f"{out_dir} already holds robot shards ({os.path.basename(old[0])}, ...); pass "
                                  "overwrite=True / --overwrite to replace them")
        for p in old:
            os.remove(p)
    assignment = split_episodes(counts, split_fraction, seed)
    kw = dict(fps=fps / frame_stride, codec=codec, crf=crf, quality=quality)
    chunk = 16
    jobs = [(paths, reader, assignment[split][a:a + chunk], kw) for split in SPLITS
            for a in range(0, len(assignment[split]), chunk)]
    total = sum(counts)
    bar = tqdm(total=total, desc=f"robot episodes -> {out_dir}", unit="episode", disable=not progress)
    pool = None
    if num_proc > 1 and len(jobs) > 1:
        import multiprocessing as mp

        pool = mp.get_context("spawn").Pool(num_proc)
        results: Iterator[list[bytes]] = pool.imap(_encode_chunk, jobs)
    else:
        results = map(_encode_chunk, jobs)
    encoded = itertools.chain.from_iterable(results)  # train episodes, then validation episodes, in order

    def take(n: int) -> Iterator[bytes]:
        for rec in itertools.islice(encoded, n):
            yield rec
            bar.update(1)

    written: dict[str, list[str]] = {}
    try:
        for split in SPLITS:
            n = len(assignment[split])
            out = shard_paths(out_dir, split, min(num_shards, n))
            if out:  # no file for an empty split
                write_record_shards(take(n), out, num_records=n)  # contiguous blocks of episodes per shard
            written[split] = out
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jepa.data.robot_video", description=__doc__.split("\n")[0])
    p.add_argument("out_dir")
    p.add_argument("rlds", nargs="+", help="RLDS dataset dirs")
    p.add_argument("--camera", default="exterior_image_1_left")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--split-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--codec", default="h264", choices=CODECS)
    p.add_argument("--fps", type=float, default=4.0, help="rate of the RLDS steps (jepa collect: 4, DROID: 15)")
    p.add_argument("--frame-stride", type=int, default=1)
    p.add_argument("--procs", type=int, default=1)
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    out = write_robot_clips(a.rlds, a.out_dir, camera=a.camera, size=a.size, num_shards=a.shards,
                            split_fraction=a.split_fraction, seed=a.seed, codec=a.codec, fps=a.fps,
                            frame_stride=a.frame_stride, num_proc=a.procs, overwrite=a.overwrite)
    for split, files in out.items():
        print(f"{split}: {len(files)} shards in {a.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
