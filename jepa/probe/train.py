"""Attentive probes on frozen encoder features, several hyper-parameters trained in parallel (vmap).

Features are extracted once from the frozen encoder (`extract_features`), then `train_probes` trains one probe per
(lr, weight decay) pair in a single jitted, vmapped program -- as the reference trains its 20 probes in parallel --
and reports each one's validation accuracy; the best is the reported number.
"""
from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jepa.models import AttentiveProbe, ProbeConfig
from jepa.train.optim import decay_mask
from jepa.sharding import logical_names


def extract_features(encoder: nnx.Module, batches: Iterable[dict], num: int, *, label_key: str = "label",
                     progress: bool = True, dtype: np.dtype | type = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Runs the frozen encoder (video [B, T, H, W, C] -> tokens [B, N, D]) over batches until `num` examples;
    returns (features stored as `dtype`, labels). Parameters go in as jit arguments, not closed-over constants.

    Rows whose 'valid' is False (padding, and the stand-ins for unusable records in a dataset read once: see
    jepa.data.pipeline) are left out. A `batches` generator is closed when enough examples are in."""
    from tqdm import tqdm

    graphdef, state = nnx.split(encoder)
    encode = jax.jit(lambda s, v: nnx.merge(graphdef, s)(v))
    feats, labels, seen = [], [], 0
    bar = tqdm(total=num, desc="features", disable=not progress, mininterval=1.0)
    for batch in batches:
        f = np.asarray(encode(state, jnp.asarray(batch["video"])), dtype)
        y = np.asarray(batch[label_key])
        if "valid" in batch:
            keep = np.asarray(batch["valid"], bool)
            f, y = f[keep], y[keep]
        take = min(len(f), num - seen)
        feats.append(f[:take])
        labels.append(y[:take])
        seen += take
        bar.update(take)
        if seen >= num:
            break
    bar.close()
    if hasattr(batches, "close"):
        batches.close()
    return np.concatenate(feats), np.concatenate(labels)


@dataclasses.dataclass
class ProbeResult:
    lr: float
    weight_decay: float
    val_accuracy: float
    train_accuracy: float


def train_probes(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], cfg: ProbeConfig, *,
                 lrs: Sequence[float] = (1e-3, 3e-4), wds: Sequence[float] = (0.01, 0.1), epochs: int = 20,
                 batch_size: int = 64, warmup_frac: float = 0.1, seed: int = 0, progress: bool = True
                 ) -> list[ProbeResult]:
    """Trains len(lrs) * len(wds) probes in parallel (single-label classification, cross-entropy, cosine lr)."""
    x_tr, y_tr = train
    x_va, y_va = val
    grid = list(itertools.product(lrs, wds))
    h = len(grid)
    lr_h = jnp.asarray([g[0] for g in grid], jnp.float32)
    wd_h = jnp.asarray([g[1] for g in grid], jnp.float32)

    probe = AttentiveProbe(cfg, rngs=nnx.Rngs(seed))
    graphdef, state = nnx.split(probe, nnx.Param)
    params0 = nnx.to_pure_dict(state)
    mask = decay_mask(logical_names(probe))
    params = jax.tree.map(lambda p: jnp.broadcast_to(p, (h,) + p.shape), params0)
    adam = optax.scale_by_adam()
    opt = jax.vmap(adam.init)(params)
    steps_per_epoch = max(1, len(x_tr) // batch_size)
    total = epochs * steps_per_epoch
    warmup = max(1, int(warmup_frac * total))
    sched = optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup, max(total, warmup + 1), 0.0)  # >= 1 decay step

    def logits_fn(p, x):
        return nnx.merge(graphdef, p)(x)[0]

    def loss_fn(p, x, y):
        lg = logits_fn(p, x).astype(jnp.float32)
        return optax.softmax_cross_entropy_with_integer_labels(lg, y).mean()

    def one_update(p, o, lr, wd, x, y, step):
        loss, g = jax.value_and_grad(loss_fn)(p, x, y)
        u, o = adam.update(g, o, p)
        u = jax.tree.map(lambda u_, p_, m: u_ + wd * p_ if m else u_, u, p, mask)
        p = jax.tree.map(lambda p_, u_: p_ - lr * sched(step) * u_, p, u)
        return p, o, loss

    @jax.jit
    def train_step(p, o, x, y, step):
        return jax.vmap(one_update, in_axes=(0, 0, 0, 0, None, None, None))(p, o, lr_h, wd_h, x, y, step)

    @jax.jit
    def predict(p, x):
        return jax.vmap(lambda pp: jnp.argmax(logits_fn(pp, x), -1))(p)

    def accuracy(p, x, y):
        correct = np.zeros(h)
        for i in range(0, len(x), 256):
            correct += (np.asarray(predict(p, jnp.asarray(x[i:i + 256]))) == y[None, i:i + 256]).sum(1)
        return correct / len(x)

    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    bar = tqdm(total=total, desc=f"{h} probes", disable=not progress, mininterval=1.0)
    step = 0
    for _ in range(epochs):
        order = rng.permutation(len(x_tr))
        for i in range(steps_per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            params, opt, loss = train_step(params, opt, jnp.asarray(x_tr[idx]), jnp.asarray(y_tr[idx]), step)
            step += 1
            bar.update(1)
        bar.set_postfix(loss=f"{float(jnp.min(loss)):.3f}", refresh=False)
    bar.close()
    va, tr = accuracy(params, x_va, y_va), accuracy(params, x_tr[:len(x_va) * 2], y_tr[:len(x_va) * 2])
    return [ProbeResult(float(lr), float(wd), float(a), float(t)) for (lr, wd), a, t in zip(grid, va, tr)]


def best(results: Sequence[ProbeResult]) -> ProbeResult:
    return max(results, key=lambda r: r.val_accuracy)
