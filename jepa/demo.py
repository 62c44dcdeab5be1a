"""`make demo`: the main job end to end on the embedded default data, no downloads, in about 15 minutes on 2 cores.

Stages (each resumes or is skipped when its outputs exist in --workdir):
  1. data      embedded synthetic motion videos -> ArrayRecord shards (+ a preview GIF)
  2. robot     `jepa collect`: exploratory episodes of the MuJoCo reach and push tasks as RLDS datasets (push also
               from contact starts), and the same episodes as video shards for pretraining
  3. pretrain  V-JEPA 2 pretraining of a small ViT (configs/pretrain/demo.py) on a mixture of the synthetic
               videos and the robot videos (--robot-video-weight), TensorBoard + loss curves PNG
  4. probe     attentive probes on frozen features: the pretrained encoder vs the same encoder at random init,
               on the motion task (which no single frame solves); results JSON + bar chart PNG
  5. ac        `jepa train-ac`: the action-conditioned predictor on the frozen pretrained encoder, trained on the
               reach and push episodes; held-out rollout L1 vs the copy-the-last-frame baseline
  6. plan      `jepa eval-planner` on reach and push (configs/plan/): latent CEM with the world model vs random,
               zero and an oracle CEM on the true simulator, 20 fixed episodes each
  7. report    runs/demo/report.md: every number and picture of the run in one page
`--fast` runs the same chain at toy sizes (a minute or two; the tests run it).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository: configs/ live there


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
                   robot_weight: float = 1.0, spec: str = "") -> str:
    from jepa.config import load_config
    from jepa.train.pretrain import train

    cfg = load_config(os.path.join(ROOT, "configs/pretrain/demo.py") + (f":{spec}" if spec else ""), overrides)
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
              f"{mean(last, 'loss'):.4f} (prediction L1 {mean(first, 'pred_loss'):.4f} -> "
              f"{mean(last, 'pred_loss'):.4f}); "
              f"target std {mean(first, 'target_std'):.3f} -> {mean(last, 'target_std'):.3f}, "
              f"within clips {mean(first, 'target_token_std'):.3f} -> {mean(last, 'target_token_std'):.3f}")
    return out


# The demo's probe protocol (also used by benchmarks/probe_margin.py): the best of these is reported.
# With 8-10 epochs lr 1e-3 has not converged (a 10-epoch run: 16.6% vs 45.7% / 42.4% at 3e-3 / 1e-2 pretrained,
# 14.5% vs 32.6% / 35.0% random init): not worth a third of the stage's time.
PROBE_LRS, PROBE_WDS, PROBE_HEADS = (3e-3, 1e-2), (0.05,), 4


def stage_probe(workdir: str, data_dir: str, pretrain_dir: str, *, num_train: int, num_val: int, epochs: int,
                probe_depth: int = 0, seed: int = 0) -> dict:
    """`jepa probe` (configs/probe/demo.py) on the pretrained encoder and on the same encoder at random init."""
    from flax import nnx

    from jepa.config import load_config
    from jepa.models import VisionTransformer
    from jepa.models.io import load_bundle, save_bundle
    from jepa.probe.run import train as probe

    out = os.path.join(workdir, "probe")
    if os.path.exists(os.path.join(out, "results.json")):
        results = _load_json(os.path.join(out, "results.json"))
        print(f"[probe] done already: margin {results['margin_points']:+.1f} points ({out}/results.json)")
        return results
    os.makedirs(out, exist_ok=True)
    pretrained = os.path.join(pretrain_dir, "model")
    encoder = load_bundle(pretrained, ["encoder"])["encoder"]
    random_init = os.path.join(out, "random_init_encoder")
    save_bundle(random_init, {"encoder": VisionTransformer(encoder.cfg, rngs=nnx.Rngs(seed + 1))}, overwrite=True)

    results = {}
    for name, bundle in (("pretrained", pretrained), ("random_init", random_init)):
        cfg = load_config(os.path.join(ROOT, "configs/probe/demo.py"), [
            f"--config.encoder_bundle={bundle}", f"--config.seed={seed}",
            f"--config.data.sources=[{{'glob': '{data_dir}/synthetic-{{split}}-*.array_record'}}]",
            f"--config.train.epochs={epochs}", f"--config.train.epoch_clips={num_train}",
            "--config.train.batch_size=64", f"--config.train.warmup_epochs={0.1 * epochs}",
            f"--config.eval.max_clips={num_val}", f"--config.probe.depth={probe_depth}",
            f"--config.probe.num_heads={PROBE_HEADS}", f"--config.grid.lrs={list(PROBE_LRS)}",
            f"--config.grid.wds={list(PROBE_WDS)}"])
        t = time.time()
        res = probe(cfg, os.path.join(out, name))
        s = res["summary"]
        results[name] = {"best_val_accuracy": s["best"]["top1"], "best": {k: s["best"][k] for k in ("lr", "wd", "top1")},
                         "all": [{k: p[k] for k in ("lr", "wd", "top1")} for p in s["probes"]],
                         "train_seconds": time.time() - t}
        print(f"[probe] {name}: best val accuracy {100 * s['best']['top1']:.1f}% (lr {s['best']['lr']}, wd "
              f"{s['best']['wd']}); all: {[round(100 * p['top1'], 1) for p in s['probes']]}")
    margin = 100 * (results["pretrained"]["best_val_accuracy"] - results["random_init"]["best_val_accuracy"])
    results["margin_points"] = margin
    results["chance"] = 1.0 / load_config(os.path.join(ROOT, "configs/probe/demo.py")).num_classes[0]
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    _bar_chart(results, os.path.join(out, "probe.png"))
    print(f"[probe] pretrained beats random init by {margin:.1f} points (chance {100 * results['chance']:.1f}%); "
          f"{out}/probe.png")
    return results


# The robot datasets: name -> (task, start). Reach and push share one scene; push also starts in contact with the
# cube, as its planning episodes do.
ROBOT_DATASETS = {"reach": ("reach", "random"), "push": ("push", "random"), "push_contact": ("push", "contact")}


def stage_robot(workdir: str, episodes: dict[str, int], steps: int, size: int = 64) -> list[str]:
    """Collects the robot datasets (exploratory 'mixed' policy); returns their RLDS directories."""
    from planning.collect import collect

    paths = []
    for seed, (name, (task, start)) in enumerate(ROBOT_DATASETS.items()):
        out = os.path.join(workdir, "robot", name)
        path = os.path.join(out, "robot_episodes", task, "1.0.0")
        if not os.path.exists(os.path.join(path, "dataset_info.json")):
            t = time.time()
            path = str(collect(task, episodes[name], out, steps=steps, size=size, seed=seed, policy="mixed",
                               start=start, overwrite=True))
            print(f"[robot] {episodes[name]} {name} episodes x {steps} steps in {time.time() - t:.0f}s -> {path}")
        paths.append(path)
    return paths


def stage_robot_video(workdir: str, robot_paths: list[str]) -> str:
    from jepa.data.robot_video import write_robot_clips

    out = os.path.join(workdir, "robot_video")
    if not glob.glob(os.path.join(out, "robot-train-*.array_record")):
        t = time.time()
        write_robot_clips(robot_paths, out, size=64, num_shards=4, seed=0, overwrite=True, progress=False)
        print(f"[robot] episodes as pretraining video in {time.time() - t:.0f}s -> {out}")
    return out


def stage_ac(workdir: str, pretrain_dir: str, robot_paths: list[str], overrides: list[str], spec: str = "") -> dict:
    from jepa.config import load_config
    from jepa.train.ac import train

    out = os.path.join(workdir, "ac")
    if os.path.exists(os.path.join(out, "eval.json")) and os.path.exists(os.path.join(out, "model", "config.json")):
        with open(os.path.join(out, "eval.json")) as f:
            result = json.load(f)
        print(f"[ac] done already: held-out rollout L1 {result['rollout_l1_mean']:.4f} vs copy-last "
              f"{result['copy_l1_mean']:.4f} ({result['ratio_copy_over_rollout']:.2f}x lower)")
        return result
    cfg = load_config(os.path.join(ROOT, "configs/ac/demo.py") + (f":{spec}" if spec else ""), overrides)
    with cfg.unlocked():
        cfg.encoder_bundle = os.path.join(pretrain_dir, "model")
        cfg.data.paths = list(robot_paths)
    return train(cfg, out)


PLAN_TASKS = ("reach", "push")


def stage_plan(workdir: str, overrides: list[str], *, progress: bool = True) -> dict:
    """`jepa eval-planner` on each planning task with the AC stage's world model; results per task."""
    from jepa.config import load_config
    from planning.evaluate import evaluate

    results = {}
    for task in PLAN_TASKS:
        out = os.path.join(workdir, "plan", task)
        if os.path.exists(os.path.join(out, "results.json")):
            with open(os.path.join(out, "results.json")) as f:
                results[task] = json.load(f)
            print(f"[plan] {task} done already: {out}/results.json")
            continue
        cfg = load_config(os.path.join(ROOT, "configs/plan", f"{task}.py"), overrides)
        with cfg.unlocked():
            cfg.world_model = os.path.join(workdir, "ac", "model")
        results[task] = evaluate(cfg, out, progress=progress)
    return results


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


def stage_reacher(workdir: str, pretrain_dir: str, *, episodes: int, steps: int, ac_overrides: list[str],
                  plan_overrides: list[str], progress: bool = True) -> dict:
    """Optional (`--stages reacher`): gymnasium's Reacher-v5 as a goal-image task with a world model trained on its
    own episodes (recorded joint torques, configs/ac/reacher.py), then evaluated like reach and push."""
    from jepa.config import load_config
    from jepa.train.ac import train
    from planning.collect import collect
    from planning.evaluate import evaluate

    root = os.path.join(workdir, "reacher")
    data = os.path.join(root, "robot", "robot_episodes", "reacher", "1.0.0")
    if not os.path.exists(os.path.join(data, "dataset_info.json")):
        data = str(collect("reacher", episodes, os.path.join(root, "robot"), steps=steps, size=64, seed=7,
                           policy="mixed", overwrite=True))
    if not os.path.exists(os.path.join(root, "ac", "model", "config.json")):
        cfg = load_config(os.path.join(ROOT, "configs/ac/reacher.py"), ac_overrides)
        with cfg.unlocked():
            cfg.encoder_bundle = os.path.join(pretrain_dir, "model")
            cfg.data.paths = [data]
        if "stopped_at_step" in train(cfg, os.path.join(root, "ac")):
            return {}
    out = os.path.join(root, "plan")
    if os.path.exists(os.path.join(out, "results.json")):
        return _load_json(os.path.join(out, "results.json"))
    cfg = load_config(os.path.join(ROOT, "configs/plan/reacher.py"), plan_overrides)
    with cfg.unlocked():
        cfg.world_model = os.path.join(root, "ac", "model")
    return evaluate(cfg, out, progress=progress)


# What each stage runs. 'full' is `make demo` (about 14 minutes on 2 CPU cores); 'fast' is the same chain at toy
# sizes for the tests. Overrides go to configs/pretrain/demo.py, configs/ac/demo.py and configs/plan/<task>.py.
PROFILES = {
    "full": dict(train_clips=2048, val_clips=512, probe_train_clips=1024, probe_epochs=8, robot_steps=30,
                 robot_episodes={"reach": 150, "push": 100, "push_contact": 150},
                 reacher_episodes=300, reacher_steps=100,
                 pretrain_spec="", pretrain=[], ac_spec="", ac=[], plan=[]),
    "fast": dict(train_clips=64, val_clips=32, probe_train_clips=64, probe_epochs=2, robot_steps=6,
                 robot_episodes={"reach": 4, "push": 3, "push_contact": 3}, reacher_episodes=4, reacher_steps=20,
                 pretrain_spec="smoke", pretrain=["--config.train.steps=3", "--config.data.crop_size=64"],
                 ac_spec="smoke", ac=["--config.train.steps=4", "--config.train.eval_every=4"],
                 plan=["--config.episodes=2", "--config.steps=2", "--config.cem.samples=8", "--config.cem.elites=2",
                       "--config.cem.iterations=1", "--config.report.gifs=1", "--config.report.landscape_grid=3",
                       "--config.report.correlation_samples=4"]),
}
STAGES = ("data", "robot", "pretrain", "probe", "ac", "plan", "report")
OPTIONAL_STAGES = ("reacher",)  # not in the default run (its time is not in the 15 minutes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jepa.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="runs/demo")
    ap.add_argument("--fast", action="store_true", help="the whole chain at toy sizes (for tests)")
    ap.add_argument("--probe-depth", type=int, default=0, help="self-attention blocks before the probe's "
                    "cross-attention (the reference uses 3; 0 keeps the demo fast on a CPU)")
    ap.add_argument("--robot-video-weight", type=float, default=1.0,
                    help="mixture weight of the robot episodes' video in pretraining (synthetic videos: 1; 0: none)")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--quiet", action="store_true", help="no progress bars in the planning stage")
    args, overrides = ap.parse_known_args(argv)
    prof = PROFILES["fast" if args.fast else "full"]
    # --config.x=v overrides go to the pretraining config; --ac.config.x=v to the AC config; --plan.config.x=v to
    # both planning configs.
    ac_overrides = prof["ac"] + ["--config." + o[len("--ac.config."):] for o in overrides
                                 if o.startswith("--ac.config.")]
    plan_overrides = prof["plan"] + ["--config." + o[len("--plan.config."):] for o in overrides
                                     if o.startswith("--plan.config.")]
    unknown = [o for o in overrides if not o.startswith(("--config.", "--ac.config.", "--plan.config."))]
    if unknown:
        ap.error(f"unrecognized arguments: {' '.join(unknown)}")
    pre_overrides = prof["pretrain"] + [o for o in overrides if o.startswith("--config.")]
    stages = args.stages.split(",")
    bad = [s for s in stages if s not in STAGES + OPTIONAL_STAGES]
    if bad:
        ap.error(f"unknown stage(s) {bad}; choose from {','.join(STAGES + OPTIONAL_STAGES)}")
    wd = args.workdir
    os.makedirs(wd, exist_ok=True)
    timings = _load_json(os.path.join(wd, "timings.json"))
    t0 = time.time()

    def timed(name, fn, *a, **kw):
        t = time.time()
        out = fn(*a, **kw)
        timings[name] = timings.get(name, 0.0) + (time.time() - t)
        with open(os.path.join(wd, "timings.json"), "w") as f:
            json.dump(timings, f, indent=2)
        return out

    data_dir = timed("data", stage_data, wd, prof["train_clips"], prof["val_clips"])
    robot = robot_video = None
    if {"robot", "ac", "pretrain"} & set(stages):
        robot = timed("robot", stage_robot, wd, prof["robot_episodes"], prof["robot_steps"])
        if args.robot_video_weight > 0:
            robot_video = timed("robot", stage_robot_video, wd, robot)
    pre = os.path.join(wd, "pretrain")
    if "pretrain" in stages:
        pre = timed("pretrain", stage_pretrain, wd, data_dir, pre_overrides, robot_video, args.robot_video_weight,
                    spec=prof["pretrain_spec"])
    if "probe" in stages:
        timed("probe", stage_probe, wd, data_dir, pre, num_train=prof["probe_train_clips"],
              num_val=prof["val_clips"], epochs=prof["probe_epochs"], probe_depth=args.probe_depth)
    if "ac" in stages:
        if "stopped_at_step" in timed("ac", stage_ac, wd, pre, robot, ac_overrides, spec=prof["ac_spec"]):
            print("[demo] stopped during the AC stage (SIGTERM); run the same command again to resume")
            return 0
    if "plan" in stages:
        timed("plan", stage_plan, wd, plan_overrides, progress=not args.quiet)
    if "reacher" in stages:
        timed("reacher", stage_reacher, wd, pre, episodes=prof["reacher_episodes"], steps=prof["reacher_steps"],
              ac_overrides=ac_overrides, plan_overrides=plan_overrides, progress=not args.quiet)
    if "report" in stages:
        path = write_report(wd, timings)
        print(f"[demo] report: {path}")
    print(f"[demo] done in {time.time() - t0:.0f}s (stage seconds: "
          f"{ {k: round(v) for k, v in timings.items()} }); TensorBoard: tensorboard --logdir {wd}")
    return 0


def _load_json(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def write_report(workdir: str, timings: dict) -> str:
    """runs/demo/report.md: every number and picture of the run, linked relative to the report."""
    from planning.evaluate import markdown_table

    wd = workdir
    j = lambda *p: _load_json(os.path.join(wd, *p))  # noqa: E731
    lines = ["# jepa demo report", "",
             "Everything below was produced by one `make demo` run in this directory (`python -m jepa.demo`).", ""]
    main = {k: v for k, v in timings.items() if k not in OPTIONAL_STAGES}
    total = sum(main.values())
    lines += ["## Time per stage", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in main.items()]
    lines += [f"| **total** | **{total:.0f}** ({total / 60:.1f} min) |"]
    lines += [f"| {k} (optional, not in the total) | {v:.0f} |" for k, v in timings.items() if k in OPTIONAL_STAGES]
    lines += [""]
    lines += ["## Data", "", "Synthetic motion videos (label: the target shape's direction of motion): "
              "![preview](data/preview.gif)", ""]
    robot = sorted(glob.glob(os.path.join(wd, "robot", "*", "robot_episodes", "*", "1.0.0", "dataset_info.json")))
    if robot:
        lines += ["Robot episodes (exploratory policy, RLDS): " + ", ".join(
            os.path.relpath(os.path.dirname(p), wd) for p in robot), ""]
    hist = os.path.join(wd, "pretrain", "metrics.jsonl")
    if os.path.exists(hist):
        with open(hist) as f:
            rows = [json.loads(line) for line in f]
        if rows:
            k = max(1, len(rows) // 10)
            mean = lambda rs, key: float(np.mean([r[key] for r in rs if key in r]))  # noqa: E731
            lines += ["## Pretraining", "",
                      f"{len(rows)} steps; loss {mean(rows[:k], 'loss'):.3f} -> {mean(rows[-k:], 'loss'):.3f}; "
                      f"target std within clips {mean(rows[:k], 'target_token_std'):.3f} -> "
                      f"{mean(rows[-k:], 'target_token_std'):.3f}.", "", "![curves](pretrain/curves.png)", ""]
    probe = j("probe", "results.json")
    if probe:
        lines += ["## Probe (motion direction, frozen features)", "",
                  f"pretrained {100 * probe['pretrained']['best_val_accuracy']:.1f}% vs random init "
                  f"{100 * probe['random_init']['best_val_accuracy']:.1f}% (margin {probe['margin_points']:+.1f} "
                  f"points; chance {100 * probe['chance']:.1f}%).", "", "![probe](probe/probe.png)", ""]
    ac = j("ac", "eval.json")
    if ac:
        lines += ["## World model (AC predictor)", "",
                  f"Held-out {len(ac['rollout_l1'])}-step rollout latent L1 {ac['rollout_l1_mean']:.4f} vs copy-last "
                  f"{ac['copy_l1_mean']:.4f}: **{ac['ratio_copy_over_rollout']:.2f}x** lower ({ac['clips']} clips).",
                  "", "![rollout](ac/rollout_l1.png)", ""]
    plans = {t: j("plan", t, "results.json") for t in PLAN_TASKS}
    plans = {t: r for t, r in plans.items() if r}
    reacher = j("reacher", "plan", "results.json")
    if plans:
        from planning.pictures import success_bars

        success_bars({t: r["methods"] for t, r in plans.items()}, os.path.join(wd, "plan", "success.png"),
                     title="goal-image planning: success with 95% Wilson intervals")
        lines += ["## Planning toward goal images", "", markdown_table(plans), "", "![success](plan/success.png)", ""]
        for t in plans:
            lines += [f"### {t}", "", "Energy landscape (first action's dx, dy) beside the true distance:", "",
                      f"![landscape](plan/{t}/landscape.png)", ""]
            gifs = sorted(glob.glob(os.path.join(wd, "plan", t, "episode_*.gif")))
            lines += [" ".join(f"![{os.path.basename(g)}](plan/{t}/{os.path.basename(g)})" for g in gifs), ""]
    if reacher:
        lines += ["## gymnasium Reacher-v5 (optional stage `reacher`)", "",
                  "A world model trained on Reacher's own episodes (recorded joint torques, frame stride 5):", "",
                  markdown_table({"reacher": reacher}), "", "![landscape](reacher/plan/landscape.png)", ""]
    path = os.path.join(wd, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


if __name__ == "__main__":
    import sys

    from jepa.cli import run_reporting_errors

    raise SystemExit(run_reporting_errors("python -m jepa.demo", main, sys.argv[1:]))
