"""A grid of attentive probes (learning rate x weight decay) on one frozen encoder, trained as one program.

The probes' parameters are stacked on a leading axis H; one jitted step encodes the batch with the frozen encoder
once (inside the step: nothing per clip is kept on the host) and updates all H probes with `jax.vmap`, as the
reference trains its 20 probes in parallel on the same features. Evaluation follows the reference's protocol:
each of the S temporal segments and V spatial views of a clip is encoded separately, the tokens of all segments
of one view are concatenated, and the probes' softmax is averaged over views.

Tasks: 'classification' (one query, cross-entropy) and 'anticipation' (three queries: verb, noun, action; sigmoid
focal loss, alpha 0.25, gamma 2).
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jepa.models import AttentiveProbe, ProbeConfig
from jepa.sharding import logical_names
from jepa.train.optim import decay_mask

TASKS = ("classification", "anticipation")


@dataclasses.dataclass(frozen=True)
class Grid:
    """The probes' hyper-parameters: every (lr, weight decay) pair, in this order."""

    lrs: tuple[float, ...]
    wds: tuple[float, ...]

    @property
    def pairs(self) -> list[tuple[float, float]]:
        return list(itertools.product(self.lrs, self.wds))

    def __len__(self) -> int:
        return len(self.lrs) * len(self.wds)


@dataclasses.dataclass
class ProbeGrid:
    """What the probe grid's jitted functions are made of."""

    probe: ProbeConfig
    grid: Grid
    task: str
    graphdef: Any  # the probe's (parameters apart)
    enc_graphdef: Any  # the frozen encoder's
    mask: Any  # which probe parameters take weight decay
    schedule: optax.Schedule  # multiplier of each probe's lr: warmup then cosine to 0
    layers: tuple[int, ...] = ()  # encoder blocks whose (normed) outputs are concatenated; () = the last output
    future_steps: int = 0  # tubelet steps of future tokens the pretrained predictor appends (EK100 anticipation)
    pred_graphdef: Any = None  # the pretrained predictor's, with future_steps

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.future_steps and (self.pred_graphdef is None or self.layers):
            raise ValueError("future tokens need the pretrained predictor and the encoder's final output (layers=())")


def make(encoder: nnx.Module, probe: ProbeConfig, grid: Grid, *, task: str, total_steps: int,
         warmup_steps: int, layers: Sequence[int] = (), predictor: nnx.Module | None = None,
         future_steps: int = 0) -> ProbeGrid:
    """With `future_steps`, the features' parameters (`enc_params` of the step functions) are
    {'encoder': ..., 'predictor': ...} (see `feature_params`)."""
    abstract = nnx.eval_shape(lambda: AttentiveProbe(probe, rngs=nnx.Rngs(0)))
    graphdef, _ = nnx.split(abstract, nnx.Param)
    schedule = optax.warmup_cosine_decay_schedule(0.0, 1.0, max(warmup_steps, 1), max(total_steps, warmup_steps + 1),
                                                  0.0)
    return ProbeGrid(probe, grid, task, graphdef, nnx.split(encoder)[0], decay_mask(logical_names(abstract)),
                     schedule, tuple(layers), int(future_steps),
                     nnx.split(predictor)[0] if predictor is not None and future_steps else None)


def feature_params(pg: ProbeGrid, encoder: nnx.Module, predictor: nnx.Module | None = None) -> Any:
    """The frozen parameters the step functions take: the encoder's, or with future tokens both models'."""
    if pg.future_steps:
        return {"encoder": nnx.split(encoder)[1], "predictor": nnx.split(predictor)[1]}
    return nnx.split(encoder)[1]


def init_state(pg: ProbeGrid, seed: int) -> dict:
    """H probes, each initialised from its own key, stacked; their Adam moments; step 0."""
    keys = jax.random.split(jax.random.key(seed), len(pg.grid))
    params = [nnx.to_pure_dict(nnx.state(AttentiveProbe(pg.probe, rngs=nnx.Rngs(params=k)), nnx.Param)) for k in keys]
    params = jax.tree.map(lambda *x: jnp.stack(x), *params)
    return {"step": jnp.zeros((), jnp.int32), "params": params,
            "opt_state": jax.vmap(optax.scale_by_adam().init)(params)}


def tokens(pg: ProbeGrid, enc_params: Any, video: jax.Array) -> jax.Array:
    """Frozen features of clips [B, T, H, W, C] -> [B, N, D * max(1, len(layers))], or of clips of S temporal
    segments [B, S, T, H, W, C] -> [B, S * N, ...]: each segment encoded separately, the segments' tokens
    concatenated in order (the layout `view_tokens` gives one view in evaluation)."""
    if video.ndim == 6:
        b, s = video.shape[:2]
        t = tokens(pg, enc_params, video.reshape((b * s,) + video.shape[2:]))
        return t.reshape(b, s * t.shape[1], t.shape[2])
    if video.ndim != 5:
        raise ValueError(f"expected video [B, T, H, W, C] or [B, S, T, H, W, C], got shape {video.shape}")
    if pg.future_steps:  # the observed clip's tokens, then the predictor's tokens of the next future_steps steps
        enc = nnx.merge(pg.enc_graphdef, enc_params["encoder"])
        pred = nnx.merge(pg.pred_graphdef, enc_params["predictor"])
        x = enc(video)
        gt, gh, gw = enc.token_grid(video.shape)
        b, n = x.shape[0], gt * gh * gw
        ctx = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (b, n))
        tgt = jnp.broadcast_to(jnp.arange(n, n + pg.future_steps * gh * gw, dtype=jnp.int32),
                               (b, pg.future_steps * gh * gw))
        out = jnp.concatenate([x, pred(x, ctx, tgt, (gt + pg.future_steps, gh, gw))], axis=1)
        return jax.lax.stop_gradient(out.astype(jnp.float32))
    enc = nnx.merge(pg.enc_graphdef, enc_params)
    if not pg.layers:
        out = enc(video)
    else:
        _, hs = enc(video, layers=list(pg.layers))
        out = jnp.concatenate(hs, axis=-1)
    return jax.lax.stop_gradient(out.astype(jnp.float32))


def view_tokens(pg: ProbeGrid, enc_params: Any, video: jax.Array) -> jax.Array:
    """Evaluation clips [B, V, S, T, H, W, C] -> tokens per view [B, V, S * N, D]: each segment and view encoded
    separately, the tokens of a view's segments concatenated."""
    b, v, s = video.shape[:3]
    t = tokens(pg, enc_params, video.reshape((b * v * s,) + video.shape[3:]))
    return t.reshape(b, v, s * t.shape[1], t.shape[2])


def logits(pg: ProbeGrid, params: Any, x: jax.Array) -> list[jax.Array]:
    """One probe's logits per head for tokens [B, N, D]."""
    return nnx.merge(pg.graphdef, params)(x)


def focal_loss(lg: jax.Array, target: jax.Array, num_classes: int, alpha: float = 0.25,
               gamma: float = 2.0) -> jax.Array:
    """Sigmoid focal loss against one-hot targets, summed over classes, averaged over the batch."""
    y = jax.nn.one_hot(target, num_classes, dtype=jnp.float32)
    lg = lg.astype(jnp.float32)
    p = jax.nn.sigmoid(lg)
    bce = -(y * jax.nn.log_sigmoid(lg) + (1 - y) * jax.nn.log_sigmoid(-lg))
    p_t = y * p + (1 - y) * (1 - p)
    a_t = y * alpha + (1 - y) * (1 - alpha)
    return jnp.mean(jnp.sum(a_t * (1 - p_t) ** gamma * bce, axis=-1))


def loss_fn(pg: ProbeGrid, params: Any, x: jax.Array, labels: jax.Array) -> jax.Array:
    """labels [B] (classification) or [B, 3] (verb, noun, action)."""
    out = logits(pg, params, x)
    if pg.task == "classification":
        return optax.softmax_cross_entropy_with_integer_labels(out[0].astype(jnp.float32), labels.reshape(-1)).mean()
    return sum(focal_loss(lg, labels[:, i], lg.shape[-1]) for i, lg in enumerate(out))


def train_step(pg: ProbeGrid, state: dict, enc_params: Any, batch: dict) -> tuple[dict, dict]:
    """Encodes the batch once and updates every probe of the grid; metrics per probe [H]. batch['video'] is
    [B, T, H, W, C] or [B, S, T, H, W, C] (S segments, their tokens concatenated: see `tokens`)."""
    return update(pg, state, tokens(pg, enc_params, batch["video"]), batch["label"])


def update(pg: ProbeGrid, state: dict, x: jax.Array, labels: jax.Array) -> tuple[dict, dict]:
    """One step of every probe of the grid on features x [B, N, D] (computed in the step, or read from a cache)."""
    lrs = jnp.asarray([lr for lr, _ in pg.grid.pairs], jnp.float32)
    wds = jnp.asarray([wd for _, wd in pg.grid.pairs], jnp.float32)
    adam = optax.scale_by_adam()
    scale = pg.schedule(state["step"])

    def one(p, o, lr, wd):
        loss, g = jax.value_and_grad(lambda q: loss_fn(pg, q, x, labels))(p)
        u, o = adam.update(g, o, p)
        u = jax.tree.map(lambda u_, p_, m: u_ + wd * p_ if m else u_, u, p, pg.mask)
        return jax.tree.map(lambda p_, u_: p_ - lr * scale * u_, p, u), o, loss

    params, opt, loss = jax.vmap(one)(state["params"], state["opt_state"], lrs, wds)
    new = {"step": state["step"] + 1, "params": params, "opt_state": opt}
    return new, {"loss": loss, "lr_scale": scale}


def eval_probs(pg: ProbeGrid, params: Any, enc_params: Any, video: jax.Array) -> list[jax.Array]:
    """Every probe's class probabilities per head, softmax averaged over the V views: [H, B, C] per head.

    `video` is [B, V, S, T, H, W, C] (or [B, T, H, W, C]: one view, one segment)."""
    if video.ndim == 5:
        video = video[:, None, None]
    x = view_tokens(pg, enc_params, video)
    b, v = x.shape[:2]
    flat = x.reshape((b * v,) + x.shape[2:])

    def one(p):
        # The reference's anticipation heads score with sigmoids; softmax is the classification protocol.
        act = jax.nn.softmax if pg.task == "classification" else jax.nn.sigmoid
        return [act(lg.astype(jnp.float32)).reshape(b, v, -1).mean(1) for lg in logits(pg, p, flat)]

    return jax.vmap(one)(params)


def view_logits(pg: ProbeGrid, params: Any, enc_params: Any, video: jax.Array) -> list[jax.Array]:
    """One probe's logits per head and view, [B, V, C] (the evaluation path before the softmax)."""
    if video.ndim == 5:
        video = video[:, None, None]
    x = view_tokens(pg, enc_params, video)
    b, v = x.shape[:2]
    return [lg.reshape(b, v, -1) for lg in logits(pg, params, x.reshape((b * v,) + x.shape[2:]))]


def best_index(scores: np.ndarray) -> int:
    """The probe reported: the highest validation score (the first on ties)."""
    return int(np.argmax(np.asarray(scores)))
