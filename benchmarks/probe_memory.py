"""Peak host memory of `jepa probe` at two training-set sizes, online and cached features, vs the old host path.

`jepa probe` (jepa.probe.run.train, configs/probe/demo.py) has two feature modes: features='online' encodes each
batch inside the jitted train step (nothing per clip is kept anywhere), features='cache' (the demo's) encodes the
training clips once into a memory-mapped tokens.npy and reads it back a batch at a time. For contrast the old path,
`jepa.probe.train.extract_features`, keeps every clip's tokens in host memory (float32 [N, 256, 96] here: 96 KiB
a clip), so its peak grows with the number of clips.

Each measurement runs in a fresh subprocess (`python -m benchmarks.probe_memory --child ...`) and reports its RSS
high-water mark (getrusage(RUSAGE_SELF).ru_maxrss) and, sampled every 10 ms from /proc/self/status, the peaks of
its anonymous (RssAnon: heap, XLA buffers) and file-backed (RssFile: mapped files, e.g. the token cache's pages)
resident memory. Mapped file pages count in RSS while mapped but are page cache the kernel can drop, so the cache
mode's RSS may grow with the clips while its anonymous memory does not.

The data: embedded synthetic motion clips (64 px, 8 frames) written once to a temp dir; the small set is the first
shard of the large one (same clips, same validation set); a random-init encoder of the demo's size (width 96,
depth 4, 4 heads, mlp 384, patch 8, tubelet 2) saved as a bundle. `jepa probe` makes the same number of steps on
either set, over every training clip (one epoch of the large set, large/small epochs of the small one: a peak is
the highest of the steps' transient working sets, which wanders from step to step, so more steps alone would raise
it), then evaluates the validation clips. The old path extracts the features of every training and validation clip
(its probe training on top of them is left out: it would only add to its peak).

The probes: 4 of the demo config's 20 (lr {5e-3, 1e-3} x wd {0.01, 0.4}) to keep the run near 2 minutes on 2 busy
cores; --full-grid runs all 20 (about twice as long; the peaks are higher, the growth the same).

    python -m benchmarks.probe_memory [--quick] [--full-grid] [--sizes 256,1024] [--val-clips 64]
        [--modes online,cache,old] [--out runs/bench/probe_memory.json] [--no-write]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.md")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENCODER = dict(width=96, depth=4, num_heads=4, mlp_dim=384, patch_size=8, tubelet_size=2)  # the demo's
FRAMES, SIZE = 8, 64
TOKEN_BYTES = (FRAMES // 2) * (SIZE // 8) ** 2 * 96 * 4  # one clip's float32 tokens: 256 x 96
BATCH = 32  # configs/probe/demo.py's train.batch_size
# The probe grids (lr x wd): the default is 4 of the demo config's 20 (--full-grid: all 20, ~2x the time); --quick
# the smoke config's 2. The per-step working set grows with the grid, not with the clips.
GRIDS = {"quick": ([1e-2, 3e-3], [0.05]), "default": ([5e-3, 1e-3], [0.01, 0.4]), "full": None}


MODES = {"online": "`jepa probe`, features='online' (encoded in the step)",
         "cache": "`jepa probe`, features='cache' (memory-mapped tokens.npy)",
         "old": "`extract_features` (tokens in host memory)"}


class _Sampler:
    """Peaks of RssAnon and RssFile (MiB), read from /proc/self/status every `period` s in a thread."""

    def __init__(self, period: float = 0.01):
        import threading

        self.peak = {"RssAnon": 0.0, "RssFile": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period,), daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with open("/proc/self/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in self.peak:
                    self.peak[key] = max(self.peak[key], int(line.split()[1]) / 1024)

    def _run(self, period: float) -> None:
        while not self._stop.wait(period):
            self._read()

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        self._read()
        return {"anon_peak_mib": self.peak["RssAnon"], "file_peak_mib": self.peak["RssFile"]}


def _child_probe(data: str, bundle: str, workdir: str, features: str, grid: str, epochs: int) -> dict:
    """`jepa probe` on configs/probe/demo.py: `epochs` passes over every training clip, then evaluation."""
    from jepa.config import load_config
    from jepa.probe.run import train

    overrides = [f"--config.encoder_bundle={bundle}", f"--config.features={features}",
                 f"--config.data.sources=[{{'glob': '{data}/synthetic-{{split}}-*.array_record'}}]",
                 f"--config.train.epochs={epochs}", "--config.train.epoch_clips=0",
                 f"--config.train.warmup_epochs={0.1 * epochs}", "--config.eval.max_clips=0"]
    if GRIDS[grid]:
        overrides += [f"--config.grid.lrs={GRIDS[grid][0]}", f"--config.grid.wds={GRIDS[grid][1]}"]
    cfg = load_config(os.path.join(ROOT, "configs/probe/demo.py"), overrides)
    res = train(cfg, workdir, progress=False)
    return dict(steps=int(res["train_steps"]), batch_size=int(cfg.train.batch_size), probes=len(res["grid"]),
                val_clips=int(res["clips"]), best_top1=float(res["summary"]["best"]["top1"]))


def _child_old(data: str, bundle: str) -> dict:
    """The old path: every training and validation clip's tokens extracted into host memory."""
    from jepa.data.pipeline import make_dataset, open_source, resolve_config
    from jepa.data.synthetic import synthetic_config
    from jepa.models.io import load_bundle
    from jepa.probe.train import extract_features

    def batches(split: str):
        cfg = synthetic_config(data, num_frames=FRAMES, crop_size=SIZE, eval=True, shuffle=False, repeat=False,
                               batch_size=BATCH, drop_remainder=False)
        it = iter(make_dataset(cfg, split=split, seed=0, shard_index=0, shard_count=1))
        try:
            for b in it:
                v = b["video"]  # [B, views, segments, T, H, W, C]: one view, one segment
                yield {**b, "video": v.reshape((-1,) + v.shape[-4:])}
        finally:
            it.close()

    def count(split: str) -> int:
        c = synthetic_config(data, num_frames=FRAMES, crop_size=SIZE)
        return sum(len(open_source(s, split, i)) for i, s in enumerate(resolve_config(c)["sources"]))

    encoder = load_bundle(bundle, ["encoder"])["encoder"]
    tr = extract_features(encoder, batches("train"), count("train"), progress=False)
    va = extract_features(encoder, batches("validation"), count("validation"), progress=False)
    return dict(train_feature_mib=tr[0].nbytes / 2 ** 20, feature_shape=list(tr[0].shape), val_clips=int(len(va[1])))


def _child(a: argparse.Namespace) -> int:
    sampler = _Sampler()
    if a.child == "old":
        r = _child_old(a.data, a.bundle)
    else:
        r = _child_probe(a.data, a.bundle, a.workdir, a.child, a.grid, a.epochs)
    r.update(sampler.stop())
    r["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print("RESULT " + json.dumps(r), flush=True)
    return 0


def _measure(mode: str, data: str, bundle: str, workdir: str, grid: str, epochs: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.probe_memory", "--child", mode, "--data", data, "--bundle", bundle,
           "--workdir", workdir, "--epochs", str(epochs), "--grid", grid]
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode or not lines:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    r = json.loads(lines[-1][len("RESULT "):])
    r["wall_s"] = time.perf_counter() - t
    return r


def run(sizes: tuple[int, int], val_clips: int, grid: str, modes: tuple[str, ...]) -> dict:
    from flax import nnx

    from jepa.data import synthetic
    from jepa.models import VisionTransformer
    from jepa.models.config import encoder_preset
    from jepa.models.io import save_bundle

    small, large = sizes
    if small < BATCH or small % BATCH or large % small:
        raise SystemExit(f"--sizes: two multiples of the batch size {BATCH}, the large one a multiple of the small "
                         f"one; got {small}, {large}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        shards = large // small
        paths = synthetic.write_synthetic(os.path.join(tmp, f"data{large}"), num_train=large, num_val=val_clips,
                                          num_shards=shards, size=SIZE, frames=FRAMES, progress=False)
        dirs = {large: os.path.join(tmp, f"data{large}"), small: os.path.join(tmp, f"data{small}")}
        os.makedirs(dirs[small])
        for p in paths["train"][:1] + paths["validation"]:  # the first training shard, the same validation clips
            os.symlink(p, os.path.join(dirs[small], os.path.basename(p)))
        bundle = os.path.join(tmp, "encoder")
        save_bundle(bundle, {"encoder": VisionTransformer(encoder_preset("vit_test", **ENCODER), rngs=nnx.Rngs(0))})
        print(f"data: {large} train clips ({shards} shards; the small set is the first) + {val_clips} validation "
              f"({time.perf_counter() - t:.0f}s)", flush=True)
        for mode in modes:
            for n in sizes:
                # Either set gets as many steps (the small one large/small epochs).
                r = _measure(mode, dirs[n], bundle, os.path.join(tmp, f"{mode}{n}"), grid, large // n)
                r.update(mode=mode, train_clips=n)
                rows.append(r)
                print(f"{mode}, {n} clips: peak RSS {r['peak_mib']:.0f} MiB (sampled peaks: anonymous "
                      f"{r['anon_peak_mib']:.0f}, file-backed {r['file_peak_mib']:.0f}; {r['wall_s']:.0f}s)",
                      flush=True)
    return dict(date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), cpus=os.cpu_count(),
                machine=platform.machine(), load_average=list(os.getloadavg()), encoder=ENCODER, frames=FRAMES,
                size=SIZE, sizes=list(sizes), val_clips=val_clips, grid=grid, token_mib_per_clip=TOKEN_BYTES / 2 ** 20,
                rows=rows)


def to_markdown(r: dict) -> str:
    small, large = r["sizes"]
    extra = (large - small) * r["token_mib_per_clip"]
    steps = {x["mode"]: x for x in r["rows"] if "steps" in x}
    lines = [f"\n## Probe host memory vs training clips ({r['date']}; {r['cpus']} CPUs, {r['machine']})", "",
             f"Peak RSS (ru_maxrss, MiB) of a fresh process per cell, {small} vs {large} training clips; in brackets "
             f"the peaks of its anonymous / file-backed resident memory sampled every 10 ms. Random-init demo-size "
             f"encoder, synthetic motion clips ({r['size']} px, {r['frames']} frames), {r['val_clips']} validation "
             f"clips; one clip's tokens are {1024 * r['token_mib_per_clip']:.0f} KiB (float32), the extra "
             f"{large - small} clips' {extra:.0f} MiB."
             + (f" `jepa probe`: {next(iter(steps.values()))['probes']} probes, "
                f"{next(iter(steps.values()))['steps']} steps at either size ({large // small} epochs / 1 epoch)."
                if steps else ""), "",
             f"| path | {small} clips | {large} clips | ratio | growth | anonymous growth |",
             "|---|---|---|---|---|---|"]
    for mode in MODES:
        rs = {x["train_clips"]: x for x in r["rows"] if x["mode"] == mode}
        if len(rs) < 2:
            continue
        a, b = rs[small], rs[large]
        cell = lambda x: f"{x['peak_mib']:.0f} ({x['anon_peak_mib']:.0f} / {x['file_peak_mib']:.0f})"
        lines.append(f"| {MODES[mode]} | {cell(a)} | {cell(b)} | {b['peak_mib'] / a['peak_mib']:.2f} | "
                     f"{b['peak_mib'] - a['peak_mib']:+.0f} | {b['anon_peak_mib'] - a['anon_peak_mib']:+.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.probe_memory", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="64 and 256 clips, 2 probes, 32 validation clips, --modes online,old (~40 s: checks that it "
                         "runs; the 18 MiB of tokens the extra clips make are within the noise)")
    ap.add_argument("--full-grid", action="store_true", help="the demo config's 20 probes (default: 4 of them)")
    ap.add_argument("--sizes", default=None, help="two training-set sizes, multiples of the batch size 32, the second "
                                                  "a multiple of the first (default 256,1024; 64,256 with --quick)")
    ap.add_argument("--val-clips", type=int, default=None, help="default 64 (32 with --quick)")
    ap.add_argument("--modes", default=None, help=f"some of {','.join(MODES)} (default: all; online,old with --quick)")
    ap.add_argument("--out", default="runs/bench/probe_memory.json")
    ap.add_argument("--no-write", action="store_true", help=f"do not append the table to {RESULTS}")
    ap.add_argument("--child", choices=tuple(MODES), help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--bundle", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    ap.add_argument("--epochs", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--grid", choices=tuple(GRIDS), default="default", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        return _child(a)
    sizes = tuple(int(s) for s in (a.sizes or ("64,256" if a.quick else "256,1024")).split(","))
    modes = tuple(m for m in (a.modes or ("online,old" if a.quick else ",".join(MODES))).split(",") if m)
    if len(sizes) != 2 or not set(modes) <= set(MODES):
        raise SystemExit(f"--sizes takes two sizes, --modes some of {','.join(MODES)}")
    grid = "full" if a.full_grid else "quick" if a.quick else "default"
    r = run(sizes, a.val_clips or (32 if a.quick else 64), grid, modes)
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
