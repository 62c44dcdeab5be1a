"""Meta's original V-JEPA 2 checkpoints (a dict of state dicts) -> (configs, parameter trees).

Pretrain checkpoints hold `encoder` / `target_encoder` / `predictor` with keys prefixed `module.backbone.`; AC
checkpoints prefix `module.` and their predictor adds `action_encoder` / `state_encoder` / `extrinsics_encoder`;
probe checkpoints hold a `classifiers` list. Model configs are inferred from the shapes; head counts come from the
caller or the released width -> heads tables.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from jepa.convert.layouts import (AC_PREDICTOR_HEADS, ENCODER_HEADS, ORIGINAL_BLOCK, PREDICTOR_HEADS, PROBE_HEADS,
                                  blocks, heads_for, layer_norm, linear, patch_embed, probe_mlp_ratio, stack_layers)
from jepa.convert.statedict import ConversionError, Params, Reader, raise_if_problems, require_keys, strip_prefixes
from jepa.models.config import ENCODERS, ACPredictorConfig, PredictorConfig, ProbeConfig, ViTConfig


def _original_encoder(r: Reader, *, heads: int | None, preset: str | None, rope: str, src: str):
    require_keys(r, ["patch_embed.proj.weight", "blocks.0.mlp.fc1.weight"], "encoder", src)
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
    num_heads = heads_for(heads, ENCODER_HEADS, width, "encoder", "--heads")
    cfg = ViTConfig(width=width, depth=depth, num_heads=num_heads, mlp_dim=mlp, patch_size=patch,
                    tubelet_size=tubelet, in_chans=in_chans, qkv_bias=qkv_bias, rope=rope)
    if width % num_heads:
        r.problems.append(f"width {width} is not divisible by {num_heads} heads")
    params = {
        "patch_embed": patch_embed(r, "patch_embed.proj", pshape),
        "blocks": blocks(r, "blocks", depth, ORIGINAL_BLOCK, width, mlp, qkv_bias),
        "norm": layer_norm(r, "norm", width),
    }
    r.ignore("pos_embed")
    return cfg, params


def _original_predictor(r: Reader, *, heads: int | None, embed_dim: int, rope: str, src: str):
    require_keys(r, ["predictor_embed.weight", "predictor_blocks.0.mlp.fc1.weight"], "predictor", src)
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
                          num_heads=heads_for(heads, PREDICTOR_HEADS, width, "predictor", "--pred-heads"),
                          num_mask_tokens=max(n_mask, 1))
    params = {
        "embed": linear(r, "predictor_embed", din, width),
        "mask_tokens": stack_layers([r.get(f"mask_tokens.{i}", (1, 1, width)).reshape(width)
                                     for i in range(max(n_mask, 1))]),
        "blocks": blocks(r, "predictor_blocks", depth, ORIGINAL_BLOCK, width, mlp, qkv_bias),
        "norm": layer_norm(r, "predictor_norm", width),
        "proj": linear(r, "predictor_proj", width, din),
    }
    r.ignore("predictor_pos_embed")
    return cfg, params


def _original_ac_predictor(r: Reader, *, heads: int | None, embed_dim: int, grid_size: int, use_extrinsics: bool,
                           rope: str, src: str):
    require_keys(r, ["predictor_embed.weight", "action_encoder.weight", "state_encoder.weight",
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
                            num_heads=heads_for(heads, AC_PREDICTOR_HEADS, width, "AC predictor", "--ac-heads"))
    params = {
        "embed": linear(r, "predictor_embed", din, width),
        "action_encoder": linear(r, "action_encoder", action_dim, width),
        "state_encoder": linear(r, "state_encoder", state_dim, width),
        "blocks": blocks(r, "predictor_blocks", depth, ORIGINAL_BLOCK, width, mlp, qkv_bias),
        "norm": layer_norm(r, "predictor_norm", width),
        "proj": linear(r, "predictor_proj", width, din),
    }
    if use_extrinsics:
        params["extrinsics_encoder"] = linear(r, "extrinsics_encoder", action_dim - 1, width)
    else:  # the reference always builds it; released models never use it
        r.ignore("extrinsics_encoder.weight", "extrinsics_encoder.bias")
    return cfg, params




def _original_probe(r: Reader, *, heads: int | None, rope: str, src: str):
    del rope  # the probe has no position encoding
    require_keys(r, ["pooler.query_tokens", "pooler.cross_attention_block.mlp.fc1.weight"], "probe", src)
    _, nq, dim = r.shape("pooler.query_tokens")
    depth = r.count("pooler.blocks")
    ratio = probe_mlp_ratio(r, "pooler.cross_attention_block.mlp.fc1.weight", dim)
    mlp = int(dim * ratio)
    qkv_bias = r.has("pooler.cross_attention_block.xattn.q.bias")
    if r.has("linear.weight"):  # video classification: one query, one head
        head_keys = ["linear"]
    elif r.has("verb_classifier.weight"):  # EK100 anticipation: verb / noun / action queries
        head_keys = ["verb_classifier", "noun_classifier", "action_classifier"]
    else:  # EK100 action-only
        head_keys = ["action_classifier"]
    require_keys(r, [f"{k}.weight" for k in head_keys], "probe", src)
    classes = tuple(r.shape(f"{k}.weight")[0] for k in head_keys)
    if len(classes) != nq:
        r.problems.append(f"{nq} queries but {len(classes)} heads ({head_keys})")
    cfg = ProbeConfig(embed_dim=dim, num_queries=len(classes), num_classes=classes, depth=depth, mlp_ratio=ratio,
                      qkv_bias=qkv_bias, num_heads=heads or PROBE_HEADS)
    cross = "pooler.cross_attention_block"
    params = {
        "query_tokens": r.get("pooler.query_tokens", (1, len(classes), dim)).reshape(len(classes), dim),
        "cross": {
            "norm1": layer_norm(r, f"{cross}.norm1", dim),
            "xattn": {"q": linear(r, f"{cross}.xattn.q", dim, dim, qkv_bias),
                      "kv": linear(r, f"{cross}.xattn.kv", dim, 2 * dim, qkv_bias)},
            "norm2": layer_norm(r, f"{cross}.norm2", dim),
            "mlp": {"fc1": linear(r, f"{cross}.mlp.fc1", dim, mlp), "fc2": linear(r, f"{cross}.mlp.fc2", mlp, dim)},
        },
        "heads": {str(i): linear(r, k, dim, c) for i, (k, c) in enumerate(zip(head_keys, classes))},
    }
    if depth:
        params["blocks"] = blocks(r, "pooler.blocks", depth, ORIGINAL_BLOCK, dim, mlp, qkv_bias)
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

    def reader(name: str) -> Reader:
        if name not in ckpt or not isinstance(ckpt[name], Mapping):
            raise ConversionError(f"{source}: a {kind} checkpoint needs a {name!r} state dict; top-level keys: {top}")
        sd, note = strip_prefixes(ckpt[name], f"{source}[{name}]")
        return Reader(sd, name + note)

    configs: dict[str, Any] = {}
    params: dict[str, Params] = {}
    readers = []
    if kind == "classifier":
        clfs = ckpt.get("classifiers")
        if not isinstance(clfs, Sequence) or not clfs:
            raise ConversionError(f"{source}: no 'classifiers' list; top-level keys: {top}")
        if not 0 <= index < len(clfs):
            raise ConversionError(f"{source}: classifier index {index} out of range (0..{len(clfs) - 1})")
        sd, note = strip_prefixes(clfs[index], f"{source}[classifiers][{index}]")
        r = Reader(sd, f"classifiers[{index}]{note}")
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
    raise_if_problems(readers, source)
    return configs, params
