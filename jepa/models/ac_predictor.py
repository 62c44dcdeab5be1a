"""The action-conditioned, block-causal predictor of V-JEPA 2-AC."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jepa.models.config import ACPredictorConfig
from jepa.models.layers import block_stack, as_dtype, dense, layer_norm, rope_tables, trunc_normal

Array = jax.Array


def block_causal_mask(steps: int, tokens_per_step: int) -> Array:
    """[N, N] boolean: a token of step t attends to every token of steps <= t."""
    step = jnp.arange(steps * tokens_per_step) // tokens_per_step
    return step[:, None] >= step[None, :]


def ac_positions(steps: int, cond: int, gh: int, gw: int, grid_size: int) -> Array:
    """Positions [steps * (cond + gh*gw), 3] of the interleaved sequence [cond tokens, patch tokens] per step.

    Patch tokens get (t, h, w) with t = frame index and h, w rescaled to `grid_size` (reference behaviour);
    action/state(/extrinsics) tokens get (t, 0, 0): angle 0 leaves the h and w sub-blocks unrotated, which is
    exactly the reference's temporal-only RoPE for those tokens.
    """
    t = jnp.arange(steps, dtype=jnp.float32)
    hh, ww = jnp.meshgrid(jnp.arange(gh, dtype=jnp.float32), jnp.arange(gw, dtype=jnp.float32), indexing="ij")
    if grid_size:
        hh, ww = hh * (grid_size / gh), ww * (grid_size / gw)
    patch = jnp.stack([jnp.zeros_like(hh), hh, ww], -1).reshape(1, gh * gw, 3)
    cond_pos = jnp.zeros((1, cond, 3), jnp.float32)
    per_step = jnp.concatenate([cond_pos, patch], axis=1)  # [1, cond+HW, 3]
    pos = jnp.broadcast_to(per_step, (steps,) + per_step.shape[1:])
    pos = pos.at[..., 0].set(jnp.broadcast_to(t[:, None], pos.shape[:2]))
    return pos.reshape(-1, 3)


class ACPredictor(nnx.Module):
    """Per step t the sequence holds [action_t, state_t, (extrinsics_t,) patch tokens of frame t].

    Attention is block-causal over steps. Outputs at step t's patch tokens predict frame t+1's tokens.
    """

    def __init__(self, cfg: ACPredictorConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        dtype, pdtype = as_dtype(cfg.dtype), as_dtype(cfg.param_dtype)
        kw = dict(rngs=rngs, std=cfg.init_std, dtype=dtype, param_dtype=pdtype)
        self.embed = dense(cfg.embed_dim, cfg.width, ("embed_in", "embed"), **kw)
        self.action_encoder = dense(cfg.action_dim, cfg.width, (None, "embed"), **kw)
        self.state_encoder = dense(cfg.state_dim, cfg.width, (None, "embed"), **kw)
        self.extrinsics_encoder = dense(cfg.action_dim - 1, cfg.width, (None, "embed"), **kw) if cfg.use_extrinsics else None
        if cfg.pos_embed:
            if not cfg.grid_size:
                raise ValueError("pos_embed=True needs grid_size (the side of the token grid)")
            self.pos_embed = nnx.Param(nnx.with_partitioning(trunc_normal(cfg.init_std), (None, "embed"))(
                rngs.params(), (cfg.grid_size * cfg.grid_size, cfg.width), pdtype))
        else:
            self.pos_embed = None
        self.blocks = block_stack(cfg, rngs=rngs)
        self.norm = layer_norm(cfg.width, cfg.ln_eps, rngs=rngs, dtype=dtype, param_dtype=pdtype)
        self.proj = dense(cfg.width, cfg.embed_dim, ("embed", "embed_in"), **kw)
        if cfg.residual:  # start as the copy-the-input-frame model; training learns the change
            self.proj.kernel.set_value(jnp.zeros_like(self.proj.kernel[...]))

    def __call__(self, frames: Array, actions: Array, states: Array, extrinsics: Array | None = None) -> Array:
        """frames [B, T, H', W', D] (encoder tokens per frame), actions [B, T, A], states [B, T, S].

        Returns [B, T, H', W', D]: at step t, the prediction of frame t+1 (with cfg.residual, the input frame t
        plus the predicted change).
        """
        cfg = self.cfg
        b, t, gh, gw, _ = frames.shape
        x = self.embed(frames.reshape(b, t, gh * gw, -1))
        if self.pos_embed is not None:
            if gh * gw != self.pos_embed.shape[0]:
                raise ValueError(f"frames have a {gh}x{gw} token grid; the position embedding was made for "
                                 f"{cfg.grid_size}x{cfg.grid_size}")
            x = x + self.pos_embed[...].astype(x.dtype)
        cond = [self.action_encoder(actions)[:, :, None], self.state_encoder(states)[:, :, None]]
        if cfg.use_extrinsics:
            if extrinsics is None:
                raise ValueError("this AC predictor was configured with use_extrinsics=True: pass extrinsics")
            cond.append(self.extrinsics_encoder(extrinsics)[:, :, None])
        x = jnp.concatenate(cond + [x], axis=2)  # [B, T, cond+HW, W]
        n_step = x.shape[2]
        x = x.reshape(b, t * n_step, cfg.width)
        pos = ac_positions(t, cfg.cond_tokens, gh, gw, cfg.grid_size)
        rope = rope_tables(pos, cfg.head_dim, cfg.rope, as_dtype(cfg.dtype))
        mask = block_causal_mask(t, n_step)[None, None]
        x = self.blocks(x, rope, mask)
        x = x.reshape(b, t, n_step, cfg.width)[:, :, cfg.cond_tokens:]
        x = self.proj(self.norm(x)).reshape(b, t, gh, gw, cfg.embed_dim)
        if cfg.residual:  # the blocks predict the change from frame t to frame t+1
            x = x + frames.astype(x.dtype)
        return x
