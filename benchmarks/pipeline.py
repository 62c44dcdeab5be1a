"""Input pipeline throughput: clips/s of decode + sample + augment with 0, 1 and 2 grain worker processes.

Two cases, measured side by side in one run on embedded synthetic videos written to a temp dir:
  64 px:  64x64 h264 clips (~20 KB), 16 frames decoded, crop 64
  224 px: 256x256 h264 clips (~40 KB), 16 frames decoded, crop 224
plus a per-clip breakdown in this process (median decode ms, augment ms). Worker start-up and the first batches are
excluded. The machine's load average is recorded: on a shared machine the numbers move with it.

    python -m benchmarks.pipeline [--batches 12] [--batch-size 8] [--no-write]
"""
from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import tempfile
import time

import numpy as np

from jepa.data import pipeline, records, synthetic, transforms, video

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.md")
CASES = (  # name, stored size, crop, clips to write, per-frame pixel noise of the scene
    ("64px", 64, 64, 96, (0.0, 8.0)),
    # Little noise at 256 px: per-frame noise at full strength makes h264 bitrates (and decode cost) far above
    # real footage (~240 KB vs ~40 KB per 2 s clip).
    ("224px", 256, 224, 48, (0.0, 2.0)),
)


def _breakdown(paths: list[str], crop: int, n: int = 24) -> tuple[float, float]:
    """Median ms per clip of decoding 16 frames and of the training augmentation, in this process."""
    import grain

    source = grain.sources.ArrayRecordDataSource(paths)
    rng = np.random.default_rng(0)
    dec, aug = [], []
    for i in range(n + 1):
        rec = records.decode(source[i % len(source)])
        t0 = time.perf_counter()
        frames = video.decode_record(rec, np.arange(16))
        t1 = time.perf_counter()
        transforms.train_transform(frames, rng, crop_size=crop)
        t2 = time.perf_counter()
        if i:  # the first clip warms up codecs and caches
            dec.append(t1 - t0)
            aug.append(t2 - t1)
    return 1e3 * float(np.median(dec)), 1e3 * float(np.median(aug))


def _throughput(cfg: dict, batches: int, warmup: int = 2) -> float:
    it = iter(pipeline.make_dataset(cfg, split="train", seed=0, shard_index=0, shard_count=1))
    try:
        for _ in range(warmup):
            next(it)
        t0 = time.perf_counter()
        for _ in range(batches):
            batch = next(it)
            del batch
        dt = time.perf_counter() - t0
    finally:
        it.close()  # then drop every reference to worker batches (shared memory) before the next setting
        del it
        gc.collect()
    return batches * cfg["batch_size"] / dt


def run(batches: int = 12, batch_size: int = 8, workers: tuple[int, ...] = (0, 1, 2)) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, size, crop, count, noise in CASES:
            out = synthetic.write_synthetic(os.path.join(tmp, name), num_train=count, num_val=0, num_shards=2,
                                            size=size, frames=16, progress=False,
                                            scenes=[synthetic.MovingShapes(noise_std=noise)])
            dec_ms, aug_ms = _breakdown(out["train"], crop)
            row = dict(case=name, stored=f"{size}x{size}x16", crop=crop, decode_ms=dec_ms, augment_ms=aug_ms)
            for w in workers:
                cfg = dict(sources=[{"glob": os.path.join(tmp, name, "synthetic-{split}-*.array_record")}],
                           num_frames=16, stride=1, crop_size=crop, batch_size=batch_size, num_workers=w,
                           read_threads=1, prefetch_buffer_size=2, worker_buffer_size=2)
                row[f"w{w}"] = _throughput(cfg, batches)
                print(f"{name}: {w} worker(s): {row[f'w{w}']:.1f} clips/s", flush=True)
            print(f"{name}: in-process decode {dec_ms:.1f} ms/clip, augment {aug_ms:.1f} ms/clip", flush=True)
            rows.append(row)
    return rows


def to_markdown(rows: list[dict], batch_size: int, workers: tuple[int, ...]) -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    head = (f"\n## Input pipeline ({datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}; {os.cpu_count()} CPUs, "
            f"{platform.machine()}, load average {load}; batch {batch_size}, 16 frames, h264)\n\n")
    cols = " | ".join(f"{w} workers clips/s" for w in workers)
    lines = [f"| case | stored | crop | {cols} | decode ms/clip | augment ms/clip |",
             "|---|---|---|" + "---|" * len(workers) + "---|---|"]
    for r in rows:
        vals = " | ".join(f"{r[f'w{w}']:.1f}" for w in workers)
        lines.append(f"| {r['case']} | {r['stored']} | {r['crop']} | {vals} | {r['decode_ms']:.1f} | "
                     f"{r['augment_ms']:.1f} |")
    note = ""
    if os.getloadavg()[0] > (os.cpu_count() or 1):
        note = ("\nThe machine was shared and busy (load average above its CPU count): these are lower bounds of "
                "what it does when idle.\n")
    return head + "\n".join(lines) + "\n" + note


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pipeline", description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, default=12, help="timed batches per setting")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", default="0,1,2", help="comma-separated worker counts")
    p.add_argument("--no-write", action="store_true", help=f"do not append to {RESULTS}")
    a = p.parse_args(argv)
    workers = tuple(int(w) for w in a.workers.split(","))
    rows = run(a.batches, a.batch_size, workers)
    table = to_markdown(rows, a.batch_size, workers)
    print(table)
    if not a.no_write:
        new = not os.path.exists(RESULTS)
        with open(RESULTS, "a") as f:
            if new:
                f.write("# Benchmark results\n")
            f.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
