"""The V-JEPA 2 mask-token predictor."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jepa.models.config import PredictorConfig
from jepa.models.layers import (as_dtype, block_stack, dense, grid_positions, layer_norm, matmul_dtype_of, rope_tables,
                                trunc_normal)

Array = jax.Array


class Predictor(nnx.Module):
    """Predicts the encoder's tokens at target positions from context tokens.

    Context tokens are projected D -> width; one learned mask token (selected by `mask_index`) is placed at every
    target position; the blocks see true 3-D RoPE positions of both; the outputs at the targets go through the final
    norm and width -> D. The reference sorts tokens by position before the blocks and un-sorts after: attention
    without a mask is permutation-equivariant and RoPE uses explicit positions, so the sort changes nothing and is
    skipped here.
    """

    def __init__(self, cfg: PredictorConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        dtype, pdtype = as_dtype(cfg.dtype), as_dtype(cfg.param_dtype)
        kw = dict(rngs=rngs, std=cfg.init_std, dtype=dtype, param_dtype=pdtype, matmul_dtype=matmul_dtype_of(cfg))
        self.embed = dense(cfg.embed_dim, cfg.width, ("embed_in", "embed"), **kw)
        minit = nnx.initializers.zeros_init() if cfg.zero_init_mask_tokens else trunc_normal(cfg.init_std)
        self.mask_tokens = nnx.Param(
            nnx.with_partitioning(minit, (None, "embed"))(rngs.params(), (cfg.num_mask_tokens, cfg.width), pdtype)
        )
        self.blocks = block_stack(cfg, rngs=rngs)
        self.norm = layer_norm(cfg.width, cfg.ln_eps, rngs=rngs, dtype=dtype, param_dtype=pdtype)
        self.proj = dense(cfg.width, cfg.embed_dim, ("embed", "embed_in"), **kw)

    def __call__(self, ctx: Array, ctx_ids: Array, tgt_ids: Array, grid: tuple[int, int, int], mask_index: int = 0):
        """ctx [B, Nc, D] context tokens at flat ids ctx_ids [B, Nc]; returns predictions [B, Nt, D] at tgt_ids."""
        cfg = self.cfg
        dtype = as_dtype(cfg.dtype)
        b, nt = tgt_ids.shape
        x_ctx = self.embed(ctx)
        token = self.mask_tokens[...][mask_index % cfg.num_mask_tokens].astype(dtype)
        x_tgt = jnp.broadcast_to(token, (b, nt, cfg.width))
        x = jnp.concatenate([x_ctx, x_tgt], axis=1)
        ids = jnp.concatenate([jnp.broadcast_to(ctx_ids, (b, ctx_ids.shape[-1])), tgt_ids], axis=1)
        rope = rope_tables(grid_positions(ids, grid), cfg.head_dim, cfg.rope, dtype)
        x = self.norm(self.blocks(x, rope))
        return self.proj(x[:, -nt:])
