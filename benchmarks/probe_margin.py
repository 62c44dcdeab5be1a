"""The motion probe's margin with error bars: a pretrained encoder vs several random-init encoders of its config.

Each encoder (the bundle's EMA `encoder`, and the same config initialised with each of `--random-seeds`) is probed
as the demo does (attentive probe, best of the demo's lrs, `--epochs`) once per probe seed. One probe run moves by
about 1.5 points with the probe seed and a random-init encoder by about 4.5 with its init seed, so a margin
claimed from one pair of runs is mostly noise; this prints every run, the means and the worst case.

`--symmetries 16` also trains the probes on the task's 16 label-exact symmetries of every training clip (flips,
transpose, time reversal, labels remapped: `jepa.data.synthetic.direction_symmetries`), 16x the training views; the
probe then overfits far less (validation clips are not transformed). Pass `--epochs 4` with it (2,048 probe steps;
30 epochs of the demo's 2,048 clips are 960). Features are extracted in this process.

    python -m benchmarks.probe_margin [--bundle runs/demo/pretrain/model] [--data runs/demo/data]
        [--random-seeds 1,2,3] [--probe-seeds 0] [--symmetries 1] [--epochs 30] [--no-write]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import numpy as np

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.md")


def _clips(data_dir: str, split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n clips of a split as the probe sees them: 8 frames, 64 px, one centre view, in order."""
    from jepa.data.pipeline import make_dataset
    from jepa.data.synthetic import synthetic_config

    cfg = synthetic_config(data_dir, num_frames=8, crop_size=64, eval=True, shuffle=False, repeat=False,
                           batch_size=32, drop_remainder=False)
    vs, ys = [], []
    for b in make_dataset(cfg, split=split, seed=0, shard_index=0, shard_count=1):
        vs.append(np.asarray(b["video"]).reshape((-1,) + b["video"].shape[-4:]))
        ys.append(np.asarray(b["label"]))
        if sum(map(len, ys)) >= n:
            break
    v, y = np.concatenate(vs)[:n], np.concatenate(ys)[:n]
    if len(y) < n:
        raise SystemExit(f"{data_dir}: only {len(y)} {split} clips, asked for {n}")
    return v, y


def _features(encoder, views, num: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Features of `num` clips given as (video, labels) views, in batches of 64, through one jitted encoder."""
    from jepa.probe.train import extract_features

    batches = ({"video": v[i:i + 64], "label": y[i:i + 64]} for v, y in views for i in range(0, len(v), 64))
    return extract_features(encoder, batches, num, progress=False, dtype=dtype)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.probe_margin", description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default="runs/demo/pretrain/model")
    ap.add_argument("--data", default="runs/demo/data")
    ap.add_argument("--random-seeds", default="1,2,3")
    ap.add_argument("--probe-seeds", default="0")
    ap.add_argument("--symmetries", type=int, default=1, choices=(1, 2, 4, 8, 16),
                    help="training views per clip (1: the demo's protocol)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--train-clips", type=int, default=2048)
    ap.add_argument("--val-clips", type=int, default=512)
    ap.add_argument("--no-write", action="store_true", help=f"do not append the table to {RESULTS}")
    args = ap.parse_args(argv)

    from flax import nnx

    from jepa.data.synthetic import apply_symmetry, direction_symmetries
    from jepa.demo import PROBE_HEADS, PROBE_LRS, PROBE_WDS
    from jepa.models import ProbeConfig, VisionTransformer
    from jepa.models.io import load_bundle
    from jepa.probe.train import best, train_probes

    random_seeds = [int(s) for s in args.random_seeds.split(",") if s]
    probe_seeds = [int(s) for s in args.probe_seeds.split(",") if s]
    t0 = time.time()
    vtr, ytr = _clips(args.data, "train", args.train_clips)
    vva, yva = _clips(args.data, "validation", args.val_clips)
    symmetries = direction_symmetries()[:args.symmetries]
    print(f"clips: {len(ytr)} train x {len(symmetries)} views, {len(yva)} validation ({time.time() - t0:.0f}s)",
          flush=True)

    pretrained = load_bundle(args.bundle, ["encoder"])["encoder"]
    encoders = [("pretrained", pretrained)] + [
        (f"random init {s}", VisionTransformer(pretrained.cfg, rngs=nnx.Rngs(s))) for s in random_seeds]
    dtype = np.float32 if len(symmetries) == 1 else np.float16  # 16 views of 2,048 clips: 1.6 GB in float16
    acc: dict[str, list[float]] = {}
    for name, enc in encoders:
        t = time.time()
        views = (apply_symmetry(vtr, ytr, sym) for sym in symmetries)  # each made when it is encoded
        train = _features(enc, views, len(ytr) * len(symmetries), dtype)
        val = _features(enc, [(vva, yva)], len(yva), np.float32)
        pcfg = ProbeConfig(embed_dim=enc.cfg.width, num_classes=(int(max(ytr.max(), yva.max())) + 1,),
                           num_heads=PROBE_HEADS, depth=0)
        acc[name] = []
        for ps in probe_seeds:
            b = best(train_probes(train, val, pcfg, epochs=args.epochs, seed=ps, lrs=PROBE_LRS, wds=PROBE_WDS,
                                  progress=False))
            acc[name].append(100 * b.val_accuracy)
        print(f"{name}: {' / '.join(f'{a:.1f}' for a in acc[name])}% ({time.time() - t:.0f}s)", flush=True)

    pre = acc["pretrained"]
    rand = [a for n, a in acc.items() if n != "pretrained"]
    rand_all = [a for r in rand for a in r]
    mean_margin = float(np.mean(pre) - np.mean(rand_all))
    worst = float(min(pre) - max(rand_all))
    summary = (f"margin {mean_margin:+.1f} points (mean pretrained {np.mean(pre):.1f}% vs mean random init "
               f"{np.mean(rand_all):.1f}%); worst case {worst:+.1f} (lowest pretrained run vs highest random one)")
    print(summary)

    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [f"## Probe margin ({stamp}; {os.cpu_count()} CPUs, {platform.machine()}, load average {load})", "",
             f"`{args.bundle}` on `{args.data}`: {len(ytr)} train clips x {len(symmetries)} views, "
             f"{len(yva)} validation; best of lr {list(PROBE_LRS)}, {args.epochs} epochs; probe seeds {probe_seeds}.",
             "",
             "| encoder | " + " | ".join(f"probe seed {s}" for s in probe_seeds) + " |",
             "|---|" + "---|" * len(probe_seeds)]
    lines += [f"| {n} | " + " | ".join(f"{a:.1f}%" for a in v) + " |" for n, v in acc.items()]
    lines += ["", summary + ".", ""]
    if not args.no_write:
        with open(RESULTS, "a") as f:
            f.write("\n" + "\n".join(lines))
        print(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
