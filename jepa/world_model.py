"""The latent world model of V-JEPA 2-AC: a frozen encoder's per-frame features + the AC predictor.

Shared by AC training (teacher forcing + rollout loss), its evaluation, and the planner. Frames are encoded one at a
time (each frame duplicated into one tubelet) and layer-normed; predictions are layer-normed too (the reference's
`normalize_reps`). Actions and states are standardised with the training episodes' statistics when the predictor
was trained with `data.normalize` (kept in its bundle's meta): `load_world_model` gives a planner all of it.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jepa.data.transforms import IMAGENET_MEAN, IMAGENET_STD

Array = jax.Array


def layer_norm(x: Array, eps: float = 1e-5) -> Array:
    """LayerNorm over the last axis without affine (torch.nn.functional.layer_norm defaults)."""
    x = x.astype(jnp.float32)
    mu = x.mean(-1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(jnp.square(x - mu).mean(-1, keepdims=True) + eps)


def preprocess(frames: Array) -> Array:
    """uint8 [..., H, W, 3] -> ImageNet-normalised float32."""
    x = frames.astype(jnp.float32) / 255.0
    return (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


def encode_frames(encoder, frames: Array) -> Array:
    """uint8 frames [B, T, H, W, 3] -> normalised features [B, T, H', W', D], one frame per tubelet."""
    b, t, h, w, c = frames.shape
    x = preprocess(frames.reshape(b * t, 1, h, w, c))
    x = jnp.repeat(x, encoder.cfg.tubelet_size, axis=1)
    tokens = encoder(x)  # [B*T, H'*W', D]
    gh, gw = h // encoder.cfg.patch_size, w // encoder.cfg.patch_size
    return layer_norm(tokens).reshape(b, t, gh, gw, -1)


def predict_next(predictor, z: Array, actions: Array, states: Array) -> Array:
    """One predictor call on t frames: normalised predictions [B, t, H', W', D] (step i predicts frame i+1)."""
    return layer_norm(predictor(z, actions, states))


def teacher_forcing(predictor, h: Array, actions: Array, states: Array) -> Array:
    """h [B, T, ...] true features; predictions of frames 1..T-1 from frames 0..T-2 [B, T-1, ...]."""
    t = h.shape[1]
    return predict_next(predictor, h[:, :-1], actions[:, : t - 1], states[:, : t - 1])


def rollout(predictor, z0: Array, actions: Array, states: Array, steps: int, first: Array | None = None) -> Array:
    """Autoregressive rollout: from true frame(s) z0 [B, t0, ...] predict `steps` frames, feeding predictions back.

    actions/states [B, t0 + steps - 1, ...] cover every input step. `first` optionally gives the prediction of the
    first future frame already computed (teacher forcing shares it, as in the reference). Returns [B, steps, ...].
    """
    z = z0
    preds = []
    t0 = z0.shape[1]
    for n in range(steps):
        if n == 0 and first is not None:
            nxt = first
        else:
            k = z.shape[1]
            nxt = predict_next(predictor, z, actions[:, :k], states[:, :k])[:, -1:]
        preds.append(nxt)
        z = jnp.concatenate([z, nxt], axis=1)
    del t0
    return jnp.concatenate(preds, axis=1)


def prefill(predictor, z: Array, actions: Array, states: Array, steps: int):
    """A KV cache sized for `steps` predictor steps, holding the observed steps 0..C-2 of z [B, C, ...] with their
    (executed) actions / states [B, >= C-1, ...]. The last observed frame is not in it: its step carries the first
    planned action, which differs per candidate."""
    b, c, gh, gw, _ = z.shape
    cache = predictor.init_cache(b, steps, gh * gw)
    if c > 1:
        _, cache = predictor.decode(z[:, :c - 1], actions[:, :c - 1], states[:, :c - 1], cache, 0)
    return cache


def imagine(predictor, cache, z_last: Array, actions: Array, states: Array, start) -> Array:
    """Autoregressive rollout with a KV cache: from the frame z_last [B, 1, H', W', D] at step `start` (earlier
    steps are in `cache`), predict one frame per action of actions / states [B, K, ...], each step computed once
    (`lax.scan`, fixed-size buffers). Returns the normalised predictions [B, K, H', W', D]."""

    def body(carry, inp):
        frame, kv = carry
        a, s, i = inp
        pred, kv = predictor.decode(frame, a[:, None], s[:, None], kv, start + i)
        pred = layer_norm(pred)
        return (pred, kv), pred[:, 0]

    k = actions.shape[1]
    xs = (jnp.swapaxes(actions, 0, 1), jnp.swapaxes(states, 0, 1), jnp.arange(k))
    _, preds = jax.lax.scan(body, (z_last, cache), xs)
    return jnp.swapaxes(preds, 0, 1)


def rollout_cached(predictor, z0: Array, actions: Array, states: Array, steps: int) -> Array:
    """`rollout` computed with the KV cache (prefill + imagine): equal to it, each step computed once."""
    c = z0.shape[1]
    cache = prefill(predictor, z0, actions, states, c + steps - 1)
    return imagine(predictor, cache, z0[:, -1:], actions[:, c - 1:c - 1 + steps], states[:, c - 1:c - 1 + steps],
                   c - 1)


def l1(a: Array, b: Array) -> Array:
    return jnp.mean(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32)))


def integrate_states(state0: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """States reached by applying V-JEPA 2-AC delta-pose actions [K, 7] from state0 [7]: returns [K + 1, 7].

    xyz and gripper add; orientation composes R_{t+1} = dR R_t (the inverse of `jepa.data.rlds.poses_to_actions`).
    """
    from jepa.data.rlds import euler_xyz_to_matrix, matrix_to_euler_xyz

    out = [np.asarray(state0, np.float64)]
    for a in np.asarray(actions, np.float64):
        s = out[-1]
        rot = euler_xyz_to_matrix(a[3:6]) @ euler_xyz_to_matrix(s[3:6])
        out.append(np.concatenate([s[:3] + a[:3], matrix_to_euler_xyz(rot), s[6:] + a[6:]]))
    return np.stack(out).astype(np.float32)


def _euler_to_matrix(e: Array) -> Array:
    """jnp twin of jepa.data.rlds.euler_xyz_to_matrix (extrinsic xyz): [..., 3] -> [..., 3, 3]."""
    ca, cb, cc = jnp.cos(e[..., 0]), jnp.cos(e[..., 1]), jnp.cos(e[..., 2])
    sa, sb, sc = jnp.sin(e[..., 0]), jnp.sin(e[..., 1]), jnp.sin(e[..., 2])
    rows = [[cb * cc, sa * sb * cc - ca * sc, ca * sb * cc + sa * sc],
            [cb * sc, sa * sb * sc + ca * cc, ca * sb * sc - sa * cc],
            [-sb, sa * cb, ca * cb]]
    return jnp.stack([jnp.stack(r, axis=-1) for r in rows], axis=-2)


def _matrix_to_euler(m: Array) -> Array:
    """jnp twin of jepa.data.rlds.matrix_to_euler_xyz."""
    sb = jnp.clip(-m[..., 2, 0], -1.0, 1.0)
    locked = jnp.abs(sb) > 1.0 - 1e-6
    a = jnp.where(locked, 0.0, jnp.arctan2(m[..., 2, 1], m[..., 2, 2]))
    c = jnp.where(locked, jnp.arctan2(-m[..., 0, 1], m[..., 1, 1]), jnp.arctan2(m[..., 1, 0], m[..., 0, 0]))
    return jnp.stack([a, jnp.arcsin(sb), c], axis=-1)


def integrate_states_jax(state0: Array, actions: Array, gripper_range: tuple[float, float] | None = None) -> Array:
    """`integrate_states` inside jit: state0 [..., 7], delta-pose actions [..., K, 7] -> states [..., K + 1, 7]
    (`lax.scan` over K). `gripper_range` optionally clips the gripper (a real gripper stops at its limits)."""

    def body(s, a):
        rot = _euler_to_matrix(a[..., 3:6]) @ _euler_to_matrix(s[..., 3:6])
        g = s[..., 6:] + a[..., 6:]
        if gripper_range is not None:
            g = jnp.clip(g, *gripper_range)
        nxt = jnp.concatenate([s[..., :3] + a[..., :3], _matrix_to_euler(rot), g], axis=-1)
        return nxt, nxt

    state0 = state0.astype(jnp.float32)
    _, out = jax.lax.scan(body, state0, jnp.moveaxis(actions.astype(jnp.float32), -2, 0))
    return jnp.concatenate([state0[..., None, :], jnp.moveaxis(out, 0, -2)], axis=-2)


# --- Action / state standardisation ----------------------------------------------------------------------------
def normalization_stats(actions: Sequence[np.ndarray], states: Sequence[np.ndarray]) -> dict[str, list[float]]:
    """Per-dimension mean/std of actions and states over training episodes ([T, A] / [T, S] arrays each). Raw
    end-effector deltas are a few centimetres; standardising them lets the predictor's action/state encoders learn
    at the same pace as the rest. Dimensions that barely vary (e.g. a fixed orientation) keep std 1."""
    out = {}
    for key, arrays in (("action", actions), ("state", states)):
        x = np.concatenate([np.asarray(a) for a in arrays]).astype(np.float64)
        std = x.std(0)
        out[f"{key}_mean"] = x.mean(0).tolist()
        out[f"{key}_std"] = np.where(std < 1e-3, 1.0, std).tolist()
    return out


def normalize(x, stats: dict | None, key: str):
    """Standardise actions (key='action') or states (key='state') [..., dim]; identity when stats is None. Works
    on numpy and jax arrays (the planner standardises its sampled actions inside jit)."""
    if stats is None:
        return x
    mean, std = stats[f"{key}_mean"], stats[f"{key}_std"]
    if x.shape[-1] != len(mean):
        raise ValueError(f"{key}s have {x.shape[-1]} dimensions, the predictor was trained on {len(mean)}")
    xp = jnp if isinstance(x, jax.Array) else np
    return ((x - xp.asarray(mean)) / xp.asarray(std)).astype(xp.float32)


@dataclasses.dataclass
class WorldModel:
    """A trained latent world model: the frozen encoder, the AC predictor and how its inputs were prepared."""

    encoder: Any
    predictor: Any
    normalization: dict | None  # action/state statistics (None: raw actions and states)
    image_size: int | None  # the frame side the predictor was trained on
    frame_stride: int
    actions: str = "delta_pose"  # 'delta_pose' (from consecutive poses) or 'recorded' (the env's own actions)
    states: str = "pose"  # 'pose' ([xyz, Euler, gripper]) or 'none' (the predictor saw zeros)

    def normalize_actions(self, actions):
        return normalize(actions, self.normalization, "action")

    def normalize_states(self, states):
        return normalize(states, self.normalization, "state")


def load_world_model(path: str | os.PathLike, **load_kwargs) -> WorldModel:
    """Loads a `jepa train-ac` bundle (`encoder` + `ac_predictor`, and its meta) as a WorldModel."""
    from jepa.models.io import load_bundle, read_bundle_config

    configs, meta = read_bundle_config(path)
    missing = {"encoder", "ac_predictor"} - set(configs)
    if missing:
        raise ValueError(f"{path}: not a world-model bundle (no {sorted(missing)}; it has {sorted(configs)})")
    models = load_bundle(path, ["encoder", "ac_predictor"], **load_kwargs)
    return WorldModel(models["encoder"], models["ac_predictor"], meta.get("normalization"), meta.get("data_size"),
                      int(meta.get("frame_stride", 1)), meta.get("actions", "delta_pose"), meta.get("states", "pose"))
