"""The V-JEPA 2 video ViT encoder."""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jepa.models.config import ViTConfig
from jepa.models.layers import (as_dtype, block_stack, grid_positions, layer_norm, matmul, matmul_dtype_of, rope_tables,
                                select_layers, trunc_normal)

Array = jax.Array


class PatchEmbed3D(nnx.Module):
    """Tubelet embedding: a Conv3d with kernel = stride = (tubelet, patch, patch), as one matmul.

    Video is channels-last [B, T, H, W, C]; tokens come out in raster order (t, h, w). The kernel is stored as
    [tubelet, patch, patch, C, D] (PyTorch's Conv3d weight [D, C, t, h, w] transposed).
    """

    def __init__(self, cfg: ViTConfig, *, rngs: nnx.Rngs):
        t, p, c, d = cfg.tubelet_size, cfg.patch_size, cfg.in_chans, cfg.width
        self.cfg = cfg
        init = nnx.with_partitioning(trunc_normal(cfg.init_std), (None, None, None, None, "embed"))
        self.kernel = nnx.Param(init(rngs.params(), (t, p, p, c, d), as_dtype(cfg.param_dtype)))
        self.bias = nnx.Param(
            nnx.with_partitioning(nnx.initializers.zeros_init(), ("embed",))(rngs.params(), (d,), as_dtype(cfg.param_dtype))
        )

    def grid(self, shape: Sequence[int]) -> tuple[int, int, int]:
        """Token grid (T', H', W') for a video of shape [B, T, H, W, C]."""
        cfg = self.cfg
        _, t, h, w, _ = shape
        t = max(t, cfg.tubelet_size)  # images (T=1) are repeated into one tubelet
        for name, size, div in (("frames", t, cfg.tubelet_size), ("height", h, cfg.patch_size), ("width", w, cfg.patch_size)):
            if size % div:
                raise ValueError(f"video {name} {size} is not divisible by {div} (shape {tuple(shape)})")
        return t // cfg.tubelet_size, h // cfg.patch_size, w // cfg.patch_size

    def __call__(self, video: Array) -> tuple[Array, tuple[int, int, int]]:
        cfg = self.cfg
        dtype = as_dtype(cfg.dtype)
        if video.shape[1] < cfg.tubelet_size:
            video = jnp.repeat(video, cfg.tubelet_size // video.shape[1], axis=1)
        b = video.shape[0]
        gt, gh, gw = self.grid(video.shape)
        t, p = cfg.tubelet_size, cfg.patch_size
        x = video.astype(dtype).reshape(b, gt, t, gh, p, gw, p, cfg.in_chans)
        x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, gt * gh * gw, t * p * p * cfg.in_chans)
        k = self.kernel[...].astype(dtype).reshape(-1, cfg.width)
        low = matmul_dtype_of(cfg)
        y = x @ k if low is None else matmul(x, k, low).astype(dtype)
        return y + self.bias[...].astype(dtype), (gt, gh, gw)


class VisionTransformer(nnx.Module):
    """Video ViT: tubelet embedding, 3-D RoPE, pre-LN blocks, final LayerNorm. No CLS token, no pos-embed."""

    def __init__(self, cfg: ViTConfig, *, rngs: nnx.Rngs):
        cfg.validate()
        self.cfg = cfg
        dtype, pdtype = as_dtype(cfg.dtype), as_dtype(cfg.param_dtype)
        self.patch_embed = PatchEmbed3D(cfg, rngs=rngs)
        self.blocks = block_stack(cfg, rngs=rngs)
        self.norm = layer_norm(cfg.width, cfg.ln_eps, rngs=rngs, dtype=dtype, param_dtype=pdtype)

    def __call__(self, video: Array, keep: Array | None = None, *, layers: Sequence[int] | None = None):
        """Encode video [B, T, H, W, C].

        keep: optional [B, K] int token ids (sorted ascending) of the context: only those tokens enter the blocks,
            with RoPE at their original positions (the masked forward of pretraining).
        layers: optional block indices whose outputs are also returned, each through the shared final norm.
        Returns tokens [B, N or K, D] (and a list of per-layer tokens if `layers`).
        """
        cfg = self.cfg
        x, grid = self.patch_embed(video)
        ids = jnp.arange(x.shape[1])[None]
        if keep is not None:
            x = jnp.take_along_axis(x, keep[..., None], axis=1)
            ids = keep
        rope = rope_tables(grid_positions(ids, grid), cfg.head_dim, cfg.rope, as_dtype(cfg.dtype))
        if layers:
            x, hs = self.blocks(x, rope, collect=True)
            return self.norm(x), [self.norm(h) for h in select_layers(hs, layers, cfg.depth)]
        return self.norm(self.blocks(x, rope))

    def token_grid(self, video_shape: Sequence[int]) -> tuple[int, int, int]:
        return self.patch_embed.grid(video_shape)
