"""PyTorch parameter layouts -> this project's NNX parameter trees, shared by both checkpoint formats.

Linear weights [out, in] become kernels [in, out]; separate query/key/value Linears are fused by rows into one
kernel; per-block trees are stacked on a leading `layers` axis (BlockStack); the Conv3d patch embedding
[D, C, t, p, p] becomes [t, p, p, C, D]. The block name tables say where each part of our pre-LN block lives in
each source format. Head counts are not visible in weights: the released width -> heads tables live here too.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from jepa.convert.statedict import ConversionError, Params, Reader, array_module, is_abstract
from jepa.models.config import ENCODERS

# Head counts of released models by width (they cannot be read from the weights).
ENCODER_HEADS = {c.width: c.num_heads for c in ENCODERS.values()}  # 1024 -> 16, 1280 -> 16, 1408 -> 22, ...
PREDICTOR_HEADS = {384: 12}
AC_PREDICTOR_HEADS = {1024: 16}
PROBE_HEADS = 16  # the reference's attentive probes use 16 heads whatever the encoder

IGNORED_KEYS = ("pos_embed", "predictor_pos_embed")  # sin-cos tables that RoPE models do not use

# --- parameter builders (PyTorch layouts -> this project's layouts) -------------------------------------------
def linear(r: Reader, key: str, din: int, dout: int, bias: bool = True) -> Params:
    """torch Linear weight [out, in] -> kernel [in, out]."""
    p = {"kernel": r.get(f"{key}.weight", (dout, din)).T}
    if bias:
        p["bias"] = r.get(f"{key}.bias", (dout,))
    return p


def fused_linear(r: Reader, keys: Sequence[str], din: int, dout: int, bias: bool = True) -> Params:
    """Separate Linears (e.g. query/key/value) -> one kernel [in, sum(out)] in the given order (rows concatenated)."""
    ws = [r.get(f"{k}.weight", (dout, din)) for k in keys]
    p = {"kernel": array_module(*ws).concatenate(ws, axis=0).T}
    if bias:
        bs = [r.get(f"{k}.bias", (dout,)) for k in keys]
        p["bias"] = array_module(*bs).concatenate(bs, axis=0)
    return p


def layer_norm(r: Reader, key: str, dim: int) -> Params:
    return {"scale": r.get(f"{key}.weight", (dim,)), "bias": r.get(f"{key}.bias", (dim,))}


def stack_layers(trees: Sequence[Params]) -> Params:
    """Per-block trees -> one tree with a leading `layers` axis (BlockStack layout)."""
    first = trees[0]
    if isinstance(first, dict):
        return {k: stack_layers([t[k] for t in trees]) for k in first}
    return array_module(*trees).stack(trees, axis=0)


# Block layouts. Each maps our block's parts to the source's names (qkv: one fused key, or three keys).
ORIGINAL_BLOCK = dict(norm1="norm1", qkv="attn.qkv", proj="attn.proj", norm2="norm2", fc1="mlp.fc1", fc2="mlp.fc2")
HF_BLOCK = dict(norm1="norm1", qkv=("attention.query", "attention.key", "attention.value"), proj="attention.proj",
                norm2="norm2", fc1="mlp.fc1", fc2="mlp.fc2")
HF_POOLER_BLOCK = dict(norm1="layer_norm1", qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
                       proj="self_attn.out_proj", norm2="layer_norm2", fc1="mlp.fc1", fc2="mlp.fc2")


def block(r: Reader, prefix: str, names: Mapping[str, Any], dim: int, mlp: int, qkv_bias: bool) -> Params:
    qkv = names["qkv"]
    if isinstance(qkv, str):
        qkv_p = linear(r, prefix + qkv, dim, 3 * dim, qkv_bias)
    else:
        qkv_p = fused_linear(r, [prefix + k for k in qkv], dim, dim, qkv_bias)
    return {
        "norm1": layer_norm(r, prefix + names["norm1"], dim),
        "attn": {"qkv": qkv_p, "proj": linear(r, prefix + names["proj"], dim, dim)},
        "norm2": layer_norm(r, prefix + names["norm2"], dim),
        "mlp": {"fc1": linear(r, prefix + names["fc1"], dim, mlp), "fc2": linear(r, prefix + names["fc2"], mlp, dim)},
    }


def blocks(r: Reader, prefix: str, depth: int, names, dim: int, mlp: int, qkv_bias: bool) -> Params:
    return {"blocks": stack_layers([block(r, f"{prefix}.{i}.", names, dim, mlp, qkv_bias) for i in range(depth)])}


def patch_embed(r: Reader, key: str, shape: tuple[int, ...]) -> Params:
    """Conv3d weight [D, C, t, p, p] -> kernel [t, p, p, C, D]."""
    w = r.get(f"{key}.weight", shape)
    k = w.transpose(2, 3, 4, 1, 0)
    return {"kernel": k if is_abstract(k) else np.ascontiguousarray(k), "bias": r.get(f"{key}.bias", (shape[0],))}


def heads_for(explicit: int | None, table: Mapping[int, int], width: int, what: str, flag: str) -> int:
    if explicit:
        return int(explicit)
    if width in table:
        return table[width]
    raise ConversionError(f"the number of {what} heads cannot be read from the weights and width {width} is not a "
                          f"released one ({dict(table)}); pass {flag}")



def probe_mlp_ratio(r: Reader, key: str, dim: int) -> float:
    mlp = r.shape(key)[0]
    ratio = mlp / dim
    if int(dim * ratio) != mlp:
        r.problems.append(f"probe MLP width {mlp} is not int({dim} * ratio) for any float ratio")
    return ratio
