"""What every benchmark shares: the configs measured, timing (medians after warm-up, frameworks interleaved), and
the `Section` each benchmark returns for the report.

Timing is side by side: `compare` alternates the project and the reference repeat by repeat (with a short pause
between them so neither runs while the other's idle threads still spin), so drift in the machine's load touches both
alike. Every figure that matters is a ratio of two such medians.
"""
from __future__ import annotations

import dataclasses
import gc
import time
from typing import Any, Callable

import numpy as np


# --- Configs ------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ModelCase:
    """An encoder + predictor size measured by the benchmarks (patch 16, tubelet 2, MLP ratio 4)."""

    name: str
    width: int
    depth: int
    heads: int
    pixels: int
    frames: int
    batch: int
    pred_width: int
    pred_depth: int
    pred_heads: int

    @property
    def label(self) -> str:
        return (f"{self.name} ({self.width}/{self.depth}/{self.heads}, {self.pixels} px, {self.frames} frames, "
                f"batch {self.batch})")

    @property
    def tokens(self) -> int:
        return (self.frames // 2) * (self.pixels // 16) ** 2

    def encoder_config(self, **kw):
        from jepa.models import ViTConfig
        return ViTConfig(width=self.width, depth=self.depth, num_heads=self.heads, mlp_dim=4 * self.width,
                         patch_size=16, tubelet_size=2, **kw)

    def predictor_config(self, **kw):
        from jepa.models import PredictorConfig
        return PredictorConfig(embed_dim=self.width, width=self.pred_width, depth=self.pred_depth,
                               num_heads=self.pred_heads, mlp_dim=4 * self.pred_width, num_mask_tokens=2, **kw)


TINY = ModelCase("tiny", 192, 6, 3, 64, 8, 8, 96, 3, 3)
SMALL = ModelCase("small", 384, 12, 6, 128, 16, 4, 192, 6, 6)
VITB = ModelCase("vitb", 768, 12, 12, 224, 16, 2, 384, 6, 12)
CASES = (TINY, SMALL, VITB)

# The reference's multi-block masks (jepa.masking.BlockSpec fields): 8 short-range blocks of 15% and 2 long-range
# blocks of 70% of the frame, every time step.
MASKS = ({"num_blocks": 8, "spatial_scale": (0.15, 0.15)}, {"num_blocks": 2, "spatial_scale": (0.7, 0.7)})


def cases(quick: bool) -> tuple[ModelCase, ...]:
    return (TINY,) if quick else CASES


# --- Timing -------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Timing:
    warmup: int = 2
    repeats: int = 7
    pause_s: float = 0.2  # between frameworks: lets OpenMP / Eigen worker threads go idle

    @classmethod
    def for_mode(cls, quick: bool) -> "Timing":
        return cls(warmup=1, repeats=3, pause_s=0.05) if quick else cls()


def median_seconds(fn: Callable[[], Any], timing: Timing) -> dict:
    """Median wall seconds of `fn()` (which must block until its work is done) after `timing.warmup` calls."""
    for _ in range(timing.warmup):
        fn()
    times = []
    for _ in range(timing.repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": float(np.median(times)), "times_s": times}


REWARM_S = 1.0  # calls shorter than this are re-run REWARM_CALLS times, untimed, at the start of each turn in `compare`
REWARM_CALLS = 3  # after a 0.2 s pause the project's tiny forward runs ~1.5x slower for 2 calls, PyTorch's for 1


def compare(fns: dict[str, Callable[[], Any]], timing: Timing) -> dict[str, dict]:
    """Times several implementations of the same work side by side: warm-up of each, then the repeats interleaved
    (a, b, a, b, ...), with a pause before each turn so that one framework's idle worker threads have stopped
    spinning when the other starts. A call shorter than `REWARM_S` is run `REWARM_CALLS` times untimed at the start of
    its turn: after the pause thread pools and caches are cold, which costs short calls (not the work measured) a good
    part of their time, and not equally: on the 2-core machine after 0.2 s idle the project's tiny forward takes
    ~1.5x its steady time for 2 calls, PyTorch's for 1. The timed call is then the steady state a training loop or
    MPC loop runs in (calls back to back), for both frameworks alike. Returns {name: {'median_s', 'times_s'}}."""
    short = {}
    for name, fn in fns.items():
        t = 0.0
        for _ in range(timing.warmup):
            t0 = time.perf_counter()
            fn()
            t = time.perf_counter() - t0
        short[name] = t < REWARM_S
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(timing.repeats):
        for name, fn in fns.items():
            gc.collect()
            time.sleep(timing.pause_s)
            for _ in range(REWARM_CALLS if short[name] else 0):
                fn()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: {"median_s": float(np.median(v)), "times_s": v} for k, v in times.items()}


# --- Results ------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Target:
    """A goal of the benchmark: `value` (a ratio) against `goal`; met when value >= goal. `ceiling`: the largest
    value any XLA:CPU program could reach here, where the benchmark measures one (`jepa.bench.products`)."""

    name: str
    value: float
    goal: float
    unit: str = "x"
    ceiling: float | None = None

    @property
    def met(self) -> bool:
        return bool(self.value >= self.goal)

    def to_dict(self) -> dict:
        return {"name": self.name, "value": self.value, "goal": self.goal, "unit": self.unit, "met": self.met,
                "ceiling": self.ceiling}


@dataclasses.dataclass
class Section:
    """One benchmark's results: a markdown table, notes under it, the targets it checks, and its raw data (JSON)."""

    key: str
    title: str
    columns: list[str]
    rows: list[list[Any]]
    notes: list[str] = dataclasses.field(default_factory=list)
    targets: list[Target] = dataclasses.field(default_factory=list)
    data: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"key": self.key, "title": self.title, "columns": self.columns, "rows": self.rows, "notes": self.notes,
                "targets": [t.to_dict() for t in self.targets], "data": self.data}


def fmt(x: Any, digits: int = 3) -> str:
    """A table cell: floats to `digits` significant figures (no exponent below 1e6), the rest as str."""
    if isinstance(x, float):
        if x != x:
            return "-"
        if abs(x) >= 100:
            return f"{x:,.0f}"
        return f"{x:.{digits}g}"
    return str(x)


@dataclasses.dataclass
class Context:
    """What every benchmark is given: the mode, the timing, the thread count, and the machine's f32 matmul peak
    (FLOP/s) measured at the start of the run (`jepa.bench.machine.matmul_peak`)."""

    quick: bool
    timing: Timing
    threads: int
    peak_flops: float
    workdir: str
    log: Callable[[str], None] = print
    matmul: dict = dataclasses.field(default_factory=dict)  # jepa.bench.machine.matmul_peak's figures


# --- The project's pretraining step and encoder forward, ready to time -------------------------------------------
def pretrain_config(case: ModelCase, *, fsdp: int = 1):
    """The demo pretraining config resized to `case`, with the reference objective (no regulariser, `reg.on=[]`),
    the reference's masks, and the unrolled block scan (XLA's CPU scan has a per-iteration cost)."""
    from configs.pretrain import demo
    from jepa.masking import BlockSpec

    cfg = demo.get_config()
    cfg.model.encoder = case.encoder_config(unroll=True).to_dict()
    cfg.model.predictor = case.predictor_config(unroll=True).to_dict()
    cfg.mask = [vars(BlockSpec(**m)) for m in MASKS]  # every BlockSpec field, as the config expects
    cfg.reg.on = []
    cfg.data.num_frames, cfg.data.crop_size = case.frames, case.pixels
    cfg.train.batch_size = case.batch
    cfg.mesh = {"data": -1, "fsdp": fsdp}
    return cfg


def synthetic_batch(exp, seed: int = 0) -> dict:
    """A batch of random video and the masks of `exp.masker` (numpy), as the input pipeline would deliver it."""
    cfg = exp.cfg
    rng = np.random.default_rng(seed)
    b, t, s = cfg.train.batch_size, cfg.data.num_frames, cfg.data.crop_size
    batch = {"video": rng.standard_normal((b, t, s, s, 3), dtype=np.float32)}
    batch.update(exp.masker(b, rng))
    return batch


class JaxStep:
    """The project's compiled pretraining step on one fixed batch; calling it runs one step and blocks."""

    def __init__(self, cfg, seed: int = 0):
        import jax

        from jepa import sharding
        from jepa.train import pretrain

        self.exp = pretrain.build(cfg)
        abstract, shard = pretrain.abstract_state(self.exp)
        self.batch_np = synthetic_batch(self.exp, seed)
        spec = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in self.batch_np.items()}
        self.compiled, self.memory = pretrain.compile_step(self.exp, shard, spec, abstract)
        self.state, _ = pretrain.create_state(self.exp, seed, shard)
        self.batch = sharding.global_batch(self.batch_np, self.exp.mesh)
        self.flops = pretrain.step_flops(self.exp, cfg.train.batch_size)
        self.metrics = None

    def __call__(self):
        import jax

        self.state, self.metrics = self.compiled(self.state, self.batch)
        jax.block_until_ready(self.metrics["loss"])
