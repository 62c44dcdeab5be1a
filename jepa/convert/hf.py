"""transformers `VJEPA2Model` / `VJEPA2ForVideoClassification` weights + config.json -> (configs, parameter trees)."""
from __future__ import annotations

from typing import Any, Mapping

from jepa.convert.layouts import (ENCODER_HEADS, HF_BLOCK, HF_POOLER_BLOCK, PREDICTOR_HEADS, blocks, fused_linear,
                                  heads_for, layer_norm, linear, patch_embed, probe_mlp_ratio)
from jepa.convert.statedict import ConversionError, Params, Reader, raise_if_problems, require_keys
from jepa.models.config import PredictorConfig, ProbeConfig, ViTConfig


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
    r = Reader(state_dict, "model.safetensors")
    base = "vjepa2." if any(k.startswith("vjepa2.") for k in state_dict) else ""
    e, p = f"{base}encoder", f"{base}predictor"
    require_keys(r, [f"{e}.embeddings.patch_embeddings.proj.weight", f"{e}.layer.0.mlp.fc1.weight",
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
    heads = int(c.get("num_attention_heads", 0)) or heads_for(None, ENCODER_HEADS, width, "encoder",
                                                               "num_attention_heads")
    enc = ViTConfig(width=width, depth=depth, num_heads=heads, mlp_dim=mlp, patch_size=patch, tubelet_size=tubelet,
                    in_chans=in_chans, ln_eps=eps, qkv_bias=qkv_bias, rope=rope)
    configs: dict[str, Any] = {"encoder": enc}
    params: dict[str, Params] = {"encoder": {
        "patch_embed": patch_embed(r, f"{e}.embeddings.patch_embeddings.proj", pshape),
        "blocks": blocks(r, f"{e}.layer", depth, HF_BLOCK, width, mlp, qkv_bias),
        "norm": layer_norm(r, f"{e}.layernorm", width),
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
    pheads = int(c.get("pred_num_attention_heads", 0)) or heads_for(None, PREDICTOR_HEADS, pwidth, "predictor",
                                                                  "pred_num_attention_heads")
    configs["predictor"] = PredictorConfig(embed_dim=width, width=pwidth, depth=pdepth, num_heads=pheads,
                                           mlp_dim=pmlp, num_mask_tokens=n_mask, ln_eps=eps, qkv_bias=qkv_bias,
                                           rope=rope)
    params["predictor"] = {
        "embed": linear(r, f"{p}.embeddings.predictor_embeddings", width, pwidth),
        "mask_tokens": r.get(f"{p}.embeddings.mask_tokens", (n_mask, 1, 1, pwidth)).reshape(n_mask, pwidth),
        "blocks": blocks(r, f"{p}.layer", pdepth, HF_BLOCK, pwidth, pmlp, qkv_bias),
        "norm": layer_norm(r, f"{p}.layernorm", pwidth),
        "proj": linear(r, f"{p}.proj", pwidth, width),
    }

    # classifier: attentive pooler + linear
    if detected == "classifier":
        require_keys(r, ["classifier.weight", "pooler.cross_attention_layer.mlp.fc1.weight"], "classifier", source)
        num_labels = r.shape("classifier.weight")[0]
        qdepth = r.count("pooler.self_attention_layers")
        agree("num_pooler_layers", qdepth)
        if isinstance(c.get("id2label"), Mapping) and len(c["id2label"]) != num_labels:
            r.problems.append(f"config.json has {len(c['id2label'])} labels (id2label) but the classifier has "
                              f"{num_labels}")
        ratio = probe_mlp_ratio(r, "pooler.cross_attention_layer.mlp.fc1.weight", width)
        qmlp = int(width * ratio)
        configs["probe"] = ProbeConfig(embed_dim=width, num_queries=1, num_classes=(num_labels,), num_heads=heads,
                                       depth=qdepth, mlp_ratio=ratio, ln_eps=eps, qkv_bias=True)
        x = "pooler.cross_attention_layer"
        probe = {
            "query_tokens": r.get("pooler.query_tokens", (1, 1, width)).reshape(1, width),
            "cross": {
                "norm1": layer_norm(r, f"{x}.layer_norm1", width),
                "xattn": {"q": linear(r, f"{x}.cross_attn.q_proj", width, width),
                          "kv": fused_linear(r, [f"{x}.cross_attn.k_proj", f"{x}.cross_attn.v_proj"], width, width)},
                "norm2": layer_norm(r, f"{x}.layer_norm2", width),
                "mlp": {"fc1": linear(r, f"{x}.mlp.fc1", width, qmlp), "fc2": linear(r, f"{x}.mlp.fc2", qmlp, width)},
            },
            "heads": {"0": linear(r, "classifier", width, num_labels)},
        }
        if qdepth:
            probe["blocks"] = blocks(r, "pooler.self_attention_layers", qdepth, HF_POOLER_BLOCK, width, qmlp, True)
        params["probe"] = probe
    raise_if_problems([r], source)
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
