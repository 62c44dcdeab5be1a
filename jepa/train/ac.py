"""Training the action-conditioned predictor (V-JEPA 2-AC): `jepa train-ac --config configs/ac/<name>.py --workdir DIR`.

A frozen encoder (a pretraining run's exported bundle, or an imported released one) encodes every frame of robot
episodes (RLDS, see jepa.data.rlds: simulated `jepa collect` episodes or DROID); features are cached once, or
computed on the fly inside the step (`features='online'`). The predictor is trained from scratch on clips of
`clip_frames` frames with teacher forcing (frames 1..T-1 from 0..T-2) plus an autoregressive rollout of
`rollout_steps` frames (gradients through the rollout), both L1 on layer-normed features. Held-out episodes are
evaluated by multi-step rollout against the copy-the-last-frame baseline.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from jepa import distributed, sharding, world_model as wm
from jepa.config import ConfigError, check_values, load_config, save_run_config, split_args
from jepa.data.faults import SkipLog
from jepa.models import ACPredictor, ACPredictorConfig
from jepa.train import optim
from jepa.train.checkpoint import Checkpointer, StopSignal
from jepa.train.logging import RunLogger
from jepa.train.state import NonFiniteError, base_shardings, create, with_shardings


# --- Data ----------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class EpisodeSet:
    """Episodes as arrays: frames uint8 [T_i, H, W, 3] (kept for 'online' features), features [T_i, H', W', D]
    (cached mode), states [T_i, 7], actions [T_i - 1, 7]."""

    frames: list[np.ndarray]
    states: list[np.ndarray]
    actions: list[np.ndarray]
    features: list[np.ndarray] | None = None

    def clip_index(self, clip_frames: int, stride: int = 1) -> np.ndarray:
        idx = [(e, s) for e, f in enumerate(self.states) for s in range(0, len(f) - clip_frames + 1, stride)]
        if not idx:
            raise ValueError(f"no episode has {clip_frames} frames (lengths {[len(s) for s in self.states]})")
        return np.asarray(idx, np.int64)

    def batch(self, index: np.ndarray, clip_frames: int, with_frames: bool) -> dict[str, np.ndarray]:
        out = {"states": [], "actions": [], "frames" if with_frames else "features": []}
        for e, s in index:
            sl = slice(s, s + clip_frames)
            out["states"].append(self.states[e][sl])
            out["actions"].append(self.actions[e][s:s + clip_frames - 1])
            out["frames" if with_frames else "features"].append((self.frames if with_frames else self.features)[e][sl])
        return {k: np.stack(v) for k, v in out.items()}


def load_episodes(data: ml_collections.ConfigDict, skips: SkipLog | None = None
                  ) -> tuple[EpisodeSet, EpisodeSet, dict | None]:
    """Reads RLDS episodes and splits them by episode into train / held-out validation; returns both and the
    action/state normalisation statistics of the training episodes (None with data.normalize=False).

    Episodes that cannot be read (an undecodable frame, a missing or malformed field) are skipped and counted in
    `skips` (a SkipLog; `TooManyUnusableRecords` past data.max_skipped_fraction)."""
    from jepa.data.rlds import RLDSEpisodes, RLDSError

    if skips is None:
        skips = SkipLog(data.get("max_skipped_fraction", 0.1), what="episodes")
    actions, states = data.get("actions", "delta_pose"), data.get("states", "pose")
    if states not in ("pose", "none"):
        raise ConfigError(f"data.states must be 'pose' or 'none', got {states!r}")
    train_eps, val_eps = [], []
    for path in data.paths:  # the last val_fraction of each dataset is held out
        src = RLDSEpisodes(path, split=data.split, camera=data.camera, frame_stride=data.frame_stride, size=data.size,
                           actions=actions)
        eps = []
        for i in range(len(src)):
            try:
                eps.append(src[i])
            except RLDSError as e:  # this episode only: the dataset itself opened
                skips.add(0, 1, [" ".join(str(e).split())])
                continue
            skips.add(1)
        if len(eps) < 2:
            raise ValueError(f"need at least 2 episodes in {path}, found {len(eps)}")
        if states == "none":  # the predictor sees no proprioception (torque-controlled arms: nothing to integrate)
            eps = [dataclasses.replace(e, states=np.zeros_like(e.states)) for e in eps]
        n_val = max(1, int(round(len(eps) * data.val_fraction)))
        train_eps += eps[:-n_val]
        val_eps += eps[-n_val:]
    stats = None
    if data.normalize:
        stats = wm.normalization_stats([e.actions for e in train_eps], [e.states for e in train_eps])
    sets = []
    for part in (train_eps, val_eps):
        sets.append(EpisodeSet([e.frames for e in part], [wm.normalize(e.states, stats, "state") for e in part],
                               [wm.normalize(e.actions, stats, "action") for e in part]))
    return sets[0], sets[1], stats


@functools.partial(jax.jit, static_argnums=0)
def _encode_batch(graphdef, state, frames):
    # The encoder's parameters are an argument, not a closure: closed-over arrays would be baked into the HLO as
    # constants (gigabytes for a large encoder) and recompiled for every call site.
    return wm.encode_frames(nnx.merge(graphdef, state), frames[:, None])[:, 0]


def cache_features(encoder, eps: EpisodeSet, batch_frames: int = 256) -> None:
    """Encodes every frame once (frozen encoder) into eps.features.

    Frames of consecutive episodes are packed into batches of exactly `batch_frames` (the last one zero-padded),
    so the encoder compiles once whatever the episode lengths."""
    graphdef, state = nnx.split(encoder)
    bounds = np.cumsum([0] + [len(f) for f in eps.frames])
    total = int(bounds[-1])
    out = []
    for a in range(0, total, batch_frames):
        b = min(a + batch_frames, total)
        first = int(np.searchsorted(bounds, a, side="right")) - 1
        last = int(np.searchsorted(bounds, b, side="left"))
        chunk = np.concatenate([eps.frames[e][max(a, bounds[e]) - bounds[e]:min(b, bounds[e + 1]) - bounds[e]]
                                for e in range(first, last)])
        pad = np.zeros((batch_frames - len(chunk),) + chunk.shape[1:], chunk.dtype)
        out.append(np.asarray(_encode_batch(graphdef, state, jnp.asarray(np.concatenate([chunk, pad]))))[:b - a])
    eps.features = np.split(np.concatenate(out), bounds[1:-1])


# --- Step ----------------------------------------------------------------------------------------------------
def ac_loss(params, graphdef, batch, cfg, encode=None):
    """Teacher forcing + rollout L1 (the reference's jloss + sloss)."""
    pred = nnx.merge(graphdef, params)
    h = batch["features"] if encode is None else encode(batch["frames"])
    h = jax.lax.stop_gradient(h.astype(jnp.float32))
    a, s = batch["actions"], batch["states"]
    z_tf = wm.teacher_forcing(pred, h, a, s)
    jloss = wm.l1(z_tf, h[:, 1:])
    k = cfg.train.rollout_steps
    z_ar = wm.rollout(pred, h[:, :1], a, s, k, first=z_tf[:, :1])
    sloss = wm.l1(z_ar, h[:, 1:1 + k])
    return jloss + sloss, {"loss_tf": jloss, "loss_rollout": sloss}


@dataclasses.dataclass
class ACExperiment:
    """What the AC train step is made of (pretraining's `Experiment` for the action-conditioned predictor)."""

    cfg: ml_collections.ConfigDict
    predictor: ACPredictorConfig
    graphdef: Any  # the predictor's (parameters apart)
    enc_graphdef: Any  # the frozen encoder's
    names: Any  # logical axis names of the predictor's parameters
    tx: optax.GradientTransformation
    lr: optax.Schedule
    mesh: jax.sharding.Mesh
    rules: tuple


def validate(cfg: ml_collections.ConfigDict) -> None:
    """Fail before loading anything, with one line naming every bad key."""
    errors = check_values(
        cfg, positive=("train.steps", "train.batch_size", "train.rollout_steps", "train.keep_checkpoints",
                       "data.size", "data.frame_stride", "data.clip_frames", "model.width", "model.depth",
                       "model.num_heads"),
        non_negative=("train.checkpoint_every", "train.eval_every", "train.eval_frames", "optim.lr", "optim.start_lr",
                      "optim.warmup_steps", "optim.cooldown_steps", "optim.weight_decay", "optim.clip_norm"),
        fractions=("data.val_fraction", "data.max_skipped_fraction"))
    if cfg.features not in ("cache", "online"):
        errors.append(f"features must be 'cache' or 'online', got {cfg.features!r}")
    if not errors and cfg.data.clip_frames < 2:
        errors.append(f"data.clip_frames={cfg.data.clip_frames} must be >= 2 (one frame to predict from, one to predict)")
    if not errors and cfg.train.rollout_steps > cfg.data.clip_frames - 1:
        errors.append(f"train.rollout_steps={cfg.train.rollout_steps} must be <= data.clip_frames - 1 = "
                      f"{cfg.data.clip_frames - 1}")
    if not cfg.data.paths:
        errors.append("data.paths is empty: give the RLDS episode directories")
    if errors:
        raise ConfigError("invalid config: " + "; ".join(errors))


def build(cfg: ml_collections.ConfigDict, encoder, action_dim: int, state_dim: int) -> ACExperiment:
    """The experiment for a frozen `encoder` and the data's action and state widths."""
    pcfg = ACPredictorConfig.from_dict({**dict(cfg.model), "embed_dim": encoder.cfg.width,
                                        "grid_size": cfg.data.size // encoder.cfg.patch_size,
                                        "action_dim": action_dim, "state_dim": state_dim})
    abstract = nnx.eval_shape(lambda: ACPredictor(pcfg, rngs=nnx.Rngs(0)))
    graphdef, _ = nnx.split(abstract, nnx.Param)
    names = sharding.logical_names(abstract)
    o, t = cfg.optim, cfg.train
    lr = optim.wcc_schedule(start=o.start_lr, peak=o.lr, final=0.0, warmup=o.warmup_steps, total=t.steps,
                            cooldown=o.cooldown_steps)
    tx = optim.adamw(lr, weight_decay=o.weight_decay, mask=optim.decay_mask(names), clip_norm=o.clip_norm)
    rules = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in cfg.rules)
    return ACExperiment(cfg, pcfg, graphdef, nnx.split(encoder)[0], names, tx, lr,
                        sharding.make_mesh(dict(cfg.mesh)), rules)


def init_state(exp: ACExperiment, key: jax.Array) -> dict:
    model = ACPredictor(exp.predictor, rngs=nnx.Rngs(params=key))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": exp.tx.init(params), "rng": key}


def make_step(exp: ACExperiment):
    cfg, tx, graphdef = exp.cfg, exp.tx, exp.graphdef

    def step(state, batch, enc_params):
        encode = None
        if cfg.features == "online":
            encoder = nnx.merge(exp.enc_graphdef, enc_params)
            encode = lambda frames: wm.encode_frames(encoder, frames)
        (loss, aux), grads = jax.value_and_grad(ac_loss, has_aux=True)(state["params"], graphdef, batch, cfg, encode)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        gn = optax.global_norm(grads)
        # Like pretraining: the loss, the gradient and the updated parameters (a finite step can still overflow them).
        finite = jnp.isfinite(loss) & jnp.isfinite(gn) & jnp.isfinite(optax.global_norm(params))
        new = {"step": state["step"] + 1, "params": params, "opt_state": opt_state, "rng": state["rng"]}
        new = jax.tree.map(lambda x, y: jnp.where(finite, x, y), new, {**state, "step": state["step"] + 1})
        return new, {"loss": loss, "grad_norm": gn, "lr": exp.lr(state["step"]), "finite": finite, **aux}

    return step


# --- Evaluation ------------------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnums=0)
def _eval_batch(graphdef, params, feats, actions, states):
    """Per-step L1 [B, T-1] of the rollout from frame 0, of copying frame 0, and of teacher forcing.

    Module-level (graphdef static) so that it compiles once per shape, not at every evaluation."""
    pred = nnx.merge(graphdef, params)
    z = wm.rollout(pred, feats[:, :1], actions, states, feats.shape[1] - 1)
    err = jnp.abs(z - feats[:, 1:]).mean(axis=(2, 3, 4))  # [B, k]
    copy = jnp.abs(feats[:, :1] - feats[:, 1:]).mean(axis=(2, 3, 4))
    tf = wm.teacher_forcing(pred, feats, actions, states)
    tf_err = jnp.abs(tf - feats[:, 1:]).mean(axis=(2, 3, 4))
    return err, copy, tf_err


def evaluate(params, graphdef, eps: EpisodeSet, clip_frames: int, *, max_clips: int = 256, seed: int = 0) -> dict:
    """Multi-step rollout L1 on held-out clips vs the copy-the-last-frame baseline, per horizon step."""
    idx = eps.clip_index(clip_frames)
    rng = np.random.default_rng(seed)
    if len(idx) > max_clips:
        idx = idx[np.sort(rng.choice(len(idx), max_clips, replace=False))]
    errs, copies, tfs = [], [], []
    for i in range(0, len(idx), 64):
        b = eps.batch(idx[i:i + 64], clip_frames, with_frames=False)
        e, c, t = _eval_batch(graphdef, params, jnp.asarray(b["features"]), jnp.asarray(b["actions"]),
                              jnp.asarray(b["states"]))
        errs.append(np.asarray(e)), copies.append(np.asarray(c)), tfs.append(np.asarray(t))
    err, copy, tf = (np.concatenate(x).mean(0) for x in (errs, copies, tfs))
    return {"rollout_l1": err.tolist(), "copy_l1": copy.tolist(), "teacher_forcing_l1": tf.tolist(),
            "rollout_l1_mean": float(err.mean()), "copy_l1_mean": float(copy.mean()),
            "ratio_copy_over_rollout": float(copy.mean() / err.mean()), "clips": int(len(idx))}


# --- Loop ----------------------------------------------------------------------------------------------------
def train(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
    from jepa.models.io import load_bundle

    validate(cfg)
    distributed.initialize()
    save_run_config(cfg, workdir)
    encoder = load_bundle(cfg.encoder_bundle, ["encoder"])["encoder"]
    if cfg.data.size % encoder.cfg.patch_size:
        raise ConfigError(f"data.size {cfg.data.size} is not divisible by the encoder's patch {encoder.cfg.patch_size}")
    t0 = time.time()
    skips = SkipLog(cfg.data.get("max_skipped_fraction", 0.1), what="episodes")
    train_eps, val_eps, norm_stats = load_episodes(cfg.data, skips)
    skips.write(os.path.join(workdir, "data_faults.json"))
    cache_features(encoder, val_eps)
    if cfg.features == "cache":
        cache_features(encoder, train_eps)
    print(f"[train-ac] {len(train_eps.states)} train / {len(val_eps.states)} held-out episodes, features in "
          f"{time.time() - t0:.0f}s; {skips.summary()}")
    # Action and state widths come from the data (7-d DROID poses; 10-d for Reacher's 5 recorded torque pairs).
    exp = build(cfg, encoder, action_dim=int(train_eps.actions[0].shape[-1]),
                state_dim=int(train_eps.states[0].shape[-1]))
    graphdef, mesh, t = exp.graphdef, exp.mesh, cfg.train
    key = jax.random.key(cfg.seed)
    abstract = jax.eval_shape(lambda k: init_state(exp, k), key)
    shard = base_shardings(abstract, exp.names, mesh, exp.rules)
    rep = shard["step"]
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=t.keep_checkpoints, every=t.checkpoint_every)
    start = 0
    if ckpt.latest_step() is not None:
        start, state = ckpt.restore(with_shardings(abstract, shard))
    else:
        state = create(lambda k: init_state(exp, k), key, shard, mesh)
    step_fn = jax.jit(make_step(exp), donate_argnums=0, out_shardings=(shard, rep))
    enc_params = jax.device_put(nnx.split(encoder)[1], rep) if cfg.features == "online" else None

    index = train_eps.clip_index(cfg.data.clip_frames)
    # Held-out clips may be longer than the training clips: a predictor trained on one-step clips is still judged
    # on multi-step rollouts.
    eval_frames = int(t.get("eval_frames", 0) or cfg.data.clip_frames)
    logger = RunLogger(workdir, total_steps=t.steps, initial_step=start, desc="train-ac")
    stop = StopSignal()
    stopped = None
    with mesh:
        for step in range(start + 1, t.steps + 1):
            rng = np.random.default_rng([cfg.seed, step])  # the batch is a function of the step: exact resume
            pick = index[rng.integers(0, len(index), t.batch_size)]
            local = train_eps.batch(pick, cfg.data.clip_frames, with_frames=cfg.features == "online")
            batch = sharding.global_batch(local, mesh)
            tic = time.perf_counter()
            state, m = step_fn(state, batch, enc_params)
            m = jax.device_get(m)
            if not bool(m.pop("finite")):
                ckpt.close()
                raise NonFiniteError(f"non-finite loss, gradient or parameters at step {step}; stopped. Last good "
                                     f"checkpoint: step {ckpt.latest_step()} in {ckpt.directory}")
            m = {k: float(v) for k, v in m.items()}
            m["clips_per_s"] = t.batch_size / (time.perf_counter() - tic)
            if t.eval_every and (step % t.eval_every == 0 or step == t.steps):
                ev = evaluate(state["params"], graphdef, val_eps, eval_frames)
                m.update({"val_rollout_l1": ev["rollout_l1_mean"], "val_copy_l1": ev["copy_l1_mean"],
                          "val_ratio": ev["ratio_copy_over_rollout"]})
            logger.log(step, m)
            if ckpt.should_save(step) or step == t.steps:
                ckpt.save(step, state)
            if stop.any_process_requested():
                logger.text("signal", f"SIGTERM: saving step {step} and exiting")
                ckpt.save(step, state, force=True)
                stopped = step
                break
    ckpt.close()
    stop.restore()
    logger.close(plot_keys=("loss", "loss_tf", "loss_rollout", "val_ratio"))
    if stopped is not None and stopped < t.steps:  # like pretraining: an interrupted run evaluates and exports nothing
        print(f"[train-ac] stopped by SIGTERM at step {stopped} of {t.steps}: checkpoint saved, no evaluation or "
              f"bundle; run the same command again to resume")
        return {"stopped_at_step": stopped}
    result = evaluate(state["params"], graphdef, val_eps, eval_frames)
    result["train_seconds"] = time.time() - t0
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "eval.json"), "w") as f:
            json.dump(result, f, indent=2)
        _plot_eval(result, os.path.join(workdir, "rollout_l1.png"))
        from jepa.models.io import save_bundle

        if jax.process_count() == 1:
            save_bundle(os.path.join(workdir, "model"),
                        {"encoder": encoder, "ac_predictor": nnx.merge(graphdef, jax.device_get(state["params"]))},
                        meta={"data_size": cfg.data.size, "frame_stride": cfg.data.frame_stride,
                              "normalization": norm_stats, "actions": cfg.data.get("actions", "delta_pose"),
                              "states": cfg.data.get("states", "pose")},
                        overwrite=True)  # a resumed run replaces the bundle it wrote before
    print(f"[train-ac] held-out rollout L1 {result['rollout_l1_mean']:.4f} vs copy-last {result['copy_l1_mean']:.4f}: "
          f"{result['ratio_copy_over_rollout']:.2f}x lower (per step: "
          f"{[round(x, 3) for x in result['rollout_l1']]} vs {[round(x, 3) for x in result['copy_l1']]})")
    return result


def _plot_eval(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = np.arange(1, len(result["rollout_l1"]) + 1)
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(k, result["rollout_l1"], "o-", label="AC predictor rollout")
    ax.plot(k, result["copy_l1"], "s--", label="copy last frame")
    ax.plot(k, result["teacher_forcing_l1"], "^:", label="teacher forcing (1 step)")
    ax.set_xlabel("steps ahead")
    ax.set_ylabel("latent L1 (held-out)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> int:
    rest, overrides = split_args(argv)
    ap = argparse.ArgumentParser(prog="jepa train-ac", description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args(rest)
    try:
        train(load_config(args.config, overrides), args.workdir)
    except NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
