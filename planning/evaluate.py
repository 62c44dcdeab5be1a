"""`jepa eval-planner --config configs/plan/<task>.py --workdir DIR`: goal-image planning evaluated against baselines.

Fixed seeds give >= 20 episodes of one task (start state + a goal image reached from it by the task's expert); every
method gets the same episodes and the same step budget, and success is judged from the true simulator after the
budget (`../shared/spec/planning.md`):

  latent_cem   CEM in the world model's representation space (planning.cem.LatentPlanner), episodes vmapped
  oracle_cem   the same CEM, candidates scored by the simulator's true distance after running them
  random       uniform random actions in the searched bounds
  zero         no motion (how often the start already counts as success)

Writes to DIR: results.json (every metric and per-episode numbers), results.md (the table), success.png (success
with Wilson 95% intervals), landscape.png (the planner's energy over a 2-D slice of first actions beside the true
distance), episode_*.gif (observation | goal for a few latent-CEM episodes) and TensorBoard scalars (tb/).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import jax
import ml_collections
import numpy as np

METHODS = ("latent_cem", "oracle_cem", "random", "zero")


class PlanningError(ValueError):
    """A bad planning input (task, world model, goal image): reported in one line by the CLIs."""


# --- Set-up from a config ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Setup:
    cfg: ml_collections.ConfigDict
    env: object
    space: object  # planning.cem.ActionSpace
    cem: object  # planning.cem.CEMConfig
    model: object | None  # jepa.world_model.WorldModel
    action_repeat: int


def make_env(cfg: ml_collections.ConfigDict):
    import planning.envs as envs

    try:
        return envs.make(cfg.task, size=int(cfg.image_size), **dict(cfg.env))
    except (ValueError, TypeError) as e:
        raise PlanningError(f"task {cfg.task!r}: {e}") from e


MATMUL_DTYPES = (None, "float32", "bfloat16")


def load_model(path: str, matmul_dtype: str | None = None):
    """The world-model bundle at `path`; with `matmul_dtype='bfloat16'` its encoder and predictor run their products
    with bfloat16 operands and float32 accumulation (the rest float32): faster re-plans on CPUs with bf16 matrix
    units, energies within ~1e-4 relative of float32's."""
    from jepa.world_model import load_world_model

    if matmul_dtype not in MATMUL_DTYPES:
        raise PlanningError(f"matmul_dtype must be one of {MATMUL_DTYPES}, got {matmul_dtype!r}")
    if not os.path.isdir(path):
        raise PlanningError(f"world model {path!r}: no such bundle directory (train one with `jepa train-ac`)")
    low = None if matmul_dtype in (None, "float32") else matmul_dtype
    overrides = {name: {"matmul_dtype": low} for name in ("encoder", "ac_predictor")} if low else None
    try:
        return load_world_model(path, overrides=overrides)
    except (ValueError, FileNotFoundError) as e:
        raise PlanningError(f"world model {path!r}: {e}") from e


def setup(cfg: ml_collections.ConfigDict, *, need_model: bool = True) -> Setup:
    """The env, searched action space, CEM settings and world model of a planning config (one clear error each)."""
    from jepa.config import check_values
    from planning import cem

    errors = check_values(cfg, positive=("episodes", "steps", "image_size", "context"),
                          non_negative=("min_distance", "action.max_xyz", "report.gifs", "report.landscape_grid",
                                        "report.correlation_samples"))
    if errors:
        raise PlanningError("invalid config: " + "; ".join(errors))
    env = make_env(cfg)
    model = load_model(cfg.world_model, cfg.get("matmul_dtype")) if need_model else None
    repeat = 1
    if model is not None:
        if model.image_size and model.image_size != cfg.image_size:
            raise PlanningError(f"world model {cfg.world_model!r} was trained on {model.image_size}px frames; the "
                                f"config renders {cfg.image_size}px (set image_size)")
        if model.actions == "recorded":
            repeat = model.frame_stride
    try:
        space = cem.action_space_for(env, cfg.action.dims, cfg.action.max_xyz or None, repeat)
        cem_cfg = cem.CEMConfig(**dict(cfg.cem))
    except (ValueError, TypeError) as e:
        raise PlanningError(f"config: {e}") from e
    if model is not None and space.dim != model.predictor.cfg.action_dim:
        raise PlanningError(f"world model {cfg.world_model!r} takes {model.predictor.cfg.action_dim}-d actions; task "
                            f"{cfg.task!r} has {space.dim}-d actions (frame stride {repeat})")
    return Setup(cfg, env, space, cem_cfg, model, repeat)


def make_planner(s: Setup):
    from planning import cem

    return cem.LatentPlanner(s.model, s.space, s.cem, context=int(s.cfg.context))


def make_controller(name: str, s: Setup, planner=None):
    from planning import mpc

    if name == "latent_cem":
        return mpc.LatentCEM(planner or make_planner(s))
    if name == "oracle_cem":
        return mpc.OracleCEM(s.space, s.cem)
    if name == "random":
        return mpc.RandomActions(s.space)
    if name == "zero":
        return mpc.ZeroAction(s.space)
    raise PlanningError(f"unknown method {name!r}; choose from {METHODS}")


# --- Diagnostics of the energy -------------------------------------------------------------------------------------
def energy_correlation(planner, batch, samples: int, seed: int) -> dict:
    """Spearman correlation between the planner's energy and the true distance after executing the candidate, over
    `samples` uniformly random action sequences from each episode's start state."""
    from planning import metrics

    key = jax.random.key(seed)
    e, h = len(batch), planner.cfg.horizon
    cands = np.asarray(planner.space.uniform(key, (e, samples, h)))
    batch.states = [ep.start.copy() for ep in batch.episodes]
    obs = batch.observe()
    ctx = np.repeat(obs["frames"][:, None], planner.context, axis=1)
    states = np.repeat(obs["states"][:, None], planner.context, axis=1)
    past = np.zeros((e, planner.context - 1, planner.space.dim), np.float32)
    goal_z = planner.encode_goals(batch.goal_images())
    energy = np.asarray(planner.energies(ctx, past, states, goal_z, cands))
    full = np.asarray(planner.space.full(cands))
    true = np.stack([batch.rollout_distances(i, full[i]) for i in range(e)])
    per = np.array([metrics.spearman(energy[i], true[i]) for i in range(e)])
    finite = per[np.isfinite(per)]  # nan where the energy (or the true distance) does not vary at all
    return {"spearman_mean": float(finite.mean()) if finite.size else float("nan"),
            "spearman_median": float(np.median(finite)) if finite.size else float("nan"),
            "spearman_pooled": metrics.spearman(energy.ravel(), true.ravel()),
            "spearman_per_episode": per.tolist(), "samples_per_episode": samples}


def energy_landscape(planner, batch, index: int, grid_size: int = 21) -> dict:
    """The planner's energy and the true distance over a grid of first actions (dx, dy) from episode `index`'s start
    (other searched dimensions and later steps zero)."""
    space = planner.space
    if space.size < 2:
        raise PlanningError("the landscape needs at least 2 searched action dimensions")
    lo, hi = max(space.low[0], space.low[1]), min(space.high[0], space.high[1])
    grid = np.linspace(lo, hi, grid_size)
    xs, ys = np.meshgrid(grid, grid)  # [y, x]
    cands = np.zeros((grid_size * grid_size, planner.cfg.horizon, space.size), np.float32)
    cands[:, 0, 0], cands[:, 0, 1] = xs.ravel(), ys.ravel()
    batch.states[index] = batch.episodes[index].start.copy()
    from planning import mpc

    one = mpc.EpisodeBatch(batch.env, [batch.episodes[index]], batch.action_repeat)
    obs = one.observe()
    goal_z = planner.encode_goals(one.goal_images())
    c = planner.context
    energy = np.asarray(planner.energies(np.repeat(obs["frames"][:, None], c, 1), np.zeros((1, c - 1, space.dim)),
                                         np.repeat(obs["states"][:, None], c, 1), goal_z, cands[None]))[0]
    true = one.rollout_distances(0, np.asarray(space.full(cands)))
    shape = (grid_size, grid_size)
    from planning import metrics

    cartesian = space.dim == 7 and space.dims[:2] == (0, 1)
    labels = ("dx (m)", "dy (m)") if cartesian else (f"action[{space.dims[0]}]", f"action[{space.dims[1]}]")
    return {"grid": grid, "energy": energy.reshape(shape), "distance": true.reshape(shape),
            "spearman": metrics.spearman(energy, true), "labels": labels}


# --- The evaluation --------------------------------------------------------------------------------------------
def evaluate(cfg: ml_collections.ConfigDict, workdir: str, *, progress: bool = True) -> dict:
    """Runs every method of `cfg.methods` on the config's episodes; writes the results and pictures to workdir."""
    from tqdm.auto import tqdm

    from planning import metrics, mpc, pictures

    methods = list(cfg.methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise PlanningError(f"unknown method(s) {unknown}; choose from {METHODS}")
    s = setup(cfg, need_model="latent_cem" in methods)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(cfg.to_json_best_effort(indent=2))
    t0 = time.time()
    episodes = mpc.make_episodes(s.env, int(cfg.episodes), int(cfg.seed), float(cfg.min_distance))
    batch = mpc.EpisodeBatch(s.env, episodes, s.action_repeat)
    init = np.array([e.initial_distance for e in episodes])
    out: dict = {"task": cfg.task, "episodes": len(episodes), "seeds": [e.seed for e in episodes],
                 "step_budget": int(cfg.steps), "success_threshold": batch.threshold,
                 "initial_distance": {"min": float(init.min()), "median": float(np.median(init)),
                                      "max": float(init.max()), "per_episode": init.tolist()},
                 "cem": dataclasses.asdict(s.cem), "action_space": dataclasses.asdict(s.space),
                 "world_model": cfg.world_model if s.model is not None else None, "methods": {}}
    planner = make_planner(s) if s.model is not None else None
    trajectories = {}
    for name in methods:
        ctrl = make_controller(name, s, planner)
        bar = tqdm(total=int(cfg.steps), desc=f"{cfg.task} {name}", unit="step", disable=not progress)
        tr = mpc.run(batch, ctrl, int(cfg.steps), seed=int(cfg.seed), record_frames=name == "latent_cem",
                     progress=bar.update)
        bar.close()
        # The first act of a jitted planner includes its compilation: time the others.
        seconds = tr.seconds[1:] if len(tr.seconds) > 1 else tr.seconds
        res = metrics.summarize(tr.distances, batch.threshold, seconds, len(batch), tr.model_steps)
        res["distance_per_step_median"] = np.median(tr.distances, 0).tolist()
        if name == "latent_cem":
            res["energy_per_step_median"] = np.nanmedian(tr.energies, 0).tolist()
        out["methods"][name] = res
        trajectories[name] = tr
        print(f"[eval-planner] {cfg.task} {name}: success {res['successes']}/{res['episodes']} "
              f"({100 * res['success_rate']:.0f}%, 95% CI {100 * res['success_ci95'][0]:.0f}-"
              f"{100 * res['success_ci95'][1]:.0f}%), final distance median "
              f"{100 * res['final_distance_median']:.1f} cm, {res['seconds_per_action_median']:.3f} s per action and "
              "episode")
    if planner is not None:
        out["replan_seconds_single_episode"] = single_episode_latency(planner, batch)
        out["energy_correlation"] = energy_correlation(planner, batch, int(cfg.report.correlation_samples),
                                                       int(cfg.seed))
        land = energy_landscape(planner, batch, 0, int(cfg.report.landscape_grid))
        pictures.landscape_png(land["grid"], land["energy"], land["distance"], os.path.join(workdir, "landscape.png"),
                               labels=land["labels"], title=f"{cfg.task}, episode seed {episodes[0].seed}: first "
                               f"action ({', '.join(land['labels'])}), Spearman {land['spearman']:.2f}")
        out["landscape_spearman"] = land["spearman"]
        tr = trajectories["latent_cem"]
        for i in range(min(int(cfg.report.gifs), len(batch))):
            pictures.episode_gif(tr.frames[i], episodes[i].goal.image, os.path.join(workdir, f"episode_{i}.gif"),
                                 distances=tr.distances[i], energies=tr.energies[i], threshold=batch.threshold,
                                 title=f"{cfg.task} seed {episodes[i].seed}")
    pictures.success_bars({cfg.task: out["methods"]}, os.path.join(workdir, "success.png"),
                          title=f"{cfg.task}: {len(episodes)} episodes, {cfg.steps} steps")
    out["seconds"] = time.time() - t0
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(out, f, indent=2)
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(markdown_table({cfg.task: out}) + "\n")
    _tensorboard(workdir, out)
    return out


def single_episode_latency(planner, batch, repeats: int = 5) -> dict:
    """Wall time of one re-plan for ONE episode (batch of 1, compiled first): median and p90 over `repeats`."""
    obs = batch.observe()
    c, e0 = planner.context, slice(0, 1)
    args = (np.repeat(obs["frames"][e0, None], c, 1), np.zeros((1, c - 1, planner.space.dim), np.float32),
            np.repeat(obs["states"][e0, None], c, 1), planner.encode_goals(batch.goal_images()[e0]),
            np.zeros((1, planner.cfg.horizon, planner.space.size), np.float32))
    jax.block_until_ready(planner.replan(*args, jax.random.key(0)))
    times = []
    for i in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(planner.replan(*args, jax.random.key(i + 1)))
        times.append(time.perf_counter() - t)
    return {"median": float(np.median(times)), "p90": float(np.percentile(times, 90)), "repeats": repeats}


def markdown_table(results: dict[str, dict]) -> str:
    """One row per task and method."""
    rows = ["| task | method | success | 95% CI | final dist. (cm, median) | min dist. (cm) | final/initial | "
            "s/action (median, p90) | model steps/action |", "|---|---|---|---|---|---|---|---|---|"]
    for task, out in results.items():
        for name, r in out["methods"].items():
            rows.append(f"| {task} | {name} | {r['successes']}/{r['episodes']} ({100 * r['success_rate']:.0f}%) | "
                        f"{100 * r['success_ci95'][0]:.0f}-{100 * r['success_ci95'][1]:.0f}% | "
                        f"{100 * r['final_distance_median']:.1f} | {100 * r['min_distance_median']:.1f} | "
                        f"{r['final_over_initial_median']:.2f} | {r['seconds_per_action_median']:.3f}, "
                        f"{r['seconds_per_action_p90']:.3f} | {r['model_steps_per_action']} |")
    notes = []
    for task, out in results.items():
        d = out["initial_distance"]
        line = (f"- {task}: {out['episodes']} episodes, {out['step_budget']} steps, success = distance < "
                f"{100 * out['success_threshold']:.0f} cm; initial distance {100 * d['min']:.1f}-{100 * d['max']:.1f} "
                f"cm (median {100 * d['median']:.1f})")
        if "energy_correlation" in out:
            c = out["energy_correlation"]
            line += (f"; Spearman(energy, true distance) over {c['samples_per_episode']} random candidates: "
                     f"{c['spearman_mean']:.2f} mean per episode ({c['spearman_pooled']:.2f} pooled)")
        if "replan_seconds_single_episode" in out:
            line += f"; one episode's re-plan {out['replan_seconds_single_episode']['median']:.3f} s (median)"
        notes.append(line)
    return "\n".join(rows + [""] + notes)


def _tensorboard(workdir: str, out: dict) -> None:
    from tensorboardX import SummaryWriter

    w = SummaryWriter(os.path.join(workdir, "tb"))
    for name, r in out["methods"].items():
        w.add_scalar(f"{out['task']}/{name}/success_rate", r["success_rate"], 0)
        w.add_scalar(f"{out['task']}/{name}/final_distance_median", r["final_distance_median"], 0)
        for t, d in enumerate(r["distance_per_step_median"]):
            w.add_scalar(f"{out['task']}/{name}/distance_median", d, t)
    w.close()


def main(argv: list[str]) -> int:
    from jepa.cli import USER_ERRORS, error_line
    from jepa.config import load_config, split_args

    rest, overrides = split_args(argv)
    ap = argparse.ArgumentParser(prog="jepa eval-planner", description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="configs/plan/<task>.py")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(rest)
    try:
        cfg = load_config(args.config, overrides)
        out = evaluate(cfg, args.workdir, progress=not args.quiet)
    except USER_ERRORS as e:  # one line, exit 2 (jepa.cli)
        print(f"jepa eval-planner: error: {error_line(e)}", file=sys.stderr)
        return 2
    print(markdown_table({out["task"]: out}))
    print(f"[eval-planner] wrote {args.workdir}/results.json, results.md, success.png, landscape.png")
    return 0
