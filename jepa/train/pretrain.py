"""V-JEPA 2 pretraining on a device mesh: `jepa pretrain --config configs/pretrain/<name>.py --workdir DIR`.

The core is one pure, jitted train step over a pytree state
    {'step', 'params': {'encoder', 'predictor'}, 'target' (EMA encoder), 'opt_state', 'rng'}
whose every leaf is created already sharded (FSDP through logical axis rules). Per step:
  h = LN_noaffine(target_encoder(full clip)) ; for each mask generator g:
      z = encoder(clip, keep=context_g) ; p = predictor(z, context_g, targets_g) ; loss_g = mean |p - h[targets_g]|
  loss = mean_g loss_g ; AdamW ; target <- m * target + (1 - m) * encoder.
Optionally (config `reg`, off unless a config sets it; not in the reference) a C-JEPA-style variance/covariance
term on the context encoder's and/or the predictor's tokens keeps short runs from collapsing to a few directions.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import math
import os
import sys
import time
from typing import Any

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from jepa import distributed, sharding
from jepa.config import ConfigError, check_values, load_config, save_run_config, split_args
from jepa.masking import BlockSpec, MultiBlockMasker
from jepa.models import Predictor, PredictorConfig, ViTConfig, VisionTransformer
from jepa.train import optim
from jepa.train.checkpoint import Checkpointer, StopSignal
from jepa.train.flops import Product, linear_products, peak_flops_per_device, transformer_products
from jepa.train.logging import RunLogger
from jepa.train.state import NonFiniteError, base_shardings, create, with_shardings


# --- Experiment description ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Regularizer:
    """Config `reg`: weights of the variance / covariance terms, the std the variance hinge aims for, and which
    tokens they apply to ('context': the context encoder's outputs, 'predictor': its predictions)."""

    var_weight: float = 0.0
    cov_weight: float = 0.0
    std_target: float = 1.0
    on: tuple[str, ...] = ()

    PLACES = ("context", "predictor")

    @classmethod
    def from_config(cls, cfg: ml_collections.ConfigDict) -> "Regularizer":
        d = dict(cfg.get("reg") or {})
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"reg: unknown keys {sorted(unknown)}")
        r = cls(**{**d, "on": tuple(d.get("on", ()))})
        if set(r.on) - set(cls.PLACES):
            raise ValueError(f"reg.on: {list(r.on)} has places other than {list(cls.PLACES)}")
        if r.var_weight < 0 or r.cov_weight < 0 or r.std_target <= 0:
            raise ValueError("reg: weights must be >= 0 and std_target > 0")
        if r.on and not (r.var_weight or r.cov_weight):
            r = dataclasses.replace(r, on=())  # nothing to add
        return r


@dataclasses.dataclass
class Experiment:
    cfg: ml_collections.ConfigDict
    encoder: ViTConfig
    predictor: PredictorConfig
    grid: tuple[int, int, int]
    masker: MultiBlockMasker
    mesh: jax.sharding.Mesh
    rules: tuple
    enc_def: Any
    pred_def: Any
    names: dict  # logical axis names of params
    tx: optax.GradientTransformation
    lr: optax.Schedule
    ema: optax.Schedule
    reg: Regularizer


def validate(cfg: ml_collections.ConfigDict) -> None:
    """Fail before compiling, with one clear message, on configs that cannot work."""
    errors = check_values(
        cfg, positive=("train.steps", "train.batch_size", "train.accum_steps", "train.keep_checkpoints",
                       "data.num_frames", "data.crop_size", "model.encoder.patch_size", "model.encoder.tubelet_size",
                       "model.encoder.width", "model.encoder.depth", "model.encoder.num_heads",
                       "model.predictor.width", "model.predictor.depth", "model.predictor.num_heads"),
        non_negative=("train.checkpoint_every", "train.data_shards", "train.peak_tflops", "optim.lr", "optim.start_lr",
                      "optim.final_lr", "optim.warmup_steps", "optim.cooldown_steps", "optim.weight_decay",
                      "optim.clip_norm"),
        fractions=("data.max_skipped_fraction",))
    if errors:  # the checks below divide by these
        raise ConfigError("invalid config: " + "; ".join(errors))
    enc = cfg.model.encoder
    crop, frames = cfg.data.crop_size, cfg.data.num_frames
    if crop % enc.patch_size:
        errors.append(f"data.crop_size {crop} is not divisible by model.encoder.patch_size {enc.patch_size}")
    if frames % enc.tubelet_size:
        errors.append(f"data.num_frames {frames} is not divisible by model.encoder.tubelet_size {enc.tubelet_size}")
    if enc.width % enc.num_heads:
        errors.append(f"model.encoder.width {enc.width} is not divisible by num_heads {enc.num_heads}")
    if cfg.model.predictor.width % cfg.model.predictor.num_heads:
        errors.append("model.predictor.width is not divisible by model.predictor.num_heads")
    gb, acc = cfg.train.batch_size, cfg.train.accum_steps
    if gb % jax.process_count():
        errors.append(f"train.batch_size {gb} is not divisible by the {jax.process_count()} processes")
    if acc < 1 or gb % acc:
        errors.append(f"train.batch_size {gb} is not divisible by train.accum_steps {acc}")
    if not cfg.mask:
        errors.append("mask: at least one mask generator is needed")
    try:
        Regularizer.from_config(cfg)
    except (ValueError, TypeError) as e:
        errors.append(str(e))
    try:
        mesh = sharding.make_mesh(dict(cfg.mesh))
        shards = math.prod(mesh.shape[a] for a in sharding.BATCH_AXES if a in mesh.shape)
        if (gb // max(acc, 1)) % shards:
            errors.append(f"micro-batch {gb // max(acc, 1)} is not divisible by the {shards} batch shards of mesh "
                          f"{dict(mesh.shape)}")
    except ValueError as e:
        errors.append(str(e))
    if errors:
        raise ConfigError("invalid config: " + "; ".join(errors))


def build(cfg: ml_collections.ConfigDict) -> Experiment:
    validate(cfg)
    enc_cfg = ViTConfig.from_dict(dict(cfg.model.encoder))
    pred_cfg = PredictorConfig.from_dict({**dict(cfg.model.predictor), "embed_dim": enc_cfg.width})
    grid = (cfg.data.num_frames // enc_cfg.tubelet_size, cfg.data.crop_size // enc_cfg.patch_size,
            cfg.data.crop_size // enc_cfg.patch_size)
    masker = MultiBlockMasker(grid, [BlockSpec.from_dict(m) for m in cfg.mask])
    mesh = sharding.make_mesh(dict(cfg.mesh))
    rules = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in cfg.rules)
    enc_abs = nnx.eval_shape(lambda: VisionTransformer(enc_cfg, rngs=nnx.Rngs(0)))
    pred_abs = nnx.eval_shape(lambda: Predictor(pred_cfg, rngs=nnx.Rngs(0)))
    enc_def, _ = nnx.split(enc_abs, nnx.Param)
    pred_def, _ = nnx.split(pred_abs, nnx.Param)
    names = {"encoder": sharding.logical_names(enc_abs), "predictor": sharding.logical_names(pred_abs)}
    o, t = cfg.optim, cfg.train
    lr = optim.wcc_schedule(start=o.start_lr, peak=o.lr, final=o.final_lr, warmup=o.warmup_steps, total=t.steps,
                            cooldown=o.cooldown_steps)
    ema = optim.ema_schedule(start=o.ema_start, end=o.ema_end, total=t.steps)
    tx = optim.adamw(lr, weight_decay=o.weight_decay, mask=optim.decay_mask(names), b1=o.b1, b2=o.b2, eps=o.eps,
                     clip_norm=o.clip_norm)
    return Experiment(cfg, enc_cfg, pred_cfg, grid, masker, mesh, rules, enc_def, pred_def, names, tx, lr, ema,
                      Regularizer.from_config(cfg))


# --- State ---------------------------------------------------------------------------------------------------
def init_state(exp: Experiment, key: jax.Array) -> dict:
    k_enc, k_pred, k_run = jax.random.split(key, 3)
    enc = VisionTransformer(exp.encoder, rngs=nnx.Rngs(params=k_enc))
    pred = Predictor(exp.predictor, rngs=nnx.Rngs(params=k_pred))
    params = {"encoder": nnx.to_pure_dict(nnx.state(enc, nnx.Param)),
              "predictor": nnx.to_pure_dict(nnx.state(pred, nnx.Param))}
    return {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "target": jax.tree.map(lambda x: x, params["encoder"]),
        "opt_state": exp.tx.init(params),
        "rng": k_run,
    }


def state_shardings(exp: Experiment, abstract: dict) -> dict:
    shard = base_shardings(abstract, exp.names, exp.mesh, exp.rules)
    return {**shard, "target": shard["params"]["encoder"]}


def abstract_state(exp: Experiment) -> tuple[dict, dict]:
    """(the state as ShapeDtypeStructs carrying their shardings, the shardings), without computing anything."""
    abstract = jax.eval_shape(lambda k: init_state(exp, k), jax.random.key(0))
    shard = state_shardings(exp, abstract)
    return with_shardings(abstract, shard), shard


def create_state(exp: Experiment, seed: int, shard: dict | None = None) -> tuple[dict, dict]:
    """Returns (state created directly in its sharded layout, its shardings)."""
    if shard is None:
        shard = abstract_state(exp)[1]
    return create(lambda k: init_state(exp, k), jax.random.key(seed), shard, exp.mesh), shard


# --- Loss and train step -------------------------------------------------------------------------------------
def target_norm(h: jax.Array, eps: float = 1e-5) -> jax.Array:
    """LayerNorm without affine (the reference's functional layer_norm, eps 1e-5), in fp32."""
    h = h.astype(jnp.float32)
    mu = h.mean(-1, keepdims=True)
    var = jnp.square(h - mu).mean(-1, keepdims=True)
    return (h - mu) * jax.lax.rsqrt(var + eps)


def variance_covariance(z: jax.Array, std_target: float = 1.0, eps: float = 1e-4) -> tuple[jax.Array, jax.Array]:
    """VICReg's anti-collapse terms over all tokens of a batch, z [..., D] -> (variance, covariance):
    variance = mean_d relu(std_target - std_d); covariance = sum of squared off-diagonal covariances / D."""
    z = z.reshape(-1, z.shape[-1]).astype(jnp.float32)
    z = z - z.mean(0)
    n, d = z.shape
    var = jnp.mean(jax.nn.relu(std_target - jnp.sqrt(z.var(0) + eps)))
    cov = (z.T @ z) / max(n - 1, 1)
    return var, (jnp.sum(jnp.square(cov)) - jnp.sum(jnp.square(jnp.diagonal(cov)))) / d


def loss_fn(params: dict, target: dict, batch: dict, exp: Experiment):
    enc = nnx.merge(exp.enc_def, params["encoder"])
    pred = nnx.merge(exp.pred_def, params["predictor"])
    tgt_enc = nnx.merge(exp.enc_def, target)
    video = batch["video"]
    h = jax.lax.stop_gradient(target_norm(tgt_enc(video)))
    reg = exp.reg
    losses, var_terms, cov_terms = [], [], []
    for g in range(len(exp.masker.specs)):
        ctx, tgt = batch[f"ctx_{g}"], batch[f"tgt_{g}"]
        z = enc(video, keep=ctx)
        p = pred(z, ctx, tgt, exp.grid, mask_index=exp.cfg.train.mask_index)
        ht = jnp.take_along_axis(h, tgt[..., None], axis=1)
        losses.append(jnp.mean(jnp.abs(p.astype(jnp.float32) - ht)))
        for name, tokens in (("context", z), ("predictor", p)):
            if name in reg.on:
                v, c = variance_covariance(tokens, reg.std_target)
                var_terms.append(v)
                cov_terms.append(c)
    pred_loss = jnp.mean(jnp.stack(losses))
    loss = pred_loss
    extra = {}
    if var_terms:
        extra = {"reg_var": jnp.mean(jnp.stack(var_terms)), "reg_cov": jnp.mean(jnp.stack(cov_terms))}
        loss = loss + reg.var_weight * extra["reg_var"] + reg.cov_weight * extra["reg_cov"]
    # Collapse indicators. target_std: per-dimension std of the (normalised) targets across the batch's tokens.
    # target_token_std: the same across the tokens of each clip, averaged over clips; it falls when features
    # collapse towards one vector per clip (a global colour, say), which target_std alone does not show.
    target_std = jnp.mean(jnp.std(h.reshape(-1, h.shape[-1]), axis=0))
    target_token_std = jnp.mean(jnp.std(h, axis=1))
    return loss, {"pred_loss": pred_loss, "target_std": target_std, "target_token_std": target_token_std, **extra,
                  **{f"loss_{g}": l for g, l in enumerate(losses)}}


def train_step(state: dict, batch: dict, exp: Experiment) -> tuple[dict, dict]:
    accum = exp.cfg.train.accum_steps
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if accum == 1:
        (loss, aux), grads = grad_fn(state["params"], state["target"], batch, exp)
    else:
        micro = jax.tree.map(lambda x: x.reshape(accum, x.shape[0] // accum, *x.shape[1:]), batch)

        def body(carry, mb):
            (l, a), g = grad_fn(state["params"], state["target"], mb, exp)
            return jax.tree.map(jnp.add, carry, (l, a, g)), None

        zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(lambda: grad_fn(
            state["params"], state["target"], jax.tree.map(lambda x: x[0], micro), exp)))
        zeros = ((zeros[0][0], zeros[0][1], zeros[1]))
        (loss, aux, grads), _ = jax.lax.scan(body, zeros, micro)
        loss, aux, grads = jax.tree.map(lambda x: x / accum, (loss, aux, grads))
    grad_norm = optax.global_norm(grads)
    updates, opt_state = exp.tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    m = exp.ema(state["step"])
    target = optim.ema_update(state["target"], params["encoder"], m)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(optax.global_norm(params))
    new = {"step": state["step"] + 1, "params": params, "target": target, "opt_state": opt_state,
           "rng": jax.random.fold_in(state["rng"], state["step"])}
    # A non-finite step leaves the state untouched; the host stops training and names the step.
    new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, {**state, "step": state["step"] + 1})
    metrics = {"loss": loss, "grad_norm": grad_norm, "lr": exp.lr(state["step"]), "ema": m, "finite": finite, **aux}
    return new, metrics


def compile_step(exp: Experiment, shard: dict, batch_spec: dict, abstract: dict | None = None):
    """AOT-compile the train step for the given batch shapes (and the state's, from `abstract_state` unless
    given); returns (compiled, cost/memory summary)."""
    bsh = {k: sharding.batch_sharding(exp.mesh, len(v.shape)) for k, v in batch_spec.items()}
    rep = jax.sharding.NamedSharding(exp.mesh, jax.sharding.PartitionSpec())
    fn = jax.jit(lambda s, b: train_step(s, b, exp), in_shardings=(shard, bsh), out_shardings=(shard, rep),
                 donate_argnums=0)
    if abstract is None:
        abstract = abstract_state(exp)[0]
    with exp.mesh:
        compiled = fn.lower(abstract, batch_spec).compile()
    info = {}
    try:
        mem = compiled.memory_analysis()
        if mem is not None:
            info["temp_MiB"] = mem.temp_size_in_bytes / 2**20
            info["args_MiB"] = mem.argument_size_in_bytes / 2**20
    except Exception:  # not every backend reports it
        pass
    return compiled, info


def step_products(exp: Experiment, batch: int) -> list[Product]:
    """The matrix products of one train step by shape: the target encoder's forward on the clip; per mask
    generator the context encoder (tubelet embedding of the clip, blocks on the context tokens) and the predictor
    (embedding of the context tokens, blocks on context and target tokens, projection of the targets), each with
    its backward pass (no input gradient for the embedding of the video)."""
    e, p = exp.encoder, exp.predictor
    n = math.prod(exp.grid)
    patch_in = e.tubelet_size * e.patch_size ** 2 * e.in_chans
    out = linear_products(batch * n, patch_in, e.width)
    out += transformer_products(batch, n, e.width, e.depth, e.mlp_dim, e.num_heads)
    for kc, kt in exp.masker.sizes:
        out += linear_products(batch * n, patch_in, e.width, backward=True, input_grad=False)
        out += transformer_products(batch, kc, e.width, e.depth, e.mlp_dim, e.num_heads, backward=True)
        out += linear_products(batch * kc, e.width, p.width, backward=True)
        out += transformer_products(batch, kc + kt, p.width, p.depth, p.mlp_dim, p.num_heads, backward=True)
        out += linear_products(batch * kt, p.width, e.width, backward=True)
    return out


def step_flops(exp: Experiment, batch: int) -> float:
    """Analytic training FLOPs of one step: the matmuls of `step_products` (the forward of every pass, and twice
    that for the backward of the trained ones)."""
    return sum(prod.flops for prod in step_products(exp, batch))


# --- Data ----------------------------------------------------------------------------------------------------
class MaskTransform:
    """Adds the mask generators' context/target ids to each batch (runs in the input pipeline)."""

    def __init__(self, masker: MultiBlockMasker):
        self.masker = masker

    def __call__(self, batch: dict, rng: np.random.Generator) -> dict:
        n = len(next(iter(batch.values())))
        return {**batch, **self.masker(n, rng)}


class ConcatShardsIterator(grain.DatasetIterator):
    """Reads several data shards in one process and concatenates their batches, so a run on P processes can
    reproduce the global batches of a run on more (train.data_shards): handy to compare topologies."""

    def __init__(self, iterators):
        super().__init__(list(iterators))
        self.iterators = list(iterators)

    def __next__(self):
        parts = [next(it) for it in self.iterators]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    @property
    def skips(self):
        """The unusable records skipped by all shards (jepa.data.faults.SkipLog)."""
        logs = [it.skips for it in self.iterators]
        total = logs[0]
        for log in logs[1:]:
            total = total.merge(log)
        return total

    def get_state(self):
        return {"shards": [it.get_state() for it in self.iterators]}

    def set_state(self, state):
        if len(state["shards"]) != len(self.iterators):
            raise ValueError(f"data state has {len(state['shards'])} shards, this run reads {len(self.iterators)}")
        for it, s in zip(self.iterators, state["shards"]):
            it.set_state(s)


def make_data(exp: Experiment, seed: int):
    """This process's iterator over its share of the global batch (masks added in the pipeline)."""
    from jepa.data.pipeline import make_dataset

    cfg = exp.cfg
    procs, pid = jax.process_count(), jax.process_index()
    shards = cfg.train.data_shards or procs
    if shards % procs or cfg.train.batch_size % shards:
        raise ValueError(f"train.data_shards {shards} must be a multiple of the {procs} processes and divide "
                         f"train.batch_size {cfg.train.batch_size}")
    per = shards // procs
    data_cfg = ml_collections.ConfigDict(cfg.data.to_dict())
    data_cfg.batch_size = cfg.train.batch_size // shards
    its = [iter(make_dataset(data_cfg, split="train", seed=seed, shard_index=pid * per + j, shard_count=shards,
                             batch_transform=MaskTransform(exp.masker))) for j in range(per)]
    return its[0] if per == 1 else ConcatShardsIterator(its)


def batch_spec(exp: Experiment) -> dict:
    cfg = exp.cfg
    b, t, s = cfg.train.batch_size, cfg.data.num_frames, cfg.data.crop_size
    spec = {"video": jax.ShapeDtypeStruct((b, t, s, s, 3), jnp.float32)}
    for g, (kc, kt) in enumerate(exp.masker.sizes):
        spec[f"ctx_{g}"] = jax.ShapeDtypeStruct((b, kc), jnp.int32)
        spec[f"tgt_{g}"] = jax.ShapeDtypeStruct((b, kt), jnp.int32)
    return spec


# --- Loop ----------------------------------------------------------------------------------------------------
def train(cfg: ml_collections.ConfigDict, workdir: str) -> list[dict]:
    """Runs (or resumes) pretraining in `workdir`; returns the logged history of this invocation."""
    distributed.initialize()
    exp = build(cfg)
    main_proc = jax.process_index() == 0
    save_run_config(cfg, workdir)
    abstract, shard = abstract_state(exp)
    specs = batch_spec(exp)
    data = make_data(exp, cfg.seed)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=cfg.train.keep_checkpoints,
                        every=cfg.train.checkpoint_every)
    start = ckpt.latest_step() or 0
    if start:
        try:
            start, state = ckpt.restore(abstract, data)
        except BaseException:
            ckpt.close()
            data.close()
            raise
    else:
        state, _ = create_state(exp, cfg.seed, shard)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        # The input pipeline starts its workers and decodes the first batch while XLA compiles the step. (Compiling
        # on a second thread while the state is created was slower: both compete for the same cores and the GIL.)
        prefetch = pool.submit(next, data) if start < cfg.train.steps else None
        compiled, info = compile_step(exp, shard, {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in specs.items()},
                                      abstract)
        first = prefetch.result() if prefetch else None
    logger = RunLogger(workdir, total_steps=cfg.train.steps, initial_step=start, desc="pretrain")
    logger.text("setup", f"{exp.masker.describe()}; mesh {dict(exp.mesh.shape)}; compiled step {info}; "
                         f"{'resumed at step ' + str(start) if start else 'fresh start'}")
    flops = step_flops(exp, cfg.train.batch_size)
    peak = peak_flops_per_device(cfg.train.peak_tflops)
    stop = StopSignal()
    pending = None  # metrics of the previous step, fetched one step late to keep the device busy
    last_good = ckpt.latest_step()
    t_last = time.perf_counter()
    history = []

    def drain(pending):
        nonlocal t_last
        step_i, m = pending
        m = jax.device_get(m)
        if not bool(m.pop("finite")):
            raise NonFiniteError(f"non-finite loss, gradient or parameters at step {step_i} (loss={float(m['loss'])}, "
                                 f"grad_norm={float(m['grad_norm'])}); stopped. Last good checkpoint: "
                                 f"step {last_good} in {ckpt.directory}")
        now = time.perf_counter()
        dt, t_last = now - t_last, now
        m = {k: float(v) for k, v in m.items()}
        m["step_time_s"] = dt
        m["clips_per_s"] = cfg.train.batch_size / dt
        m["data_skipped"] = float(data.skips.skipped)  # unusable records replaced so far (this process)
        m["tflops_per_s"] = flops / dt / 1e12
        if peak:
            m["mfu"] = flops / dt / (peak * jax.device_count())
        logger.log(step_i, m)
        history.append({"step": step_i, **m})

    try:
        with exp.mesh:
            for step in range(start + 1, cfg.train.steps + 1):
                local = first if step == start + 1 else next(data)
                batch = sharding.global_batch({k: local[k] for k in specs}, exp.mesh)
                state, metrics = compiled(state, batch)
                if pending is not None:
                    drain(pending)
                pending = (step, metrics)
                if ckpt.should_save(step) or step == cfg.train.steps:
                    drain(pending)
                    pending = None
                    ckpt.save(step, state, data)
                    last_good = step
                if stop.any_process_requested():
                    if pending is not None:
                        drain(pending)
                        pending = None
                    logger.text("signal", f"SIGTERM: saving step {step} and exiting")
                    ckpt.save(step, state, data, force=True)
                    ckpt.wait()
                    break
            if pending is not None:
                drain(pending)
    finally:
        ckpt.close()
        data.close()  # stops the decoding workers now, not at interpreter exit
        stop.restore()
        skips = data.skips
        logger.text("data", skips.summary())
        skips.write(os.path.join(workdir, "data_faults.json" if main_proc else
                                 f"data_faults.p{jax.process_index()}.json"))
        extra = ("pred_loss", "reg_var") if exp.reg.on else ()  # the loss is pred_loss when nothing is added
        curves = logger.close(plot_keys=("loss", *extra, "target_std", "target_token_std", "lr", "grad_norm"))
    if main_proc and curves:
        print(f"loss curves: {curves}")
    finished = int(jax.device_get(state["step"])) == cfg.train.steps  # not when stopped early by SIGTERM
    if cfg.train.export_model and finished and jax.process_count() == 1:
        export_bundle(exp, state, os.path.join(workdir, "model"))
    return history


def export_bundle(exp: Experiment, state: dict, path: str) -> None:
    """Writes the EMA target encoder as `encoder` (the one used downstream, as in the reference), the online
    context encoder as `context_encoder` and the predictor as a model bundle."""
    from jepa.models.io import save_bundle

    enc = nnx.merge(exp.enc_def, jax.device_get(state["target"]))
    ctx = nnx.merge(exp.enc_def, jax.device_get(state["params"]["encoder"]))
    pred = nnx.merge(exp.pred_def, jax.device_get(state["params"]["predictor"]))
    save_bundle(path, {"encoder": enc, "context_encoder": ctx, "predictor": pred},
                meta={"grid": list(exp.grid), "step": int(state["step"])},
                overwrite=True)  # a run extended to more steps replaces the bundle it wrote before


def main(argv: list[str]) -> int:
    rest, overrides = split_args(argv)
    ap = argparse.ArgumentParser(prog="jepa pretrain", description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="config file, optionally with an argument: path.py[:arg]")
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args(rest)
    cfg = load_config(args.config, overrides)
    try:
        train(cfg, args.workdir)
    except NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
