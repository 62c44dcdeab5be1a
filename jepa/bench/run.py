"""`jepa bench`: the project against the PyTorch reference, every figure a ratio measured side by side in one run.

    jepa bench                 # every benchmark at the tiny, small and ViT-B-like configs -> BENCHMARKS.md, benchmarks.json
    jepa bench --quick         # everything on the tiny config, few repeats (a smoke run: seconds to minutes)
    jepa bench --only pretrain,planning --out /tmp/b

Benchmarks (each a module of jepa.bench returning report sections):
  pretrain      encoder forward and the full pretraining step vs transformers' V-JEPA 2 modules in PyTorch; MFU
  world_model   AC predictor training step and rollout, one CEM re-plan vs a reference-style PyTorch loop
  data          input pipeline clips/s vs the clips/s the training step consumes
  memory        compiled per-device memory for fsdp = 1, 2, 4, 8 on simulated devices
  profile       where the project's training step spends its time (jax.profiler), by kind of operation
PyTorch and transformers come with the test extra: pip install -e '.[test]'.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback

BENCHMARKS = ("pretrain", "world_model", "data", "memory", "profile")


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="jepa bench", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--quick", action="store_true", help="the tiny config only, few repeats")
    p.add_argument("--out", default=".", help="directory for BENCHMARKS.md and benchmarks.json (default: .)")
    p.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    p.add_argument("--threads", type=int, default=0, help="threads per framework (default: the usable CPUs)")
    p.add_argument("--workdir", default="", help="scratch space (default: a temporary directory)")
    a = p.parse_args(argv)
    a.only = [x for x in a.only.split(",") if x] or list(BENCHMARKS)
    unknown = sorted(set(a.only) - set(BENCHMARKS))
    if unknown:
        raise ValueError(f"--only: unknown benchmarks {unknown}; known: {', '.join(BENCHMARKS)}")
    if a.threads < 0:
        raise ValueError("--threads must be >= 0")
    return a


def _missing_reference() -> str | None:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        return (f"jepa bench compares against PyTorch and transformers (the test extra): pip install -e '.[test]' "
                f"({e})")
    return None


def main(argv: list[str]) -> int:
    import tempfile

    a = _parse(argv)
    missing = _missing_reference()
    if missing:
        print(f"jepa bench: error: {missing}", file=sys.stderr)
        return 2
    from jepa.bench import common, machine, report

    threads = a.threads or len(os.sched_getaffinity(0))
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[bench {time.perf_counter() - t0:6.0f}s] {msg}", file=sys.stderr, flush=True)

    info = machine.describe(threads)
    busy = info["load_average_start"][0] > info["cpus_usable"]
    if busy:
        log(f"warning: load average {info['load_average_start'][0]:.1f} on {info['cpus_usable']} CPUs: other work "
            "is running. PyTorch's OpenMP threads spin while they wait and lose far more than JAX's on a busy "
            "machine (10x and more measured), which would inflate the ratios: measure on an otherwise idle machine.")
    log(f"{info['cpu']}, {info['cpus_usable']} usable CPUs, {threads} threads; measuring the f32 and bf16 matmul peaks")
    peak = machine.matmul_peak(threads, quick=a.quick)
    log(f"f32 matmul peak {peak['peak_flops'] / 1e9:.0f} GFLOP/s (JAX {peak['jax_flops'] / 1e9:.0f}, "
        f"PyTorch {peak['torch_flops'] / 1e9:.0f}); bf16 {peak['bf16_peak_flops'] / 1e9:.0f} GFLOP/s (JAX "
        f"{peak['bf16_jax_flops'] / 1e9:.0f}, PyTorch {peak['bf16_torch_flops'] / 1e9:.0f})")
    timing = common.Timing.for_mode(a.quick)
    sections, errors = [], {}
    if a.workdir:
        os.makedirs(a.workdir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=a.workdir or None) as tmp:
        ctx = common.Context(quick=a.quick, timing=timing, threads=threads, peak_flops=peak["peak_flops"],
                             workdir=tmp, log=log, matmul=peak)
        for name in a.only:
            log(f"{name}: start")
            try:
                sections += importlib.import_module(f"jepa.bench.{name}").run(ctx)
            except Exception:  # one benchmark's failure is reported and the others still run
                errors[name] = traceback.format_exc()
                log(f"{name}: FAILED\n{errors[name]}")
    run = {"command": "jepa bench" + (" " + " ".join(argv) if argv else ""), "quick": a.quick, "threads": threads,
           "busy_at_start": busy,
           "machine": info, "peak": peak, "timing": vars(timing), "load_average_end": list(os.getloadavg()),
           "wall_s": time.perf_counter() - t0}
    md, js = report.write(a.out, run, sections, errors)
    targets = [t for s in sections for t in s.targets]
    log(f"wrote {md} and {js}: {sum(t.met for t in targets)} of {len(targets)} targets met"
        + (f"; FAILED: {', '.join(errors)}" if errors else ""))
    return 1 if errors else 0
