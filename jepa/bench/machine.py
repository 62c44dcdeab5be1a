"""The machine a benchmark ran on, and its f32 and bf16 matmul peaks measured in the same run."""
from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import sys

import numpy as np

from jepa.bench.common import Timing, compare

PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "transformers", "grain")
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "XLA_FLAGS")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The vector extensions that bound a CPU's matmul peak (AVX2 / AVX-512 / AMX), as /proc/cpuinfo lists them."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return sorted(f for f in have if f in {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni",
                                                          "amx_bf16", "amx_tile"})
    except OSError:
        pass
    return []


def describe(threads: int) -> dict:
    import jax

    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            versions[p] = None
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "cpus_usable": affinity,
        "threads": threads,
        "thread_env": {k: os.environ.get(k) for k in THREAD_ENV if os.environ.get(k)},
        "jax_devices": [f"{d.platform}:{d.id} ({d.device_kind})" for d in jax.devices()],
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": versions,
        "load_average_start": list(os.getloadavg()),
    }


def matmul_peak(threads: int, quick: bool = False) -> dict:
    """f32 matmul FLOP/s of a square matmul (n = 2048; 1024 quick) in each framework, side by side. The machine's
    peak for MFU is the faster of the two: what this CPU does on dense f32 matmuls with the best library here.
    The same for bfloat16 operands (JAX: float32 accumulation and result, as `jepa.models.layers.matmul` runs them;
    PyTorch: torch.mm of bfloat16 tensors, as under autocast): the peak the mixed-precision figures are read
    against (AMX / AVX512-BF16 cores run them several times faster than float32)."""
    import jax
    import jax.numpy as jnp
    import torch

    torch.set_num_threads(threads)
    n = 1024 if quick else 2048
    rng = np.random.default_rng(0)
    a_np, b_np = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    a, b = jnp.asarray(a_np), jnp.asarray(b_np)
    mm = jax.jit(jnp.matmul)
    ta, tb = torch.from_numpy(a_np), torch.from_numpy(b_np)
    t = compare({"jax": lambda: mm(a, b).block_until_ready(), "torch": lambda: torch.mm(ta, tb)},
                Timing(warmup=2, repeats=3 if quick else 9, pause_s=0.05))
    flops = 2.0 * n ** 3
    out = {"n": n, "jax_flops": flops / t["jax"]["median_s"], "torch_flops": flops / t["torch"]["median_s"]}
    out["peak_flops"] = max(out["jax_flops"], out["torch_flops"])
    a16, b16 = a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)
    mm16 = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
    ta16, tb16 = ta.to(torch.bfloat16), tb.to(torch.bfloat16)
    t = compare({"jax": lambda: mm16(a16, b16).block_until_ready(), "torch": lambda: torch.mm(ta16, tb16)},
                Timing(warmup=2, repeats=3 if quick else 9, pause_s=0.05))
    out.update({"bf16_jax_flops": flops / t["jax"]["median_s"], "bf16_torch_flops": flops / t["torch"]["median_s"]})
    out["bf16_peak_flops"] = max(out["bf16_jax_flops"], out["bf16_torch_flops"])
    return out
