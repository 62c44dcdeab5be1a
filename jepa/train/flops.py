"""Analytic FLOPs of V-JEPA models (matmuls only, multiply-add = 2 FLOPs), for MFU."""
from __future__ import annotations

import jax

# Dense bf16 peak per device, FLOP/s, by jax device_kind prefix.
PEAK_FLOPS = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6": 918e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100": 312e12,
}


def transformer_flops(tokens: int, width: int, depth: int, mlp_dim: int) -> float:
    """Forward FLOPs of `depth` pre-LN blocks over `tokens` tokens (per example)."""
    dense = 2 * tokens * (4 * width * width + 2 * width * mlp_dim)
    attn = 2 * 2 * tokens * tokens * width
    return depth * (dense + attn)


def peak_flops_per_device(override_tflops: float = 0.0) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    kind = jax.devices()[0].device_kind
    for prefix, peak in PEAK_FLOPS.items():
        if kind.startswith(prefix):
            return peak
    return None
