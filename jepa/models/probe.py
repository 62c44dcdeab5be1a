"""The attentive probe: frozen-encoder classification / anticipation head."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jepa.models.config import ProbeConfig
from jepa.models.layers import MLP, Block, BlockStack, as_dtype, attention, dense, layer_norm, trunc_normal

Array = jax.Array


class CrossAttention(nnx.Module):
    """Learned queries attend to tokens: separate q and kv Linears and NO output projection."""

    def __init__(self, dim: int, num_heads: int, *, qkv_bias, rngs, std, dtype, param_dtype):
        kw = dict(rngs=rngs, std=std, dtype=dtype, param_dtype=param_dtype)
        self.num_heads = num_heads
        self.q = dense(dim, dim, ("embed", "qkv"), bias=qkv_bias, **kw)
        self.kv = dense(dim, 2 * dim, ("embed", "qkv"), bias=qkv_bias, **kw)

    def __call__(self, q: Array, x: Array) -> Array:
        b, nq, d = q.shape
        n = x.shape[1]
        hd = d // self.num_heads
        q = self.q(q).reshape(b, nq, self.num_heads, hd)
        kv = self.kv(x).reshape(b, n, 2, self.num_heads, hd)
        return attention(q, kv[:, :, 0], kv[:, :, 1]).reshape(b, nq, d)


class CrossAttentionBlock(nnx.Module):
    """q += xattn(q, LN1(x)); q += mlp(LN2(q)). The queries themselves are not normalised."""

    def __init__(self, dim, num_heads, mlp_dim, *, eps, qkv_bias, rngs, std, dtype, param_dtype):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.norm1 = layer_norm(dim, eps, **kw)
        self.xattn = CrossAttention(dim, num_heads, qkv_bias=qkv_bias, std=std, **kw)
        self.norm2 = layer_norm(dim, eps, **kw)
        self.mlp = MLP(dim, mlp_dim, std=std, **kw)

    def __call__(self, q: Array, x: Array) -> Array:
        q = q + self.xattn(q, self.norm1(x))
        return q + self.mlp(self.norm2(q))


class AttentiveProbe(nnx.Module):
    """`depth` self-attention blocks over all tokens (no position encoding), one cross-attention block from
    `num_queries` learned queries, then one linear head per query. Returns a list of logits, one per head."""

    def __init__(self, cfg: ProbeConfig, *, rngs: nnx.Rngs):
        cfg.validate()
        self.cfg = cfg
        dtype, pdtype = as_dtype(cfg.dtype), as_dtype(cfg.param_dtype)
        d = cfg.embed_dim
        mlp_dim = int(d * cfg.mlp_ratio)
        self.query_tokens = nnx.Param(
            nnx.with_partitioning(trunc_normal(cfg.init_std), (None, "embed"))(rngs.params(), (cfg.num_queries, d), pdtype)
        )
        self.blocks = (
            BlockStack(
                cfg.depth,
                lambda r: Block(d, cfg.num_heads, mlp_dim, eps=cfg.ln_eps, qkv_bias=cfg.qkv_bias, rngs=r,
                                std=cfg.init_std, dtype=dtype, param_dtype=pdtype),
                rngs=rngs,
            )
            if cfg.depth
            else None
        )
        self.cross = CrossAttentionBlock(d, cfg.num_heads, mlp_dim, eps=cfg.ln_eps, qkv_bias=cfg.qkv_bias, rngs=rngs,
                                         std=cfg.init_std, dtype=dtype, param_dtype=pdtype)
        fc2 = self.cross.mlp.fc2.kernel
        fc2.set_value((fc2[...] / jnp.sqrt(2.0 * max(cfg.depth, 1))).astype(fc2.dtype))
        self.heads = nnx.List(
            [dense(d, c, ("embed", "classes"), rngs=rngs, std=cfg.init_std, dtype=dtype, param_dtype=pdtype)
             for c in cfg.num_classes]
        )

    def pool(self, tokens: Array) -> Array:
        """tokens [B, N, D] -> pooled query outputs [B, num_queries, D]."""
        x = tokens.astype(as_dtype(self.cfg.dtype))
        if self.blocks is not None:
            x = self.blocks(x)
        q = jnp.broadcast_to(self.query_tokens[...].astype(x.dtype), (x.shape[0],) + self.query_tokens.shape)
        return self.cross(q, x)

    def __call__(self, tokens: Array) -> list[Array]:
        pooled = self.pool(tokens)
        return [head(pooled[:, i]) for i, head in enumerate(self.heads)]
