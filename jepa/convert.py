"""`jepa convert`: import released V-JEPA 2 checkpoints into a model bundle (see `jepa.models.io`).

Two sources:

* ``--from original``: Meta's PyTorch checkpoints (``torch.load`` of a dict with ``encoder`` / ``target_encoder`` /
  ``predictor``; pretrain keys are prefixed ``module.backbone.``, AC keys ``module.``; probe checkpoints hold a
  ``classifiers`` list). Needs torch (only to unpickle the file).
* ``--from hf``: a transformers directory (``config.json`` + ``model.safetensors`` or a sharded index) of
  ``VJEPA2Model`` or ``VJEPA2ForVideoClassification``; read with ``safetensors.numpy`` (no torch).

Model configs are inferred from the checkpoint's shapes (width, depth, MLP width, patch, tubelet, mask tokens, action
and state sizes). Head counts are not visible in the weights: transformers checkpoints carry them in config.json;
for original checkpoints they come from ``--heads`` / ``--preset`` or the released width -> heads mapping.

Every problem of a checkpoint (missing, unexpected or mis-shaped keys; configs that disagree with the weights) is
reported in ONE error listing all of them; nothing is ever loaded partially. Only ``pos_embed`` /
``predictor_pos_embed`` (unused sin-cos tables of RoPE models) and an unused AC ``extrinsics_encoder`` are ignored.

The conversion functions (`convert_original`, `convert_hf`) are pure: nested dicts of arrays in, (configs, parameter
trees of numpy arrays) out. File reading is separate (`read_original`, `read_hf`).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jepa.models.config import ENCODERS, ACPredictorConfig, PredictorConfig, ProbeConfig, ViTConfig

# Head counts of released models by width (they cannot be read from the weights).
ENCODER_HEADS = {c.width: c.num_heads for c in ENCODERS.values()}  # 1024 -> 16, 1280 -> 16, 1408 -> 22, ...
PREDICTOR_HEADS = {384: 12}
AC_PREDICTOR_HEADS = {1024: 16}
PROBE_HEADS = 16  # the reference's attentive probes use 16 heads whatever the encoder

IGNORED_KEYS = ("pos_embed", "predictor_pos_embed")  # sin-cos tables that RoPE models do not use

Params = dict[str, Any]


class ConversionError(ValueError):
    """A checkpoint that does not match the expected layout; the message lists every problem."""


# --- reading a flat state dict with bookkeeping -------------------------------------------------------------
def _is_abstract(a) -> bool:
    return isinstance(a, jax.core.Tracer)


def _xp(*arrays):
    """numpy for data; jax.numpy while tracing shapes (`abstract_convert_*`: same code path, nothing allocated)."""
    return jnp if any(_is_abstract(a) for a in arrays) else np


def _to_numpy(v) -> np.ndarray:
    """numpy / ml_dtypes / torch tensor -> float32 (floating) or native numpy, without importing torch."""
    if _is_abstract(v):
        return v.astype(jnp.float32)
    if hasattr(v, "detach"):  # torch.Tensor
        v = v.detach().cpu()
        v = v.float() if v.is_floating_point() else v
        v = v.numpy()
    a = np.asarray(v)
    if a.dtype.kind == "f" or a.dtype.name == "bfloat16":
        a = a.astype(np.float32)
    return a


class _Reader:
    """Reads keys of one flat state dict, recording missing and mis-shaped keys; the rest are unexpected."""

    def __init__(self, sd: Mapping[str, Any], where: str):
        self.sd, self.where = sd, where
        self.used: set[str] = set()
        self.missing: list[str] = []
        self.misshaped: list[str] = []
        self.problems: list[str] = []  # other problems (configs that disagree with the weights, ...)

    def has(self, key: str) -> bool:
        return key in self.sd

    def shape(self, key: str) -> tuple[int, ...] | None:
        return tuple(self.sd[key].shape) if key in self.sd else None

    def count(self, prefix: str) -> int:
        """1 + the largest i of keys `{prefix}.{i}` or `{prefix}.{i}.*` (0 if none)."""
        pat = re.compile(rf"^{re.escape(prefix)}\.(\d+)(\.|$)")
        ids = [int(m.group(1)) for k in self.sd if (m := pat.match(k))]
        return max(ids) + 1 if ids else 0

    def get(self, key: str, shape: Sequence[int]) -> np.ndarray:
        shape = tuple(int(s) for s in shape)
        if key not in self.sd:
            self.missing.append(f"{key} {shape}")
            return np.zeros(shape, np.float32)
        self.used.add(key)
        a = _to_numpy(self.sd[key])
        if a.shape != shape:
            self.misshaped.append(f"{key}: {a.shape}, expected {shape}")
            return np.zeros(shape, np.float32)
        return a

    def ignore(self, *keys: str) -> None:
        self.used.update(k for k in keys if k in self.sd)

    def report(self) -> list[str]:
        unexpected = sorted(set(self.sd) - self.used)
        lines = []
        for title, items in (("missing", self.missing), ("unexpected", unexpected), ("mis-shaped", self.misshaped),
                             ("inconsistent", self.problems)):
            if items:
                lines.append(f"  {self.where}: {title} ({len(items)}):")
                lines += [f"    {x}" for x in items]
        return lines


def _raise_if_problems(readers: Sequence[_Reader], source: str) -> None:
    lines = [line for r in readers for line in r.report()]
    if lines:
        head = f"{source}: the checkpoint does not match the expected V-JEPA 2 layout"
        raise ConversionError("\n".join([head, *lines]))


def _require(r: _Reader, keys: Sequence[str], what: str, source: str) -> None:
    """Keys the configs are inferred from: without them nothing else can be checked."""
    absent = [k for k in keys if not r.has(k)]
    if absent:
        raise ConversionError(f"{source}: {r.where}: cannot infer the {what} config; missing key(s): {absent} "
                              f"(keys present: {_sample_keys(r.sd)})")


def _sample_keys(sd: Mapping, n: int = 8) -> str:
    keys = sorted(sd)
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


# --- parameter builders (PyTorch layouts -> this project's layouts) -------------------------------------------
def _linear(r: _Reader, key: str, din: int, dout: int, bias: bool = True) -> Params:
    """torch Linear weight [out, in] -> kernel [in, out]."""
    p = {"kernel": r.get(f"{key}.weight", (dout, din)).T}
    if bias:
        p["bias"] = r.get(f"{key}.bias", (dout,))
    return p


def _fused_linear(r: _Reader, keys: Sequence[str], din: int, dout: int, bias: bool = True) -> Params:
    """Separate Linears (e.g. query/key/value) -> one kernel [in, sum(out)] in the given order (rows concatenated)."""
    ws = [r.get(f"{k}.weight", (dout, din)) for k in keys]
    p = {"kernel": _xp(*ws).concatenate(ws, axis=0).T}
    if bias:
        bs = [r.get(f"{k}.bias", (dout,)) for k in keys]
        p["bias"] = _xp(*bs).concatenate(bs, axis=0)
    return p


def _layer_norm(r: _Reader, key: str, dim: int) -> Params:
    return {"scale": r.get(f"{key}.weight", (dim,)), "bias": r.get(f"{key}.bias", (dim,))}


def _stack(trees: Sequence[Params]) -> Params:
    """Per-block trees -> one tree with a leading `layers` axis (BlockStack layout)."""
    first = trees[0]
    if isinstance(first, dict):
        return {k: _stack([t[k] for t in trees]) for k in first}
    return _xp(*trees).stack(trees, axis=0)


# Block layouts. Each maps our block's parts to the source's names (qkv: one fused key, or three keys).
ORIGINAL_BLOCK = dict(norm1="norm1", qkv="attn.qkv", proj="attn.proj", norm2="norm2", fc1="mlp.fc1", fc2="mlp.fc2")
HF_BLOCK = dict(norm1="norm1", qkv=("attention.query", "attention.key", "attention.value"), proj="attention.proj",
                norm2="norm2", fc1="mlp.fc1", fc2="mlp.fc2")
HF_POOLER_BLOCK = dict(norm1="layer_norm1", qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
                       proj="self_attn.out_proj", norm2="layer_norm2", fc1="mlp.fc1", fc2="mlp.fc2")


def _block(r: _Reader, prefix: str, names: Mapping[str, Any], dim: int, mlp: int, qkv_bias: bool) -> Params:
    qkv = names["qkv"]
    if isinstance(qkv, str):
        qkv_p = _linear(r, prefix + qkv, dim, 3 * dim, qkv_bias)
    else:
        qkv_p = _fused_linear(r, [prefix + k for k in qkv], dim, dim, qkv_bias)
    return {
        "norm1": _layer_norm(r, prefix + names["norm1"], dim),
        "attn": {"qkv": qkv_p, "proj": _linear(r, prefix + names["proj"], dim, dim)},
        "norm2": _layer_norm(r, prefix + names["norm2"], dim),
        "mlp": {"fc1": _linear(r, prefix + names["fc1"], dim, mlp), "fc2": _linear(r, prefix + names["fc2"], mlp, dim)},
    }


def _blocks(r: _Reader, prefix: str, depth: int, names, dim: int, mlp: int, qkv_bias: bool) -> Params:
    return {"blocks": _stack([_block(r, f"{prefix}.{i}.", names, dim, mlp, qkv_bias) for i in range(depth)])}


def _patch_embed(r: _Reader, key: str, shape: tuple[int, ...]) -> Params:
    """Conv3d weight [D, C, t, p, p] -> kernel [t, p, p, C, D]."""
    w = r.get(f"{key}.weight", shape)
    k = w.transpose(2, 3, 4, 1, 0)
    return {"kernel": k if _is_abstract(k) else np.ascontiguousarray(k), "bias": r.get(f"{key}.bias", (shape[0],))}


def _heads(explicit: int | None, table: Mapping[int, int], width: int, what: str, flag: str) -> int:
    if explicit:
        return int(explicit)
    if width in table:
        return table[width]
    raise ConversionError(f"the number of {what} heads cannot be read from the weights and width {width} is not a "
                          f"released one ({dict(table)}); pass {flag}")


def _strip_prefixes(sd: Mapping[str, Any], where: str) -> tuple[dict[str, Any], str]:
    """Drop DDP / wrapper prefixes (`module.`, `backbone.`) from the front of every key.

    Returns the stripped dict and a note naming the removed prefixes (for error messages).
    """
    out: dict[str, Any] = {}
    removed: set[str] = set()
    for k, v in sd.items():
        k2 = k
        for p in ("module.", "backbone.", "module."):
            k2 = k2[len(p):] if k2.startswith(p) else k2
        if k2 in out:
            raise ConversionError(f"{where}: keys collide after removing prefixes: {k!r} -> {k2!r}")
        removed.add(k[: len(k) - len(k2)])
        out[k2] = v
    removed.discard("")
    note = f" (keys shown without their {' / '.join(repr(r) for r in sorted(removed))} prefix)" if removed else ""
    return out, note


# --- original (Meta PyTorch) checkpoints --------------------------------------------------------------------
def _original_encoder(r: _Reader, *, heads: int | None, preset: str | None, rope: str, src: str):
    _require(r, ["patch_embed.proj.weight", "blocks.0.mlp.fc1.weight"], "encoder", src)
    pshape = r.shape("patch_embed.proj.weight")
    if len(pshape) != 5:
        raise ConversionError(f"{src}: {r.where}: patch_embed.proj.weight has shape {pshape}; a video (Conv3d) "
                              "patch embedding [D, C, t, p, p] is expected")
    width, in_chans, tubelet, patch, _ = pshape
    depth = r.count("blocks")
    mlp = r.shape("blocks.0.mlp.fc1.weight")[0]
    qkv_bias = r.has("blocks.0.attn.qkv.bias")
    if preset is not None:
        if preset not in ENCODERS:
            raise ConversionError(f"unknown --preset {preset!r}; choose one of {sorted(ENCODERS)}")
        p = ENCODERS[preset]
        got, want = (width, depth, mlp), (p.width, p.depth, p.mlp_dim)
        if got != want:
            raise ConversionError(f"{src}: {r.where}: (width, depth, mlp) = {got} from the weights, but preset "
                                  f"{preset!r} has {want}")
        heads = heads or p.num_heads
    num_heads = _heads(heads, ENCODER_HEADS, width, "encoder", "--heads")
    cfg = ViTConfig(width=width, depth=depth, num_heads=num_heads, mlp_dim=mlp, patch_size=patch,
                    tubelet_size=tubelet, in_chans=in_chans, qkv_bias=qkv_bias, rope=rope)
    if width % num_heads:
        r.problems.append(f"width {width} is not divisible by {num_heads} heads")
    params = {
        "patch_embed": _patch_embed(r, "patch_embed.proj", pshape),
        "blocks": _blocks(r, "blocks", depth, ORIGINAL_BLOCK, width, mlp, qkv_bias),
        "norm": _layer_norm(r, "norm", width),
    }
    r.ignore("pos_embed")
    return cfg, params


def _original_predictor(r: _Reader, *, heads: int | None, embed_dim: int, rope: str, src: str):
    _require(r, ["predictor_embed.weight", "predictor_blocks.0.mlp.fc1.weight"], "predictor", src)
    width, din = r.shape("predictor_embed.weight")
    depth = r.count("predictor_blocks")
    mlp = r.shape("predictor_blocks.0.mlp.fc1.weight")[0]
    n_mask = r.count("mask_tokens")
    qkv_bias = r.has("predictor_blocks.0.attn.qkv.bias")
    if din != embed_dim:
        r.problems.append(f"predictor_embed takes {din} features but the encoder is {embed_dim} wide")
    if n_mask == 0:
        r.problems.append("no mask_tokens.{i}: the predictor needs mask tokens")
    cfg = PredictorConfig(embed_dim=din, width=width, depth=depth, mlp_dim=mlp, qkv_bias=qkv_bias, rope=rope,
                          num_heads=_heads(heads, PREDICTOR_HEADS, width, "predictor", "--pred-heads"),
                          num_mask_tokens=max(n_mask, 1))
    params = {
        "embed": _linear(r, "predictor_embed", din, width),
        "mask_tokens": _stack([r.get(f"mask_tokens.{i}", (1, 1, width)).reshape(width) for i in range(max(n_mask, 1))]),
        "blocks": _blocks(r, "predictor_blocks", depth, ORIGINAL_BLOCK, width, mlp, qkv_bias),
        "norm": _layer_norm(r, "predictor_norm", width),
        "proj": _linear(r, "predictor_proj", width, din),
    }
    r.ignore("predictor_pos_embed")
    return cfg, params


def _original_ac_predictor(r: _Reader, *, heads: int | None, embed_dim: int, grid_size: int, use_extrinsics: bool,
                           rope: str, src: str):
    _require(r, ["predictor_embed.weight", "action_encoder.weight", "state_encoder.weight",
                 "predictor_blocks.0.mlp.fc1.weight"], "AC predictor", src)
    width, din = r.shape("predictor_embed.weight")
    action_dim = r.shape("action_encoder.weight")[1]
    state_dim = r.shape("state_encoder.weight")[1]
    depth = r.count("predictor_blocks")
    mlp = r.shape("predictor_blocks.0.mlp.fc1.weight")[0]
    qkv_bias = r.has("predictor_blocks.0.attn.qkv.bias")
    if din != embed_dim:
        r.problems.append(f"predictor_embed takes {din} features but the encoder is {embed_dim} wide")
    cfg = ACPredictorConfig(embed_dim=din, width=width, depth=depth, mlp_dim=mlp, action_dim=action_dim,
                            state_dim=state_dim, use_extrinsics=use_extrinsics, grid_size=grid_size,
                            qkv_bias=qkv_bias, rope=rope,
                            num_heads=_heads(heads, AC_PREDICTOR_HEADS, width, "AC predictor", "--ac-heads"))
    params = {
        "embed": _linear(r, "predictor_embed", din, width),
        "action_encoder": _linear(r, "action_encoder", action_dim, width),
        "state_encoder": _linear(r, "state_encoder", state_dim, width),
        "blocks": _blocks(r, "predictor_blocks", depth, ORIGINAL_BLOCK, width, mlp, qkv_bias),
        "norm": _layer_norm(r, "predictor_norm", width),
        "proj": _linear(r, "predictor_proj", width, din),
    }
    if use_extrinsics:
        params["extrinsics_encoder"] = _linear(r, "extrinsics_encoder", action_dim - 1, width)
    else:  # the reference always builds it; released models never use it
        r.ignore("extrinsics_encoder.weight", "extrinsics_encoder.bias")
    return cfg, params


def _probe_mlp_ratio(r: _Reader, key: str, dim: int) -> float:
    mlp = r.shape(key)[0]
    ratio = mlp / dim
    if int(dim * ratio) != mlp:
        r.problems.append(f"probe MLP width {mlp} is not int({dim} * ratio) for any float ratio")
    return ratio


def _original_probe(r: _Reader, *, heads: int | None, rope: str, src: str):
    del rope  # the probe has no position encoding
    _require(r, ["pooler.query_tokens", "pooler.cross_attention_block.mlp.fc1.weight"], "probe", src)
    _, nq, dim = r.shape("pooler.query_tokens")
    depth = r.count("pooler.blocks")
    ratio = _probe_mlp_ratio(r, "pooler.cross_attention_block.mlp.fc1.weight", dim)
    mlp = int(dim * ratio)
    qkv_bias = r.has("pooler.cross_attention_block.xattn.q.bias")
    if r.has("linear.weight"):  # video classification: one query, one head
        head_keys = ["linear"]
    elif r.has("verb_classifier.weight"):  # EK100 anticipation: verb / noun / action queries
        head_keys = ["verb_classifier", "noun_classifier", "action_classifier"]
    else:  # EK100 action-only
        head_keys = ["action_classifier"]
    _require(r, [f"{k}.weight" for k in head_keys], "probe", src)
    classes = tuple(r.shape(f"{k}.weight")[0] for k in head_keys)
    if len(classes) != nq:
        r.problems.append(f"{nq} queries but {len(classes)} heads ({head_keys})")
    cfg = ProbeConfig(embed_dim=dim, num_queries=len(classes), num_classes=classes, depth=depth, mlp_ratio=ratio,
                      qkv_bias=qkv_bias, num_heads=heads or PROBE_HEADS)
    cross = "pooler.cross_attention_block"
    params = {
        "query_tokens": r.get("pooler.query_tokens", (1, len(classes), dim)).reshape(len(classes), dim),
        "cross": {
            "norm1": _layer_norm(r, f"{cross}.norm1", dim),
            "xattn": {"q": _linear(r, f"{cross}.xattn.q", dim, dim, qkv_bias),
                      "kv": _linear(r, f"{cross}.xattn.kv", dim, 2 * dim, qkv_bias)},
            "norm2": _layer_norm(r, f"{cross}.norm2", dim),
            "mlp": {"fc1": _linear(r, f"{cross}.mlp.fc1", dim, mlp), "fc2": _linear(r, f"{cross}.mlp.fc2", mlp, dim)},
        },
        "heads": {str(i): _linear(r, k, dim, c) for i, (k, c) in enumerate(zip(head_keys, classes))},
    }
    if depth:
        params["blocks"] = _blocks(r, "pooler.blocks", depth, ORIGINAL_BLOCK, dim, mlp, qkv_bias)
    return cfg, params


def detect_original_kind(ckpt: Mapping[str, Any]) -> str:
    if "classifiers" in ckpt:
        return "classifier"
    pred = ckpt.get("predictor")
    if isinstance(pred, Mapping) and any(k.endswith("action_encoder.weight") for k in pred):
        return "ac"
    return "pretrain"


def convert_original(
    ckpt: Mapping[str, Any],
    *,
    kind: str | None = None,
    which: str = "target_encoder",
    preset: str | None = None,
    heads: int | None = None,
    pred_heads: int | None = None,
    ac_heads: int | None = None,
    probe_heads: int | None = None,
    rope: str = "reference",
    img_size: int = 256,
    use_extrinsics: bool = False,
    encoder_only: bool = False,
    index: int = 0,
    source: str = "checkpoint",
) -> tuple[dict[str, Any], dict[str, Params]]:
    """Meta's V-JEPA 2 checkpoint (a dict of state dicts; arrays or torch tensors) -> (configs, params).

    kind: 'pretrain' (encoder + predictor), 'ac' (encoder + ac_predictor) or 'classifier' (probe from a
        `classifiers` list, entry `index`); default: detected.
    which: which encoder state dict becomes the bundle's `encoder` ('target_encoder' = the EMA encoder used for
        evaluation, or 'encoder').
    img_size: the AC predictor's training resolution: its RoPE grid is img_size // patch.
    """
    kind = kind or detect_original_kind(ckpt)
    if kind not in ("pretrain", "ac", "classifier"):
        raise ConversionError(f"unknown kind {kind!r}; choose pretrain, ac or classifier")
    top = sorted(str(k) for k in ckpt)

    def reader(name: str) -> _Reader:
        if name not in ckpt or not isinstance(ckpt[name], Mapping):
            raise ConversionError(f"{source}: a {kind} checkpoint needs a {name!r} state dict; top-level keys: {top}")
        sd, note = _strip_prefixes(ckpt[name], f"{source}[{name}]")
        return _Reader(sd, name + note)

    configs: dict[str, Any] = {}
    params: dict[str, Params] = {}
    readers = []
    if kind == "classifier":
        clfs = ckpt.get("classifiers")
        if not isinstance(clfs, Sequence) or not clfs:
            raise ConversionError(f"{source}: no 'classifiers' list; top-level keys: {top}")
        if not 0 <= index < len(clfs):
            raise ConversionError(f"{source}: classifier index {index} out of range (0..{len(clfs) - 1})")
        sd, note = _strip_prefixes(clfs[index], f"{source}[classifiers][{index}]")
        r = _Reader(sd, f"classifiers[{index}]{note}")
        configs["probe"], params["probe"] = _original_probe(r, heads=probe_heads, rope=rope, src=source)
        readers.append(r)
    else:
        if which not in ("target_encoder", "encoder"):
            raise ConversionError(f"--which must be 'target_encoder' or 'encoder', got {which!r}")
        r = reader(which)
        configs["encoder"], params["encoder"] = _original_encoder(r, heads=heads, preset=preset, rope=rope, src=source)
        readers.append(r)
        if not encoder_only:
            r = reader("predictor")
            enc = configs["encoder"]
            if kind == "pretrain":
                if any(k.endswith("action_encoder.weight") for k in r.sd):
                    raise ConversionError(f"{source}: the predictor has an action_encoder: this is an AC checkpoint "
                                          "(use --kind ac)")
                configs["predictor"], params["predictor"] = _original_predictor(
                    r, heads=pred_heads, embed_dim=enc.width, rope=rope, src=source)
            else:
                configs["ac_predictor"], params["ac_predictor"] = _original_ac_predictor(
                    r, heads=ac_heads, embed_dim=enc.width, grid_size=img_size // enc.patch_size,
                    use_extrinsics=use_extrinsics, rope=rope, src=source)
            readers.append(r)
    _raise_if_problems(readers, source)
    return configs, params


# --- transformers checkpoints -------------------------------------------------------------------------------
def detect_hf_kind(state_dict: Mapping[str, Any]) -> str:
    is_clf = any(k.startswith(("pooler.", "classifier.")) for k in state_dict)
    return "classifier" if is_clf else "pretrain"


def convert_hf(
    state_dict: Mapping[str, Any],
    hf_config: Mapping[str, Any],
    *,
    rope: str = "reference",
    kind: str | None = None,
    source: str = "checkpoint",
) -> tuple[dict[str, Any], dict[str, Params]]:
    """transformers `VJEPA2Model` / `VJEPA2ForVideoClassification` weights + config.json -> (configs, params).

    Widths, depths and MLP widths come from the weights; head counts, LayerNorm eps and qkv bias from the config
    (which must agree with the weights). A classifier's pooler becomes `probe` with the ENCODER's heads and
    LayerNorm eps and `num_pooler_layers` self-attention blocks, as transformers builds it.
    """
    detected = detect_hf_kind(state_dict)
    if kind is not None and kind not in ("pretrain", "classifier"):
        raise ConversionError(f"--kind {kind!r} is not available for transformers checkpoints (pretrain, classifier)")
    if kind is not None and kind != detected:
        raise ConversionError(f"{source}: --kind {kind} but the weights are a {detected} model")
    c = dict(hf_config)
    act = c.get("hidden_act", "gelu")
    if act != "gelu":
        raise ConversionError(f"{source}: config.json hidden_act={act!r}; only exact 'gelu' is supported")
    r = _Reader(state_dict, "model.safetensors")
    base = "vjepa2." if any(k.startswith("vjepa2.") for k in state_dict) else ""
    e, p = f"{base}encoder", f"{base}predictor"
    _require(r, [f"{e}.embeddings.patch_embeddings.proj.weight", f"{e}.layer.0.mlp.fc1.weight",
                 f"{p}.embeddings.predictor_embeddings.weight", f"{p}.layer.0.mlp.fc1.weight"], "model", source)
    eps = float(c.get("layer_norm_eps", 1e-6))
    qkv_bias = bool(c.get("qkv_bias", True))

    def agree(field: str, got: int) -> None:
        if isinstance(c.get(field), int) and int(c[field]) != int(got):
            r.problems.append(f"config.json {field}={c[field]} but the weights say {got}")

    # encoder
    pshape = r.shape(f"{e}.embeddings.patch_embeddings.proj.weight")
    width, in_chans, tubelet, patch, _ = pshape
    depth = r.count(f"{e}.layer")
    mlp = r.shape(f"{e}.layer.0.mlp.fc1.weight")[0]
    for field, got in (("hidden_size", width), ("num_hidden_layers", depth), ("in_chans", in_chans),
                       ("tubelet_size", tubelet), ("patch_size", patch)):
        agree(field, got)
    heads = int(c.get("num_attention_heads", 0)) or _heads(None, ENCODER_HEADS, width, "encoder", "num_attention_heads")
    enc = ViTConfig(width=width, depth=depth, num_heads=heads, mlp_dim=mlp, patch_size=patch, tubelet_size=tubelet,
                    in_chans=in_chans, ln_eps=eps, qkv_bias=qkv_bias, rope=rope)
    configs: dict[str, Any] = {"encoder": enc}
    params: dict[str, Params] = {"encoder": {
        "patch_embed": _patch_embed(r, f"{e}.embeddings.patch_embeddings.proj", pshape),
        "blocks": _blocks(r, f"{e}.layer", depth, HF_BLOCK, width, mlp, qkv_bias),
        "norm": _layer_norm(r, f"{e}.layernorm", width),
    }}

    # predictor
    pwidth, din = r.shape(f"{p}.embeddings.predictor_embeddings.weight")
    pdepth = r.count(f"{p}.layer")
    pmlp = r.shape(f"{p}.layer.0.mlp.fc1.weight")[0]
    mshape = r.shape(f"{p}.embeddings.mask_tokens") or (int(c.get("pred_num_mask_tokens", 10)), 1, 1, pwidth)
    n_mask = mshape[0]
    for field, got in (("pred_hidden_size", pwidth), ("pred_num_hidden_layers", pdepth),
                       ("pred_num_mask_tokens", n_mask)):
        agree(field, got)
    if din != width:
        r.problems.append(f"predictor embeddings take {din} features but the encoder is {width} wide")
    pheads = int(c.get("pred_num_attention_heads", 0)) or _heads(None, PREDICTOR_HEADS, pwidth, "predictor",
                                                                  "pred_num_attention_heads")
    configs["predictor"] = PredictorConfig(embed_dim=width, width=pwidth, depth=pdepth, num_heads=pheads,
                                           mlp_dim=pmlp, num_mask_tokens=n_mask, ln_eps=eps, qkv_bias=qkv_bias,
                                           rope=rope)
    params["predictor"] = {
        "embed": _linear(r, f"{p}.embeddings.predictor_embeddings", width, pwidth),
        "mask_tokens": r.get(f"{p}.embeddings.mask_tokens", (n_mask, 1, 1, pwidth)).reshape(n_mask, pwidth),
        "blocks": _blocks(r, f"{p}.layer", pdepth, HF_BLOCK, pwidth, pmlp, qkv_bias),
        "norm": _layer_norm(r, f"{p}.layernorm", pwidth),
        "proj": _linear(r, f"{p}.proj", pwidth, width),
    }

    # classifier: attentive pooler + linear
    if detected == "classifier":
        _require(r, ["classifier.weight", "pooler.cross_attention_layer.mlp.fc1.weight"], "classifier", source)
        num_labels = r.shape("classifier.weight")[0]
        qdepth = r.count("pooler.self_attention_layers")
        agree("num_pooler_layers", qdepth)
        if isinstance(c.get("id2label"), Mapping) and len(c["id2label"]) != num_labels:
            r.problems.append(f"config.json has {len(c['id2label'])} labels (id2label) but the classifier has "
                              f"{num_labels}")
        ratio = _probe_mlp_ratio(r, "pooler.cross_attention_layer.mlp.fc1.weight", width)
        qmlp = int(width * ratio)
        configs["probe"] = ProbeConfig(embed_dim=width, num_queries=1, num_classes=(num_labels,), num_heads=heads,
                                       depth=qdepth, mlp_ratio=ratio, ln_eps=eps, qkv_bias=True)
        x = "pooler.cross_attention_layer"
        probe = {
            "query_tokens": r.get("pooler.query_tokens", (1, 1, width)).reshape(1, width),
            "cross": {
                "norm1": _layer_norm(r, f"{x}.layer_norm1", width),
                "xattn": {"q": _linear(r, f"{x}.cross_attn.q_proj", width, width),
                          "kv": _fused_linear(r, [f"{x}.cross_attn.k_proj", f"{x}.cross_attn.v_proj"], width, width)},
                "norm2": _layer_norm(r, f"{x}.layer_norm2", width),
                "mlp": {"fc1": _linear(r, f"{x}.mlp.fc1", width, qmlp), "fc2": _linear(r, f"{x}.mlp.fc2", qmlp, width)},
            },
            "heads": {"0": _linear(r, "classifier", width, num_labels)},
        }
        if qdepth:
            probe["blocks"] = _blocks(r, "pooler.self_attention_layers", qdepth, HF_POOLER_BLOCK, width, qmlp, True)
        params["probe"] = probe
    _raise_if_problems([r], source)
    return configs, params


def hf_meta(hf_config: Mapping[str, Any]) -> dict[str, Any]:
    """Facts of a transformers config worth keeping in the bundle's meta."""
    c = hf_config
    meta = {k: c[k] for k in ("crop_size", "frames_per_clip", "patch_size", "tubelet_size", "num_labels",
                              "architectures") if k in c}
    if "crop_size" in c and "frames_per_clip" in c:
        pt = c.get("patch_size", 16)
        meta["predictor_grid"] = [int(c["frames_per_clip"]) // int(c.get("tubelet_size", 2)),
                                  int(c["crop_size"]) // int(pt), int(c["crop_size"]) // int(pt)]
    meta["predictor_mask_index"] = 1  # transformers always uses mask token 1
    if "id2label" in c:
        meta["id2label"] = {str(k): v for k, v in c["id2label"].items()}
    return meta


# --- shapes only ---------------------------------------------------------------------------------------------
def _abstract(fn: Callable[[dict], tuple[dict, dict]], shapes: Mapping[str, Any]):
    """Run a converter on shapes alone under jax.eval_shape -> (configs, parameter ShapeDtypeStructs)."""
    def leaf(s):
        return jax.ShapeDtypeStruct(tuple(s.shape) if hasattr(s, "shape") else tuple(s), jnp.float32)

    def is_shape(x):
        return hasattr(x, "shape") or (isinstance(x, tuple) and all(isinstance(i, int) for i in x))

    abstract = jax.tree_util.tree_map(leaf, dict(shapes), is_leaf=is_shape)
    box = {}

    def run(sd):
        box["configs"], params = fn(sd)
        return params

    params = jax.eval_shape(run, abstract)
    return box["configs"], params


def abstract_convert_hf(shapes: Mapping[str, Any], hf_config: Mapping[str, Any], **kw):
    """`convert_hf` on {key: shape or tensor with .shape} (e.g. a model on torch's meta device): nothing allocated."""
    return _abstract(lambda sd: convert_hf(sd, hf_config, **kw), shapes)


def abstract_convert_original(ckpt_shapes: Mapping[str, Any], **kw):
    """`convert_original` on a checkpoint of shapes ({'encoder': {key: shape}, ...}): nothing allocated."""
    return _abstract(lambda ck: convert_original(ck, **kw), ckpt_shapes)


# --- file reading -------------------------------------------------------------------------------------------
def read_original(path: str | Path) -> dict[str, Any]:
    """torch.load a Meta checkpoint (weights only, on CPU). Tensors stay torch tensors until converted."""
    try:
        import torch
    except ImportError:
        raise ConversionError("reading original .pt checkpoints needs torch (a CPU build is enough)") from None
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling errors have many types
        raise ConversionError(f"{path}: cannot load with torch.load(weights_only=True): {e}") from None
    if not isinstance(ckpt, Mapping):
        raise ConversionError(f"{path}: expected a dict of state dicts, got {type(ckpt).__name__}")
    return dict(ckpt)


def read_hf(directory: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(state dict of numpy arrays, config.json) of a transformers model directory (safetensors, maybe sharded)."""
    from safetensors.numpy import load_file

    d = Path(directory)
    cfg_file = d / "config.json"
    if not cfg_file.is_file():
        raise ConversionError(f"{d}: no config.json (expected a transformers model directory)")
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise ConversionError(f"{cfg_file}: invalid JSON at line {e.lineno}: {e.msg}") from None
    if cfg.get("model_type") not in (None, "vjepa2"):
        raise ConversionError(f"{cfg_file}: model_type={cfg.get('model_type')!r}, expected 'vjepa2'")
    single, index = d / "model.safetensors", d / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        files = sorted({d / f for f in json.loads(index.read_text())["weight_map"].values()})
    else:
        raise ConversionError(f"{d}: no model.safetensors or model.safetensors.index.json "
                              "(save with save_pretrained(..., safe_serialization=True))")
    sd: dict[str, np.ndarray] = {}
    for f in files:
        sd.update(load_file(f))
    return sd, cfg


# --- CLI ----------------------------------------------------------------------------------------------------
def _count(tree) -> int:
    if isinstance(tree, Mapping):
        return sum(_count(v) for v in tree.values())
    return int(np.prod(tree.shape))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="jepa convert", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="source", required=True, choices=["original", "hf"],
                    help="original: Meta's .pt checkpoint; hf: a transformers directory (config.json + safetensors)")
    ap.add_argument("--src", required=True, help="checkpoint file (original) or model directory (hf)")
    ap.add_argument("--out", required=True, help="output bundle directory")
    ap.add_argument("--kind", choices=["pretrain", "ac", "classifier"], default=None,
                    help="what the checkpoint holds (default: detected from its keys)")
    ap.add_argument("--which", choices=["target_encoder", "encoder"], default="target_encoder",
                    help="original pretrain/AC: the state dict to import as the encoder (default: the EMA target)")
    ap.add_argument("--rope", choices=["reference", "rotation"], default="reference",
                    help="RoPE variant recorded in the configs; released weights were trained with 'reference'")
    ap.add_argument("--preset", choices=sorted(ENCODERS), default=None,
                    help="original: encoder preset the weights must match (gives the head count)")
    ap.add_argument("--heads", type=int, default=None, help="original: encoder heads (default: by width)")
    ap.add_argument("--pred-heads", type=int, default=None, help="original: predictor heads (default: 384 -> 12)")
    ap.add_argument("--ac-heads", type=int, default=None, help="original: AC predictor heads (default: 1024 -> 16)")
    ap.add_argument("--probe-heads", type=int, default=None, help=f"original classifier: heads (default {PROBE_HEADS})")
    ap.add_argument("--img-size", type=int, default=256,
                    help="original AC: training resolution; the AC RoPE grid is img_size // patch (default 256)")
    ap.add_argument("--use-extrinsics", action="store_true",
                    help="original AC: import the extrinsics encoder (released models do not use it)")
    ap.add_argument("--encoder-only", action="store_true", help="original: import only the encoder")
    ap.add_argument("--index", type=int, default=0, help="original classifier: which entry of `classifiers`")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing output bundle")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from tqdm import tqdm

    from jepa.models import io

    src = Path(args.src)
    steps = tqdm(total=3, desc="jepa convert", unit="step", file=sys.stderr)
    try:
        steps.set_postfix_str(f"reading {src}")
        if args.source == "original":
            ckpt = read_original(src)
            steps.update()
            steps.set_postfix_str("converting")
            configs, params = convert_original(
                ckpt, kind=args.kind, which=args.which, preset=args.preset, heads=args.heads,
                pred_heads=args.pred_heads, ac_heads=args.ac_heads, probe_heads=args.probe_heads, rope=args.rope,
                img_size=args.img_size, use_extrinsics=args.use_extrinsics, encoder_only=args.encoder_only,
                index=args.index, source=str(src))
            meta = {"kind": args.kind or detect_original_kind(ckpt)}
            if meta["kind"] != "classifier":
                meta["which"] = args.which
            if meta["kind"] == "ac":
                meta["img_size"] = args.img_size
            del ckpt
        else:
            sd, hf_config = read_hf(src)
            steps.update()
            steps.set_postfix_str("converting")
            configs, params = convert_hf(sd, hf_config, rope=args.rope, kind=args.kind, source=str(src))
            meta = {"kind": detect_hf_kind(sd), **hf_meta(hf_config)}
            del sd
        steps.update()
        meta.update({"source": args.source, "src": str(src.absolute()), "converted_by": "jepa convert"})
        steps.set_postfix_str(f"writing {args.out}")
        out = io.save_bundle_params(args.out, configs, params, meta, overwrite=args.overwrite)
        steps.update()
    except (ConversionError, io.BundleError) as e:
        steps.close()
        print(f"jepa convert: error: {e}", file=sys.stderr)
        return 1
    steps.close()
    for name, cfg in configs.items():
        print(f"  {name:<13} {type(cfg).__name__:<18} {_count(params[name]) / 1e6:8.2f}M params")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
