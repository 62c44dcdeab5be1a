"""Multi-block 3-D masking for V-JEPA pretraining, generated in the input pipeline with numpy.

Each generator draws `num_blocks` spatial blocks (spanning all time steps by default) whose union is the target
set; the context is the complement. As in the reference, the block SIZE is drawn once per batch and block
POSITIONS per sample. Unlike the reference, which truncates index lists to the shortest in each batch (so shapes
change from batch to batch), every generator here has a FIXED number of context and target tokens per
configuration, so the jitted train step never recompiles: sizes are a low quantile of the counts (estimated once
by Monte Carlo at construction); a sample with more tokens keeps a random subset (like the reference's
truncation), and a sample with fewer is redrawn (rare by construction; after a few tries its lists are padded by
repeating its own ids, which only re-weights those tokens).

Output per generator g: 'ctx_g' [B, Kc] and 'tgt_g' [B, Kt] int32 token ids, sorted ascending.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One mask generator. Defaults are the reference's short-range generator."""

    num_blocks: int = 8
    spatial_scale: tuple[float, float] = (0.15, 0.15)
    temporal_scale: tuple[float, float] = (1.0, 1.0)
    aspect_ratio: tuple[float, float] = (0.75, 1.5)

    @classmethod
    def from_dict(cls, d) -> "BlockSpec":
        d = dict(d)
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"mask generator: unknown keys {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in d.items()})


SHORT_RANGE = BlockSpec(num_blocks=8, spatial_scale=(0.15, 0.15))
LONG_RANGE = BlockSpec(num_blocks=2, spatial_scale=(0.7, 0.7))
DEFAULT_SPECS = (SHORT_RANGE, LONG_RANGE)


class MultiBlockMasker:
    """Generates fixed-size context/target index lists for a token grid (T', H', W')."""

    def __init__(self, grid: tuple[int, int, int], specs: Sequence[BlockSpec] = DEFAULT_SPECS, *,
                 quantile: float = 0.05, calibration_samples: int = 2000, max_redraws: int = 20):
        self.grid = tuple(int(g) for g in grid)
        self.specs = tuple(specs)
        self.num_tokens = int(np.prod(self.grid))
        self.max_redraws = max_redraws
        rng = np.random.default_rng(12345)  # calibration is a property of the config, not of the run
        self.sizes: list[tuple[int, int]] = []
        for spec in self.specs:
            counts = []
            for _ in range(calibration_samples):
                size = self._block_size(spec, rng)
                n_ctx = int(self._sample_mask(spec, size, rng).sum())
                if 0 < n_ctx < self.num_tokens:  # empty context (or no target) is redrawn, as in the reference
                    counts.append(n_ctx)
            if len(counts) < calibration_samples // 10:
                raise ValueError(f"mask generator {spec} almost never leaves both context and targets on grid "
                                 f"{self.grid}: lower num_blocks or spatial_scale")
            counts = np.asarray(counts)
            kc = int(np.floor(np.quantile(counts, quantile)))
            kt = int(np.floor(np.quantile(self.num_tokens - counts, quantile)))
            if kc < 1 or kt < 1:
                raise ValueError(f"mask generator {spec} leaves no context or no target on grid {self.grid}")
            self.sizes.append((kc, kt))

    # -- sampling ---------------------------------------------------------------------------------------------
    def _block_size(self, spec: BlockSpec, rng: np.random.Generator) -> tuple[int, int, int]:
        t_dim, h_dim, w_dim = self.grid
        t = max(1, int(t_dim * rng.uniform(*spec.temporal_scale)))
        n = int(h_dim * w_dim * rng.uniform(*spec.spatial_scale))
        ar = rng.uniform(*spec.aspect_ratio)
        h = min(h_dim, max(1, int(round(math.sqrt(n * ar)))))
        w = min(w_dim, max(1, int(round(math.sqrt(n / ar)))))
        return t, h, w

    def _sample_mask(self, spec: BlockSpec, size, rng) -> np.ndarray:
        """Boolean [T'*H'*W'] with True = context (outside every block)."""
        t_dim, h_dim, w_dim = self.grid
        t, h, w = size
        keep = np.ones(self.grid, dtype=bool)
        for _ in range(spec.num_blocks):
            s = rng.integers(0, t_dim - t + 1)
            top = rng.integers(0, h_dim - h + 1)
            left = rng.integers(0, w_dim - w + 1)
            keep[s:s + t, top:top + h, left:left + w] = False
        return keep.reshape(-1)

    @staticmethod
    def _fit(ids: np.ndarray, k: int, rng) -> np.ndarray:
        if len(ids) >= k:
            return np.sort(rng.choice(ids, size=k, replace=False))
        return np.sort(np.concatenate([ids, rng.choice(ids, size=k - len(ids), replace=True)]))

    def __call__(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        out = {}
        for g, spec in enumerate(self.specs):
            kc, kt = self.sizes[g]
            size = self._block_size(spec, rng)
            ctx = np.empty((batch_size, kc), np.int32)
            tgt = np.empty((batch_size, kt), np.int32)
            for b in range(batch_size):
                for _ in range(self.max_redraws):
                    keep = self._sample_mask(spec, size, rng)
                    n_ctx = int(keep.sum())
                    if n_ctx >= kc and self.num_tokens - n_ctx >= kt:
                        break
                if keep.all() or not keep.any():  # degenerate draw: fall back to a random split
                    keep = np.zeros(self.num_tokens, bool)
                    keep[rng.choice(self.num_tokens, size=kc, replace=False)] = True
                ctx[b] = self._fit(np.flatnonzero(keep), kc, rng)
                tgt[b] = self._fit(np.flatnonzero(~keep), kt, rng)
            out[f"ctx_{g}"] = ctx
            out[f"tgt_{g}"] = tgt
        return out

    def describe(self) -> str:
        parts = [f"grid {self.grid} ({self.num_tokens} tokens)"]
        for spec, (kc, kt) in zip(self.specs, self.sizes):
            parts.append(f"{spec.num_blocks}x{spec.spatial_scale[0]:.2f}: context {kc}, targets {kt} "
                         f"({100 * kt / self.num_tokens:.0f}%)")
        return "; ".join(parts)
