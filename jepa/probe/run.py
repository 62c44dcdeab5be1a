"""Frozen-encoder evaluation: `jepa probe --config configs/probe/<name>.py --workdir DIR`.

A frozen encoder (a pretraining run's or a converted bundle) and a grid of attentive probes (lr x weight decay, the
reference's 5 x 4 = 20 by default) trained together as one jitted program on the same clips, features computed
inside the step (jepa.probe.grid). Training checkpoints and resumes (model, optimizer and data iterator, orbax),
logs to TensorBoard and shows progress; evaluation follows the reference's segments x views protocol, and writes
every probe's metrics (results.json, results.md) and pictures (confusion.png or recall5.png) for the best one.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax
import ml_collections
import numpy as np
from flax import nnx

from jepa import distributed, sharding
from jepa.config import ConfigError, check_values, load_config, save_run_config, split_args
from jepa.models import ProbeConfig
from jepa.probe import grid as pg_lib
from jepa.train.checkpoint import Checkpointer, StopSignal
from jepa.train.logging import RunLogger
from jepa.train.state import with_shardings


def validate(cfg: ml_collections.ConfigDict) -> None:
    errors = check_values(cfg, positive=("train.batch_size", "eval.batch_size", "eval.num_views",
                                         "eval.num_segments", "probe.num_heads"),
                          non_negative=("train.epochs", "future_steps", "train.warmup_epochs", "train.epoch_clips", "train.checkpoint_every",
                                        "probe.depth", "eval.max_clips"))
    if cfg.get("features", "online") not in ("online", "cache"):
        errors.append(f"features must be 'online' or 'cache', got {cfg.features!r}")
    if cfg.get("future_steps", 0) and cfg.get("layers", ()):
        errors.append("future_steps needs layers=() (the predictor continues the encoder's final output)")
    if cfg.task not in pg_lib.TASKS:
        errors.append(f"task must be one of {pg_lib.TASKS}, got {cfg.task!r}")
    heads = 1 if cfg.task == "classification" else 3
    if len(cfg.num_classes) != heads or any(int(c) < 1 for c in cfg.num_classes):
        errors.append(f"num_classes {list(cfg.num_classes)} must be {heads} positive number(s) for task {cfg.task!r}")
    if not cfg.grid.lrs or not cfg.grid.wds:
        errors.append("grid.lrs and grid.wds must be non-empty")
    if errors:
        raise ConfigError("invalid config: " + "; ".join(errors))


def data_config(cfg: ml_collections.ConfigDict, *, training: bool) -> ml_collections.ConfigDict:
    """The pipeline config of the training clips (cfg.data) or of the evaluation clips (cfg.data with eval=True,
    each record once, cfg.eval's views and segments)."""
    c = ml_collections.ConfigDict(cfg.data.to_dict())
    if cfg.task == "anticipation":
        c.label_keys = ("verb_class", "noun_class", "action_class")
    if training:
        c.batch_size = cfg.train.batch_size // jax.process_count()
        return c
    c.update(eval=True, repeat=False, shuffle=False, drop_remainder=False, num_views=cfg.eval.num_views,
             num_segments=cfg.eval.num_segments, batch_size=cfg.eval.batch_size)
    return c


def source_records(cfg: ml_collections.ConfigDict, split: str) -> int:
    from jepa.data.pipeline import open_source, resolve_config

    return sum(len(open_source(s, split, i)) for i, s in enumerate(resolve_config(data_config(cfg, training=True))
                                                                      ["sources"]))


class FeatureCache:
    """Frozen features of the first `clips` training clips (un-augmented: one centre view), encoded once into
    `<dir>/tokens.npy` and read back a batch at a time through a memory map, so host memory does not grow with the
    number of clips. Batches are epochs of a seeded permutation, a function of the step (exact resume without a data
    iterator). For runs whose augmentation would be wasted anyway (none configured) or that cannot afford encoding
    every epoch (the demo)."""

    def __init__(self, directory: str):
        self.directory = directory
        self.tokens = np.load(os.path.join(directory, "tokens.npy"), mmap_mode="r")
        self.labels = np.load(os.path.join(directory, "labels.npy"))

    @classmethod
    def build(cls, pg: pg_lib.ProbeGrid, enc_params, cfg: ml_collections.ConfigDict, directory: str, clips: int, *,
              progress: bool = True) -> "FeatureCache":
        from tqdm import tqdm

        from jepa.data.pipeline import make_dataset

        done = os.path.join(directory, "complete.json")
        stamp = {"encoder_bundle": os.path.abspath(cfg.encoder_bundle), "clips": clips, "layers": list(pg.layers),
                 "future_steps": pg.future_steps,
                 "data": cfg.data.to_json_best_effort()}
        if os.path.exists(done):
            with open(done) as f:
                if json.load(f) == stamp:
                    return cls(directory)
        os.makedirs(directory, exist_ok=True)
        c = data_config(cfg, training=False)
        c.update(num_views=1, num_segments=1)
        encode = jax.jit(lambda e, v: pg_lib.tokens(pg, e, v))
        it = iter(make_dataset(c, split="train", seed=cfg.seed, shard_index=0, shard_count=1))
        out, labels, n = None, [], 0
        bar = tqdm(total=clips, desc="features", unit="clip", disable=not progress, mininterval=1.0)
        try:
            for batch in it:
                keep = np.asarray(batch["valid"], bool)
                video = np.asarray(batch["video"])[keep]
                x = np.asarray(encode(enc_params, video.reshape((-1,) + video.shape[-4:])))[:clips - n]
                if out is None:
                    out = np.lib.format.open_memmap(os.path.join(directory, "tokens.npy"), mode="w+",
                                                    dtype=np.float32, shape=(clips,) + x.shape[1:])
                out[n:n + len(x)] = x
                labels.append(np.asarray(batch["label"])[keep][:len(x)])
                n += len(x)
                bar.update(len(x))
                if n >= clips:
                    break
        finally:
            bar.close()
            it.close()
        if n < clips:
            raise ConfigError(f"train.epoch_clips={clips} but the training split has only {n} usable clips")
        out.flush()
        del out
        np.save(os.path.join(directory, "labels.npy"), np.concatenate(labels))
        with open(done, "w") as f:
            json.dump(stamp, f)
        return cls(directory)

    def batch(self, step: int, batch_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """The batch of 1-based `step`: epoch (step - 1) // steps_per_epoch of a permutation seeded by the epoch."""
        n = len(self.labels)
        per_epoch = max(1, n // batch_size)
        epoch, i = divmod(step - 1, per_epoch)
        idx = np.sort(np.random.default_rng([seed, epoch]).permutation(n)[i * batch_size:(i + 1) * batch_size])
        return np.asarray(self.tokens[idx]), self.labels[idx]


def evaluate(pg: pg_lib.ProbeGrid, params, enc_params, cfg: ml_collections.ConfigDict, *, mesh,
             progress: bool = True) -> dict:
    """Every probe's validation metrics (jepa.probe.metrics) over the evaluation split."""
    from tqdm import tqdm

    from jepa.data.pipeline import make_dataset
    from jepa.probe.metrics import Accumulator

    heads = len(cfg.num_classes)
    accs = [Accumulator(len(pg.grid), int(c), confusion=cfg.task == "classification" and int(c) <= 1000)
            for c in cfg.num_classes]
    probs_fn = jax.jit(lambda p, e, v: pg_lib.eval_probs(pg, p, e, v))
    it = iter(make_dataset(data_config(cfg, training=False), split=cfg.eval.split, seed=cfg.seed))
    seen = 0
    bar = tqdm(desc="evaluate", unit="clip", disable=not progress or jax.process_index() != 0, mininterval=1.0)
    try:
        for batch in it:
            with mesh:
                out = probs_fn(params, enc_params, sharding.global_batch({"video": batch["video"]}, mesh)["video"])
            out = [np.asarray(jax.device_get(o)) for o in out]
            labels = np.asarray(batch["label"]).reshape(len(batch["valid"]), -1)
            valid = np.asarray(batch["valid"], bool)
            for h in range(heads):
                y = labels[:, h]
                accs[h].update(out[h], np.where(y >= 0, y, 0), valid & (y >= 0))  # unseen actions (-1) left out
            seen += int(valid.sum())
            bar.update(int(valid.sum()))
            if cfg.eval.max_clips and seen >= cfg.eval.max_clips:
                break
    finally:
        bar.close()
        it.close()
    if jax.process_count() > 1:  # each process evaluated its share of the records: add up the counts
        from jax.experimental import multihost_utils

        for acc in accs:
            for name in ("top1_correct", "topk_correct", "class_count", "class_topk", "confusion"):
                if getattr(acc, name) is not None:
                    setattr(acc, name, np.asarray(multihost_utils.process_allgather(getattr(acc, name))).sum(0))
            acc.count = int(np.asarray(multihost_utils.process_allgather(np.asarray(acc.count))).sum())
        seen = int(np.asarray(multihost_utils.process_allgather(np.asarray(seen))).sum())
    results = {"clips": seen, "skipped_records": it.skips.state()}
    names = ["label"] if heads == 1 else ["verb", "noun", "action"]
    for name, acc in zip(names, accs):
        results[name] = acc.result()
    return results


def train(cfg: ml_collections.ConfigDict, workdir: str, *, progress: bool = True) -> dict:
    """Trains (or resumes) the probe grid in `workdir` and evaluates it; returns the results."""
    from jepa.data.pipeline import make_dataset
    from jepa.models.io import load_bundle
    from jepa.probe import report

    validate(cfg)
    distributed.initialize()
    save_run_config(cfg, workdir)
    future = int(cfg.get("future_steps", 0) or 0)
    models = load_bundle(cfg.encoder_bundle, ["encoder", "predictor"] if future else ["encoder"])
    encoder, predictor = models["encoder"], models.get("predictor")
    layers = tuple(cfg.get("layers", ()) or ())
    probe_cfg = ProbeConfig(embed_dim=encoder.cfg.width * max(1, len(layers)), num_queries=len(cfg.num_classes),
                            num_classes=tuple(int(c) for c in cfg.num_classes), num_heads=cfg.probe.num_heads,
                            depth=cfg.probe.depth)
    clips = cfg.train.epoch_clips or source_records(cfg, "train")
    steps_per_epoch = max(1, clips // cfg.train.batch_size)
    total = cfg.train.epochs * steps_per_epoch
    grid = pg_lib.Grid(tuple(map(float, cfg.grid.lrs)), tuple(map(float, cfg.grid.wds)))
    pg = pg_lib.make(encoder, probe_cfg, grid, task=cfg.task, total_steps=total,
                     warmup_steps=int(cfg.train.warmup_epochs * steps_per_epoch), layers=layers, predictor=predictor,
                     future_steps=future)
    enc_params = pg_lib.feature_params(pg, encoder, predictor)
    mesh = sharding.make_mesh(dict(cfg.mesh))
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    enc_params = jax.device_put(enc_params, rep)

    cached = cfg.get("features", "online") == "cache"
    if cached:  # encoded once; the steps read features
        cache = FeatureCache.build(pg, enc_params, cfg, os.path.join(workdir, "features"), clips, progress=progress)
        data = None
    else:
        data = iter(make_dataset(data_config(cfg, training=True), split="train", seed=cfg.seed))
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=2, every=cfg.train.checkpoint_every)
    abstract = jax.eval_shape(lambda: pg_lib.init_state(pg, cfg.seed))
    shard = jax.tree.map(lambda _: rep, abstract)
    start = 0
    if ckpt.latest_step() is not None:
        start, state = ckpt.restore(with_shardings(abstract, shard), data)  # data: None with cached features
    else:
        state = pg_lib.init_state(pg, cfg.seed)
        if cfg.get("probe_bundle"):  # every probe of the grid starts from a trained (e.g. converted) probe
            probe = load_bundle(cfg.probe_bundle, ["probe"])["probe"]
            if probe.cfg != probe_cfg:
                raise ConfigError(f"probe_bundle {cfg.probe_bundle!r} holds a probe {probe.cfg}, the config makes "
                                  f"{probe_cfg}")
            trained = nnx.to_pure_dict(nnx.state(probe, nnx.Param))
            state["params"] = jax.tree.map(lambda x: jax.numpy.broadcast_to(x, (len(grid),) + x.shape), trained)
        state = jax.device_put(state, rep)
    if cached:
        step_fn = jax.jit(lambda s, e, b: pg_lib.update(pg, s, b["tokens"], b["label"]), donate_argnums=0,
                          out_shardings=(shard, rep))
    else:
        step_fn = jax.jit(lambda s, e, b: pg_lib.train_step(pg, s, e, b), donate_argnums=0,
                          out_shardings=(shard, rep))
    logger = RunLogger(workdir, total_steps=total, initial_step=start, desc="probe")
    logger.text("setup", f"{len(grid)} probes (lr {list(grid.lrs)} x wd {list(grid.wds)}); {cfg.train.epochs} epochs "
                         f"of {steps_per_epoch} steps; {'resumed at step ' + str(start) if start else 'fresh start'}")
    stop = StopSignal()
    t0 = time.time()
    stopped = None
    try:
        with mesh:
            for step in range(start + 1, total + 1):
                if cached:
                    x, y = cache.batch(step, cfg.train.batch_size, cfg.seed)
                    batch = sharding.global_batch({"tokens": x, "label": y}, mesh)
                else:
                    local = next(data)
                    batch = sharding.global_batch({"video": local["video"], "label": local["label"]}, mesh)
                state, m = step_fn(state, enc_params, batch)
                m = jax.device_get(m)
                loss = np.asarray(m["loss"])
                logger.log(step, {"loss_min": float(loss.min()), "loss_mean": float(loss.mean()),
                                  "lr_scale": float(m["lr_scale"]),
                                  "data_skipped": float(data.skips.skipped if data else 0)})
                if ckpt.should_save(step) or step == total:
                    ckpt.save(step, state, data)
                if stop.any_process_requested():
                    ckpt.save(step, state, data, force=True)
                    stopped = step
                    break
    finally:
        ckpt.close()
        stop.restore()
        if data is not None:
            data.close()
            logger.text("data", data.skips.summary())
        logger.close(plot_keys=("loss_min", "loss_mean"))
    if stopped is not None and stopped < total:
        print(f"[probe] stopped by SIGTERM at step {stopped} of {total}: checkpoint saved; run again to resume")
        return {"stopped_at_step": stopped}
    results = evaluate(pg, state["params"], enc_params, cfg, mesh=mesh, progress=progress)
    results.update({"task": cfg.task, "grid": [list(p) for p in grid.pairs], "train_steps": total,
                    "train_seconds": time.time() - t0, "encoder_bundle": str(cfg.encoder_bundle)})
    if jax.process_index() == 0:
        results["summary"] = report.write_results(workdir, results, grid.pairs, cfg.task, class_names=None)
    return results


def main(argv: list[str]) -> int:
    rest, overrides = split_args(argv)
    ap = argparse.ArgumentParser(prog="jepa probe", description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="configs/probe/<name>.py")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(rest)
    results = train(load_config(args.config, overrides), args.workdir, progress=not args.quiet)
    if "summary" in results:
        b = results["summary"]["best"]
        if results["task"] == "classification":
            what = f"top-1 {100 * b['top1']:.1f}%, top-5 {100 * b['top5']:.1f}%"
        else:
            what = ", ".join(f"{h} recall@5 {100 * b[h]['mean_class_recall5']:.1f}%" for h in ("verb", "noun", "action"))
        print(f"[probe] best of {len(results['grid'])} probes (lr {b['lr']:g}, wd {b['wd']:g}): {what}; "
              f"{args.workdir}/results.md")
    return 0
