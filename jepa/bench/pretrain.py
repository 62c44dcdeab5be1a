"""The pretraining benchmarks: the project's encoder forward and compiled pretraining step against transformers'
V-JEPA 2 in PyTorch (`jepa.bench.torch_ref`), per model size, timed side by side in the same run.

Sections:
  forward: the jitted encoder on a fixed batch vs `VJEPA2Model.encoder` (inference mode), the same weights (the
           PyTorch model's, imported with the project's converter) and the same clips; outputs compared.
  step:    `common.JaxStep` (the project's compiled train step) vs `torch_ref.TorchStep` on the same batch; on the
           tiny case `torch_ref.check_same_work` first proves both do the same work (losses and parameter updates
           of the first steps agree with the same initial weights).
Figures: clips/s of each, their ratio (project / PyTorch: > 1 means the project is faster), the fraction of the
machine's measured f32 matmul peak each reaches with the same analytic FLOPs (`jepa.train.flops`), and the XLA:CPU
ceiling: PyTorch's time over the time XLA takes for the same matrix products alone (`jepa.bench.products`).
"""
from __future__ import annotations

import gc
import time

import numpy as np

from jepa.bench import common
from jepa.bench import products as products_alone
from jepa.bench.common import Context, ModelCase, Section, Target, fmt

# Goals: (forward ratio, step ratio, forward fraction of peak, step fraction of peak); None = no goal.
GOALS = {
    "tiny": (2.0, 2.0, None, None),
    "small": (1.0, 1.25, 0.9, 0.8),
    "vitb": (1.0, 1.25, 0.9, 0.8),
}


# --- Memory ------------------------------------------------------------------------------------------------------
def _reset_peak_rss() -> None:
    """Resets this process's peak resident set (Linux: VmHWM); elsewhere does nothing."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss_mib() -> float:
    """Peak resident memory of this process since the last reset, MiB (nan where /proc is not available)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _free() -> None:
    import jax

    jax.clear_caches()
    gc.collect()


# --- What XLA:CPU could reach at most -------------------------------------------------------------------------------
def _bound(ctx: Context, products: list, torch_s: float) -> dict:
    """`products` timed alone in both frameworks (`jepa.bench.products`), and what that bounds: the largest ratio
    over PyTorch (PyTorch's whole time / XLA's products-alone time) and the largest fraction of the peak any
    XLA:CPU float32 program doing these products could reach."""
    t = products_alone.time_products(products, ctx.threads)
    t["ratio_ceiling"] = torch_s / t["jax_s"]
    t["fraction_ceiling"] = t["flops"] / t["jax_s"] / ctx.peak_flops
    t["torch_program_s"] = torch_s
    return t


def _ceiling_note(what: str, bounds: dict[str, dict], backward: bool) -> str:
    if not bounds:
        return ""
    parts = "; ".join(
        f"{name}: {1e3 * b['jax_s']:,.0f} ms in XLA ({b['flops'] / b['jax_s'] / 1e9:.0f} GFLOP/s, "
        f"{100 * b['fraction_ceiling']:.0f}% of the peak), {1e3 * b['torch_s']:,.0f} ms in PyTorch "
        f"({b['flops'] / b['torch_s'] / 1e9:.0f} GFLOP/s), against PyTorch's whole {what} in "
        f"{1e3 * b['torch_program_s']:,.0f} ms" for name, b in bounds.items())
    kinds = ("the dense layers and their weight and input gradients, per attention head q k^T and p v and the four "
             "products of their backward pass" if backward else "the dense layers, per attention head q k^T and p v")
    rest = "LayerNorm, GELU, softmax, RoPE, the loss, AdamW, EMA, layout" if backward else \
        "LayerNorm, GELU, softmax, RoPE, layout"
    return (f"XLA:CPU ceiling: PyTorch's {what} time over the time XLA:CPU takes for the {what}'s matrix products "
            f"alone ({kinds}), each timed at its own shape with contiguous operands, alike ones batched, nothing else "
            f"(`jepa.bench.products`): the largest ratio any XLA:CPU float32 program doing this work could reach on "
            f"this machine, however it did the rest ({rest}); the same time bounds its % of peak. The products "
            f"alone: {parts}.")


# --- Forward -----------------------------------------------------------------------------------------------------
def forward_products(case: ModelCase) -> list:
    """The encoder forward's matrix products on one batch: the tubelet embedding and the blocks."""
    from jepa.train.flops import linear_products, transformer_products

    n, w = case.tokens, case.width
    return (linear_products(case.batch * n, 2 * 16 * 16 * 3, w)
            + transformer_products(case.batch, n, w, case.depth, 4 * w, case.heads))


def forward_flops(case: ModelCase) -> float:
    """Analytic FLOPs of the encoder forward on one batch: the blocks and the patch-embedding matmul."""
    return sum(p.flops for p in forward_products(case))


class JaxForward:
    """The project's jitted encoder forward (`VisionTransformer`, unrolled blocks) with the given parameters (a
    tree as `torch_ref.hf_params(...)['encoder']` gives) on a fixed batch; calling it runs it and blocks."""

    def __init__(self, case: ModelCase, params: dict, video: np.ndarray, matmul_dtype: str | None = None):
        import jax
        import jax.numpy as jnp
        from flax import nnx

        from jepa.models import VisionTransformer

        cfg = case.encoder_config(unroll=True, matmul_dtype=matmul_dtype)
        abstract = nnx.eval_shape(lambda: VisionTransformer(cfg, rngs=nnx.Rngs(0)))
        graphdef, state = nnx.split(abstract, nnx.Param)
        nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, params))
        self.state = state
        self.video = jnp.asarray(video)
        fn = jax.jit(lambda s, v: nnx.merge(graphdef, s)(v))
        t0 = time.perf_counter()
        self.compiled = fn.lower(self.state, self.video).compile()
        self.compile_s = time.perf_counter() - t0
        self.out = None

    def __call__(self):
        self.out = self.compiled(self.state, self.video)
        self.out.block_until_ready()
        return self.out


def forward_section(ctx: Context, cases) -> Section:
    import torch

    from jepa.bench import torch_ref

    rows, targets, data, bounds = [], [], {}, {}
    for case in cases:
        _reset_peak_rss()
        tf = torch_ref.TorchForward(case, ctx.threads)
        video = tf.video.permute(0, 1, 3, 4, 2).contiguous().numpy()  # the same clips, channels-last
        jf = JaxForward(case, torch_ref.hf_params(tf.model)["encoder"], video)
        torch.set_num_threads(ctx.threads)
        res = common.compare({"jax": jf, "torch": tf}, ctx.timing)
        ours, ref = np.asarray(jf.out), tf.out.numpy()
        err = float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-30))
        flops = forward_flops(case)
        tj, tt = res["jax"]["median_s"], res["torch"]["median_s"]
        cj, ct, ratio = case.batch / tj, case.batch / tt, tt / tj
        pj, pt = flops / tj / ctx.peak_flops, flops / tt / ctx.peak_flops
        compile_s = jf.compile_s
        del tf, jf
        _free()
        bound = bounds[case.name] = _bound(ctx, forward_products(case), tt)
        rows.append([case.label, fmt(cj), fmt(ct), fmt(ratio) + "x", f"{100 * pj:.1f}%", f"{100 * pt:.1f}%",
                     fmt(bound["ratio_ceiling"]) + "x"])
        data[case.name] = {"case": case.label, "tokens": case.tokens, "flops": flops, "timing": res,
                           "xla_ceiling_ratio": bound["ratio_ceiling"], "products_alone": bound,
                           "project_clips_per_s": cj, "torch_clips_per_s": ct, "ratio": ratio,
                           "project_fraction_of_peak": pj, "torch_fraction_of_peak": pt,
                           "output_rel_err": err, "compile_s": compile_s, "peak_rss_MiB": _peak_rss_mib()}
        ctx.log(f"forward {case.name}: project {cj:.3g} clips/s, PyTorch {ct:.3g} clips/s ({ratio:.2f}x); "
                f"{100 * pj:.1f}% / {100 * pt:.1f}% of peak; outputs differ by {err:.1e} (relative)")
        _add_targets(targets, case, "forward", ratio, pj, GOALS.get(case.name, (None,) * 4)[0::2], bound)
        del res, ours, ref
    notes = [
        "Encoder forward on a fixed batch: the project's jitted `VisionTransformer` vs transformers' "
        "`VJEPA2Model.encoder` (SDPA attention, `torch.inference_mode`), the same weights (PyTorch's, imported with "
        "the project's converter) and the same clips. ratio = project clips/s / PyTorch clips/s.",
        "% of peak: analytic forward FLOPs (blocks + patch-embedding matmul) / median time / the machine's measured "
        f"f32 matmul peak ({ctx.peak_flops / 1e9:.0f} GFLOP/s).",
        "Largest output difference (relative to the largest output): "
        + ", ".join(f"{k} {v['output_rel_err']:.1e}" for k, v in data.items()) + ".",
        _ceiling_note("forward", bounds, backward=False),
    ]
    return Section("forward", "Encoder forward: project vs PyTorch",
                   ["case", "project clips/s", "PyTorch clips/s", "ratio", "project % of peak", "PyTorch % of peak",
                    "XLA:CPU ceiling"],
                   rows, notes, targets, data)


# --- Pretraining step --------------------------------------------------------------------------------------------
def step_section(ctx: Context, cases) -> Section:
    import torch

    from jepa.bench import torch_ref
    from jepa.train import pretrain

    rows, targets, data, notes, bounds = [], [], {}, [], {}
    for case in cases:
        _reset_peak_rss()
        cfg = common.pretrain_config(case)
        t0 = time.perf_counter()
        jstep = common.JaxStep(cfg)
        compile_s = time.perf_counter() - t0
        tstep = torch_ref.TorchStep(case, jstep.batch_np, ctx.threads, cfg)
        entry: dict = {"case": case.label, "flops": jstep.flops, "memory": dict(jstep.memory),
                       "setup_s": compile_s}
        if case.name == common.TINY.name:
            check = torch_ref.check_same_work(jstep, tstep, steps=2)
            entry["same_work"] = check
            verdict = "passed" if check["ok"] else "FAILED"
            losses = ", ".join(f"{a:.7f} / {b:.7f}" for a, b in zip(check["jax_loss"], check["torch_loss"]))
            notes.append(
                f"Same work ({case.name}, {verdict}): with PyTorch's weights imported into the project's step, the "
                f"losses of the first {check['steps']} steps (project / PyTorch) are {losses}: relative difference "
                f"{check['max_rel_diff']:.1e} (limit {check['rtol']:g}); the parameter and EMA updates agree to "
                f"{check['update_mismatch']:.2f} of the tolerance ({check['update_rtol']:g} of the largest update "
                f"plus float32 rounding; worst: {check['update_worst_param']}).")
            ctx.log(f"same work {case.name}: {verdict}; losses {losses}; relative difference "
                    f"{check['max_rel_diff']:.1e}; updates at {check['update_mismatch']:.2f} of tolerance")
            targets.append(Target(f"{case.name} step does the same work as PyTorch (1 = losses and updates agree)",
                                  1.0 if check["ok"] else 0.0, 1.0, unit=""))
        torch.set_num_threads(ctx.threads)
        res = common.compare({"jax": jstep, "torch": tstep}, ctx.timing)
        tj, tt = res["jax"]["median_s"], res["torch"]["median_s"]
        cj, ct, ratio = case.batch / tj, case.batch / tt, tt / tj
        mj, mt = jstep.flops / tj / ctx.peak_flops, jstep.flops / tt / ctx.peak_flops
        step_products = pretrain.step_products(jstep.exp, case.batch)
        final_loss = {"jax": float(jstep.metrics["loss"]), "torch": tstep.loss}
        mem = jstep.memory
        del jstep, tstep
        _free()
        bound = bounds[case.name] = _bound(ctx, step_products, tt)
        rows.append([case.label, fmt(cj), fmt(ct), fmt(ratio) + "x", f"{100 * mj:.1f}%", f"{100 * mt:.1f}%",
                     fmt(bound["ratio_ceiling"]) + "x"])
        entry.update({"timing": res, "project_clips_per_s": cj, "torch_clips_per_s": ct, "ratio": ratio,
                      "xla_ceiling_ratio": bound["ratio_ceiling"], "products_alone": bound,
                      "project_mfu": mj, "torch_mfu": mt, "peak_rss_MiB": _peak_rss_mib(),
                      "final_loss": final_loss})
        data[case.name] = entry
        ctx.log(f"step {case.name}: project {cj:.3g} clips/s, PyTorch {ct:.3g} clips/s ({ratio:.2f}x); MFU "
                f"{100 * mj:.1f}% / {100 * mt:.1f}%; compiled temp {mem.get('temp_MiB', float('nan')):.0f} MiB; "
                f"process peak {entry['peak_rss_MiB']:.0f} MiB")
        _add_targets(targets, case, "step", ratio, mj, GOALS.get(case.name, (None,) * 4)[1::2], bound)
        del res
    notes = [
        "One pretraining step on a fixed batch (the reference objective: EMA target encoder on the clip, per mask "
        "generator the context encoder on the context tokens and the predictor at the targets, L1 loss, AdamW, EMA "
        "update): the project's compiled step (`jepa.train.pretrain`) vs the same step written with transformers' "
        "V-JEPA 2 modules and torch.optim.AdamW (foreach), the same clips and masks. ratio = project clips/s / "
        "PyTorch clips/s.",
        "MFU: the step's analytic FLOPs (`jepa.train.pretrain.step_flops`, the same for both) / median time / the "
        f"machine's measured f32 matmul peak ({ctx.peak_flops / 1e9:.0f} GFLOP/s).",
        "Memory (data): the project's compiled step (XLA temp and argument MiB) and this process's peak resident "
        "memory during the case (both frameworks).",
        _ceiling_note("step", bounds, backward=True),
        *notes,
    ]
    return Section("step", "Pretraining step: project vs PyTorch",
                   ["case", "project clips/s", "PyTorch clips/s", "ratio", "project MFU", "PyTorch MFU",
                    "XLA:CPU ceiling"],
                   rows, notes, targets, data)


# --- Mixed precision ---------------------------------------------------------------------------------------------
def mixed_section(ctx: Context, cases) -> Section:
    """The forward and the step again in the reference's training precision: the project with
    `matmul_dtype='bfloat16'` (products of bfloat16 operands accumulated in float32, the rest float32) vs the same
    PyTorch code under torch.autocast('cpu', bfloat16). Fractions are of the measured bf16 matmul peak."""
    import torch

    from jepa.bench import torch_ref

    peak16 = ctx.matmul.get("bf16_peak_flops", float("nan"))
    rows, targets, data = [], [], {}
    for case in cases:
        _reset_peak_rss()
        entry: dict = {"case": case.label}
        tf = torch_ref.TorchForward(case, ctx.threads)
        video = tf.video.permute(0, 1, 3, 4, 2).contiguous().numpy()
        exact = tf().numpy()  # the float32 output (the project's agrees to ~1e-6: forward section), for bf16's rounding
        jf = JaxForward(case, torch_ref.hf_params(tf.model)["encoder"], video, matmul_dtype="bfloat16")
        torch.set_num_threads(ctx.threads)
        res = common.compare({"jax": jf, "torch": torch_ref.Autocast(tf)}, ctx.timing)
        scale = max(float(np.abs(exact).max()), 1e-30)
        err_j = float(np.abs(np.asarray(jf.out) - exact).max() / scale)
        err_t = float(np.abs(tf.out.float().numpy() - exact).max() / scale)
        flops = forward_flops(case)
        tj, tt = res["jax"]["median_s"], res["torch"]["median_s"]
        fwd = {"timing": res, "project_clips_per_s": case.batch / tj, "torch_clips_per_s": case.batch / tt,
               "ratio": tt / tj, "project_fraction_of_bf16_peak": flops / tj / peak16,
               "torch_fraction_of_bf16_peak": flops / tt / peak16,
               "project_rel_err_vs_f32": err_j, "torch_rel_err_vs_f32": err_t}
        entry["forward"] = fwd
        del tf, jf, res
        _free()

        cfg = common.pretrain_config(case)
        cfg.model.encoder["matmul_dtype"] = cfg.model.predictor["matmul_dtype"] = "bfloat16"
        jstep = common.JaxStep(cfg)
        tstep = torch_ref.TorchStep(case, jstep.batch_np, ctx.threads, cfg)  # its optimizer, schedules and masks
        torch.set_num_threads(ctx.threads)
        res = common.compare({"jax": jstep, "torch": torch_ref.Autocast(tstep)}, ctx.timing)
        tj, tt = res["jax"]["median_s"], res["torch"]["median_s"]
        step = {"timing": res, "project_clips_per_s": case.batch / tj, "torch_clips_per_s": case.batch / tt,
                "ratio": tt / tj, "project_fraction_of_bf16_peak": jstep.flops / tj / peak16,
                "torch_fraction_of_bf16_peak": jstep.flops / tt / peak16, "memory": dict(jstep.memory),
                "final_loss": {"jax": float(jstep.metrics["loss"]), "torch": tstep.loss}}
        entry["step"] = step
        entry["peak_rss_MiB"] = _peak_rss_mib()
        data[case.name] = entry
        for what, d in (("forward", fwd), ("step", step)):
            rows.append([case.label, what, fmt(d["project_clips_per_s"]), fmt(d["torch_clips_per_s"]),
                         fmt(d["ratio"]) + "x", f"{100 * d['project_fraction_of_bf16_peak']:.1f}%",
                         f"{100 * d['torch_fraction_of_bf16_peak']:.1f}%"])
            ctx.log(f"bf16 {what} {case.name}: project {d['project_clips_per_s']:.3g} clips/s, PyTorch autocast "
                    f"{d['torch_clips_per_s']:.3g} clips/s ({d['ratio']:.2f}x); "
                    f"{100 * d['project_fraction_of_bf16_peak']:.1f}% / {100 * d['torch_fraction_of_bf16_peak']:.1f}% "
                    "of the bf16 peak")
        goals = GOALS.get(case.name, (None,) * 4)
        for what, d, goal in (("forward", fwd, goals[0]), ("step", step, goals[1])):
            if goal is not None:
                targets.append(Target(f"{case.name} {what} in bf16 vs PyTorch autocast", d["ratio"], goal))
        del jstep, tstep, res
        _free()
    notes = [
        "The reference trains in bfloat16 (autocast). Project: the same forward and step with "
        "`matmul_dtype='bfloat16'` in the encoder and predictor configs: every product (projections, MLPs, attention, "
        "patch embedding) takes bfloat16 operands and accumulates in float32 (`jepa.models.layers.matmul`), "
        "LayerNorm, softmax, GELU, residuals, loss, AdamW and EMA stay float32; parameters are float32. PyTorch: the "
        "same code as the float32 sections under torch.autocast('cpu', dtype=torch.bfloat16). ratio = project "
        "clips/s / PyTorch clips/s; % of the bf16 matmul peak measured at the start of the run "
        f"({peak16 / 1e9:.0f} GFLOP/s), same analytic FLOPs as above.",
        "Goals: the float32 sections' ratio goals, read here for the precision the reference trains in; they do not "
        "replace the float32 targets above.",
        "Rounding (largest |bf16 output - PyTorch's float32 output| relative to the largest output, the same weights "
        "and clips): "
        + ", ".join(f"{k} project {v['forward']['project_rel_err_vs_f32']:.1e}, PyTorch "
                    f"{v['forward']['torch_rel_err_vs_f32']:.1e}" for k, v in data.items()) + ".",
        "Final losses after the timed steps (project / PyTorch autocast; both start from the same clips and masks, "
        "not the same weights): " + ", ".join(
            f"{k} {v['step']['final_loss']['jax']:.4f} / {v['step']['final_loss']['torch']:.4f}"
            for k, v in data.items()) + ".",
    ]
    return Section("mixed", "Mixed precision (bf16, as the reference trains): project vs PyTorch autocast",
                   ["case", "what", "project clips/s", "PyTorch clips/s", "ratio", "project % of bf16 peak",
                    "PyTorch % of bf16 peak"], rows, notes, targets, data)


def _add_targets(targets: list[Target], case: ModelCase, what: str, ratio: float, fraction: float, goals,
                 bound: dict | None = None) -> None:
    ratio_goal, peak_goal = goals
    bound = bound or {}
    if ratio_goal is not None:
        targets.append(Target(f"{case.name} {what} vs PyTorch", ratio, ratio_goal, ceiling=bound.get("ratio_ceiling")))
    if peak_goal is not None:
        targets.append(Target(f"{case.name} {what} fraction of peak", fraction, peak_goal, unit="of peak",
                              ceiling=bound.get("fraction_ceiling")))


def run(ctx: Context, cases: tuple[ModelCase, ...] | None = None) -> list[Section]:
    """The forward and step sections for `cases` (default: `common.cases(ctx.quick)`)."""
    cases = tuple(cases) if cases is not None else common.cases(ctx.quick)
    return [forward_section(ctx, cases), step_section(ctx, cases), mixed_section(ctx, cases)]
