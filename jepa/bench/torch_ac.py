"""The world model in PyTorch, the way the reference writes it: for `jepa bench world_model`.

`TorchACPredictor` is the project's `ACPredictor` (jepa.models.ac_predictor) as a torch module of the same structure
and sizes: predictor_embed / action_encoder / state_encoder (/ extrinsics_encoder), the optional absolute position
embedding and residual readout of the demo config, pre-LN blocks with a fused qkv, exact GELU, 3-D RoPE ('reference':
frequencies concatenated with adjacent partners, the released weights' quirk; or 'rotation') and
`scaled_dot_product_attention` under the block-causal mask, then predictor_norm / predictor_proj. Per step the
sequence is [action, state, (extrinsics,) patch tokens], as in vjepa2's `VisionTransformerPredictorAC`.
`TorchViT` is the demo's frozen encoder (Conv3d tubelet embedding, 3-D RoPE, pre-LN blocks, final norm).
`load_predictor` / `load_encoder` copy the project's NNX parameters into them (blocks are stacked on a leading
axis there; Linear kernels are [in, out] there and [out, in] here), so both frameworks compute the same numbers.

On top of them, what the benchmark times on the PyTorch side:
  `ACTrainStep`   the AC training step of jepa.train.ac.make_step: teacher forcing + autoregressive rollout L1 on
                  layer-normed features, backward, AdamW (foreach=True, same hyperparameters, decay on matrices).
  `rollout` / `rollout_cached`   the autoregressive rollout, re-running the predictor on the whole growing
                  sequence at every step (the reference), or with a key/value cache (each step computed once).
  `ReferenceCEM`  one CEM re-plan written like the reference planner (vjepa2 notebooks/utils/mpc_utils.py `cem`):
                  Python loops over the I iterations and, inside each, over the H horizon steps, the predictor
                  called once per step on the sequence so far (no cache) or on the new step only (KV cache).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --- RoPE (the project's jepa.models.layers.rope_tables / apply_rope, in torch) --------------------------------------
def rope_sub_dim(head_dim: int) -> int:
    return 2 * ((head_dim // 3) // 2)


def rope_tables(pos: torch.Tensor, head_dim: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """cos / sin [N, 3 * Ds] of positions [N, 3] (t, h, w): one sub-block of Ds dims per axis."""
    ds = rope_sub_dim(head_dim)
    half = ds // 2
    omega = 1.0 / (10000.0 ** (torch.arange(half, dtype=torch.float32) / half))
    freqs = pos.float()[..., None] * omega  # [N, 3, half]
    if mode == "reference":  # frequencies concatenated, partners adjacent: the released weights' quirk
        freqs = torch.cat([freqs, freqs], dim=-1)
    elif mode == "rotation":
        freqs = torch.repeat_interleave(freqs, 2, dim=-1)
    else:
        raise ValueError(f"unknown rope mode {mode!r}")
    freqs = freqs.reshape(freqs.shape[0], 3 * ds)
    return freqs.cos(), freqs.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, heads, N, hd]: rotate the first 3 * Ds dims by the tables [N, 3 * Ds], leave the rest."""
    r = cos.shape[-1]
    xr, xp = x[..., :r], x[..., r:]
    partner = torch.stack([-xr[..., 1::2], xr[..., 0::2]], dim=-1).flatten(-2)
    out = xr * cos + partner * sin
    return torch.cat([out, xp], dim=-1) if xp.shape[-1] else out


def ac_positions(steps: int, cond: int, gh: int, gw: int, grid_size: int, start: int = 0) -> torch.Tensor:
    """Positions [steps * (cond + gh * gw), 3]: patch tokens (t, h, w) with h, w rescaled to grid_size,
    conditioning tokens (t, 0, 0) (the reference's temporal-only RoPE for them)."""
    hh, ww = torch.meshgrid(torch.arange(gh, dtype=torch.float32), torch.arange(gw, dtype=torch.float32),
                            indexing="ij")
    if grid_size:
        hh, ww = hh * (grid_size / gh), ww * (grid_size / gw)
    patch = torch.stack([torch.zeros_like(hh), hh, ww], -1).reshape(gh * gw, 3)
    per_step = torch.cat([torch.zeros(cond, 3), patch])  # [cond + HW, 3]
    pos = per_step[None].repeat(steps, 1, 1)
    pos[..., 0] = (torch.arange(steps, dtype=torch.float32) + start)[:, None]
    return pos.reshape(-1, 3)


def block_causal_mask(steps: int, tokens_per_step: int) -> torch.Tensor:
    step = torch.arange(steps * tokens_per_step) // tokens_per_step
    return step[:, None] >= step[None, :]


# --- Modules ------------------------------------------------------------------------------------------------------
class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool = True):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def qkv_heads(self, x, rope):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return q, k, v

    def out(self, o):  # [B, heads, N, hd] -> [B, N, D]
        b, h, n, hd = o.shape
        return self.proj(o.transpose(1, 2).reshape(b, n, h * hd))


class Block(nn.Module):
    """Pre-LN block: x += attn(norm1(x)); x += mlp(norm2(x)) (exact GELU)."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, eps: float, qkv_bias: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = nn.Sequential()
        self.mlp.fc1 = nn.Linear(dim, mlp_dim)
        self.mlp.act = nn.GELU()
        self.mlp.fc2 = nn.Linear(mlp_dim, dim)

    def forward(self, x, rope=None, mask=None):
        q, k, v = self.attn.qkv_heads(self.norm1(x), rope)
        x = x + self.attn.out(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
        return x + self.mlp(self.norm2(x))

    def decode(self, x, rope, keys, values, offset: int, mask=None):
        """New tokens x [B, n, D] against the cache buffers keys / values [B, heads, L, hd]: their keys and values
        are written at `offset` and the queries attend to positions < offset + n."""
        q, k, v = self.attn.qkv_heads(self.norm1(x), rope)
        end = offset + x.shape[1]
        keys[:, :, offset:end] = k
        values[:, :, offset:end] = v
        o = F.scaled_dot_product_attention(q, keys[:, :, :end], values[:, :, :end], attn_mask=mask)
        x = x + self.attn.out(o)
        return x + self.mlp(self.norm2(x))


class TorchACPredictor(nn.Module):
    """The project's ACPredictor (same config object, jepa.models.ACPredictorConfig) in torch."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.predictor_embed = nn.Linear(cfg.embed_dim, cfg.width)
        self.action_encoder = nn.Linear(cfg.action_dim, cfg.width)
        self.state_encoder = nn.Linear(cfg.state_dim, cfg.width)
        self.extrinsics_encoder = nn.Linear(cfg.action_dim - 1, cfg.width) if cfg.use_extrinsics else None
        self.pos_embed = nn.Parameter(torch.zeros(cfg.grid_size ** 2, cfg.width)) if cfg.pos_embed else None
        self.predictor_blocks = nn.ModuleList(
            [Block(cfg.width, cfg.num_heads, cfg.mlp_dim, cfg.ln_eps, cfg.qkv_bias) for _ in range(cfg.depth)])
        self.predictor_norm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.predictor_proj = nn.Linear(cfg.width, cfg.embed_dim)
        self._rope_cache: dict = {}

    @property
    def cond(self) -> int:
        return self.cfg.cond_tokens

    def rope(self, start: int, steps: int, gh: int, gw: int):
        key = (start, steps, gh, gw)
        if key not in self._rope_cache:
            cfg = self.cfg
            pos = ac_positions(steps, cfg.cond_tokens, gh, gw, cfg.grid_size, start)
            self._rope_cache[key] = rope_tables(pos, cfg.width // cfg.num_heads, cfg.rope)
        return self._rope_cache[key]

    def step_tokens(self, frames, actions, states, extrinsics=None):
        """[B, T, cond + H'W', width]: per step the action, state (, extrinsics) tokens, then the patch tokens."""
        b, t, gh, gw, d = frames.shape
        x = self.predictor_embed(frames.reshape(b, t, gh * gw, d))
        if self.pos_embed is not None:
            x = x + self.pos_embed
        cond = [self.action_encoder(actions)[:, :, None], self.state_encoder(states)[:, :, None]]
        if self.extrinsics_encoder is not None:
            cond.append(self.extrinsics_encoder(extrinsics)[:, :, None])
        return torch.cat(cond + [x], dim=2)

    def readout(self, x, frames):
        b, t, gh, gw, d = frames.shape
        x = self.predictor_proj(self.predictor_norm(x[:, :, self.cond:])).reshape(b, t, gh, gw, d)
        return x + frames if self.cfg.residual else x

    def forward(self, frames, actions, states, extrinsics=None):
        """frames [B, T, H', W', D], actions [B, T, A], states [B, T, S] -> predictions [B, T, H', W', D]."""
        b, t, gh, gw, _ = frames.shape
        x = self.step_tokens(frames, actions, states, extrinsics)
        n = x.shape[2]
        x = x.reshape(b, t * n, -1)
        rope = self.rope(0, t, gh, gw)
        mask = block_causal_mask(t, n) if t > 1 else None  # one step: every token sees every other
        for blk in self.predictor_blocks:
            x = blk(x, rope, mask)
        return self.readout(x.reshape(b, t, n, -1), frames)

    # -- key/value cache ------------------------------------------------------------------------------------------
    def init_cache(self, batch: int, steps: int, tokens_per_frame: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        cfg = self.cfg
        shape = (batch, cfg.num_heads, steps * (cfg.cond_tokens + tokens_per_frame), cfg.width // cfg.num_heads)
        return [(torch.zeros(shape), torch.zeros(shape)) for _ in range(cfg.depth)]

    def decode(self, frames, actions, states, cache, start: int, extrinsics=None):
        """Steps start .. start + T - 1 given the keys / values of the steps < start in `cache` (written in place)."""
        b, t, gh, gw, _ = frames.shape
        x = self.step_tokens(frames, actions, states, extrinsics)
        n = x.shape[2]
        x = x.reshape(b, t * n, -1)
        rope = self.rope(start, t, gh, gw)
        mask = None
        if t > 1:  # block-causal among the new steps, every earlier step visible
            q_step = start + torch.arange(t * n) // n
            k_step = torch.arange((start + t) * n) // n
            mask = k_step[None, :] <= q_step[:, None]
        for blk, (keys, values) in zip(self.predictor_blocks, cache):
            x = blk.decode(x, rope, keys, values, start * n, mask)
        return self.readout(x.reshape(b, t, n, -1), frames)


class TorchViT(nn.Module):
    """The project's VisionTransformer (jepa.models.ViTConfig) in torch: Conv3d tubelets, 3-D RoPE, blocks, norm."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        t, p = cfg.tubelet_size, cfg.patch_size
        self.patch_embed = nn.Conv3d(cfg.in_chans, cfg.width, kernel_size=(t, p, p), stride=(t, p, p))
        self.blocks = nn.ModuleList([Block(cfg.width, cfg.num_heads, cfg.mlp_dim, cfg.ln_eps, cfg.qkv_bias)
                                     for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self._rope_cache: dict = {}

    def forward(self, video):
        """video [B, C, T, H, W] -> tokens [B, N, D]."""
        x = self.patch_embed(video)  # [B, D, T', H', W']
        grid = tuple(x.shape[2:])
        x = x.flatten(2).transpose(1, 2)
        if grid not in self._rope_cache:
            gt, gh, gw = grid
            idx = torch.arange(gt * gh * gw)
            pos = torch.stack([idx // (gh * gw), (idx % (gh * gw)) // gw, idx % gw], -1)
            self._rope_cache[grid] = rope_tables(pos, self.cfg.width // self.cfg.num_heads, self.cfg.rope)
        rope = self._rope_cache[grid]
        for blk in self.blocks:
            x = blk(x, rope)
        return self.norm(x)


# --- Parameters from the project's NNX modules ----------------------------------------------------------------------
def _t(x) -> torch.Tensor:
    return torch.from_numpy(np.array(x, dtype=np.float32))


def _linear(mod: nn.Linear, p: dict) -> None:
    mod.weight.copy_(_t(p["kernel"]).T)
    if mod.bias is not None:
        mod.bias.copy_(_t(p["bias"]))


def _norm(mod: nn.LayerNorm, p: dict) -> None:
    mod.weight.copy_(_t(p["scale"]))
    mod.bias.copy_(_t(p["bias"]))


def _blocks(blocks: nn.ModuleList, stacked: dict) -> None:
    """Per-layer parameters from the project's BlockStack (leading `layers` axis)."""
    for i, blk in enumerate(blocks):
        layer = {k: v for k, v in _index(stacked, i).items()}
        _norm(blk.norm1, layer["norm1"])
        _norm(blk.norm2, layer["norm2"])
        _linear(blk.attn.qkv, layer["attn"]["qkv"])
        _linear(blk.attn.proj, layer["attn"]["proj"])
        _linear(blk.mlp.fc1, layer["mlp"]["fc1"])
        _linear(blk.mlp.fc2, layer["mlp"]["fc2"])


def _index(tree: Any, i: int) -> Any:
    if isinstance(tree, dict):
        return {k: _index(v, i) for k, v in tree.items()}
    return np.asarray(tree)[i]


def pure_params(module) -> dict:
    """The parameters of an NNX module as a nested dict of arrays."""
    from flax import nnx

    return nnx.to_pure_dict(nnx.state(module, nnx.Param))


@torch.no_grad()
def load_predictor(tmod: TorchACPredictor, params: dict) -> TorchACPredictor:
    """Copies the project's ACPredictor parameters (`pure_params(model)` or a train state's params) into `tmod`."""
    _linear(tmod.predictor_embed, params["embed"])
    _linear(tmod.action_encoder, params["action_encoder"])
    _linear(tmod.state_encoder, params["state_encoder"])
    if tmod.extrinsics_encoder is not None:
        _linear(tmod.extrinsics_encoder, params["extrinsics_encoder"])
    if tmod.pos_embed is not None:
        tmod.pos_embed.copy_(_t(params["pos_embed"]))
    _blocks(tmod.predictor_blocks, params["blocks"]["blocks"])
    _norm(tmod.predictor_norm, params["norm"])
    _linear(tmod.predictor_proj, params["proj"])
    return tmod


@torch.no_grad()
def load_encoder(tmod: TorchViT, params: dict) -> TorchViT:
    """Copies the project's VisionTransformer parameters into `tmod` (tubelet kernel [t, p, p, C, D] -> Conv3d
    weight [D, C, t, p, p])."""
    tmod.patch_embed.weight.copy_(_t(params["patch_embed"]["kernel"]).permute(4, 3, 0, 1, 2))
    tmod.patch_embed.bias.copy_(_t(params["patch_embed"]["bias"]))
    _blocks(tmod.blocks, params["blocks"]["blocks"])
    _norm(tmod.norm, params["norm"])
    return tmod


def predictor_from(model) -> TorchACPredictor:
    """A torch twin of the project's ACPredictor `model` (same config, same parameters), in eval mode."""
    return load_predictor(TorchACPredictor(model.cfg), pure_params(model)).eval()


def encoder_from(model) -> TorchViT:
    return load_encoder(TorchViT(model.cfg), pure_params(model)).eval()


# --- The world model around them (jepa.world_model in torch) --------------------------------------------------------
def layer_norm(x: torch.Tensor) -> torch.Tensor:
    """The reference's `normalize_reps`: LayerNorm over features, no affine, eps 1e-5."""
    return F.layer_norm(x, x.shape[-1:])


def encode_frames(encoder: TorchViT, frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames [B, T, H, W, 3] -> normalised features [B, T, H', W', D], one frame per tubelet (as
    jepa.world_model.encode_frames; the reference's WorldModel.encode)."""
    b, t, h, w, c = frames.shape
    x = frames.reshape(b * t, h, w, c).float() / 255.0
    x = (x - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    x = x.permute(0, 3, 1, 2)[:, :, None].repeat(1, 1, encoder.cfg.tubelet_size, 1, 1)  # [B*T, C, tubelet, H, W]
    tokens = encoder(x)
    p = encoder.cfg.patch_size
    return layer_norm(tokens).reshape(b, t, h // p, w // p, -1)


def rollout(model: TorchACPredictor, z0, actions, states, steps: int, first=None) -> torch.Tensor:
    """The reference's autoregressive rollout: every step re-runs the predictor on the whole sequence so far and
    keeps its last frame. z0 [B, t0, ...], actions / states [B, t0 + steps - 1, ...] -> [B, steps, ...]."""
    z, preds = z0, []
    for n in range(steps):
        if n == 0 and first is not None:
            nxt = first
        else:
            k = z.shape[1]
            nxt = layer_norm(model(z, actions[:, :k], states[:, :k]))[:, -1:]
        preds.append(nxt)
        z = torch.cat([z, nxt], dim=1)
    return torch.cat(preds, dim=1)


def rollout_cached(model: TorchACPredictor, z0, actions, states, steps: int) -> torch.Tensor:
    """The same rollout with a key/value cache: the observed steps once, then one step at a time."""
    b, c, gh, gw, _ = z0.shape
    cache = model.init_cache(b, c - 1 + steps, gh * gw)
    if c > 1:
        model.decode(z0[:, :c - 1], actions[:, :c - 1], states[:, :c - 1], cache, 0)
    frame, preds = z0[:, -1:], []
    for n in range(steps):
        i = c - 1 + n
        frame = layer_norm(model.decode(frame, actions[:, i:i + 1], states[:, i:i + 1], cache, i))
        preds.append(frame)
    return torch.cat(preds, dim=1)


def l1(a, b) -> torch.Tensor:
    return (a - b).abs().mean()


# --- The AC training step ------------------------------------------------------------------------------------------
def ac_loss(model: TorchACPredictor, feats, actions, states, rollout_steps: int):
    """jepa.train.ac.ac_loss: teacher forcing (frames 1..T-1 from 0..T-2) + a rollout of `rollout_steps` frames
    from frame 0 sharing teacher forcing's first prediction, both L1 on layer-normed features."""
    t = feats.shape[1]
    z_tf = layer_norm(model(feats[:, :-1], actions[:, :t - 1], states[:, :t - 1]))
    jloss = l1(z_tf, feats[:, 1:])
    z_ar = rollout(model, feats[:, :1], actions, states, rollout_steps, first=z_tf[:, :1])
    sloss = l1(z_ar, feats[:, 1:1 + rollout_steps])
    return jloss + sloss, jloss, sloss


class ACTrainStep:
    """One AC training step in torch: forward, backward, AdamW (betas (0.9, 0.999), eps 1e-8, decoupled weight decay
    on matrices only, foreach=True), at a constant learning rate. Calling it runs one step on its fixed batch."""

    def __init__(self, model: TorchACPredictor, batch: dict, *, rollout_steps: int, lr: float, weight_decay: float,
                 b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
        self.model = model.train()
        self.batch = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in batch.items()}
        self.rollout_steps = rollout_steps
        decay = [p for p in model.parameters() if p.ndim >= 2]
        rest = [p for p in model.parameters() if p.ndim < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                      {"params": rest, "weight_decay": 0.0}],
                                     lr=lr, betas=(b1, b2), eps=eps, foreach=True)
        self.loss = None

    def __call__(self):
        b = self.batch
        self.opt.zero_grad(set_to_none=True)
        loss, jloss, sloss = ac_loss(self.model, b["features"], b["actions"], b["states"], self.rollout_steps)
        loss.backward()
        self.opt.step()
        self.loss = float(loss.detach())
        return self.loss


# --- States from delta-pose actions (jepa.world_model.integrate_states_jax in torch) --------------------------------
def _euler_to_matrix(e: torch.Tensor) -> torch.Tensor:
    ca, cb, cc = e[..., 0].cos(), e[..., 1].cos(), e[..., 2].cos()
    sa, sb, sc = e[..., 0].sin(), e[..., 1].sin(), e[..., 2].sin()
    rows = [[cb * cc, sa * sb * cc - ca * sc, ca * sb * cc + sa * sc],
            [cb * sc, sa * sb * sc + ca * cc, ca * sb * sc - sa * cc],
            [-sb, sa * cb, ca * cb]]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def _matrix_to_euler(m: torch.Tensor) -> torch.Tensor:
    sb = (-m[..., 2, 0]).clamp(-1.0, 1.0)
    locked = sb.abs() > 1.0 - 1e-6
    zero = torch.zeros_like(sb)
    a = torch.where(locked, zero, torch.atan2(m[..., 2, 1], m[..., 2, 2]))
    c = torch.where(locked, torch.atan2(-m[..., 0, 1], m[..., 1, 1]), torch.atan2(m[..., 1, 0], m[..., 0, 0]))
    return torch.stack([a, torch.asin(sb), c], dim=-1)


def next_state(s: torch.Tensor, a: torch.Tensor, gripper_range=None) -> torch.Tensor:
    """The pose [N, 7] reached by delta-pose actions [N, 7]: xyz and gripper add, orientation composes."""
    rot = _euler_to_matrix(a[..., 3:6]) @ _euler_to_matrix(s[..., 3:6])
    g = s[..., 6:] + a[..., 6:]
    if gripper_range is not None:
        g = g.clamp(*gripper_range)
    return torch.cat([s[..., :3] + a[..., :3], _matrix_to_euler(rot), g], dim=-1)


def _tensor(x) -> torch.Tensor:
    """A torch copy of an array (numpy, or jax via numpy): uint8 stays uint8, the rest float32."""
    x = np.asarray(x)
    return torch.from_numpy(np.array(x, x.dtype if x.dtype == np.uint8 else np.float32))


# --- A CEM re-plan written like the reference planner ---------------------------------------------------------------
class ReferenceCEM:
    """One re-plan of E episodes, reference-style: Python loops over the I CEM iterations and, inside each, over the
    H horizon steps; each step calls the torch predictor once for the N candidates of every episode (the E episodes
    are batched into one [E * N] tensor, which the reference, planning one robot, does not need), the next pose
    computed from the sampled action (`next_state`, vectorised; the reference does it per sample with scipy).
    `cache=False`: the predictor re-runs on the whole sequence so far at every step, as the reference does;
    `cache=True`: the keys / values of the steps already computed are kept and only the new step's tokens run.

    The CEM itself is planning.cem's (same N, elites, I, H, init_std, min_std, momentum, keep_mean, clipping to the
    searched bounds, held dimensions zero, energy = mean L1 of the last (or every) predicted frame to the goal
    features, elites by top-k, refit mean / std (population std)); the observation is encoded inside the re-plan,
    the goal features are given (encoded once per episode, as the project's LatentPlanner.encode_goals)."""

    def __init__(self, encoder: TorchViT, predictor: TorchACPredictor, space, cfg, *, normalization: dict | None,
                 context: int = 1, gripper_range=(0.0, 1.0), cache: bool = False):
        self.encoder, self.predictor, self.space, self.cfg = encoder, predictor, space, cfg
        self.context, self.gripper_range, self.cache = context, gripper_range, cache
        self.dims = torch.tensor(space.dims)
        self.low, self.high = torch.tensor(space.low), torch.tensor(space.high)
        self.half_range = (self.high - self.low) / 2
        self.norm = None if normalization is None else {k: torch.tensor(v, dtype=torch.float32)
                                                        for k, v in normalization.items()}

    def _normalize(self, x, key):
        if self.norm is None:
            return x
        return (x - self.norm[f"{key}_mean"]) / self.norm[f"{key}_std"]

    def _full(self, x):  # searched actions [..., size] -> [..., dim], held dimensions zero
        out = torch.zeros(x.shape[:-1] + (self.space.dim,))
        out[..., self.dims] = x
        return out

    def _prepare(self, frames, past_actions, states, goal_z, n: int) -> dict:
        """What every iteration of a re-plan shares: the encoded observation (inside the re-plan), the context
        repeated for the N candidates of each episode ([E * N, ...], episodes side by side), and with the cache the
        observed steps' keys / values, computed once and shared by every candidate and iteration."""
        cfg, pred = self.cfg, self.predictor
        frames, past_actions, states, goal_z = (_tensor(x) for x in (frames, past_actions, states, goal_z))
        e, c = frames.shape[:2]
        z = encode_frames(self.encoder, frames)  # [E, C, H', W', D]: each observed frame encoded once
        gh, gw = z.shape[2:4]
        past_s = self._normalize(states, "state")
        past_a = self._normalize(past_actions, "action")
        cache = None
        if self.cache:  # each iteration overwrites only the imagined steps' entries
            prefix = pred.init_cache(e, c - 1 + cfg.horizon, gh * gw)
            if c > 1:
                pred.decode(z[:, :c - 1], past_a, past_s[:, :c - 1], prefix, 0)
            cache = [(k.repeat_interleave(n, dim=0), v.repeat_interleave(n, dim=0)) for k, v in prefix]
        rep = lambda x: x.repeat_interleave(n, dim=0)  # noqa: E731
        return {"e": e, "c": c, "n": n, "z": rep(z), "a": rep(past_a), "s": rep(past_s[:, :c - 1]),
                "state": rep(states[:, -1]), "goal": rep(goal_z), "cache": cache}

    def _energy(self, p: dict, cands: torch.Tensor) -> torch.Tensor:
        """Energies [E, N] of candidates [E, N, H, size]: the horizon rolled out one predictor call per step."""
        cfg, pred = self.cfg, self.predictor
        e, n, c, h = p["e"], p["n"], p["c"], cands.shape[2]
        acts = self._full(cands).flatten(0, 1)  # [E * N, H, A]
        s, cache = p["state"], p["cache"]
        seq_z, seq_a, seq_s = p["z"], p["a"], p["s"]
        frame, preds = seq_z[:, -1:], []
        for step in range(h):  # the horizon, one predictor call per step
            a = self._normalize(acts[:, step:step + 1], "action")
            st = self._normalize(s, "state")[:, None]
            if cache is not None:  # only the new step's tokens
                frame = layer_norm(pred.decode(frame, a, st, cache, c - 1 + step))
            else:  # the whole sequence so far, its last frame kept (the reference)
                seq_a = torch.cat([seq_a, a], dim=1)
                seq_s = torch.cat([seq_s, st], dim=1)
                frame = layer_norm(pred(seq_z, seq_a, seq_s))[:, -1:]
                seq_z = torch.cat([seq_z, frame], dim=1)
            preds.append(frame)
            if step + 1 < h:
                s = next_state(s, acts[:, step], self.gripper_range)
        d = torch.cat(preds, dim=1) - p["goal"][:, None]  # [E * N, H, H', W', D]
        d = (d.abs() if cfg.energy == "l1" else d.square()).mean(dim=(-3, -2, -1)).reshape(e, n, h)
        return d.mean(-1) if cfg.all_frames else d[..., -1]

    @torch.inference_mode()
    def energies(self, frames, past_actions, states, goal_z, candidates) -> torch.Tensor:
        """The energy of given candidates [E, N, H, size] -> [E, N] (LatentPlanner.energies in torch)."""
        cands = _tensor(candidates)
        return self._energy(self._prepare(frames, past_actions, states, goal_z, cands.shape[1]), cands)

    @torch.inference_mode()
    def __call__(self, frames, past_actions, states, goal_z, warm, generator: torch.Generator | None = None):
        """frames uint8 [E, C, H, W, 3], past_actions [E, C - 1, A], states [E, C, S], goal_z [E, H', W', D],
        warm [E, H, size] -> (mean [E, H, size], best energy [E])."""
        cfg = self.cfg
        p = self._prepare(frames, past_actions, states, goal_z, cfg.samples)
        mean = _tensor(warm)
        std = (cfg.init_std * self.half_range).expand_as(mean).clone()
        floor = cfg.min_std * self.half_range
        best_e = torch.full((p["e"],), float("inf"))
        for _ in range(cfg.iterations):  # the CEM iterations
            cands = mean[:, None] + std[:, None] * torch.randn((p["e"], cfg.samples) + mean.shape[1:],
                                                               generator=generator)
            if cfg.keep_mean:
                cands[:, 0] = mean
            cands = torch.maximum(torch.minimum(cands, self.high), self.low)  # [E, N, H, size]
            energy = self._energy(p, cands)  # [E, N]
            best_e = torch.minimum(best_e, energy.min(1).values)
            idx = energy.topk(cfg.elites, dim=1, largest=False).indices  # the elites: [E, k]
            elites = torch.gather(cands, 1, idx[:, :, None, None].expand(-1, -1, *cands.shape[2:]))
            mean = cfg.momentum * mean + (1 - cfg.momentum) * elites.mean(1)
            std = torch.maximum(cfg.momentum * std + (1 - cfg.momentum) * elites.std(1, unbiased=False), floor)
        return torch.maximum(torch.minimum(mean, self.high), self.low), best_e
