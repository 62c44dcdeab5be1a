"""The PyTorch reference the benchmarks measure against: transformers' V-JEPA 2 (`VJEPA2Model`) at the sizes of a
`ModelCase`, for the encoder forward (`TorchForward`) and one pretraining step (`TorchStep`).

The step is the reference's V-JEPA 2 pretraining step written with transformers' modules, doing the same work as
the project's `jepa.train.pretrain.train_step`:
  h = layer_norm(target_encoder(clip)) (no affine, eps 1e-5, no grad) ; for each mask generator g:
      z = encoder(clip) with only the context tokens entering the blocks (RoPE at their original positions)
      p = predictor(z, context_g, targets_g) ; loss_g = mean |p - h[targets_g]|
  loss = mean_g loss_g ; backward ; AdamW (decay on parameters of >= 2 dims) ; target <- m target + (1 - m) encoder.

`check_same_work` proves both sides do the same work: it copies the PyTorch model's weights into the project's
compiled step (through the project's transformers converter, `jepa.convert.convert_hf`) and compares the losses of
the first steps of both on the same batch.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np

from jepa.bench.common import ModelCase, pretrain_config


def _torch():
    import torch

    return torch


# --- Config and model ---------------------------------------------------------------------------------------------
def hf_config(case: ModelCase):
    """A transformers `VJEPA2Config` of the same sizes as `case.encoder_config()` / `case.predictor_config()`
    (patch 16, tubelet 2, MLP ratio 4, 2 mask tokens, LayerNorm eps 1e-6, SDPA attention)."""
    from transformers import VJEPA2Config

    enc, pred = case.encoder_config(), case.predictor_config()
    cfg = VJEPA2Config(
        patch_size=enc.patch_size, crop_size=case.pixels, frames_per_clip=case.frames, tubelet_size=enc.tubelet_size,
        hidden_size=enc.width, in_chans=enc.in_chans, num_attention_heads=enc.num_heads, num_hidden_layers=enc.depth,
        mlp_ratio=enc.mlp_dim / enc.width, layer_norm_eps=enc.ln_eps, qkv_bias=enc.qkv_bias, hidden_act="gelu",
        drop_path_rate=0.0, attention_probs_dropout_prob=0.0, initializer_range=enc.init_std,
        pred_hidden_size=pred.width, pred_num_attention_heads=pred.num_heads, pred_num_hidden_layers=pred.depth,
        pred_num_mask_tokens=pred.num_mask_tokens, pred_zero_init_mask_tokens=pred.zero_init_mask_tokens,
        pred_mlp_ratio=pred.mlp_dim / pred.width)
    cfg._attn_implementation = "sdpa"
    return cfg


def hf_model(case: ModelCase, seed: int = 0):
    """A randomly initialised transformers `VJEPA2Model` of `case`'s sizes (transformers' own init), float32."""
    torch = _torch()
    from transformers import VJEPA2Model

    torch.manual_seed(seed)
    model = VJEPA2Model(hf_config(case)).float()
    impl = model.config._attn_implementation
    if impl != "sdpa":
        raise RuntimeError(f"transformers chose attention {impl!r}, not 'sdpa'")
    return model


def to_torch_video(video: np.ndarray):
    """Channels-last numpy video [B, T, H, W, C] -> the torch tensor transformers expects, [B, T, C, H, W]."""
    torch = _torch()
    return torch.from_numpy(np.ascontiguousarray(video, np.float32)).permute(0, 1, 4, 2, 3).contiguous()


# --- Encoder forward ----------------------------------------------------------------------------------------------
class TorchForward:
    """transformers' V-JEPA 2 encoder forward on a fixed random batch of `case.batch` clips (inference mode).

    It runs `VJEPA2Model.encoder` (embeddings, blocks, final LayerNorm): `VJEPA2Model(..., skip_predictor=True)` runs
    exactly that and then also gathers a copy of every token as `masked_hidden_state` (the default all-token
    context), work the project's encoder does not do.
    """

    def __init__(self, case: ModelCase, threads: int, seed: int = 0):
        torch = _torch()
        torch.set_num_threads(threads)
        self.case = case
        self.model = hf_model(case, seed).eval()
        rng = np.random.default_rng(seed)
        video = rng.standard_normal((case.batch, case.frames, case.pixels, case.pixels, 3), dtype=np.float32)
        self.video = to_torch_video(video)
        self.out = None

    def __call__(self):
        torch = _torch()
        with torch.inference_mode():
            self.out = self.model.encoder(pixel_values_videos=self.video).last_hidden_state
        return self.out


class Autocast:
    """Calls `fn` under torch.autocast('cpu', bfloat16): the reference's mixed-precision training (products in
    bfloat16, LayerNorm / softmax / losses in float32). The same object's attributes (`out`, `loss`) stay reachable
    through `fn`."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self):
        torch = _torch()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.fn()


# --- Pretraining step ---------------------------------------------------------------------------------------------
def _schedule(fn, steps: int) -> list[float]:
    """A project schedule (jax) evaluated once on the host at steps 0..steps (the step looks its value up)."""
    import jax.numpy as jnp

    return [float(v) for v in np.asarray(fn(jnp.arange(steps + 1)))]


class TorchStep:
    """One V-JEPA 2 pretraining step in PyTorch with transformers' modules on a fixed batch; calling it runs one step
    and returns the loss (a float).

    batch_np: the project's batch ({'video': [B, T, H, W, C] float32, 'ctx_g' / 'tgt_g': [B, K] token ids}), so both
    frameworks see the same clip and masks. cfg: the pretraining config (`pretrain_config(case)` by default) whose
    optimizer (`optim`: lr and EMA schedules, betas, eps, weight decay, clipping) and `train.mask_index` are used.
    """

    def __init__(self, case: ModelCase, batch_np: dict, threads: int, cfg=None, *, seed: int = 0, model=None):
        torch = _torch()
        from jepa.train import pretrain

        torch.set_num_threads(threads)
        cfg = cfg if cfg is not None else pretrain_config(case)
        exp = pretrain.build(cfg)
        self.case, self.cfg = case, cfg
        self.model = model if model is not None else hf_model(case, seed)
        self.model.train()  # dropout and drop-path are 0: train mode changes nothing but the flag
        self.encoder, self.predictor = self.model.encoder, self.model.predictor
        self.target = copy.deepcopy(self.encoder).requires_grad_(False)
        self.video = to_torch_video(batch_np["video"])
        groups = len(exp.masker.specs)
        self.masks = [(torch.from_numpy(np.asarray(batch_np[f"ctx_{g}"], np.int64)),
                       torch.from_numpy(np.asarray(batch_np[f"tgt_{g}"], np.int64))) for g in range(groups)]
        self.mask_index = int(cfg.train.mask_index)

        o = cfg.optim
        params = [p for m in (self.encoder, self.predictor) for p in m.parameters()]
        # Weight decay as jepa.train.optim.decay_mask: matrices (conv kernels, mask tokens included), not biases or
        # LayerNorm parameters.
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        self.lrs = _schedule(exp.lr, cfg.train.steps)
        self.emas = _schedule(exp.ema, cfg.train.steps)
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": float(o.weight_decay)}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.lrs[0], betas=(float(o.b1), float(o.b2)), eps=float(o.eps), foreach=True)
        self.clip_norm = float(o.clip_norm)
        self.params = params
        self.online = list(self.encoder.parameters())
        self.target_params = list(self.target.parameters())
        self.step = 0
        self.loss = None

    def reset_target(self) -> None:
        """target <- a copy of the online encoder (as at the start of training)."""
        torch = _torch()
        with torch.no_grad():
            torch._foreach_copy_(self.target_params, self.online)

    def encode(self, ids):
        """The context encoder: patch embedding of the clip, only the tokens `ids` [B, K] enter the blocks (RoPE at
        their positions in the clip), final LayerNorm."""
        from transformers.models.vjepa2.modeling_vjepa2 import apply_masks

        enc = self.encoder
        x = apply_masks(enc.embeddings(self.video), [ids])
        for layer in enc.layer:
            x = layer(x, ids)[0]
        return enc.layernorm(x)

    def predict(self, z, ctx, tgt):
        """transformers' `VJEPA2Predictor.forward` on context tokens z (already gathered: its `apply_masks` of a
        full-length input is skipped), with the config's mask token."""
        torch = _torch()
        pred = self.predictor
        n_ctx = z.shape[1]
        x, pos = pred.embeddings(z, [ctx], [tgt], mask_index=self.mask_index)
        argsort = torch.argsort(pos, dim=1)
        x, pos = pred.sort_tokens(x, pos, argsort)
        for layer in pred.layer:
            x = layer(x, pos)[0]
        x = pred.layernorm(x)
        x = pred.unsort_tokens(x, argsort)
        return pred.proj(x[:, n_ctx:])

    def __call__(self) -> float:
        torch = _torch()
        import torch.nn.functional as F
        from transformers.models.vjepa2.modeling_vjepa2 import apply_masks

        i = min(self.step, len(self.lrs) - 1)
        for group in self.opt.param_groups:
            group["lr"] = self.lrs[i]
        with torch.no_grad():
            h = self.target(pixel_values_videos=self.video).last_hidden_state
            h = F.layer_norm(h, (h.size(-1),))
        losses = []
        for ctx, tgt in self.masks:
            p = self.predict(self.encode(ctx), ctx, tgt)
            losses.append(torch.mean(torch.abs(p - apply_masks(h, [tgt]))))
        loss = torch.stack(losses).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm, foreach=True)
        self.opt.step()
        m = self.emas[i]
        with torch.no_grad():
            torch._foreach_mul_(self.target_params, m)
            torch._foreach_add_(self.target_params, self.online, alpha=1.0 - m)
        self.step += 1
        self.loss = loss.detach().item()
        return self.loss


# --- Same work: the PyTorch model's weights in the project's step, losses compared -------------------------------
def perturb(model, seed: int = 1) -> None:
    """Makes the parameters transformers initialises to constants (biases, LayerNorms, mask tokens) non-trivial, so
    that a weight-transfer error shows in the loss."""
    torch = _torch()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith("bias") or "mask_tokens" in name:
                p.copy_(0.02 * noise)


def hf_params(model) -> dict[str, Any]:
    """A transformers `VJEPA2Model`'s weights as the project's parameter trees {'encoder', 'predictor'} (numpy),
    through the project's converter."""
    from jepa.convert import convert_hf

    sd = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    _, params = convert_hf(sd, model.config.to_dict(), source="benchmark VJEPA2Model")
    return params


def _paths(tree) -> dict:
    import jax

    return {jax.tree_util.keystr(k): np.shape(v) for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def load_into_jax_step(jstep, params: dict) -> None:
    """Replaces the state of a `common.JaxStep` by a fresh one (step 0, zero optimizer moments) whose online
    encoder/predictor and EMA target are `params` (trees as `hf_params` gives), placed as the old state was."""
    import jax

    state = jstep.state
    new = {"encoder": params["encoder"], "predictor": params["predictor"]}
    want, got = _paths(state["params"]), _paths(new)
    if want != got:
        diff = sorted(set(want.items()) ^ set(got.items()))
        raise ValueError(f"converted parameters do not match the step's: {diff[:8]}")
    shardings = jax.tree.map(lambda x: x.sharding, state)
    fresh = {
        "step": np.zeros((), np.int32),
        "params": new,
        "target": jax.tree.map(np.array, new["encoder"]),  # copies
        "opt_state": jstep.exp.tx.init(jax.tree.map(jax.numpy.asarray, new)),
        "rng": state["rng"],
    }
    jstep.state = jax.device_put(fresh, shardings)


def _torch_trees(tstep: TorchStep) -> dict[str, Any]:
    """The PyTorch step's online encoder, predictor and EMA target as the project's parameter trees (numpy)."""
    params = hf_params(tstep.model)
    model = copy.deepcopy(tstep.model)
    model.encoder.load_state_dict(tstep.target.state_dict())
    return {"params": params, "target": hf_params(model)["encoder"]}


def _update_mismatch(before: dict, jax_after: dict, torch_after: dict, steps: int, rtol: float) -> tuple[float, str]:
    """How far the two frameworks' parameter updates (after - before) are apart, in units of the tolerance:
    max over parameters and elements of |update_jax - update_torch| / (rtol * max |update_torch| + 8 * steps *
    eps32 * |the element's value|), with the parameter where it is largest. Under 1 passes. The rounding allowance
    matters for the EMA target, whose updates (~1e-5) are a few float32 ulps of values ~1."""
    import jax

    def flat(tree):
        return {jax.tree_util.keystr(k): np.asarray(v, np.float64)
                for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}

    b, j, t = flat(before), flat(jax_after), flat(torch_after)
    rounding = 8 * steps * float(np.finfo(np.float32).eps)
    worst, where = 0.0, ""
    for k in b:
        dj, dt = j[k] - b[k], t[k] - b[k]
        tol = rtol * np.abs(dt).max() + rounding * np.abs(b[k]) + 1e-30
        err = float(np.max(np.abs(dj - dt) / tol))
        if err > worst:
            worst, where = err, k
    return worst, where


def check_same_work(jstep, tstep: TorchStep, steps: int = 2, *, seed: int = 1, rtol: float = 1e-4,
                    update_rtol: float = 1e-2) -> dict:
    """Puts `tstep`'s (perturbed) weights into `jstep`, runs `steps` steps of both on their batch (which must be the
    same) and compares the losses (relative difference < rtol) and the change of every parameter and of the EMA
    target over the steps (`_update_mismatch` < 1: within update_rtol of the largest change, plus rounding): the
    first loss checks the forward and the loss, the parameter changes the gradients, AdamW, the weight-decay mask and
    the EMA. Both steps must be fresh (no step taken). Returns a report with 'ok'."""
    import jax

    if tstep.step != 0:
        raise ValueError("check_same_work needs a TorchStep that has not stepped")
    batch = jstep.batch_np
    same = np.array_equal(tstep.video.permute(0, 1, 3, 4, 2).numpy(), batch["video"]) and all(
        np.array_equal(ctx.numpy(), batch[f"ctx_{g}"]) and np.array_equal(tgt.numpy(), batch[f"tgt_{g}"])
        for g, (ctx, tgt) in enumerate(tstep.masks))
    if not same:
        raise ValueError("the JAX and PyTorch steps do not hold the same batch")
    perturb(tstep.model, seed)
    tstep.reset_target()
    before = _torch_trees(tstep)
    load_into_jax_step(jstep, before["params"])
    jax_losses, torch_losses = [], []
    for _ in range(steps):
        jstep()
        jax_losses.append(float(jstep.metrics["loss"]))
        torch_losses.append(tstep())
    rel = [abs(a - t) / max(abs(t), 1e-12) for a, t in zip(jax_losses, torch_losses)]
    jax_after = jax.device_get({"params": jstep.state["params"], "target": jstep.state["target"]})
    mismatch, where = _update_mismatch(before, jax_after, _torch_trees(tstep), steps, update_rtol)
    ok = max(rel) < rtol and mismatch < 1.0
    return {"case": tstep.case.name, "steps": steps, "jax_loss": jax_losses, "torch_loss": torch_losses,
            "rel_diff": rel, "max_rel_diff": max(rel), "rtol": rtol, "update_mismatch": mismatch,
            "update_worst_param": where, "update_rtol": update_rtol, "ok": bool(ok)}


def same_work(case: ModelCase, threads: int = 2, steps: int = 2) -> dict:
    """`check_same_work` on fresh steps of `case` (the project's compiled step and the PyTorch one, same batch)."""
    from jepa.bench.common import JaxStep

    cfg = pretrain_config(case)
    jstep = JaxStep(cfg)
    tstep = TorchStep(case, jstep.batch_np, threads, cfg)
    return check_same_work(jstep, tstep, steps)
