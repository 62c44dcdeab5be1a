"""Input pipeline vs training step: clips/s the pipeline delivers against clips/s the step consumes.

For each config (full: the demo config as is, and the ViT-B-like `VITB` case; quick: the demo's smoke config and
`TINY`): synthetic videos of the stored size are written under `ctx.workdir`; the pipeline is the training one
(`jepa.train.pretrain.make_data`: decode + sample + augment + batch + the mask generators' `MaskTransform`, with the
config's worker processes); the step is `JaxStep(cfg)` (compiled pretraining step on a fixed batch). Each is measured
alone: in a real run on a small machine they share the cores. The pipeline's rate is taken over the second half of
the timed batches, once the batches buffered during warm-up are used up. A per-clip breakdown in this process
(read + decode, augment, masks per batch) says what one decoding process does and how many a config would need.
"""
from __future__ import annotations

import dataclasses
import gc
import math
import os
import shutil
import time

import numpy as np

from jepa.bench import common
from jepa.bench.common import Section, Target, fmt

GOAL = 3.0  # the pipeline must deliver at least 3x what the step consumes
SLOW_STEP_S = 5.0  # a step slower than this is timed with at most 3 repeats


def _configs(quick: bool) -> list[dict]:
    """name, training config, stored video side, clips to write, per-frame noise of the synthetic scene."""
    from configs.pretrain import demo

    if quick:
        # The smoke config (no worker, a 1-layer model) is a check that the path runs, not a config to feed:
        # no target for it.
        return [dict(name="demo smoke", cfg=demo.get_config("smoke"), stored=64, clips=32, noise=(0.0, 8.0),
                     target=False),
                dict(name=common.TINY.name, cfg=common.pretrain_config(common.TINY), stored=64, clips=32,
                     noise=(0.0, 8.0))]
    # 256 px: little per-frame noise; full-strength noise makes h264 bitrates (and decode cost) far above real
    # footage (see benchmarks/pipeline.py).
    return [dict(name="demo", cfg=demo.get_config(), stored=64, clips=64, noise=(0.0, 8.0)),
            dict(name=common.VITB.name, cfg=common.pretrain_config(common.VITB), stored=256, clips=32,
                 noise=(0.0, 2.0))]


def _write(root: str, size: int, clips: int, noise: tuple[float, float], frames: int) -> tuple[str, bool]:
    """Synthetic train shards of `size` px (reused when already written); returns (their glob, written now)."""
    from jepa.data import synthetic

    out = os.path.join(root, f"synthetic-{size}px-{frames}f-{clips}-noise{noise[1]:g}")
    pattern = os.path.join(out, "synthetic-{split}-*.array_record")
    if os.path.exists(os.path.join(out, "done")):
        return pattern, False
    shutil.rmtree(out, ignore_errors=True)
    synthetic.write_synthetic(out, num_train=clips, num_val=0, num_shards=2, size=size, frames=frames,
                              progress=False, num_proc=1, scenes=[synthetic.MovingShapes(noise_std=noise)])
    open(os.path.join(out, "done"), "w").close()
    return pattern, True


def _pipeline_rate(exp, warmup: int, batches: int) -> dict:
    """Clips/s of the training input pipeline (the config's workers), over the second half of `batches`."""
    from jepa.train import pretrain

    b = exp.cfg.train.batch_size
    t0 = time.perf_counter()
    it = pretrain.make_data(exp, seed=0)
    try:
        for _ in range(warmup):
            next(it)
        first_s = time.perf_counter() - t0  # worker start-up and the first batches
        stamps = [time.perf_counter()]
        for _ in range(batches):
            next(it)
            stamps.append(time.perf_counter())
    finally:
        it.close()  # stops the worker processes before anything else is timed
        del it
        gc.collect()
    half = batches // 2
    clips = (batches - half) * b
    dt = stamps[-1] - stamps[half]
    return {"clips_per_s": clips / dt, "timed_batches": batches - half, "timed_clips": clips, "timed_s": dt,
            "startup_s": first_s}


def _breakdown(exp, pattern: str, n: int) -> dict:
    """Median ms, in this process, of reading + decoding one clip's frames, of its augmentation, and of the masks
    of one batch: what one decoding process does per clip."""
    import grain

    from jepa.data import pipeline, records, transforms, video

    c = pipeline.resolve_config({**exp.cfg.data.to_dict(), "batch_size": exp.cfg.train.batch_size})
    ct = pipeline.ClipTransform.from_config(c)
    paths = pipeline.source_paths(pattern, "train")
    source = grain.sources.ArrayRecordDataSource(paths)
    rng = np.random.default_rng(0)
    dec, aug, mask = [], [], []
    for i in range(n + 1):
        t0 = time.perf_counter()
        rec = records.decode(source[i % len(source)])
        idx = video.sample_frame_indices(rec, num_frames=ct.num_frames, target_fps=ct.target_fps, stride=ct.stride,
                                         mode=ct.mode, num_segments=ct.num_segments, tau_a=ct.tau_a, rng=rng)
        frames = video.decode_record(rec, idx, short_side=ct.decode_short_side, threads=ct.decode_threads)
        t1 = time.perf_counter()
        s, t = frames.shape[:2]
        transforms.train_transform(frames.reshape((s * t,) + frames.shape[2:]), rng, crop_size=ct.crop_size,
                                   scale=ct.scale, ratio=ct.ratio, flip=ct.flip, randaugment=ct.randaugment,
                                   erase_prob=ct.erase_prob)
        t2 = time.perf_counter()
        if i:  # the first clip warms up codecs and caches
            dec.append(t1 - t0)
            aug.append(t2 - t1)
    for i in range(max(3, n // 4) + 1):
        t0 = time.perf_counter()
        exp.masker(exp.cfg.train.batch_size, rng)
        if i:
            mask.append(time.perf_counter() - t0)
    return {"decode_ms": 1e3 * float(np.median(dec)), "augment_ms": 1e3 * float(np.median(aug)),
            "masks_ms_per_batch": 1e3 * float(np.median(mask)), "frames_decoded": int(s * t)}


def _one(ctx, spec: dict, root: str) -> dict:
    from jepa.train import pretrain

    cfg = spec["cfg"]
    d = cfg.data
    b = cfg.train.batch_size
    stored_frames = 16
    t0 = time.perf_counter()
    pattern, written = _write(root, spec["stored"], spec["clips"], spec["noise"], stored_frames)
    write_s = time.perf_counter() - t0
    with cfg.unlocked():
        cfg.data.sources = [{"glob": pattern}]
    exp = pretrain.build(cfg)
    workers = int(d.num_workers)

    if ctx.quick:
        warmup, batches, n_clips = 1, 4, 6
    else:  # enough batches that the second half spans >= ~48 clips and >= 4 batches
        warmup, batches, n_clips = 2, max(8, 2 * math.ceil(48 / b)), 16
    ctx.log(f"[data] {spec['name']}: pipeline ({workers} worker(s), batch {b}, {batches} batches)")
    pipe = _pipeline_rate(exp, warmup, batches)
    brk = _breakdown(exp, pattern, n_clips)
    del exp
    gc.collect()

    ctx.log(f"[data] {spec['name']}: compiling and timing the step")
    t0 = time.perf_counter()
    step = common.JaxStep(cfg)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    step()  # first call: a warm-up, and a first estimate of the step's time
    first_s = time.perf_counter() - t0
    tm = ctx.timing
    if first_s > SLOW_STEP_S:  # a slow step: fewer repeats (the ratio is far from the goal either way)
        tm = dataclasses.replace(tm, warmup=0, repeats=min(tm.repeats, 3))
    timing = {**common.median_seconds(step, tm), "repeats": tm.repeats, "first_s": first_s}
    del step
    gc.collect()

    step_rate = b / timing["median_s"]
    per_clip_ms = brk["decode_ms"] + brk["augment_ms"] + brk["masks_ms_per_batch"] / b
    one_proc_rate = 1e3 / per_clip_ms  # clips/s of one decoding process, from the breakdown
    need = GOAL * step_rate
    return {
        "name": spec["name"], "stored": spec["stored"], "crop": int(d.crop_size), "frames": int(d.num_frames),
        "stride": d.stride, "batch": b, "workers": workers, "read_threads": int(d.read_threads),
        "pipeline": pipe, "breakdown": brk, "per_clip_ms": per_clip_ms, "one_process_clips_per_s": one_proc_rate,
        "step": {**timing, "compile_s": compile_s}, "step_clips_per_s": step_rate,
        "ratio": pipe["clips_per_s"] / step_rate,
        "core_share": step_rate * per_clip_ms / 1e3,  # of one core, to prepare what the step consumes
        # decoding processes (each about one core) for GOAL x the step's rate, from the per-clip cost
        "processes_for_goal": max(1, math.ceil(need / one_proc_rate)),
        "write_s": write_s, "written": written, "clips_written": spec["clips"], "target": spec.get("target", True),
    }


def run(ctx) -> list[Section]:
    root = os.path.join(ctx.workdir, "data")
    os.makedirs(root, exist_ok=True)
    results = [_one(ctx, spec, root) for spec in _configs(ctx.quick)]

    columns = ["config", "video (stored -> crop, frames)", "batch", "workers", "pipeline clips/s", "step s",
               "step clips/s", "pipeline / step", "decode ms/clip", "augment ms/clip", "masks ms/batch",
               "1 process clips/s", "processes for 3x"]
    rows, targets, notes = [], [], []
    for r in results:
        brk = r["breakdown"]
        wk = f"{r['workers']}" if r["workers"] else f"0 ({r['read_threads']} read thread)"
        rows.append([r["name"], f"{r['stored']} -> {r['crop']} px, {r['frames']}", r["batch"], wk,
                     fmt(r["pipeline"]["clips_per_s"]), fmt(r["step"]["median_s"]), fmt(r["step_clips_per_s"]),
                     fmt(r["ratio"]), fmt(brk["decode_ms"]), fmt(brk["augment_ms"]), fmt(brk["masks_ms_per_batch"]),
                     fmt(r["one_process_clips_per_s"]), r["processes_for_goal"]])
        if r["target"]:
            targets.append(Target(f"{r['name']}: pipeline clips/s / step clips/s", float(r["ratio"]), GOAL))

    cpus = os.cpu_count() or 1
    notes.append(
        f"Measured alone, one after the other, on {cpus} CPU(s) ({ctx.threads} thread(s) for the benchmarks): the "
        "pipeline (grain, decode + sample + augment + batch + masks, as `make_data` builds it for training, with the "
        "config's worker processes; rate over the second half of the timed batches) and the compiled step "
        "(`JaxStep`, median of the repeats; a step over "
        f"{SLOW_STEP_S:g}s gets at most 3). In a real run on a machine this small they share the cores, "
        "so each runs slower than here.")
    notes.append("Per-clip costs are medians in this process (one core): read + decode of the sampled frames, the "
                 "training augmentation (random resized crop, flip, normalise), the masks of one batch; '1 process "
                 "clips/s' = 1000 / (decode + augment + masks / batch); 'processes for 3x' = decoding processes "
                 "(about a core each) that would deliver 3x the step's clips/s.")
    for r in results:
        brk, ok = r["breakdown"], r["ratio"] >= GOAL
        cfg_procs = (f"{r['workers']} worker(s)" if r["workers"]
                     else f"no worker: {r['read_threads']} read thread in the training process")
        wk = (f"{r['workers']} worker process(es)" if r["workers"]
              else f"no worker process (decoding in {r['read_threads']} read thread of the training process)")
        written = f"written in {r['write_s']:.1f}s" if r["written"] else "already written"
        line = (f"{r['name']}: {wk}; {r['clips_written']} synthetic {r['stored']} px clips of 16 frames (h264, "
                f"{written}); pipeline start-up {r['pipeline']['startup_s']:.1f}s; step compile "
                f"{r['step']['compile_s']:.1f}s, {r['step']['repeats']} timed repeats. ")
        if not r["target"]:
            line += "(No target: a smoke config, decoding in the training process for a 1-layer model.) "
        if ok:
            line += (f"Meets 3x: the pipeline delivers {r['ratio']:.1f}x what the step consumes; preparing the "
                     f"step's {r['step_clips_per_s']:.3g} clips/s takes about {100 * r['core_share']:.1f}% of one "
                     f"core ({r['per_clip_ms']:.1f} ms per clip).")
        else:
            line += (f"MISSES 3x ({r['ratio']:.2f}x): a clip costs {r['per_clip_ms']:.1f} ms to prepare "
                     f"({brk['decode_ms']:.1f} ms decoding {brk['frames_decoded']} frames of {r['stored']} px, "
                     f"{brk['augment_ms']:.1f} ms augmenting to {r['crop']} px, "
                     f"{brk['masks_ms_per_batch'] / r['batch']:.2f} ms of masks), so a step's {r['batch']} clips "
                     f"take {r['batch'] * r['per_clip_ms']:.0f} ms of one core against a "
                     f"{1e3 * r['step']['median_s']:.0f} ms step; 3x needs "
                     f"{r['processes_for_goal']} decoding process(es) (the config has {cfg_procs}), i.e. about "
                     f"{r['processes_for_goal']} core(s) for the input pipeline besides the step's.")
        notes.append(line)
    return [Section(key="data", title="Input pipeline vs training step (clips/s)", columns=columns, rows=rows,
                    notes=notes, targets=targets, data={"configs": results})]
