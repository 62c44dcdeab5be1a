"""The action-conditioned, block-causal predictor of V-JEPA 2-AC."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jepa.models.config import ACPredictorConfig
from jepa.models.layers import as_dtype, block_stack, dense, layer_norm, matmul_dtype_of, rope_tables, trunc_normal

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
        kw = dict(rngs=rngs, std=cfg.init_std, dtype=dtype, param_dtype=pdtype, matmul_dtype=matmul_dtype_of(cfg))
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
        b, t, gh, gw, _ = frames.shape
        x = self.step_tokens(frames, actions, states, extrinsics)
        n_step = x.shape[2]
        rope = self.rope(0, t, gh, gw)
        mask = block_causal_mask(t, n_step)[None, None]
        x = self.blocks(x.reshape(b, t * n_step, -1), rope, mask)
        return self.readout(x.reshape(b, t, n_step, -1), frames)

    # -- the pieces of a forward pass, shared by __call__ and the cached `decode` -------------------------------
    def step_tokens(self, frames: Array, actions: Array, states: Array, extrinsics: Array | None = None) -> Array:
        """The embedded sequence [B, T, cond + H'W', width]: per step the action, state (and extrinsics) tokens,
        then the frame's patch tokens."""
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
        return jnp.concatenate(cond + [x], axis=2)

    def rope(self, start, steps: int, gh: int, gw: int) -> tuple[Array, Array]:
        """RoPE tables of the tokens of steps start .. start + steps - 1 (`start` may be traced)."""
        cfg = self.cfg
        pos = ac_positions(steps, cfg.cond_tokens, gh, gw, cfg.grid_size)
        pos = pos.at[:, 0].add(jnp.asarray(start, jnp.float32))
        return rope_tables(pos, cfg.head_dim, cfg.rope, as_dtype(cfg.dtype))

    def readout(self, x: Array, frames: Array) -> Array:
        """Hidden states [B, T, cond + H'W', width] -> predictions [B, T, H', W', D] (patch tokens only)."""
        cfg = self.cfg
        b, t, gh, gw, _ = frames.shape
        x = self.proj(self.norm(x[:, :, cfg.cond_tokens:])).reshape(b, t, gh, gw, cfg.embed_dim)
        if cfg.residual:  # the blocks predict the change from frame t to frame t+1
            x = x + frames.astype(x.dtype)
        return x

    # -- cached decoding ------------------------------------------------------------------------------------------
    def init_cache(self, batch: int, steps: int, tokens_per_frame: int, dtype=jnp.float32) -> "KVCache":
        """An empty key/value cache for `steps` steps of `tokens_per_frame` patch tokens each."""
        cfg = self.cfg
        shape = (cfg.depth, batch, steps * (cfg.cond_tokens + tokens_per_frame), cfg.num_heads, cfg.head_dim)
        return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))

    def decode(self, frames: Array, actions: Array, states: Array, cache: "KVCache", start,
               extrinsics: Array | None = None) -> tuple[Array, "KVCache"]:
        """The forward pass of steps start .. start + T - 1 given the keys and values of steps < start in `cache`.

        Attention is block-causal, so earlier steps never depend on later ones: their keys and values, computed
        once, serve every continuation (observed context shared by every planning sample; each imagined step
        computed once instead of once per later step). Equal to `__call__` on the whole sequence (tested).
        Returns (predictions [B, T, H', W', D], the cache with these steps written)."""
        b, t, gh, gw, _ = frames.shape
        x = self.step_tokens(frames, actions, states, extrinsics)
        n_step = x.shape[2]
        length = cache.keys.shape[2]
        if length % n_step:
            raise ValueError(f"cache length {length} is not a multiple of the {n_step} tokens per step")
        q_step = start + jnp.arange(t * n_step) // n_step
        k_step = jnp.arange(length) // n_step
        mask = (k_step[None, :] <= q_step[:, None])[None, None]
        x, keys, values = self.blocks.decode(x.reshape(b, t * n_step, -1), self.rope(start, t, gh, gw),
                                             cache.keys, cache.values, start * n_step, mask)
        return self.readout(x.reshape(b, t, n_step, -1), frames), KVCache(keys, values)


class KVCache(NamedTuple):
    """Keys and values of the AC predictor's attention per layer: [depth, B, steps * tokens_per_step, heads, hd]."""

    keys: Array
    values: Array
