"""The released model presets have EXACTLY the parameter shapes of the released checkpoints.

Nothing is allocated: transformers models are built on torch's meta device from the released configurations, run
through the checkpoint converter on shapes alone (`jax.eval_shape`), and compared with `nnx.eval_shape` of our
presets. The AC predictor is checked against a table of the original checkpoint's keys and shapes, written from the
reference code's module definitions (`src/models/ac_predictor.py`, `src/models/utils/modules.py`).
"""
from __future__ import annotations

import json

import pytest

from tests.reference_extra import require

require(__name__)  # without the test extra these tests fail, never skip

import torch  # noqa: E402

from jepa import convert  # noqa: E402
from jepa.models import ENCODERS, ProbeConfig, ac_predictor_for, predictor_for  # noqa: E402
from jepa.models import io  # noqa: E402

# Released transformers configurations (facebook/vjepa2-vit{l,h,g}-fpc64-256): everything else is default.
# The giant's MLP ratio is stored as 48/11; after a JSON round trip int(1408 * ratio) must still be 6144.
RELEASED = {
    "vit_large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, mlp_ratio=4.0),
    "vit_huge": dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, mlp_ratio=4.0),
    "vit_giant": dict(hidden_size=1408, num_hidden_layers=40, num_attention_heads=22,
                      mlp_ratio=json.loads(json.dumps(48 / 11))),
}
PARAMS_M = {"vit_large": 304, "vit_huge": 632, "vit_giant": 1012}  # encoder parameters, millions (approx.)


def _meta_model(cls, **kw):
    from transformers import VJEPA2Config

    cfg = VJEPA2Config(crop_size=256, frames_per_clip=64, **kw)
    with torch.device("meta"):
        model = cls(cfg)
    return model, cfg


def _shapes(tree) -> dict:
    return {k: tuple(v.shape) for k, v in io.flatten(io._str_keys(tree)).items()}


def _count(shapes: dict) -> int:
    n = 0
    for s in shapes.values():
        c = 1
        for d in s:
            c *= d
        n += c
    return n


@pytest.mark.parametrize("name", ["vit_large", "vit_huge", "vit_giant"])
def test_released_encoder_and_predictor_shapes(name):
    from transformers import VJEPA2Model

    model, cfg = _meta_model(VJEPA2Model, **RELEASED[name])
    sd = model.state_dict()
    assert sd["encoder.layer.0.mlp.fc1.weight"].shape[0] == ENCODERS[name].mlp_dim
    configs, params = convert.abstract_convert_hf(sd, cfg.to_dict())
    enc, pred = ENCODERS[name], predictor_for(ENCODERS[name])
    assert configs["encoder"] == enc
    assert configs["predictor"] == pred
    for key, cfg_ in (("encoder", enc), ("predictor", pred)):
        ours = _shapes(io.param_shapes(cfg_))
        assert _shapes(params[key]) == ours, key
    # parameter counts agree with transformers' (not converted, counted on its own modules)
    hf_enc = sum(p.numel() for k, p in model.named_parameters() if k.startswith("encoder."))
    hf_pred = sum(p.numel() for k, p in model.named_parameters() if k.startswith("predictor."))
    n_enc, n_pred = _count(_shapes(io.param_shapes(enc))), _count(_shapes(io.param_shapes(pred)))
    print(f"{name}: encoder {n_enc / 1e6:.1f}M, predictor {n_pred / 1e6:.1f}M params")
    assert (n_enc, n_pred) == (hf_enc, hf_pred)
    assert abs(n_enc / 1e6 - PARAMS_M[name]) < 0.01 * PARAMS_M[name]
    assert abs(n_pred / 1e6 - 22) < 1.0


def test_released_classifier_probe_shapes():
    """The SSv2 classifier (ViT-L, 174 classes): pooler with the encoder's 16 heads, 3 self-attention layers."""
    from transformers import VJEPA2ForVideoClassification

    model, cfg = _meta_model(VJEPA2ForVideoClassification, num_labels=174, **RELEASED["vit_large"])
    configs, params = convert.abstract_convert_hf(model.state_dict(), cfg.to_dict())
    probe = ProbeConfig(embed_dim=1024, num_classes=(174,), num_heads=16, depth=3, ln_eps=1e-6)
    assert configs["probe"] == probe
    assert _shapes(params["probe"]) == _shapes(io.param_shapes(probe))
    hf = sum(p.numel() for k, p in model.named_parameters() if k.startswith(("pooler.", "classifier.")))
    n = _count(_shapes(io.param_shapes(probe)))
    print(f"SSv2 probe (ViT-L): {n / 1e6:.1f}M params")
    assert n == hf


# --- the released AC predictor (V-JEPA 2-AC, ViT-g encoder) in the original layout ---------------------------
def _vit_table(prefix: str, dim: int, depth: int, hidden: int, blocks: str) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the reference's pre-LN Block (norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2)."""
    t = {}
    for i in range(depth):
        b = f"{prefix}{blocks}.{i}."
        t.update({
            b + "norm1.weight": (dim,), b + "norm1.bias": (dim,),
            b + "attn.qkv.weight": (3 * dim, dim), b + "attn.qkv.bias": (3 * dim,),
            b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,),
            b + "norm2.weight": (dim,), b + "norm2.bias": (dim,),
            b + "mlp.fc1.weight": (hidden, dim), b + "mlp.fc1.bias": (hidden,),
            b + "mlp.fc2.weight": (dim, hidden), b + "mlp.fc2.bias": (dim,),
        })
    return t


def _ac_checkpoint_table() -> dict:
    """vjepa2-ac-vitg.pt as the reference builds it: ViT-g encoder (vit_giant_xformers: 1408, 40 deep, MLP
    int(1408 * 48/11) = 6144, Conv3d patch embed 2x16x16, RoPE so no pos_embed) and vit_ac_predictor
    (predictor_embed_dim 1024, depth 24, mlp_ratio 4, action_embed_dim 7; the extrinsics encoder Linear(6, 1024) is
    always built), keys prefixed `module.`."""
    p = "module."
    enc = {p + "patch_embed.proj.weight": (1408, 3, 2, 16, 16), p + "patch_embed.proj.bias": (1408,),
           p + "norm.weight": (1408,), p + "norm.bias": (1408,)}
    enc.update(_vit_table(p, 1408, 40, 6144, "blocks"))
    pred = {
        p + "predictor_embed.weight": (1024, 1408), p + "predictor_embed.bias": (1024,),
        p + "action_encoder.weight": (1024, 7), p + "action_encoder.bias": (1024,),
        p + "state_encoder.weight": (1024, 7), p + "state_encoder.bias": (1024,),
        p + "extrinsics_encoder.weight": (1024, 6), p + "extrinsics_encoder.bias": (1024,),
        p + "predictor_norm.weight": (1024,), p + "predictor_norm.bias": (1024,),
        p + "predictor_proj.weight": (1408, 1024), p + "predictor_proj.bias": (1408,),
    }
    pred.update(_vit_table(p, 1024, 24, 4096, "predictor_blocks"))
    return {"encoder": enc, "target_encoder": enc, "predictor": pred}


@pytest.mark.parametrize("use_extrinsics", [False, True])
def test_released_ac_predictor_shapes(use_extrinsics):
    table = _ac_checkpoint_table()
    configs, params = convert.abstract_convert_original(table, use_extrinsics=use_extrinsics)
    enc = ENCODERS["vit_giant"]
    ac = ac_predictor_for(enc, use_extrinsics=use_extrinsics)
    assert (ac.width, ac.depth, ac.num_heads, ac.mlp_dim, ac.embed_dim, ac.action_dim, ac.grid_size) == (
        1024, 24, 16, 4096, 1408, 7, 16)
    assert configs == {"encoder": enc, "ac_predictor": ac}
    assert _shapes(params["encoder"]) == _shapes(io.param_shapes(enc))
    assert _shapes(params["ac_predictor"]) == _shapes(io.param_shapes(ac))
    n_table = _count({k: v for k, v in table["predictor"].items()
                      if use_extrinsics or "extrinsics" not in k})
    n = _count(_shapes(io.param_shapes(ac)))
    print(f"AC predictor: {n / 1e6:.1f}M params (extrinsics={use_extrinsics})")
    assert n == n_table and abs(n / 1e6 - 305) < 3
