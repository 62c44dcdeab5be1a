"""AdamW with the reference's decay mask, warmup-constant-cooldown learning rate, EMA momentum schedule."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def wcc_schedule(*, start: float, peak: float, final: float, warmup: int, total: int, cooldown: int) -> optax.Schedule:
    """Linear warmup start -> peak over `warmup` steps, constant, then linear cooldown to `final` over the last
    `cooldown` steps of `total` (V-JEPA 2: 1e-4 -> 5.25e-4 over 12k steps, constant, 12k-step cooldown)."""
    warmup = max(0, min(warmup, total))
    cooldown = max(0, min(cooldown, total - warmup))
    constant = total - warmup - cooldown

    def sched(step):
        step = jnp.asarray(step, jnp.float32)
        w = jnp.clip(step / max(warmup, 1), 0.0, 1.0)
        lr = jnp.where(step < warmup, start + (peak - start) * w, peak)
        c = jnp.clip((step - warmup - constant) / max(cooldown, 1), 0.0, 1.0)
        return jnp.where(step >= warmup + constant, peak + (final - peak) * c, lr)

    return sched


def ema_schedule(*, start: float, end: float, total: int) -> optax.Schedule:
    """EMA momentum, linear from start to end over `total` steps (constant 0.99925 in V-JEPA 2: start == end)."""
    def sched(step):
        f = jnp.clip(jnp.asarray(step, jnp.float32) / max(total, 1), 0.0, 1.0)
        return start + (end - start) * f

    return sched


def decay_mask(names: Any) -> Any:
    """True for parameters that get weight decay: matrices (>= 2 dims besides a stacked `layers` axis), including
    mask and query tokens as in the reference; False for biases and other 1-D parameters (norm scales)."""
    def one(n):
        n = tuple(n)
        return len([a for a in n if a != "layers"]) >= 2

    return jax.tree.map(one, names, is_leaf=lambda x: isinstance(x, tuple))


def adamw(lr: optax.Schedule, *, weight_decay: float, mask: Any, b1=0.9, b2=0.999, eps=1e-8,
          clip_norm: float = 0.0) -> optax.GradientTransformation:
    """The reference optimizer: AdamW(0.9, 0.999, 1e-8), decoupled decay on matrices only, no clipping by default."""
    parts = [optax.clip_by_global_norm(clip_norm)] if clip_norm else []
    parts.append(optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=mask))
    return optax.chain(*parts)


def ema_update(target: Any, online: Any, momentum) -> Any:
    return jax.tree.map(lambda t, o: (momentum * t + (1.0 - momentum) * o.astype(t.dtype)).astype(t.dtype), target, online)
