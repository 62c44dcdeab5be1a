"""How long a program's matrix products take alone, each at its own shape, in XLA:CPU and in PyTorch.

A forward pass or a training step is mostly matrix products (`jepa.train.flops.Product`: the dense layers, and per
attention head q k^T and p v, with their backward products). Timed alone, back to back and nothing else, they give
the least time any program doing that work in that framework could take: in XLA:CPU, `jax.jit(jnp.matmul)` at the
same [m, k] x [k, n] (contiguous operands, the layout XLA likes best), alike products batched when that is faster
(one layer's heads), small ones repeated inside one call so that the dispatch of a call does not count. PyTorch's
products alone are timed the same way with `torch.matmul`. PyTorch's whole program time over XLA's products-alone
time is then the largest ratio any XLA:CPU program could reach against it: a ratio goal above that cannot be met by
an XLA:CPU float32 program on this machine, however its other work (LayerNorm, GELU, softmax, the optimizer) is done.
"""
from __future__ import annotations

import collections
import time

import numpy as np

from jepa.train.flops import Product

MIN_CALL_FLOPS = 4e8  # small products are repeated within one call until it does at least this much work ...
MAX_CALL_BYTES = 96 * 2**20  # ... while its operands and result stay under this
REPEATS = 7


def _calls(m: int, k: int, n: int, group: int) -> list[int]:
    """How many alike products one timed call computes: 1 (and `group`, if > 1), raised for small products."""
    one = 2.0 * m * k * n
    size = 4 * (m * k + k * n + m * n)
    out = set()
    for base in {1, group}:
        r = base
        while r * one < MIN_CALL_FLOPS and 2 * r * size <= MAX_CALL_BYTES:
            r *= 2
        if r * size <= MAX_CALL_BYTES or r == 1:
            out.add(r)
    return sorted(out)


def _fastest(fn, repeats: int) -> float:
    """The fastest of `repeats` calls after two warm-up calls: the least time the product takes here (a ceiling is
    read against it, so noise must not lower it)."""
    fn()
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def _jax_seconds(m: int, k: int, n: int, r: int, rng) -> float:
    import jax
    import jax.numpy as jnp

    shape = (r,) if r > 1 else ()
    a = jnp.asarray(rng.standard_normal(shape + (m, k), dtype=np.float32))
    b = jnp.asarray(rng.standard_normal(shape + (k, n), dtype=np.float32))
    f = jax.jit(jnp.matmul)
    return _fastest(lambda: f(a, b).block_until_ready(), REPEATS)


def _torch_seconds(m: int, k: int, n: int, r: int, rng) -> float:
    import torch

    shape = (r,) if r > 1 else ()
    a = torch.from_numpy(rng.standard_normal(shape + (m, k), dtype=np.float32))
    b = torch.from_numpy(rng.standard_normal(shape + (k, n), dtype=np.float32))
    with torch.inference_mode():
        return _fastest(lambda: torch.matmul(a, b), REPEATS)


def time_products(products: list[Product], threads: int) -> dict:
    """Seconds the products take alone in each framework (the sum over shapes of count x the fastest time per
    product, over the ways `_calls` groups it), their FLOPs, and per shape the FLOP/s of each. PyTorch runs on
    `threads` threads."""
    import torch

    torch.set_num_threads(threads)
    shapes: dict[tuple[int, int, int, int], int] = collections.Counter()
    for p in products:
        shapes[(p.m, p.k, p.n, p.group)] += p.count
    rng = np.random.default_rng(0)
    out = {"flops": sum(p.flops for p in products), "jax_s": 0.0, "torch_s": 0.0, "shapes": []}
    for (m, k, n, group), count in sorted(shapes.items(), key=lambda kv: -kv[1] * kv[0][0] * kv[0][1] * kv[0][2]):
        per = {}
        for name, timer in (("jax", _jax_seconds), ("torch", _torch_seconds)):
            per[name] = min(timer(m, k, n, r, rng) / r for r in _calls(m, k, n, group))
            out[f"{name}_s"] += count * per[name]
        one = 2.0 * m * k * n
        out["shapes"].append({"m": m, "k": k, "n": n, "count": count, "jax_flops_per_s": one / per["jax"],
                              "torch_flops_per_s": one / per["torch"]})
    return out
