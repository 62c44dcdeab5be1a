"""Model configurations and presets.

Configs are frozen dataclasses: hashable (usable as jit static arguments), printable, and convertible to and from
plain dicts (`to_dict` / `from_dict`) so they travel inside checkpoints and ml_collections experiment configs.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal

RopeMode = Literal["reference", "rotation"]


@dataclasses.dataclass(frozen=True)
class _Base:
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown keys {unknown}; known keys are {sorted(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def replace(self, **kw):
        return dataclasses.replace(self, **kw)


@dataclasses.dataclass(frozen=True)
class ViTConfig(_Base):
    """Video ViT encoder (3-D tubelet patches, 3-D RoPE, pre-LN blocks)."""

    width: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_dim: int = 4096
    patch_size: int = 16
    tubelet_size: int = 2
    in_chans: int = 3
    ln_eps: float = 1e-6
    qkv_bias: bool = True
    rope: RopeMode = "reference"  # 'reference' reproduces the released weights' quirk; 'rotation' is a true rotation
    init_std: float = 0.02
    remat: bool = False  # activation checkpointing of each block
    # Unroll the scan over blocks: the same numbers, a backward pass several times faster on CPU for small models
    # (XLA's CPU scan carries per-iteration overhead); compile time then grows with depth.
    unroll: bool = False
    dtype: str = "float32"  # compute dtype ('bfloat16' for mixed precision)
    param_dtype: str = "float32"
    # Products (projections, MLPs, attention) with operands rounded to this dtype ('bfloat16') and float32
    # accumulation, everything else in `dtype`: the reference's bf16 autocast training. None: products in `dtype`.
    matmul_dtype: str | None = None

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    def validate(self) -> None:
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} is not divisible by num_heads {self.num_heads}")
        if self.rope not in ("reference", "rotation"):
            raise ValueError(f"rope must be 'reference' or 'rotation', got {self.rope!r}")


@dataclasses.dataclass(frozen=True)
class PredictorConfig(_Base):
    """Mask-token predictor: narrow ViT over context tokens + mask tokens at target positions."""

    embed_dim: int = 1024  # encoder width (input and output)
    width: int = 384
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 1536
    num_mask_tokens: int = 10
    ln_eps: float = 1e-6
    qkv_bias: bool = True
    rope: RopeMode = "reference"
    init_std: float = 0.02
    zero_init_mask_tokens: bool = True
    remat: bool = False
    unroll: bool = False  # see ViTConfig.unroll
    dtype: str = "float32"
    param_dtype: str = "float32"
    matmul_dtype: str | None = None  # see ViTConfig.matmul_dtype

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads


@dataclasses.dataclass(frozen=True)
class ACPredictorConfig(_Base):
    """Action-conditioned, block-causal predictor (V-JEPA 2-AC)."""

    embed_dim: int = 1408
    width: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_dim: int = 4096
    action_dim: int = 7
    state_dim: int = 7
    use_extrinsics: bool = False  # extrinsics token (Linear action_dim-1 -> width); unused by released models
    grid_size: int = 16  # RoPE h/w positions are rescaled to this grid (reference behaviour); 0 = no rescale
    residual: bool = False  # predict a change on top of the input frame (not in the released model)
    # A learned absolute (h, w) position embedding added to the patch tokens (not in the released model). RoPE
    # alone tells a token only where others are relative to it; with a fixed camera, knowing where a token is lets
    # the predictor place the arm from its state. Needs grid_size = the token grid side.
    pos_embed: bool = False
    ln_eps: float = 1e-6
    qkv_bias: bool = True
    rope: RopeMode = "reference"
    init_std: float = 0.02
    remat: bool = False
    unroll: bool = False  # see ViTConfig.unroll
    dtype: str = "float32"
    param_dtype: str = "float32"
    matmul_dtype: str | None = None  # see ViTConfig.matmul_dtype

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    @property
    def cond_tokens(self) -> int:
        return 3 if self.use_extrinsics else 2


@dataclasses.dataclass(frozen=True)
class ProbeConfig(_Base):
    """Attentive probe: self-attention blocks, then cross-attention from learned queries, then linear heads."""

    embed_dim: int = 1024
    num_queries: int = 1
    num_classes: tuple[int, ...] = (174,)  # one linear head per query
    num_heads: int = 16
    depth: int = 3  # self-attention blocks before the cross-attention block
    mlp_ratio: float = 4.0
    ln_eps: float = 1e-5
    qkv_bias: bool = True
    init_std: float = 0.02
    dtype: str = "float32"
    param_dtype: str = "float32"

    def validate(self) -> None:
        if len(self.num_classes) != self.num_queries:
            raise ValueError(f"num_classes {self.num_classes} must have one entry per query ({self.num_queries})")


# --- Presets ------------------------------------------------------------------------------------------------
# Released V-JEPA 2 encoders. (ViT-g is the released "giant": 1408 wide, 40 deep, 22 heads of 64, MLP 6144.)
ENCODERS: dict[str, ViTConfig] = {
    "vit_test": ViTConfig(width=64, depth=2, num_heads=4, mlp_dim=256, patch_size=8),
    "vit_tiny": ViTConfig(width=192, depth=12, num_heads=3, mlp_dim=768),
    "vit_small": ViTConfig(width=384, depth=12, num_heads=6, mlp_dim=1536),
    "vit_base": ViTConfig(width=768, depth=12, num_heads=12, mlp_dim=3072),
    "vit_large": ViTConfig(width=1024, depth=24, num_heads=16, mlp_dim=4096),
    "vit_huge": ViTConfig(width=1280, depth=32, num_heads=16, mlp_dim=5120),
    "vit_giant": ViTConfig(width=1408, depth=40, num_heads=22, mlp_dim=6144),
}


def encoder_preset(name: str, **overrides) -> ViTConfig:
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder preset {name!r}; choose one of {sorted(ENCODERS)}")
    return ENCODERS[name].replace(**overrides)


def predictor_for(encoder: ViTConfig, **overrides) -> PredictorConfig:
    """The released predictor (384 wide, 12 deep, 12 heads) for an encoder, with overrides."""
    return PredictorConfig(embed_dim=encoder.width, dtype=encoder.dtype, param_dtype=encoder.param_dtype).replace(
        **overrides
    )


def ac_predictor_for(encoder: ViTConfig, **overrides) -> ACPredictorConfig:
    """The released AC predictor (1024 wide, 24 deep, 16 heads) for an encoder, with overrides."""
    return ACPredictorConfig(embed_dim=encoder.width, dtype=encoder.dtype, param_dtype=encoder.param_dtype).replace(
        **overrides
    )
