"""Probe grid: 20 attentive probes (lr x wd) trained as one jitted, vmapped step vs the same 20 trained one by one.

On the embedded motion task (synthetic clips written to a temp dir, 64 px, 8 frames) with a random-init encoder of
the demo's size (width 96, depth 4, 4 heads, mlp 384, patch 8, tubelet 2), measured side by side in one run:
  (a) grid:       the 20 probes (lr {5e-3, 3e-3, 1e-3, 3e-4, 1e-4} x wd {0.01, 0.1, 0.4, 0.8}) updated together by
                  `jepa.probe.grid.train_step`: each batch encoded once inside the step;
  (b) sequential: 20 runs of a one-probe grid (the same `train_step`), each re-encoding every batch.
Same steps, same batches (one fixed order), same data, same initial parameters (the 20-probe state is initialised
once and probe h sliced out of it for run h of (b)). Wall times are measured after compiling (ahead of time;
compile times are reported apart). (b) compiles ONE program, reused by its 20 runs with lr and wd passed as
arguments; 20 separate one-probe runs would compile 20. Both modes' probes are then scored on the validation clips
by the same jitted `eval_probs` (top-1); since it is the same math their accuracies agree up to float rounding.

Clips are decoded once before timing (eval transform: the whole clip); the input pipeline is not timed here
(benchmarks/pipeline.py measures it). The machine's load average is recorded: on a shared machine the numbers move
with it, the ratio less than the times.

    python -m benchmarks.probe_grid [--quick] [--train-clips 512] [--val-clips 256] [--steps 16] [--batch-size 32]
        [--out runs/bench/probe_grid.json] [--no-write]
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import tempfile
import time

import numpy as np

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.md")
LRS = (5e-3, 3e-3, 1e-3, 3e-4, 1e-4)
WDS = (0.01, 0.1, 0.4, 0.8)
# The demo's encoder (configs/pretrain/demo.py), at random init: features need not be good to time the probes.
ENCODER = dict(width=96, depth=4, num_heads=4, mlp_dim=384, patch_size=8, tubelet_size=2)
FRAMES, SIZE, CLASSES, PROBE_HEADS = 8, 64, 8, 4


def _clips(data_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Every clip of a split, decoded once in order: video [N, T, H, W, C] float32, labels [N]."""
    from jepa.data.pipeline import make_dataset
    from jepa.data.synthetic import synthetic_config

    cfg = synthetic_config(data_dir, num_frames=FRAMES, crop_size=SIZE, eval=True, shuffle=False, repeat=False,
                           batch_size=64, drop_remainder=False)
    it = iter(make_dataset(cfg, split=split, seed=0, shard_index=0, shard_count=1))
    vs, ys = [], []
    try:
        for b in it:
            keep = np.asarray(b["valid"], bool)
            v = np.asarray(b["video"])
            vs.append(v.reshape((len(keep),) + v.shape[-4:])[keep])
            ys.append(np.asarray(b["label"]).reshape(len(keep), -1)[keep, 0])
    finally:
        it.close()
    return np.concatenate(vs), np.concatenate(ys).astype(np.int32)


def _accuracy(ev, params, enc_params, video: np.ndarray, labels: np.ndarray, batch: int) -> tuple[np.ndarray,
                                                                                                      np.ndarray]:
    """Every probe's validation top-1 [H] and its class probabilities [H, N, C] (last batch padded)."""
    import jax

    probs = []
    for i in range(0, len(video), batch):
        v = video[i:i + batch]
        n = len(v)
        if n < batch:  # one program for every batch
            v = np.concatenate([v, np.zeros((batch - n,) + v.shape[1:], v.dtype)])
        probs.append(np.asarray(jax.device_get(ev(params, enc_params, v)[0]))[:, :n])
    p = np.concatenate(probs, axis=1)
    return (p.argmax(-1) == labels[None]).mean(1), p


def run(train_clips: int, val_clips: int, steps: int, batch_size: int, seed: int = 0) -> dict:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jepa.data import synthetic
    from jepa.models import ProbeConfig, VisionTransformer
    from jepa.models.config import encoder_preset
    from jepa.probe import grid as pg_lib

    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        synthetic.write_synthetic(tmp, num_train=train_clips, num_val=val_clips, num_shards=2, seed=seed, size=SIZE,
                                  frames=FRAMES, progress=False)
        vtr, ytr = _clips(tmp, "train")
        vva, yva = _clips(tmp, "validation")
    print(f"data: {len(ytr)} train + {len(yva)} validation clips written and decoded "
          f"({time.perf_counter() - t:.0f}s)", flush=True)

    encoder = VisionTransformer(encoder_preset("vit_test", **ENCODER), rngs=nnx.Rngs(seed))
    enc_params = nnx.split(encoder)[1]
    probe_cfg = ProbeConfig(embed_dim=encoder.cfg.width, num_queries=1, num_classes=(CLASSES,),
                            num_heads=PROBE_HEADS, depth=0)
    grid = pg_lib.Grid(LRS, WDS)
    h_all = len(grid)
    pg = pg_lib.make(encoder, probe_cfg, grid, task="classification", total_steps=steps,
                     warmup_steps=max(1, steps // 8))

    # The batches: one fixed order (a permutation per epoch), the same for both modes, on the device before timing.
    rng = np.random.default_rng(seed)
    per_epoch = len(ytr) // batch_size
    if per_epoch < 1:
        raise SystemExit(f"{len(ytr)} training clips make no batch of {batch_size}")
    order = np.concatenate([rng.permutation(len(ytr))[:per_epoch * batch_size] for _ in range(-(-steps // per_epoch))])
    batches = [{"video": jnp.asarray(vtr[idx]), "label": jnp.asarray(ytr[idx])}
               for idx in order[:steps * batch_size].reshape(steps, batch_size)]
    del vtr

    state0 = pg_lib.init_state(pg, seed)
    host0 = jax.device_get(state0)  # probe h of the sequential runs starts from row h of this

    # (a) the grid: one program, 20 probes per step, features computed once per batch inside it.
    step_a = jax.jit(lambda s, e, b: pg_lib.train_step(pg, s, e, b), donate_argnums=0)
    t = time.perf_counter()
    prog_a = step_a.lower(state0, enc_params, batches[0]).compile()
    compile_a = time.perf_counter() - t
    print(f"(a) grid: compiled in {compile_a:.1f}s", flush=True)
    state = state0
    t = time.perf_counter()
    for b in batches:
        state, m = prog_a(state, enc_params, b)
        loss_a = np.asarray(jax.device_get(m["loss"]))  # synchronises every step, as `jepa probe` does
    wall_a = time.perf_counter() - t
    params_a = state["params"]
    print(f"(a) grid: {steps} steps of {h_all} probes in {wall_a:.1f}s", flush=True)

    # (b) one probe at a time: the library's train_step on a one-probe grid whose lr and wd are arguments, so one
    # compiled program serves the 20 runs; every run encodes every batch again.
    pg1 = dataclasses.replace(pg, grid=pg_lib.Grid(LRS[:1], WDS[:1]))
    step_b = jax.jit(lambda s, e, b, lr, wd: pg_lib.train_step(dataclasses.replace(pg1, grid=pg_lib.Grid((lr,), (wd,))),
                                                               s, e, b), donate_argnums=0)

    def probe_state(h: int) -> dict:
        row = lambda x: x[h:h + 1]
        return jax.device_put({"step": host0["step"], "params": jax.tree.map(row, host0["params"]),
                               "opt_state": jax.tree.map(row, host0["opt_state"])})

    f32 = lambda x: jnp.asarray(x, jnp.float32)
    t = time.perf_counter()
    prog_b = step_b.lower(probe_state(0), enc_params, batches[0], f32(LRS[0]), f32(WDS[0])).compile()
    compile_b = time.perf_counter() - t
    print(f"(b) sequential: compiled in {compile_b:.1f}s", flush=True)
    finals, loss_b, run_s = [], [], []
    for h, (lr, wd) in enumerate(grid.pairs):
        s = probe_state(h)
        lr, wd = f32(lr), f32(wd)
        t = time.perf_counter()
        for b in batches:
            s, m = prog_b(s, enc_params, b, lr, wd)
            last = np.asarray(jax.device_get(m["loss"]))
        run_s.append(time.perf_counter() - t)
        finals.append(s["params"])
        loss_b.append(float(last[0]))
    wall_b = float(sum(run_s))
    params_b = jax.tree.map(lambda *x: jnp.concatenate(x), *finals)
    print(f"(b) sequential: {h_all} runs of {steps} steps in {wall_b:.1f}s", flush=True)

    # The encoder alone on a few of the same batches: what (b) repeats 20 times per batch.
    encode = jax.jit(lambda e, v: pg_lib.tokens(pg, e, v))
    jax.block_until_ready(encode(enc_params, batches[0]["video"]))
    enc_s = []
    for b in batches[:3]:
        t = time.perf_counter()
        jax.block_until_ready(encode(enc_params, b["video"]))
        enc_s.append(time.perf_counter() - t)

    ev = jax.jit(lambda p, e, v: pg_lib.eval_probs(pg, p, e, v))
    acc_a, prob_a = _accuracy(ev, params_a, enc_params, vva, yva, batch_size)
    acc_b, prob_b = _accuracy(ev, params_b, enc_params, vva, yva, batch_size)
    param_diff = max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(params_a),
                                                                     jax.tree.leaves(params_b)))
    probes = [dict(lr=lr, wd=wd, top1_grid=float(a), top1_sequential=float(b), final_loss_grid=float(la),
                   final_loss_sequential=lb, sequential_run_s=rs)
              for (lr, wd), a, b, la, lb, rs in zip(grid.pairs, acc_a, acc_b, loss_a, loss_b, run_s)]
    return dict(
        date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), cpus=os.cpu_count(), machine=platform.machine(),
        device=str(jax.devices()[0]), load_average=list(os.getloadavg()), encoder=ENCODER, frames=FRAMES, size=SIZE,
        probe=dict(depth=0, num_heads=PROBE_HEADS), train_clips=int(len(ytr)), val_clips=int(len(yva)),
        steps=steps, batch_size=batch_size, probes_count=h_all,
        grid=dict(compile_s=compile_a, programs=1, wall_s=wall_a, ms_per_step=1e3 * wall_a / steps),
        sequential=dict(compile_s=compile_b, programs=1, runs=h_all, wall_s=wall_b,
                        ms_per_step=1e3 * wall_b / (steps * h_all)),
        ratio=wall_b / wall_a, encode_ms_per_batch=1e3 * float(np.median(enc_s)),
        max_top1_diff_points=100 * float(np.max(np.abs(acc_a - acc_b))),
        max_prob_diff=float(np.max(np.abs(prob_a - prob_b))), max_param_diff=param_diff, probes=probes)


def to_markdown(r: dict) -> str:
    load = ", ".join(f"{x:.1f}" for x in r["load_average"])
    g, s = r["grid"], r["sequential"]
    lines = [f"\n## Probe grid: {r['probes_count']} probes in one vmapped step vs one after another "
             f"({r['date']}; {r['cpus']} CPUs, {r['machine']}, {r['device']}, load average {load})", "",
             f"Random-init demo-size encoder (width {r['encoder']['width']}, depth {r['encoder']['depth']}), "
             f"{r['train_clips']} train / {r['val_clips']} validation synthetic motion clips ({r['size']} px, "
             f"{r['frames']} frames), {r['steps']} steps of batch {r['batch_size']}, the same batches and initial "
             f"parameters in both modes; encoder alone {r['encode_ms_per_batch']:.0f} ms per batch.", "",
             "| mode | programs compiled | compile s | train wall s | ms per step |",
             "|---|---|---|---|---|",
             f"| (a) grid: {r['probes_count']} probes per step, one encode per batch | {g['programs']} | "
             f"{g['compile_s']:.1f} | {g['wall_s']:.1f} | {g['ms_per_step']:.0f} (all {r['probes_count']}) |",
             f"| (b) sequential: {s['runs']} one-probe runs, each re-encoding | {s['programs']} (reused: lr, wd as "
             f"arguments) | {s['compile_s']:.1f} | {s['wall_s']:.1f} | {s['ms_per_step']:.0f} (one probe) |", "",
             f"(b) / (a) train wall time: **{r['ratio']:.2f}x**.", "",
             "| lr | wd | top-1 (a) grid | top-1 (b) sequential | diff (points) |", "|---|---|---|---|---|"]
    for p in r["probes"]:
        lines.append(f"| {p['lr']:g} | {p['wd']:g} | {100 * p['top1_grid']:.1f}% | {100 * p['top1_sequential']:.1f}% "
                     f"| {100 * (p['top1_sequential'] - p['top1_grid']):+.1f} |")
    lines += ["", f"Max top-1 difference {r['max_top1_diff_points']:.2f} points; max |probability difference| "
                  f"{r['max_prob_diff']:.2e}; max |parameter difference| {r['max_param_diff']:.2e} (chance "
                  f"{100 / CLASSES:.1f}%).", ""]
    if r["load_average"][0] > (r["cpus"] or 1):
        lines += ["The machine was shared and busy (load average above its CPU count): the times are upper bounds "
                  "of what it takes when idle.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.probe_grid", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="128 train / 64 validation clips, 4 steps (~30 s)")
    ap.add_argument("--train-clips", type=int, default=None, help="default 512 (128 with --quick)")
    ap.add_argument("--val-clips", type=int, default=None, help="default 256 (64 with --quick)")
    ap.add_argument("--steps", type=int, default=None, help="default one epoch (4 with --quick)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench/probe_grid.json")
    ap.add_argument("--no-write", action="store_true", help=f"do not append the tables to {RESULTS}")
    a = ap.parse_args(argv)
    train_clips = a.train_clips or (128 if a.quick else 512)
    val_clips = a.val_clips or (64 if a.quick else 256)
    steps = a.steps or (4 if a.quick else max(1, train_clips // a.batch_size))
    r = run(train_clips, val_clips, steps, a.batch_size, a.seed)
    r["quick"] = a.quick
    table = to_markdown(r)
    print(table)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(r, f, indent=2)
    print(f"wrote {a.out}")
    if not a.no_write:
        with open(RESULTS, "a") as f:
            f.write(table)
        print(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
