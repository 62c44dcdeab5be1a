"""`make demo`: the main job end to end on the embedded default data, no downloads.

Stages (each resumes or is skipped when its outputs exist in --workdir):
  1. data      embedded synthetic motion videos -> ArrayRecord shards (+ a preview GIF)
  2. robot     `jepa collect`: exploratory episodes of the MuJoCo push task as an RLDS dataset, and the same
               episodes as video shards for pretraining (jepa.data.robot_video)
  3. pretrain  V-JEPA 2 pretraining of a small ViT (configs/pretrain/demo.py) on a mixture of the synthetic
               videos and the robot videos (--robot-video-weight), TensorBoard + loss curves PNG
  4. probe     attentive probes on frozen features: the pretrained encoder vs the same encoder at random init,
               on the motion task (which no single frame solves); results JSON + bar chart PNG
  5. ac        `jepa train-ac`: the action-conditioned predictor on the frozen pretrained encoder; held-out
               multi-step rollout L1 vs the copy-the-last-frame baseline (eval.json, rollout_l1.png)
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import time

import jax
import numpy as np


def stage_data(workdir: str, num_train: int, num_val: int) -> str:
    from jepa.data import synthetic

    data_dir = os.path.join(workdir, "data")
    if not glob.glob(os.path.join(data_dir, "synthetic-validation-*.array_record")):
        t = time.time()
        written = synthetic.write_synthetic(data_dir, num_train=num_train, num_val=num_val, num_shards=4, seed=0,
                                            size=64, frames=16)
        clips, labels, names = synthetic.load_clips(written["validation"], 8)
        synthetic.save_preview(clips, names, os.path.join(data_dir, "preview.gif"))
        print(f"[data] {num_train} + {num_val} clips in {time.time() - t:.0f}s -> {data_dir} (preview.gif)")
    return data_dir


def stage_pretrain(workdir: str, data_dir: str, overrides: list[str], robot_video: str | None = None,
                   robot_weight: float = 1.0) -> str:
    from jepa.config import load_config
    from jepa.train.pretrain import train

    cfg = load_config("configs/pretrain/demo.py", overrides)
    with cfg.unlocked():
        cfg.data.sources = [{"glob": os.path.join(data_dir, "synthetic-{split}-*.array_record"), "weight": 1.0}]
        if robot_video:  # mixed in with `robot_weight` (the synthetic videos weigh 1)
            cfg.data.sources.append({"glob": os.path.join(robot_video, "robot-{split}-*.array_record"),
                                     "weight": robot_weight})
    out = os.path.join(workdir, "pretrain")
    if os.path.exists(os.path.join(out, "model", "config.json")):
        print(f"[pretrain] done already: {out}")
        return out
    t = time.time()
    hist = train(cfg, out)
    if hist:
        first, last = hist[: max(1, len(hist) // 10)], hist[-max(1, len(hist) // 10):]
        mean = lambda rows, k: float(np.mean([r[k] for r in rows]))
        print(f"[pretrain] {len(hist)} steps in {time.time() - t:.0f}s: loss {mean(first, 'loss'):.4f} -> "
              f"{mean(last, 'loss'):.4f} (prediction L1 {mean(first, 'pred_loss'):.4f} -> {mean(last, 'pred_loss'):.4f}); "
              f"target std {mean(first, 'target_std'):.3f} -> {mean(last, 'target_std'):.3f}, "
              f"within clips {mean(first, 'target_token_std'):.3f} -> {mean(last, 'target_token_std'):.3f}")
    return out


# The demo's probe protocol (also used by benchmarks/probe_margin.py): the best of these is reported.
PROBE_LRS, PROBE_WDS, PROBE_HEADS = (1e-3, 3e-3, 1e-2), (0.05,), 4


def probe_batches(data_dir: str, split: str, seed: int = 0, batch_size: int = 32):
    """Eval batches of the synthetic clips for probing: 8 frames, 64 px, in order, once; video [B, T, H, W, C]."""
    from jepa.data.pipeline import make_dataset, synthetic_config

    cfg = synthetic_config(data_dir, num_frames=8, crop_size=64, eval=True, shuffle=False, repeat=False,
                           batch_size=batch_size, drop_remainder=False)
    for b in make_dataset(cfg, split=split, seed=seed, shard_index=0, shard_count=1):
        v = b["video"]  # eval batches are [B, views, segments, T, H, W, C]; one view and one segment here
        yield {**b, "video": v.reshape((-1,) + v.shape[-4:])}


def stage_probe(workdir: str, data_dir: str, pretrain_dir: str, *, num_train: int, num_val: int, epochs: int,
                probe_depth: int = 0, seed: int = 0) -> dict:
    from flax import nnx

    from jepa.models import ProbeConfig, VisionTransformer
    from jepa.models.io import load_bundle
    from jepa.probe.train import best, extract_features, train_probes

    out = os.path.join(workdir, "probe")
    os.makedirs(out, exist_ok=True)
    encoder = load_bundle(os.path.join(pretrain_dir, "model"), ["encoder"])["encoder"]
    random_encoder = VisionTransformer(encoder.cfg, rngs=nnx.Rngs(seed + 1))

    results = {}
    for name, enc in (("pretrained", encoder), ("random_init", random_encoder)):
        tr = extract_features(enc, probe_batches(data_dir, "train", seed), num_train)
        va = extract_features(enc, probe_batches(data_dir, "validation", seed), num_val)
        pcfg = ProbeConfig(embed_dim=enc.cfg.width, num_classes=(int(max(tr[1].max(), va[1].max())) + 1,),
                           num_heads=PROBE_HEADS, depth=probe_depth)
        t = time.time()
        res = train_probes(tr, va, pcfg, epochs=epochs, seed=seed, lrs=PROBE_LRS, wds=PROBE_WDS)
        b = best(res)
        results[name] = {"best_val_accuracy": b.val_accuracy, "best": vars(b), "all": [vars(r) for r in res],
                         "train_seconds": time.time() - t}
        print(f"[probe] {name}: best val accuracy {100 * b.val_accuracy:.1f}% (lr {b.lr}, wd {b.weight_decay}); "
              f"all: {[round(100 * r.val_accuracy, 1) for r in res]}")
    margin = 100 * (results["pretrained"]["best_val_accuracy"] - results["random_init"]["best_val_accuracy"])
    results["margin_points"] = margin
    results["chance"] = 1.0 / pcfg.num_classes[0]
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    _bar_chart(results, os.path.join(out, "probe.png"))
    print(f"[probe] pretrained beats random init by {margin:.1f} points (chance {100 * results['chance']:.1f}%); "
          f"{out}/probe.png")
    return results


def stage_robot(workdir: str, episodes: int, steps: int) -> str:
    from planning.collect import collect

    out = os.path.join(workdir, "robot")
    path = os.path.join(out, "robot_episodes", "push", "1.0.0")
    if not os.path.exists(os.path.join(path, "dataset_info.json")):
        t = time.time()
        path = str(collect("push", episodes, out, steps=steps, size=64, seed=0, policy="mixed"))
        print(f"[robot] {episodes} push episodes x {steps} steps in {time.time() - t:.0f}s -> {path}")
    return path


def stage_robot_video(workdir: str, robot_path: str) -> str:
    from jepa.data.robot_video import write_robot_clips

    out = os.path.join(workdir, "robot_video")
    if not glob.glob(os.path.join(out, "robot-train-*.array_record")):
        t = time.time()
        write_robot_clips([robot_path], out, size=64, num_shards=4, seed=0, overwrite=True, progress=False)
        print(f"[robot] episodes as pretraining video in {time.time() - t:.0f}s -> {out}")
    return out


def stage_ac(workdir: str, pretrain_dir: str, robot_path: str, overrides: list[str]) -> dict:
    from jepa.config import load_config
    from jepa.train.ac import train

    out = os.path.join(workdir, "ac")
    if os.path.exists(os.path.join(out, "eval.json")):
        with open(os.path.join(out, "eval.json")) as f:
            result = json.load(f)
        print(f"[ac] done already: held-out rollout L1 {result['rollout_l1_mean']:.4f} vs copy-last "
              f"{result['copy_l1_mean']:.4f} ({result['ratio_copy_over_rollout']:.2f}x lower)")
        return result
    cfg = load_config("configs/ac/demo.py", overrides)
    with cfg.unlocked():
        cfg.encoder_bundle = os.path.join(pretrain_dir, "model")
        cfg.data.paths = [robot_path]
    return train(cfg, out)


def _bar_chart(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["random_init", "pretrained"]
    vals = [100 * results[n]["best_val_accuracy"] for n in names]
    fig, ax = plt.subplots(figsize=(4, 3.2))
    ax.bar(names, vals, color=["#999999", "#3b75af"])
    ax.axhline(100 * results["chance"], ls="--", c="k", lw=1, label="chance")
    for i, v in enumerate(vals):
        ax.text(i, v + 1, f"{v:.1f}", ha="center")
    ax.set_ylabel("val accuracy (%)")
    ax.set_title("attentive probe, motion direction")
    ax.set_ylim(0, 105)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jepa.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="runs/demo")
    ap.add_argument("--train-clips", type=int, default=2048)
    ap.add_argument("--val-clips", type=int, default=512)
    ap.add_argument("--probe-epochs", type=int, default=30)
    ap.add_argument("--probe-depth", type=int, default=0, help="self-attention blocks before the probe's "
                    "cross-attention (the reference uses 3; 0 keeps the demo fast on a CPU)")
    ap.add_argument("--robot-episodes", type=int, default=400)
    ap.add_argument("--robot-steps", type=int, default=30)
    ap.add_argument("--robot-video-weight", type=float, default=1.0,
                    help="mixture weight of the robot episodes' video in pretraining (synthetic videos: 1; 0: none)")
    ap.add_argument("--stages", default="data,robot,pretrain,probe,ac")
    args, overrides = ap.parse_known_args(argv)
    # --config.x=v overrides go to the pretraining config; --ac.config.x=v to the AC config.
    ac_overrides = ["--config." + o[len("--ac.config."):] for o in overrides if o.startswith("--ac.config.")]
    overrides = [o for o in overrides if not o.startswith("--ac.config.")]
    stages = args.stages.split(",")
    t0 = time.time()
    data_dir = stage_data(args.workdir, args.train_clips, args.val_clips)
    robot = robot_video = None
    if "robot" in stages or "ac" in stages or ("pretrain" in stages and args.robot_video_weight > 0):
        robot = stage_robot(args.workdir, args.robot_episodes, args.robot_steps)
        if args.robot_video_weight > 0:
            robot_video = stage_robot_video(args.workdir, robot)
    pre = os.path.join(args.workdir, "pretrain")
    if "pretrain" in stages:
        pre = stage_pretrain(args.workdir, data_dir, overrides, robot_video, args.robot_video_weight)
    if "probe" in stages:
        stage_probe(args.workdir, data_dir, pre, num_train=args.train_clips, num_val=args.val_clips,
                    epochs=args.probe_epochs, probe_depth=args.probe_depth)
    if "ac" in stages:
        stage_ac(args.workdir, pre, robot, ac_overrides)
    print(f"[demo] done in {time.time() - t0:.0f}s; TensorBoard: tensorboard --logdir {args.workdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
