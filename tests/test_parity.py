"""Parity of the converted models with transformers' V-JEPA 2, and the checkpoint converters' error handling.

Tiny random transformers models (head dims 32 and 20, so RoPE leaves an unrotated remainder) are saved with
`save_pretrained` (safetensors), converted through `jepa convert`, loaded from the bundle and compared on the same
inputs: encoder tokens, predictor outputs at given context/target indices, classifier logits. The original-format
converter is checked against the transformers one on the same weights laid out as Meta's checkpoints. transformers
has no AC predictor: a random AC checkpoint in the reference's layout is imported and our model's forward compared
with an independent float64 statement of the reference's forward (`_reference_ac_forward`).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.reference_extra import require

require(__name__)  # without the test extra these tests fail, never skip

import torch  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from flax import nnx  # noqa: E402

from jepa import convert  # noqa: E402
from jepa.models import io  # noqa: E402

TOL = 1e-5
CROP, PATCH, FRAMES = 32, 8, 4  # token grid 2 x 4 x 4 = 32 tokens


def _hf_config(**kw):
    from transformers import VJEPA2Config

    base = dict(
        crop_size=CROP, patch_size=PATCH, frames_per_clip=FRAMES, tubelet_size=2, hidden_size=96,
        num_attention_heads=3, num_hidden_layers=2, mlp_ratio=4.0, pred_hidden_size=40, pred_num_attention_heads=2,
        pred_num_hidden_layers=2, pred_num_mask_tokens=4, num_pooler_layers=2, num_labels=5,
    )
    base.update(kw)
    cfg = VJEPA2Config(**base)
    cfg._attn_implementation = "eager"
    return cfg


def _randomize(model, seed: int) -> None:
    """Make every parameter (biases, LayerNorms, mask tokens included) non-trivial so a mapping error shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or "layernorm.weight" in name \
                    or "layer_norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * noise)
            else:
                p.copy_(0.1 * noise)


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    from transformers import VJEPA2ForVideoClassification, VJEPA2Model

    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    base = VJEPA2Model(_hf_config()).eval()
    _randomize(base, 1)
    base.save_pretrained(root / "base", safe_serialization=True)
    clf = VJEPA2ForVideoClassification(_hf_config()).eval()
    _randomize(clf, 2)
    clf.save_pretrained(root / "clf", safe_serialization=True)
    return {"root": root, "base": base, "clf": clf}


@pytest.fixture(scope="module")
def bundles(hf_dirs):
    root = hf_dirs["root"]
    for name in ("base", "clf"):
        rc = convert.main(["--from", "hf", "--src", str(root / name), "--out", str(root / f"{name}_bundle")])
        assert rc == 0
    out = {name: io.load_bundle(root / f"{name}_bundle") for name in ("base", "clf")}
    out["paths"] = {name: root / f"{name}_bundle" for name in ("base", "clf")}
    return out


def _video(seed: int, b: int = 2, t: int = FRAMES) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(b, t, CROP, CROP, 3)).astype(np.float32)


def _to_torch(video: np.ndarray):
    return torch.from_numpy(video).permute(0, 1, 4, 2, 3).contiguous()  # [B, T, C, H, W]


def _err(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def test_bundle_configs_from_hf(bundles):
    enc, pred = bundles["base"]["encoder"].cfg, bundles["base"]["predictor"].cfg
    assert (enc.width, enc.depth, enc.num_heads, enc.mlp_dim, enc.patch_size, enc.tubelet_size) == (96, 2, 3, 384, 8, 2)
    assert enc.head_dim == 32 and enc.rope == "reference"
    assert (pred.embed_dim, pred.width, pred.depth, pred.num_heads, pred.mlp_dim, pred.num_mask_tokens) == (
        96, 40, 2, 2, 160, 4)
    probe = bundles["clf"]["probe"].cfg
    assert (probe.num_heads, probe.depth, probe.num_classes, probe.ln_eps) == (3, 2, (5,), 1e-6)
    _, meta = io.read_bundle_config(bundles["paths"]["base"])
    assert meta["source"] == "hf" and meta["predictor_grid"] == [2, 4, 4] and meta["kind"] == "pretrain"
    _, meta = io.read_bundle_config(bundles["paths"]["clf"])
    assert meta["kind"] == "classifier" and len(meta["id2label"]) == 5


def test_encoder_parity(hf_dirs, bundles):
    video = _video(0)
    with torch.no_grad():
        ref = hf_dirs["base"](_to_torch(video), skip_predictor=True).last_hidden_state.numpy()
    ours = np.asarray(bundles["base"]["encoder"](jnp.asarray(video)))
    e = _err(ours, ref)
    print(f"encoder max |err| = {e:.2e} (|ref| max {np.abs(ref).max():.2f})")
    assert ours.shape == ref.shape == (2, 32, 96)
    assert e <= TOL


def test_predictor_parity(hf_dirs, bundles):
    video = _video(1)
    rng = np.random.default_rng(3)
    n = 32
    perm = np.stack([rng.permutation(n) for _ in range(2)])
    ctx = np.sort(perm[:, :12], axis=1)
    tgt = np.sort(perm[:, 12:], axis=1)
    with torch.no_grad():
        out = hf_dirs["base"](_to_torch(video), context_mask=[torch.from_numpy(ctx)],
                              target_mask=[torch.from_numpy(tgt)])
    ref = out.predictor_output.last_hidden_state.numpy()
    m = bundles["base"]
    tokens = m["encoder"](jnp.asarray(video))
    grid = m["encoder"].token_grid(video.shape)
    ctx_tokens = jnp.take_along_axis(tokens, jnp.asarray(ctx)[..., None], axis=1)
    ours = np.asarray(m["predictor"](ctx_tokens, jnp.asarray(ctx), jnp.asarray(tgt), grid, mask_index=1))
    e = _err(ours, ref)
    print(f"predictor max |err| = {e:.2e} (|ref| max {np.abs(ref).max():.2f})")
    assert ours.shape == ref.shape == (2, 20, 96)
    assert e <= TOL
    # the mask token matters: another index gives another prediction
    other = np.asarray(m["predictor"](ctx_tokens, jnp.asarray(ctx), jnp.asarray(tgt), grid, mask_index=2))
    assert _err(other, ref) > 1e-3


def test_classifier_parity(hf_dirs, bundles):
    video = _video(2)
    with torch.no_grad():
        ref = hf_dirs["clf"](_to_torch(video)).logits.numpy()
    m = bundles["clf"]
    (ours,) = m["probe"](m["encoder"](jnp.asarray(video)))
    e = _err(ours, ref)
    print(f"classifier logits max |err| = {e:.2e} (|ref| max {np.abs(ref).max():.2f})")
    assert ours.shape == ref.shape == (2, 5)
    assert e <= TOL


# --- the original-format converter --------------------------------------------------------------------------
def _original_from_hf(hf_sd: dict) -> dict:
    """Meta's checkpoint layout built from transformers weights (qkv fused by rows, prefixes, split mask tokens)."""
    sd = {k: v.detach().clone() for k, v in hf_sd.items()}
    enc, pred = {}, {}
    pre = "module.backbone."
    enc[pre + "patch_embed.proj.weight"] = sd["encoder.embeddings.patch_embeddings.proj.weight"]
    enc[pre + "patch_embed.proj.bias"] = sd["encoder.embeddings.patch_embeddings.proj.bias"]
    enc[pre + "pos_embed"] = torch.randn(1, 32, 96)  # an unused sin-cos table: must be ignored

    def blocks(src_prefix, dst_prefix, out, depth):
        for i in range(depth):
            s, d = f"{src_prefix}.{i}.", f"{dst_prefix}.{i}."
            for part in ("weight", "bias"):
                out[d + f"attn.qkv.{part}"] = torch.cat(
                    [sd[s + f"attention.{n}.{part}"] for n in ("query", "key", "value")], dim=0)
                out[d + f"attn.proj.{part}"] = sd[s + f"attention.proj.{part}"]
                for n in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                    out[d + f"{n}.{part}"] = sd[s + f"{n}.{part}"]

    blocks("encoder.layer", pre + "blocks", enc, 2)
    enc[pre + "norm.weight"] = sd["encoder.layernorm.weight"]
    enc[pre + "norm.bias"] = sd["encoder.layernorm.bias"]
    for part in ("weight", "bias"):
        pred[pre + f"predictor_embed.{part}"] = sd[f"predictor.embeddings.predictor_embeddings.{part}"]
        pred[pre + f"predictor_norm.{part}"] = sd[f"predictor.layernorm.{part}"]
        pred[pre + f"predictor_proj.{part}"] = sd[f"predictor.proj.{part}"]
    for i, tok in enumerate(sd["predictor.embeddings.mask_tokens"]):
        pred[pre + f"mask_tokens.{i}"] = tok.reshape(1, 1, -1)
    blocks("predictor.layer", pre + "predictor_blocks", pred, 2)
    pred[pre + "predictor_pos_embed"] = torch.zeros(1, 32, 40)
    other_enc = {k: torch.zeros_like(v) for k, v in enc.items()}
    return {"encoder": other_enc, "target_encoder": enc, "predictor": pred, "epoch": 3, "opt": {}}


def test_original_converter_matches_hf(hf_dirs, tmp_path):
    base = hf_dirs["base"]
    ckpt = _original_from_hf(base.state_dict())
    path = tmp_path / "orig.pt"
    torch.save(ckpt, path)
    out = tmp_path / "orig_bundle"
    rc = convert.main(["--from", "original", "--src", str(path), "--out", str(out), "--heads", "3",
                       "--pred-heads", "2"])
    assert rc == 0
    configs, meta = io.read_bundle_config(out)
    assert meta["kind"] == "pretrain" and meta["which"] == "target_encoder"
    hf_configs, hf_params = convert.convert_hf(
        {k: v.numpy() for k, v in base.state_dict().items()}, base.config.to_dict())
    assert configs == hf_configs
    loaded = io.load_bundle(out)
    for name in ("encoder", "predictor"):
        got = io.flatten(io._str_keys(nnx.to_pure_dict(nnx.state(loaded[name], nnx.Param))))
        want = io.flatten(hf_params[name])
        assert sorted(got) == sorted(want)
        for k in want:
            np.testing.assert_array_equal(np.asarray(got[k]), want[k], err_msg=f"{name}/{k}")
    # --which encoder picks the other state dict
    configs2, params2 = convert.convert_original(ckpt, which="encoder", heads=3, pred_heads=2)
    assert not np.any(params2["encoder"]["norm"]["scale"])


def _ac_checkpoint(rng, d: int, w: int, depth: int, mlp: int, a: int) -> dict:
    """A random AC checkpoint laid out as the reference builds it: `module.` prefix, ViT encoder (patch 8, 2 blocks)
    and `VisionTransformerPredictorAC` (predictor_embed, action/state/extrinsics encoders, predictor_blocks,
    predictor_norm, predictor_proj); every tensor, LayerNorms included, is non-trivial so a mapping error shows."""

    def t(*shape):
        return torch.from_numpy(rng.normal(scale=0.1, size=shape).astype(np.float32))

    def vit_block(prefix, dim, hidden):
        return {
            f"{prefix}norm1.weight": 1 + t(dim), f"{prefix}norm1.bias": t(dim),
            f"{prefix}attn.qkv.weight": t(3 * dim, dim), f"{prefix}attn.qkv.bias": t(3 * dim),
            f"{prefix}attn.proj.weight": t(dim, dim), f"{prefix}attn.proj.bias": t(dim),
            f"{prefix}norm2.weight": 1 + t(dim), f"{prefix}norm2.bias": t(dim),
            f"{prefix}mlp.fc1.weight": t(hidden, dim), f"{prefix}mlp.fc1.bias": t(hidden),
            f"{prefix}mlp.fc2.weight": t(dim, hidden), f"{prefix}mlp.fc2.bias": t(dim),
        }

    enc = {"module.patch_embed.proj.weight": t(d, 3, 2, 8, 8), "module.patch_embed.proj.bias": t(d),
           "module.norm.weight": 1 + t(d), "module.norm.bias": t(d)}
    for i in range(2):
        enc.update(vit_block(f"module.blocks.{i}.", d, 4 * d))
    pred = {
        "module.predictor_embed.weight": t(w, d), "module.predictor_embed.bias": t(w),
        "module.action_encoder.weight": t(w, a), "module.action_encoder.bias": t(w),
        "module.state_encoder.weight": t(w, a), "module.state_encoder.bias": t(w),
        "module.extrinsics_encoder.weight": t(w, a - 1), "module.extrinsics_encoder.bias": t(w),
        "module.predictor_norm.weight": 1 + t(w), "module.predictor_norm.bias": t(w),
        "module.predictor_proj.weight": t(d, w), "module.predictor_proj.bias": t(d),
    }
    for i in range(depth):
        pred.update(vit_block(f"module.predictor_blocks.{i}.", w, mlp))
    return {"encoder": enc, "target_encoder": enc, "predictor": pred, "epoch": 1}


def test_original_ac_checkpoint_converts_and_runs(tmp_path):
    """An AC checkpoint laid out as the reference builds it (`module.` prefix, extrinsics encoder always present)."""
    rng = np.random.default_rng(0)
    d, w, depth, mlp, a = 64, 32, 2, 64, 7
    ckpt = _ac_checkpoint(rng, d, w, depth, mlp, a)
    pred = ckpt["predictor"]
    path = tmp_path / "ac.pt"
    torch.save(ckpt, path)
    out = tmp_path / "ac_bundle"
    assert convert.main(["--from", "original", "--src", str(path), "--out", str(out), "--ac-heads", "2",
                         "--img-size", "32"]) == 0
    m = io.load_bundle(out)
    cfg = m["ac_predictor"].cfg
    assert (cfg.embed_dim, cfg.width, cfg.depth, cfg.num_heads, cfg.mlp_dim, cfg.action_dim, cfg.state_dim,
            cfg.use_extrinsics, cfg.grid_size) == (d, w, depth, 2, mlp, a, a, False, 4)
    assert io.read_bundle_config(out)[1]["kind"] == "ac"
    np.testing.assert_array_equal(np.asarray(m["ac_predictor"].action_encoder.kernel[...]),
                                  pred["module.action_encoder.weight"].numpy().T)
    frames = jnp.asarray(rng.normal(size=(1, 3, 32, 32, 3)).astype(np.float32))
    acts = jnp.asarray(rng.normal(size=(1, 3, a)).astype(np.float32))

    @nnx.jit
    def rollout(encoder, predictor, frames, acts):
        # encode each frame alone (duplicated into one tubelet), as the AC pipeline does
        tokens = encoder(frames.reshape(3, 1, 32, 32, 3)).reshape(1, 3, 4, 4, d)
        return predictor(tokens, acts, acts)

    y = rollout(m["encoder"], m["ac_predictor"], frames, acts)
    assert y.shape == (1, 3, 4, 4, d) and bool(jnp.all(jnp.isfinite(y)))
    # with --use-extrinsics the extrinsics encoder is imported and used
    configs, params = convert.convert_original(ckpt, ac_heads=2, img_size=32, use_extrinsics=True)
    assert configs["ac_predictor"].use_extrinsics
    np.testing.assert_array_equal(params["ac_predictor"]["extrinsics_encoder"]["kernel"],
                                  pred["module.extrinsics_encoder.weight"].numpy().T)


def _reference_ac_forward(sd: dict, frames, actions, states, extrinsics=None, *, heads: int):
    """The reference AC predictor's forward (vjepa2 `VisionTransformerPredictorAC`, eval mode), written from its
    description in float64 torch, independently of our model code. sd: the predictor state dict (no prefix).

    frames [B, T, H*W, D] on the predictor's own grid (so the reference's h/w rescale to grid_size is 1);
    actions / states [B, T, A]. Per step the sequence is [action, state, (extrinsics,) H*W patch tokens]; attention
    is block-causal over steps; patch tokens get 3-D RoPE (t = step, h, w), the conditioning tokens rotate only
    the t sub-block. Returns [B, T, H*W, D].
    """
    f64 = {k: v.double() for k, v in sd.items()}

    def lin(x, k):
        return x @ f64[k + ".weight"].T + f64[k + ".bias"]

    def ln(x, k):
        return F.layer_norm(x, x.shape[-1:], f64[k + ".weight"], f64[k + ".bias"], eps=1e-6)

    def rope(x, pos):  # the reference's RoPE on one sub-block: frequencies concatenated, adjacent partners
        half = x.shape[-1] // 2
        omega = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float64) / half)
        ang = pos.double()[:, None] * omega
        ang = torch.cat([ang, ang], dim=-1)
        partner = torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).flatten(-2)
        return x * ang.cos() + partner * ang.sin()

    frames, actions, states = (torch.from_numpy(np.asarray(z, np.float64)) for z in (frames, actions, states))
    b, t, hw, _ = frames.shape
    side = int(round(hw ** 0.5))
    cond = [lin(actions, "action_encoder"), lin(states, "state_encoder")]
    if extrinsics is not None:
        cond.append(lin(torch.from_numpy(np.asarray(extrinsics, np.float64)), "extrinsics_encoder"))
    c = len(cond)
    x = torch.cat([z[:, :, None] for z in cond] + [lin(frames, "predictor_embed")], dim=2).flatten(1, 2)
    n, width = x.shape[1:]
    step = torch.arange(n) // (c + hw)
    slot = torch.arange(n) % (c + hw)  # 0..c-1: conditioning tokens, then the patch tokens in raster order
    is_patch = (slot >= c)[:, None]
    row, col = (slot - c).clamp(min=0) // side, (slot - c).clamp(min=0) % side
    allowed = step[:, None] >= step[None, :]
    hd = width // heads
    ds = 2 * ((hd // 3) // 2)

    def rotate(z):  # [B, heads, N, hd]
        zt, zh, zw, rest = z[..., :ds], z[..., ds:2 * ds], z[..., 2 * ds:3 * ds], z[..., 3 * ds:]
        zh = torch.where(is_patch, rope(zh, row), zh)
        zw = torch.where(is_patch, rope(zw, col), zw)
        return torch.cat([rope(zt, step), zh, zw, rest], dim=-1)

    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("predictor_blocks."))
    for i in range(depth):
        p = f"predictor_blocks.{i}."
        q, k, v = lin(ln(x, p + "norm1"), p + "attn.qkv").reshape(b, n, 3, heads, hd).permute(2, 0, 3, 1, 4)
        att = rotate(q) @ rotate(k).transpose(-1, -2) / hd ** 0.5
        att = att.masked_fill(~allowed, float("-inf")).softmax(-1)
        x = x + lin((att @ v).transpose(1, 2).reshape(b, n, width), p + "attn.proj")
        x = x + lin(F.gelu(lin(ln(x, p + "norm2"), p + "mlp.fc1")), p + "mlp.fc2")
    x = x.reshape(b, t, c + hw, width)[:, :, c:]
    return lin(ln(x, "predictor_norm"), "predictor_proj").numpy()


@pytest.mark.parametrize("use_extrinsics", [False, True])
def test_original_ac_predictor_matches_reference_forward(use_extrinsics):
    """A random reference-layout AC checkpoint, imported by the converter, computes what the reference computes
    (an independent float64 statement of its forward), on random frames, actions, states (and extrinsics)."""
    rng = np.random.default_rng(5)
    d, w, depth, mlp, a, heads = 64, 64, 2, 96, 7, 2  # head dim 32: RoPE sub-blocks of 10, 2 dims unrotated
    ckpt = _ac_checkpoint(rng, d, w, depth, mlp, a)
    configs, params = convert.convert_original(ckpt, ac_heads=heads, img_size=32, use_extrinsics=use_extrinsics)
    cfg = configs["ac_predictor"]
    assert (cfg.width, cfg.num_heads, cfg.head_dim, cfg.grid_size, cfg.use_extrinsics) == (
        w, heads, 32, 4, use_extrinsics)
    graphdef, state = nnx.split(io.abstract_model(cfg), nnx.Param)  # no init: the converted arrays go in
    nnx.replace_by_pure_dict(state, params["ac_predictor"])
    model = nnx.merge(graphdef, state)

    b, t, side = 2, 3, 4
    frames = rng.normal(size=(b, t, side, side, d)).astype(np.float32)
    actions, states = (rng.normal(size=(b, t, a)).astype(np.float32) for _ in range(2))
    extr = rng.normal(size=(b, t, a - 1)).astype(np.float32) if use_extrinsics else None
    inputs = [jnp.asarray(z) for z in (frames, actions, states)] + [None if extr is None else jnp.asarray(extr)]
    ours = np.asarray(nnx.jit(lambda m, *xs: m(*xs))(model, *inputs))
    sd = {k.removeprefix("module."): v for k, v in ckpt["predictor"].items()}
    ref = _reference_ac_forward(sd, frames.reshape(b, t, side * side, d), actions, states, extr, heads=heads)
    ref = ref.reshape(b, t, side, side, d)
    e = _err(ours, ref)
    print(f"AC predictor max |err| = {e:.2e} (|ref| max {np.abs(ref).max():.2f})")
    assert ours.shape == ref.shape and e <= TOL
    # the reference statement is block-causal: the last step's action changes only the last step's prediction
    actions2 = actions.copy()
    actions2[:, -1] += 1.0
    ref2 = _reference_ac_forward(sd, frames.reshape(b, t, side * side, d), actions2, states, extr, heads=heads)
    ref2 = ref2.reshape(b, t, side, side, d)
    assert _err(ref2[:, :-1], ref[:, :-1]) == 0.0 and _err(ref2[:, -1], ref[:, -1]) > 1e-3


# --- errors -------------------------------------------------------------------------------------------------
def test_original_errors_list_every_problem(hf_dirs):
    ckpt = _original_from_hf(hf_dirs["base"].state_dict())
    enc = ckpt["target_encoder"]
    del enc["module.backbone.blocks.1.norm2.bias"]  # missing
    enc["module.backbone.blocks.0.attn.rope_cache"] = torch.zeros(3)  # unexpected
    enc["module.backbone.pos_embed_extra"] = torch.zeros(3)  # unexpected: only `pos_embed` itself is ignored
    enc["module.backbone.blocks.0.mlp.fc2.bias"] = torch.zeros(95)  # mis-shaped
    del ckpt["predictor"]["module.backbone.mask_tokens.2"]  # missing, in another state dict
    with pytest.raises(convert.ConversionError) as info:
        convert.convert_original(ckpt, heads=3, pred_heads=2)
    msg = str(info.value)
    print(msg)
    for needle in ("blocks.1.norm2.bias", "blocks.0.attn.rope_cache", "pos_embed_extra", "blocks.0.mlp.fc2.bias",
                   "(95,), expected (96,)", "mask_tokens.2", "missing", "unexpected", "mis-shaped"):
        assert needle in msg, needle
    assert "module.backbone.pos_embed\n" not in msg and " pos_embed\n" not in msg


def test_hf_errors_list_every_problem(hf_dirs, tmp_path):
    base = hf_dirs["base"]
    sd = {k: v.numpy().copy() for k, v in base.state_dict().items()}
    del sd["predictor.layer.1.attention.value.bias"]
    sd["encoder.layer.0.attention.extra.weight"] = np.zeros((2, 2), np.float32)
    sd["encoder.layernorm.weight"] = np.zeros((97,), np.float32)
    cfg = base.config.to_dict()
    cfg["num_attention_heads"] = 3
    cfg["num_hidden_layers"] = 5  # disagrees with the weights
    with pytest.raises(convert.ConversionError) as info:
        convert.convert_hf(sd, cfg)
    msg = str(info.value)
    print(msg)
    for needle in ("predictor.layer.1.attention.value.bias", "encoder.layer.0.attention.extra.weight",
                   "encoder.layernorm.weight: (97,), expected (96,)", "num_hidden_layers=5"):
        assert needle in msg, needle
    # the CLI turns it into one message and a non-zero exit, writing nothing
    from safetensors.numpy import save_file

    d = tmp_path / "bad"
    d.mkdir()
    save_file(sd, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps(cfg))
    assert convert.main(["--from", "hf", "--src", str(d), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_bundle_shape_mismatch_is_one_error(bundles, tmp_path):
    io.save_bundle(tmp_path / "b", {"encoder": bundles["base"]["encoder"]})
    with pytest.raises(io.BundleError) as info:
        io.load_bundle(tmp_path / "b", overrides={"encoder": {"mlp_dim": 128}})
    msg = str(info.value)
    assert "mis-shaped (3)" in msg and "blocks/blocks/mlp/fc1/kernel" in msg
    with pytest.raises(io.BundleError, match="exists and is not empty"):
        io.save_bundle(tmp_path / "b", {"encoder": bundles["base"]["encoder"]})
    with pytest.raises(io.BundleError, match="no model"):
        io.load_bundle(tmp_path / "b", ["predictor"])
    # dtype overrides: parameters are cast on restore, the config records the new dtypes
    bf = io.load_bundle(tmp_path / "b", ["encoder"], dtype="bfloat16", param_dtype="bfloat16")["encoder"]
    assert bf.cfg.dtype == bf.cfg.param_dtype == "bfloat16"
    kernel = bf.blocks.blocks.attn.qkv.kernel[...]
    assert kernel.dtype == jnp.bfloat16
    want = bundles["base"]["encoder"].blocks.blocks.attn.qkv.kernel[...]
    np.testing.assert_array_equal(np.asarray(kernel), np.asarray(want.astype(jnp.bfloat16)))


def test_original_classifier_converter_matches_hf(hf_dirs):
    """A probe checkpoint in the reference's layout (`classifiers` list, `module.pooler.*`, `module.linear.*`)."""
    sd = {k: v.detach().clone() for k, v in hf_dirs["clf"].state_dict().items()}
    o = {"module.pooler.query_tokens": sd["pooler.query_tokens"]}
    for i in range(2):
        s, d = f"pooler.self_attention_layers.{i}.", f"module.pooler.blocks.{i}."
        for part in ("weight", "bias"):
            o[d + f"attn.qkv.{part}"] = torch.cat([sd[s + f"self_attn.{n}_proj.{part}"] for n in "qkv"], dim=0)
            o[d + f"attn.proj.{part}"] = sd[s + f"self_attn.out_proj.{part}"]
            for a, b in (("norm1", "layer_norm1"), ("norm2", "layer_norm2"), ("mlp.fc1", "mlp.fc1"),
                         ("mlp.fc2", "mlp.fc2")):
                o[d + f"{a}.{part}"] = sd[s + f"{b}.{part}"]
    s, d = "pooler.cross_attention_layer.", "module.pooler.cross_attention_block."
    for part in ("weight", "bias"):
        o[d + f"xattn.q.{part}"] = sd[s + f"cross_attn.q_proj.{part}"]
        o[d + f"xattn.kv.{part}"] = torch.cat([sd[s + f"cross_attn.{n}_proj.{part}"] for n in "kv"], dim=0)
        for a, b in (("norm1", "layer_norm1"), ("norm2", "layer_norm2"), ("mlp.fc1", "mlp.fc1"),
                     ("mlp.fc2", "mlp.fc2")):
            o[d + f"{a}.{part}"] = sd[s + f"{b}.{part}"]
        o[f"module.linear.{part}"] = sd[f"classifier.{part}"]
    ckpt = {"classifiers": [{}, o], "opt": [], "epoch": 2}
    configs, params = convert.convert_original(ckpt, index=1, probe_heads=3)
    hf_configs, hf_params = convert.convert_hf({k: v.numpy() for k, v in sd.items()},
                                               hf_dirs["clf"].config.to_dict())
    assert list(configs) == ["probe"]
    assert configs["probe"] == hf_configs["probe"].replace(ln_eps=1e-5)  # the reference probes use eps 1e-5
    got, want = io.flatten(params["probe"]), io.flatten(hf_params["probe"])
    assert sorted(got) == sorted(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    with pytest.raises(convert.ConversionError, match="no 'classifiers'|missing"):
        convert.convert_original(ckpt, index=0, probe_heads=3)  # an empty state dict: every key is missing


def test_read_hf_sharded(hf_dirs, tmp_path):
    hf_dirs["base"].save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    sd, cfg = convert.read_hf(tmp_path / "sharded")
    ref, ref_cfg = convert.read_hf(hf_dirs["root"] / "base")
    assert sorted(sd) == sorted(ref) and cfg["hidden_size"] == ref_cfg["hidden_size"] == 96
    for k in ref:
        np.testing.assert_array_equal(sd[k], ref[k], err_msg=k)


def test_probe_command_evaluation_path_matches_transformers(hf_dirs, bundles):
    """`jepa probe`'s evaluation path (jepa.probe.grid: views x segments, probes stacked on a grid axis) on a
    classifier converted from transformers gives transformers' logits (one view, one segment)."""
    import jax
    from flax import nnx

    from jepa.probe import grid as pg

    video = _video(2)
    with torch.no_grad():
        ref = hf_dirs["clf"](_to_torch(video)).logits.numpy()
    m = bundles["clf"]
    g = pg.make(m["encoder"], m["probe"].cfg, pg.Grid((1e-3,), (0.0,)), task="classification", total_steps=1,
                warmup_steps=1)
    params = nnx.to_pure_dict(nnx.state(m["probe"], nnx.Param))
    enc_params = nnx.split(m["encoder"])[1]
    (lg,) = pg.view_logits(g, params, enc_params, jnp.asarray(video))  # [B, V=1, C]
    e = _err(lg[:, 0], ref)
    print(f"jepa probe evaluation logits max |err| = {e:.2e}")
    assert e <= TOL
    stacked = jax.tree.map(lambda x: x[None], params)  # a grid of one probe
    (probs,) = pg.eval_probs(g, stacked, enc_params, jnp.asarray(video))
    want = torch.softmax(torch.from_numpy(ref), -1).numpy()
    assert _err(probs[0], want) <= TOL
