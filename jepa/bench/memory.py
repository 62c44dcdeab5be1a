"""Per-device memory of the sharded pretraining state under FSDP: fsdp = 1, 2, 4, 8 on 8 simulated CPU devices.

For each fsdp N the mesh is data = 8 / N x fsdp = N and the global batch is 8 (one clip per device at every N, so
the activations are the same and only the state's layout changes). From the state's shardings (no arrays are made)
the bytes that device 0 holds of the parameters, the AdamW state and the EMA target encoder: ideally 1/N of the
fsdp = 1 figures. Then the step is compiled and XLA's `memory_analysis()` of the per-device program is read
(arguments, outputs, temporaries, aliased, generated code).

The work runs in subprocesses (`python -m jepa.bench.memory --worker ...`) started with
XLA_FLAGS=--xla_force_host_platform_device_count=8, which must be set before JAX starts; the fsdp values are split
over up to two of them, which compile side by side.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

from jepa.bench.common import Section, Target, fmt

DEVICES = 8
FSDP = (1, 2, 4, 8)
BATCH = 8  # divisible by the 8 batch shards (data x fsdp) at every N: one clip per device
GOAL = 0.9  # per-device bytes within 10% of 1/N
MiB = 2 ** 20
MEMORY_FIELDS = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes", "alias_size_in_bytes",
                 "generated_code_size_in_bytes", "host_argument_size_in_bytes", "host_output_size_in_bytes",
                 "host_temp_size_in_bytes", "host_alias_size_in_bytes", "host_generated_code_size_in_bytes")
GROUPS = ("params", "opt_state", "target")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository (configs/)


# --- Worker (in the subprocess with 8 simulated devices) ------------------------------------------------------
def _case(name: str):
    from jepa.bench import common

    return {c.name: c for c in common.CASES}[name]


def _leaf_bytes(x) -> tuple[int, int]:
    """(bytes on one device, bytes of the whole array) of a ShapeDtypeStruct carrying its sharding."""
    per = math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
    return int(per), int(math.prod(x.shape) * x.dtype.itemsize)


def measure(case_name: str, fsdp: int, compile_step: bool) -> dict:
    import jax

    from jepa.bench import common
    from jepa.train import pretrain

    cfg = common.pretrain_config(_case(case_name), fsdp=fsdp)
    cfg.train.batch_size = BATCH
    exp = pretrain.build(cfg)
    abstract, shard = pretrain.abstract_state(exp)
    names = {jax.tree_util.keystr(path): list(n) for path, n in jax.tree_util.tree_flatten_with_path(
        exp.names, is_leaf=lambda x: isinstance(x, tuple))[0]}
    out = {"fsdp": fsdp, "mesh": {k: int(v) for k, v in exp.mesh.shape.items()}, "devices": jax.device_count(),
           "batch": BATCH, "bytes": {}, "global_bytes": {}, "replicated": []}
    for name, tree in abstract.items():
        per = glob = 0
        for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
            p, g = _leaf_bytes(x)
            per, glob = per + p, glob + g
            if name in GROUPS and fsdp > 1 and x.sharding.is_fully_replicated and g:
                key = jax.tree_util.keystr(path)
                out["replicated"].append({"group": name, "path": key, "shape": list(x.shape), "bytes": g,
                                          "axes": names.get(key) if name == "params" else None})
        out["bytes"][name], out["global_bytes"][name] = per, glob
    out["bytes"]["state"] = sum(out["bytes"][k] for k in abstract)
    out["global_bytes"]["state"] = sum(out["global_bytes"][k] for k in abstract)
    if compile_step:
        t0 = time.perf_counter()
        compiled, _ = pretrain.compile_step(exp, shard, pretrain.batch_spec(exp), abstract)
        out["compile_s"] = time.perf_counter() - t0
        mem = compiled.memory_analysis()
        out["memory_analysis"] = None if mem is None else {f: int(getattr(mem, f, 0) or 0) for f in MEMORY_FIELDS}
        out["batch_bytes_per_device"] = int(sum(math.prod(v.shape) * v.dtype.itemsize
                                                for v in pretrain.batch_spec(exp).values()) // DEVICES)
    return out


def worker_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m jepa.bench.memory --worker")
    p.add_argument("--worker", action="store_true")
    p.add_argument("--case", required=True)
    p.add_argument("--fsdp", required=True, help="comma-separated fsdp sizes")
    p.add_argument("--compile", default="", help="comma-separated fsdp sizes whose step is compiled")
    a = p.parse_args(argv)
    compiled = {int(n) for n in a.compile.split(",") if n}
    for n in (int(n) for n in a.fsdp.split(",")):
        print("RESULT " + json.dumps(measure(a.case, n, n in compiled)), flush=True)
    return 0


# --- Parent ---------------------------------------------------------------------------------------------------
def _env() -> dict:
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "XLA_FLAGS": " ".join(flags + [f"--xla_force_host_platform_device_count={DEVICES}"]),
            "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT + (os.pathsep + path if path else "")}


def _plan(quick: bool, threads: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(fsdp sizes, those compiled) per subprocess. Quick: the state bytes of every N, the step compiled at the
    ends (1 and 8) only; a compile takes ~15 s even for a tiny model on XLA:CPU."""
    compiled = (1, 8) if quick else FSDP
    if threads < 2:
        return [(FSDP, compiled)]
    if quick:
        return [((1, 2), (1,)), ((8, 4), (8,))]
    return [((1, 8), (1, 8)), ((2, 4), (2, 4))]  # about equal compile work each


def _collect(ctx, case: str, timeout: float) -> list[dict]:
    procs = []
    for sizes, comp in _plan(ctx.quick, ctx.threads):
        cmd = [sys.executable, "-m", "jepa.bench.memory", "--worker", "--case", case,
               "--fsdp", ",".join(map(str, sizes)), "--compile", ",".join(map(str, comp))]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    results, errors = [], []
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            errors.append(f"timed out after {timeout:.0f}s: {' '.join(proc.args)}\n{err[-3000:]}")
            continue
        if proc.returncode:
            errors.append(f"exit {proc.returncode}: {' '.join(proc.args)}\n{err[-3000:]}")
        results += [json.loads(line[len("RESULT "):]) for line in out.splitlines() if line.startswith("RESULT ")]
    if errors:
        raise RuntimeError("memory benchmark worker failed:\n" + "\n".join(errors))
    return sorted(results, key=lambda r: r["fsdp"])


def _replicated_note(r: dict) -> str:
    """Which leaves the rules leave replicated at the largest fsdp, and what they cost per device."""
    reps = r["replicated"]
    if not reps:
        return f"At fsdp={r['fsdp']} every parameter, optimizer and target leaf is sharded."
    by_group = {g: sum(x["bytes"] for x in reps if x["group"] == g) for g in GROUPS}
    total = sum(by_group.values())
    params = sorted((x for x in reps if x["group"] == "params"), key=lambda x: -x["bytes"])
    axes = sorted({a for x in params for a in (x["axes"] or []) if a})
    shown = ", ".join(f"{x['path'].replace('][', '.').strip('[]').replace(chr(39), '')} {tuple(x['shape'])}"
                      for x in params[:8])
    more = f" and {len(params) - 8} smaller" if len(params) > 8 else ""
    scalars = sum(1 for x in reps if x["group"] == "opt_state" and not x["shape"])
    return (f"Replicated at fsdp={r['fsdp']}: {len(params)} parameter leaves (logical axes {axes}, which the rules "
            f"map to no mesh axis), {by_group['params'] / 1024:.1f} KiB, with their optimizer state "
            f"({by_group['opt_state'] / 1024:.1f} KiB, including {scalars} scalar step count(s)) and target copy "
            f"({by_group['target'] / 1024:.1f} KiB): {total / 1024:.1f} KiB on every device, "
            f"{100 * total / max(1, sum(r['bytes'][g] for g in GROUPS)):.2f}% of its state. Largest: {shown}{more}.")


def run(ctx) -> list[Section]:
    from jepa.bench import common

    case = common.TINY if ctx.quick else common.VITB
    ctx.log(f"[memory] {case.name}: fsdp {', '.join(map(str, FSDP))} on {DEVICES} simulated devices (subprocesses)")
    t0 = time.perf_counter()
    results = _collect(ctx, case.name, timeout=600 if ctx.quick else 3000)
    wall = time.perf_counter() - t0
    base = next(r for r in results if r["fsdp"] == 1)

    columns = ["fsdp (mesh)", "params MiB/device", "optimizer MiB/device", "target MiB/device",
               "total state MiB/device", "ideal (fsdp=1 / N)", "deviation from 1/N",
               "memory_analysis argument MiB", "temp MiB", "output MiB"]
    rows, worst = [], []
    for r in results:
        n = r["fsdp"]
        b = r["bytes"]
        ideal = base["bytes"]["state"] / n
        dev = b["state"] / ideal - 1
        r["deviation"] = {g: b[g] / (base["bytes"][g] / n) - 1 for g in (*GROUPS, "state")}
        worst += [(1 - abs(d), n, g) for g, d in r["deviation"].items()]
        ma = r.get("memory_analysis") or {}
        mesh = "x".join(f"{k}={v}" for k, v in r["mesh"].items())
        rows.append([f"{n} ({mesh})", fmt(b["params"] / MiB), fmt(b["opt_state"] / MiB), fmt(b["target"] / MiB),
                     fmt(b["state"] / MiB), fmt(ideal / MiB), f"{100 * dev:+.2f}%",
                     *(fmt(ma[f] / MiB) if f in ma else "-" for f in
                       ("argument_size_in_bytes", "temp_size_in_bytes", "output_size_in_bytes"))])
    value, n_worst, g_worst = min(worst)

    notes = [
        f"{case.label}, global batch {BATCH} (one clip per device at every N), on {DEVICES} simulated XLA:CPU host "
        f"devices: mesh data = {DEVICES}/N x fsdp = N. Bytes per device from the state's shardings (the shard shape "
        "of each leaf on device 0); 'total state' also counts the step counter and RNG key. Ideal = the fsdp=1 "
        "figure / N; deviation = actual / ideal - 1. The target takes the worst of params, optimizer, target and "
        f"total over N: 1 - |deviation| >= {GOAL} (worst here: {g_worst} at fsdp={n_worst}).",
        _replicated_note(results[-1]),
        "memory_analysis() is XLA's buffer assignment of the per-device program: arguments (the state's shard plus "
        "the batch's), outputs (the new state, donated: aliased onto the arguments), temporaries (activations, "
        "gradients, optimizer updates, and with FSDP the parameters gathered for each layer). XLA:CPU reports no "
        "generated-code size.",
    ]
    for r in results:
        ma = r.get("memory_analysis")
        if ma:
            figs = ", ".join(f"{k.replace('_size_in_bytes', '')} {ma[k] / MiB:.1f}" for k in MEMORY_FIELDS
                             if not k.startswith("host_") or ma[k])
            notes.append(f"fsdp={r['fsdp']} memory_analysis (MiB): {figs}; the batch is "
                         f"{r['batch_bytes_per_device'] / MiB:.1f} of the arguments; compiled in "
                         f"{r['compile_s']:.0f}s.")
    if ctx.quick:
        notes.append("Quick mode: the step is compiled at fsdp 1 and 8 only (state bytes at every N).")
    notes.append(f"Whole benchmark {wall:.0f}s in {len(_plan(ctx.quick, ctx.threads))} subprocess(es).")
    target = Target("FSDP state bytes per device vs 1/N (1 - worst |actual / ideal - 1|)", float(value), GOAL)
    return [Section(key="memory", title="Per-device memory under FSDP (simulated devices)", columns=columns,
                    rows=rows, notes=notes, targets=[target], data={"case": case.name, "results": results})]


if __name__ == "__main__":
    if "--worker" in sys.argv[1:]:
        raise SystemExit(worker_main(sys.argv[1:]))
    raise SystemExit("usage: python -m jepa.bench.memory --worker --case NAME --fsdp 1,2 [--compile 1]")
