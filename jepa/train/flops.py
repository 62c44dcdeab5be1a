"""Analytic FLOPs of V-JEPA models (matmuls only, multiply-add = 2 FLOPs), for MFU, and the matrix products behind
them by shape (`Product`): the benchmark times those alone to bound what any program could reach."""
from __future__ import annotations

import dataclasses

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


@dataclasses.dataclass(frozen=True)
class Product:
    """`count` matrix products [m, k] x [k, n]; `group` of them are alike and independent (one layer's attention
    heads over a batch), so a program may run them as one batched product."""

    m: int
    k: int
    n: int
    count: int = 1
    group: int = 1

    @property
    def flops(self) -> float:
        return 2.0 * self.m * self.k * self.n * self.count


def linear_products(rows: int, fan_in: int, fan_out: int, *, count: int = 1, backward: bool = False,
                    input_grad: bool = True) -> list[Product]:
    """A dense layer on `rows` rows: y = x w; with `backward`, its weight gradient x^T dy and (if `input_grad`) its
    input gradient dy w^T."""
    out = [Product(rows, fan_in, fan_out, count)]
    if backward:
        out.append(Product(fan_in, rows, fan_out, count))
        if input_grad:
            out.append(Product(rows, fan_out, fan_in, count))
    return out


def transformer_products(batch: int, tokens: int, width: int, depth: int, mlp_dim: int, heads: int, *,
                         backward: bool = False) -> list[Product]:
    """The products of `depth` pre-LN blocks over [batch, tokens, width] (qkv, projection, MLP; per head q k^T and
    p v), and with `backward` those of the backward pass (per head: dp = do v^T, dv = p^T do, dq = ds k,
    dk = ds^T q): 3x the forward's FLOPs."""
    rows, hd, g = batch * tokens, width // heads, batch * heads
    out = []
    for fan_in, fan_out in ((width, 3 * width), (width, width), (width, mlp_dim), (mlp_dim, width)):
        out += linear_products(rows, fan_in, fan_out, count=depth, backward=backward)
    out += [Product(tokens, hd, tokens, depth * g, g), Product(tokens, tokens, hd, depth * g, g)]
    if backward:
        out += [Product(tokens, hd, tokens, depth * g, g), Product(tokens, tokens, hd, 3 * depth * g, g)]
    return out


def transformer_flops(tokens: int, width: int, depth: int, mlp_dim: int) -> float:
    """Forward FLOPs of `depth` pre-LN blocks over `tokens` tokens (per example; the head count does not change them)."""
    return sum(p.flops for p in transformer_products(1, tokens, width, depth, mlp_dim, heads=1))


def peak_flops_per_device(override_tflops: float = 0.0) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    kind = jax.devices()[0].device_kind
    for prefix, peak in PEAK_FLOPS.items():
        if kind.startswith(prefix):
            return peak
    return None
