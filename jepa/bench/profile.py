"""Where the project's training step spends its time: a `jax.profiler` trace of a few steps, each XLA operation's
time (summed over the CPU threads that ran it) grouped by kind, read against the compiled HLO.

Kinds: `matmul` (fusions containing a dot: the projections, MLPs and attention products, with whatever XLA fused
into them), `layout` (copies, transposes, slices, concatenations, gathers and scatters that only move data),
`elementwise` (everything else XLA fused: LayerNorm, GELU, softmax, RoPE, AdamW, EMA ...). The matmul kind's
FLOP/s is the step's analytic FLOPs over the matmul fusions' event time, against the measured peak.
The HLO of the step is written next to the trace (`--workdir` keeps both) for a closer look.
"""
from __future__ import annotations

import collections
import glob
import os
import re
import shutil
import time

from jepa.bench.common import JaxStep, Section, SMALL, TINY, pretrain_config

LAYOUT_OPS = ("copy", "transpose", "slice", "dynamic-slice", "dynamic-update-slice", "concatenate", "gather",
              "scatter", "pad", "reverse", "broadcast", "bitcast", "iota")


def _instructions(hlo: str) -> dict[str, dict]:
    """Instruction name -> {'kind', 'op_name'} for the entry computation's (and called computations') instructions,
    classifying fusions by the operations of the computation they call."""
    comps: dict[str, str] = {}
    name = None
    body: list[str] = []
    for line in hlo.splitlines():
        m = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
        if m and not line.startswith(" "):
            name, body = m.group(1), []
            continue
        if line.startswith("}") and name:
            comps[name] = "\n".join(body)
            name = None
            continue
        if name:
            body.append(line)

    def ops_of(text: str) -> set[str]:
        return set(re.findall(r"= \S+ ([a-z\-]+)\(", text))

    out = {}
    for text in comps.values():
        for line in text.splitlines():
            m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = \S+ ([a-z\-]+)\(", line)
            if not m:
                continue
            inst, op = m.groups()
            called = re.search(r"calls=%?([\w.\-]+)", line)
            ops = ops_of(comps.get(called.group(1), "")) if called else {op}
            if ops & {"dot", "convolution"}:
                kind = "matmul"
            elif ops and ops <= set(LAYOUT_OPS) | {"parameter", "constant", "tuple", "get-tuple-element"}:
                kind = "layout"
            else:
                kind = "elementwise"
            src = re.search(r'op_name="([^"]+)"', line)
            out[inst] = {"kind": kind, "op_name": src.group(1) if src else ""}
    return out


def _thread_times(trace_dir: str) -> dict[str, float]:
    """Event name -> total ns over XLA's CPU worker threads (thunk-level events)."""
    from jax.profiler import ProfileData

    path = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)[0]
    totals: dict[str, float] = collections.Counter()
    for plane in ProfileData.from_file(path).planes:
        for line in plane.lines:
            if "XLAEigen" not in line.name and "PjRtCpuClient" not in line.name:  # XLA's workers and the caller
                continue
            for ev in line.events:
                if not ev.name.startswith(("ThunkExecutor", "ThreadpoolListener", "SlinkyThreadPool", "end: ")):
                    totals[ev.name] += ev.duration_ns
    return totals


def profile_step(case, workdir: str, steps: int = 3) -> dict:
    import jax

    step = JaxStep(pretrain_config(case))
    for _ in range(2):
        step()
    trace_dir = os.path.join(workdir, f"profile_{case.name}")
    shutil.rmtree(trace_dir, ignore_errors=True)  # one trace only: the one read below
    with jax.profiler.trace(trace_dir):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - t0) / steps
    hlo = step.compiled.as_text()
    with open(os.path.join(trace_dir, "step.hlo.txt"), "w") as f:
        f.write(hlo)
    insts = _instructions(hlo)
    times = _thread_times(trace_dir)
    by_kind: dict[str, float] = collections.Counter()
    by_source: dict[tuple[str, str], float] = collections.Counter()
    for name, ns in times.items():
        info = insts.get(name, {"kind": "other", "op_name": ""})
        by_kind[info["kind"]] += ns / steps
        src = re.sub(r"^jit\([^)]*\)/", "", info["op_name"])
        by_source[(info["kind"], src)] += ns / steps
    total = sum(by_kind.values())
    return {"case": case.name, "flops": step.flops, "total_thread_ns": total, "wall_s": wall, "by_kind": dict(by_kind),
            "top": [(k, s, ns) for (k, s), ns in by_source.most_common(12)], "trace_dir": trace_dir}


def notes(p: dict, threads: int, peak_flops: float, matmul: dict) -> list[str]:
    """What the profile says, in words (from `profile_step`'s figures and the run's matmul peak)."""
    total = p["total_thread_ns"]
    mm = p["by_kind"].get("matmul", 0.0)
    rate = p["flops"] / (mm / 1e9) if mm else float("nan")
    out = [f"One training step of the {p['label']} config under the profiler: {p['wall_s'] * 1e3:.0f} ms of wall "
           f"time; the operations' events add up to {total / 1e6:.0f} ms ({threads} threads: XLA runs independent "
           f"operations side by side, and a matmul library call may use both threads inside one event). "
           f"{100 * (1 - mm / total):.0f}% of that time is outside the matmul fusions. The step's analytic FLOPs "
           f"over the matmul fusions' event time: {rate / 1e9:.0f} GFLOP/s ({100 * rate / peak_flops:.0f}% of the "
           f"measured peak).",
           "Largest sources (kind, operation in the program, ms of event time per step): " + "; ".join(
               f"{k} `{s or '?'}` {ns / 1e6:.1f}" for k, s, ns in p["top"])]
    if matmul.get("jax_flops") and matmul.get("torch_flops"):
        out.append(
            f"Reading the gap: (1) XLA:CPU's own f32 matmul reaches {matmul['jax_flops'] / 1e9:.0f} GFLOP/s on a "
            f"{matmul['n']}^3 product, {100 * matmul['jax_flops'] / matmul['torch_flops']:.0f}% of PyTorch's "
            f"(oneDNN / MKL) {matmul['torch_flops'] / 1e9:.0f}: a forward pass that is mostly large matmuls runs at "
            f"about that ratio of PyTorch's (the forward rows above). (2) In the training step "
            f"{100 * (1 - mm / total):.0f}% of the profiled time goes to LayerNorm, GELU (erf), softmax, RoPE, "
            f"AdamW, EMA, the non-finite guard and layout copies, which XLA runs as its own fused loops. Together they put the step below PyTorch's at the small and "
            f"ViT-B-like configs and far from 80% MFU. (3) At the tiny config PyTorch's step is many small "
            f"operations, each with Python and dispatcher overhead, and the compiled step is faster.")
    return out


def run(ctx) -> list[Section]:
    case = TINY if ctx.quick else SMALL
    p = profile_step(case, ctx.workdir)
    p["label"] = case.label
    total = p["total_thread_ns"]
    rows = [[kind, p["by_kind"].get(kind, 0.0) / 1e6, 100 * p["by_kind"].get(kind, 0.0) / total]
            for kind in ("matmul", "elementwise", "layout", "other")]
    ctx.log(f"profile {case.name}: matmul fusions {100 * p['by_kind'].get('matmul', 0) / total:.0f}% of the "
            f"operations' time")
    return [Section("profile", f"Profile: where the training step's time goes ({case.name})",
                    ["kind", "ms of event time / step", "% of step"], rows,
                    notes(p, ctx.threads, ctx.peak_flops, ctx.matmul), data=p)]
