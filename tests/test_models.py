"""Properties of the V-JEPA 2 models that must hold whatever the weights: causality, masking, RoPE, compilation,
input shapes, intermediate layers, mixed precision, rematerialisation and the reference initialisation.

The encoder is also checked against an independent numpy forward written from the spec's formulas
(vjepa2-reference.md) on a NON-square input, which transformers cannot run.
"""
from __future__ import annotations

import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import erf

from jepa.models import ACPredictor, ACPredictorConfig, Predictor, PredictorConfig, ViTConfig, VisionTransformer
from jepa.models.layers import apply_rope, rope_tables

# Every model here shares the block shapes (64 wide, 3 deep, 2 heads of 32: RoPE 10/10/10 + 2 unrotated, MLP 128) so
# their eager initialisation reuses compiled kernels; everything that runs is jitted.
ENC = ViTConfig(width=64, depth=3, num_heads=2, mlp_dim=128, patch_size=8)


def _video(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def _params(model) -> dict:
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def _perturb(model, seed=1, scale=0.05) -> None:
    """Random non-zero biases / LayerNorms so no parameter is trivially inert."""
    rng = np.random.default_rng(seed)
    params = nnx.state(model, nnx.Param)
    noisy = jax.tree_util.tree_map(lambda x: x + scale * rng.normal(size=x.shape).astype(np.float32),
                                   nnx.to_pure_dict(params))
    nnx.replace_by_pure_dict(params, noisy)
    nnx.update(model, params)


def _with_params(cfg, params, cls=VisionTransformer):
    """A model for `cfg` holding `params`, built abstractly (no initialisation)."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: cls(cfg, rngs=nnx.Rngs(0))))
    nnx.replace_by_pure_dict(state, jax.tree_util.tree_map(jnp.asarray, params))
    return nnx.merge(graphdef, state)


@nnx.jit(static_argnames=("layers",))
def _encode(model, video, keep=None, layers=None):
    """Jitted encoder forward (eager calls of a scanned model are slow on small CPUs)."""
    return model(video, keep, layers=layers)


@pytest.fixture(scope="module")
def fresh_params():
    """Parameters of a freshly initialised encoder (reference init)."""
    return jax.tree_util.tree_map(np.asarray, _params(VisionTransformer(ENC, rngs=nnx.Rngs(0))))


@pytest.fixture(scope="module")
def encoder(fresh_params):
    m = _with_params(ENC, fresh_params)
    _perturb(m)
    return m


# --- AC predictor: block causality ---------------------------------------------------------------------------
def test_ac_predictor_is_block_causal():
    cfg = ACPredictorConfig(embed_dim=64, width=64, depth=3, num_heads=2, mlp_dim=128, action_dim=7, state_dim=7)
    model = ACPredictor(cfg, rngs=nnx.Rngs(0))
    _perturb(model)
    fwd = nnx.jit(lambda m, f, a, s: m(f, a, s))
    b, t, gh, gw = 2, 4, 2, 3
    inputs = {"frames": _video((b, t, gh, gw, 64), 1), "actions": _video((b, t, 7), 2),
              "states": _video((b, t, 7), 3)}
    base = np.asarray(fwd(model, *inputs.values()))
    assert base.shape == (b, t, gh, gw, 64)
    for step in range(t - 1):  # change everything after `step`: outputs up to `step` must not move by one bit
        for name in inputs:
            changed = np.array(inputs[name])
            changed[:, step + 1:] += 1.0
            out = np.asarray(fwd(model, *{**inputs, name: jnp.asarray(changed)}.values()))
            np.testing.assert_array_equal(out[:, : step + 1], base[:, : step + 1], err_msg=f"{name} after {step}")
            assert np.abs(out[:, step + 1] - base[:, step + 1]).max() > 1e-4, f"{name} at {step + 1} had no effect"


# --- encoder: masking, shapes, layers ------------------------------------------------------------------------
def test_masked_forward_keeping_every_token_equals_unmasked(encoder):
    video = _video((2, 4, 16, 24, 3))
    full = _encode(encoder, video)
    n = full.shape[1]
    keep = jnp.broadcast_to(jnp.arange(n), (2, n))
    np.testing.assert_allclose(np.asarray(_encode(encoder, video, keep)), np.asarray(full), rtol=0, atol=1e-6)
    # a real mask changes the context tokens (they attend to fewer tokens) but keeps their RoPE positions:
    # it equals the full forward of a model that only sees those tokens, i.e. NOT the gathered full output
    sub = jnp.asarray([[0, 3, 5, 9, 11], [1, 2, 6, 8, 10]])
    masked = _encode(encoder, video, sub)
    assert masked.shape == (2, 5, 64)
    assert float(jnp.abs(masked - jnp.take_along_axis(full, sub[..., None], 1)).max()) > 1e-3


def _np_layer_norm(x, scale, bias, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * scale + bias


def _np_rope_reference(x, pos, hd):
    """Spec: Ds = 2*((hd//3)//2) dims per axis (t, h, w), omega_k = 10000^(-k/(Ds/2)), sin/cos expanded by
    concatenation, partner y[2i] = -x[2i+1], y[2i+1] = x[2i]; out = x cos + y sin; the rest untouched."""
    ds = 2 * ((hd // 3) // 2)
    out = x.copy()
    for axis in range(3):
        sl = slice(axis * ds, (axis + 1) * ds)
        omega = 1.0 / 10000 ** (np.arange(ds // 2) / (ds / 2))
        f = pos[:, axis][:, None] * omega[None]  # [N, ds/2]
        f = np.concatenate([f, f], axis=-1)[:, None, :]  # [N, 1, ds]
        xs = x[..., sl]
        y = np.empty_like(xs)
        y[..., 0::2] = -xs[..., 1::2]
        y[..., 1::2] = xs[..., 0::2]
        out[..., sl] = xs * np.cos(f) + y * np.sin(f)
    return out


def _np_encoder(p, cfg: ViTConfig, video: np.ndarray) -> np.ndarray:
    """An independent float64 forward of the encoder, token by token from the spec."""
    b, t_, h_, w_, c = video.shape
    t, pt = cfg.tubelet_size, cfg.patch_size
    gt, gh, gw = t_ // t, h_ // pt, w_ // pt
    k = np.asarray(p["patch_embed"]["kernel"], np.float64)  # [t, p, p, C, D]
    tokens, pos = [], []
    for i in range(gt):  # raster order (t, h, w)
        for j in range(gh):
            for l in range(gw):
                cube = video[:, i * t:(i + 1) * t, j * pt:(j + 1) * pt, l * pt:(l + 1) * pt, :]
                tokens.append(np.einsum("btpqc,tpqcd->bd", cube, k) + np.asarray(p["patch_embed"]["bias"]))
                pos.append((i, j, l))
    x = np.stack(tokens, 1)
    pos = np.asarray(pos, np.float64)
    hd = cfg.head_dim
    blk = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), p["blocks"]["blocks"])
    for d in range(cfg.depth):
        g = jax.tree_util.tree_map(lambda a: a[d], blk)
        y = _np_layer_norm(x, g["norm1"]["scale"], g["norm1"]["bias"], cfg.ln_eps)
        qkv = (y @ g["attn"]["qkv"]["kernel"] + g["attn"]["qkv"]["bias"]).reshape(b, -1, 3, cfg.num_heads, hd)
        q, kk, v = (_np_rope_reference(qkv[:, :, 0], pos, hd), _np_rope_reference(qkv[:, :, 1], pos, hd),
                    qkv[:, :, 2])
        logits = np.einsum("bnhd,bmhd->bhnm", q, kk) / math.sqrt(hd)
        att = np.exp(logits - logits.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = np.einsum("bhnm,bmhd->bnhd", att, v).reshape(b, -1, cfg.width)
        x = x + o @ g["attn"]["proj"]["kernel"] + g["attn"]["proj"]["bias"]
        y = _np_layer_norm(x, g["norm2"]["scale"], g["norm2"]["bias"], cfg.ln_eps)
        hmid = y @ g["mlp"]["fc1"]["kernel"] + g["mlp"]["fc1"]["bias"]
        hmid = 0.5 * hmid * (1 + erf(hmid / math.sqrt(2)))
        x = x + hmid @ g["mlp"]["fc2"]["kernel"] + g["mlp"]["fc2"]["bias"]
    return _np_layer_norm(x, np.asarray(p["norm"]["scale"]), np.asarray(p["norm"]["bias"]), cfg.ln_eps)


def test_non_square_input_matches_spec_forward(encoder):
    video = _video((2, 6, 16, 32, 3), 5)  # grid 3 x 2 x 4: T' != H' != W'
    ours = np.asarray(_encode(encoder, video))
    ref = _np_encoder(_params(encoder), ENC, np.asarray(video, np.float64))
    err = float(np.abs(ours - ref).max())
    print(f"non-square encoder vs numpy spec forward: max |err| = {err:.2e}")
    assert ours.shape == (2, 24, 64) and encoder.token_grid(video.shape) == (3, 2, 4)
    assert err < 1e-4


def test_input_shapes(encoder):
    assert _encode(encoder, _video((1, 6, 24, 16, 3))).shape == (1, 3 * 3 * 2, 64)
    img = _video((2, 1, 16, 16, 3))
    out = _encode(encoder, img)  # an image is one tubelet of the repeated frame
    assert out.shape == (2, 4, 64)
    np.testing.assert_allclose(np.asarray(out), np.asarray(_encode(encoder, jnp.repeat(img, 2, axis=1))), atol=1e-6)
    for bad in ((1, 5, 16, 16, 3), (1, 4, 20, 16, 3)):
        with pytest.raises(ValueError, match="not divisible"):
            _encode(encoder, _video(bad))


def test_intermediate_layers_go_through_the_final_norm(encoder):
    video = _video((1, 4, 16, 16, 3), 7)
    out, (h0, h1) = _encode(encoder, video, layers=(0, -1))
    np.testing.assert_allclose(np.asarray(h1), np.asarray(out), atol=1e-6)
    p = _params(encoder)
    p["blocks"]["blocks"] = jax.tree_util.tree_map(lambda a: a[:1], p["blocks"]["blocks"])
    one = _with_params(ENC.replace(depth=1), p)  # block 0 of `encoder` + the same final norm
    np.testing.assert_allclose(np.asarray(h0), np.asarray(_encode(one, video)), atol=1e-5)
    assert float(jnp.abs(h0 - h1).max()) > 1e-2


# --- RoPE ----------------------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnums=2)
def _rope(x, pos, mode):
    return apply_rope(x, rope_tables(pos, x.shape[-1], mode))


def test_rope_rotation_is_a_true_rotation_and_reference_is_not():
    hd = 32
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(1, 64, 2, hd)).astype(np.float32))
    pos = jnp.asarray(rng.integers(0, 16, size=(64, 3)).astype(np.float32))
    rot, ref = _rope(x, pos, "rotation"), _rope(x, pos, "reference")
    # both leave the 3*Ds = 30 rotated dims' complement alone, and position 0 is the identity
    np.testing.assert_array_equal(np.asarray(rot[..., 30:]), np.asarray(x[..., 30:]))
    np.testing.assert_array_equal(np.asarray(ref[..., 30:]), np.asarray(x[..., 30:]))
    zero = jnp.zeros_like(pos)
    np.testing.assert_allclose(np.asarray(_rope(x, zero, "rotation")), np.asarray(x), atol=1e-6)
    np.testing.assert_allclose(np.asarray(_rope(x, zero, "reference")), np.asarray(x), atol=1e-6)
    assert float(jnp.abs(rot - ref).max()) > 0.1
    # norm preserving, for every adjacent pair
    pairs = lambda a: jnp.sum(a[..., :30].reshape(*a.shape[:-1], 15, 2) ** 2, -1)  # noqa: E731
    np.testing.assert_allclose(np.asarray(pairs(rot)), np.asarray(pairs(x)), rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(jnp.linalg.norm(ref, axis=-1) - jnp.linalg.norm(x, axis=-1)).max()) > 1e-2
    # relative positions: <R(p) q, R(p') k> depends only on p - p'
    q, k = x[:, :1], x[:, 1:2]
    p1, p2 = jnp.asarray([[3.0, 1.0, 7.0]]), jnp.asarray([[0.0, 5.0, 2.0]])
    dots = []
    for shift in ([0, 0, 0], [5, 2, 1], [11, 13, 4], [2.5, 0.5, 9]):
        s = jnp.asarray([shift], jnp.float32)
        dots.append(jnp.sum(_rope(q, p1 + s, "rotation") * _rope(k, p2 + s, "rotation"), -1))
    for d in dots[1:]:
        np.testing.assert_allclose(np.asarray(d), np.asarray(dots[0]), rtol=1e-4, atol=1e-4)
    ref_dots = [jnp.sum(_rope(q, p1 + s, "reference") * _rope(k, p2 + s, "reference"), -1)
                for s in (jnp.zeros((1, 3)), jnp.asarray([[5.0, 2.0, 1.0]]))]
    assert float(jnp.abs(ref_dots[0] - ref_dots[1]).max()) > 1e-3


def test_rope_mode_reaches_the_model(encoder):
    video = _video((1, 4, 16, 16, 3), 9)
    other = _with_params(ENC.replace(rope="rotation"), _params(encoder))
    assert float(jnp.abs(_encode(other, video) - _encode(encoder, video)).max()) > 1e-3


# --- compilation ---------------------------------------------------------------------------------------------
def test_repeated_calls_do_not_recompile(encoder):
    traces = {"enc": 0, "pred": 0}

    @nnx.jit
    def enc(m, v, keep):
        traces["enc"] += 1
        return m(v, keep)

    pcfg = PredictorConfig(embed_dim=64, width=64, depth=3, num_heads=2, mlp_dim=128, num_mask_tokens=2)
    pred = Predictor(pcfg, rngs=nnx.Rngs(0))

    @nnx.jit(static_argnums=(4,))
    def predict(m, ctx, ctx_ids, tgt_ids, grid):
        traces["pred"] += 1
        return m(ctx, ctx_ids, tgt_ids, grid)

    rng = np.random.default_rng(0)
    for i in range(3):
        video = _video((2, 4, 16, 16, 3), i)
        ids = np.stack([np.sort(rng.permutation(8)) for _ in range(2)])  # grid 2x2x2 = 8 tokens
        ctx_ids, tgt_ids = jnp.asarray(ids[:, :5]), jnp.asarray(ids[:, 5:])
        ctx = enc(encoder, video, ctx_ids)
        predict(pred, ctx, ctx_ids, tgt_ids, (2, 2, 2))
    assert traces == {"enc": 1, "pred": 1}
    enc(encoder, _video((2, 4, 16, 16, 3)), ctx_ids[:, :4])  # a new shape traces once more
    assert traces["enc"] == 2


# --- precision and rematerialisation -------------------------------------------------------------------------
def test_bf16_compute_with_fp32_params(encoder):
    video = _video((2, 4, 16, 16, 3), 11)
    bf = _with_params(ENC.replace(dtype="bfloat16"), _params(encoder))
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(_params(bf)))
    out, ref = _encode(bf, video), _encode(encoder, video)
    assert out.dtype == jnp.bfloat16
    err = np.abs(np.asarray(out, np.float32) - np.asarray(ref))
    print(f"bf16 vs fp32: max |err| {err.max():.3f}, mean {err.mean():.4f}")
    assert err.mean() < 0.02 and err.max() < 0.2


def test_bf16_matmul_values_gradients_and_fast_layout():
    """layers.matmul: products of bf16-rounded operands accumulated in f32 (forward and both gradients, plain and
    transposed b), and on CPU every dot of the compiled gradient takes bf16 operands (XLA's CPU backend silently
    upcasts a bf16 dot it cannot run in the fast layout to f32: that would fail here)."""
    from jepa.models.layers import matmul

    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.normal(size=(3, 40, 24)).astype(np.float32))
    g = jnp.asarray(rng.normal(size=(3, 40, 16)).astype(np.float32))
    r = lambda x: x.astype(jnp.bfloat16).astype(jnp.float32)  # noqa: E731
    hi = jax.lax.Precision.HIGHEST
    for transpose_b, b_shape in ((False, (24, 16)), (True, (16, 24))):
        b = jnp.asarray(rng.normal(size=b_shape).astype(np.float32))
        bm = r(b).T if transpose_b else r(b)

        def loss(a, b):
            return jnp.sum(matmul(a, b, jnp.bfloat16, transpose_b) * g)

        fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        val, (da, db) = fn(a, b)
        out = jnp.matmul(r(a), bm, precision=hi)
        np.testing.assert_allclose(float(val), float(jnp.sum(out * g)), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(da), np.asarray(jnp.matmul(r(g), bm.T, precision=hi)), rtol=1e-5, atol=1e-5)
        want_db = jnp.einsum("bmk,bmn->kn", r(a), r(g), precision=hi)
        np.testing.assert_allclose(np.asarray(db), np.asarray(want_db.T if transpose_b else want_db), rtol=1e-5,
                                   atol=1e-5)
        assert da.dtype == db.dtype == jnp.float32
        if jax.default_backend() == "cpu":
            hlo = fn.lower(a, b).compile().as_text()
            comps = re.split(r"\n(?=%|ENTRY)", hlo)
            dots = [c for c in comps if re.search(r"\sdot\(", c)]
            assert len(dots) == 3, hlo
            for c in dots:
                header = c.split("{", 1)[0]
                assert "f32[" not in header.split("->")[0], f"a dot with f32 operands:\n{c}"


def test_bf16_matmuls_keep_f32_values(encoder):
    """matmul_dtype='bfloat16' (the reference's autocast): outputs and gradients stay f32 and close to f32's."""
    video = _video((2, 4, 16, 16, 3), 12)
    mixed = _with_params(ENC.replace(matmul_dtype="bfloat16"), _params(encoder))

    @nnx.jit
    def value_and_grad(m):
        return nnx.value_and_grad(lambda m: jnp.mean(m(video) ** 2))(m)

    out, ref = _encode(mixed, video), _encode(encoder, video)
    assert out.dtype == jnp.float32
    err = np.abs(np.asarray(out) - np.asarray(ref))
    print(f"bf16 matmuls vs fp32: max |err| {err.max():.4f}, mean {err.mean():.5f}")
    assert 0 < err.mean() < 0.01 and err.max() < 0.05
    (la, ga), (lb, gb) = value_and_grad(mixed), value_and_grad(encoder)
    fa, fb = jax.tree_util.tree_leaves(nnx.to_pure_dict(ga)), jax.tree_util.tree_leaves(nnx.to_pure_dict(gb))
    for x, y in zip(fa, fb):
        assert x.dtype == jnp.float32
        scale = float(jnp.abs(y).max())
        assert float(jnp.abs(x - y).max()) <= 0.05 * scale + 1e-6, (float(jnp.abs(x - y).max()), scale)


def test_remat_gives_same_output_and_gradients(encoder):
    video = _video((1, 4, 16, 16, 3), 13)
    a = encoder
    b = _with_params(ENC.replace(remat=True), _params(encoder))

    @nnx.jit
    def value_and_grad(m):
        return nnx.value_and_grad(lambda m: jnp.mean(m(video) ** 2))(m)

    (la, ga), (lb, gb) = value_and_grad(a), value_and_grad(b)
    np.testing.assert_allclose(float(la), float(lb), rtol=1e-6)
    fa, fb = jax.tree_util.tree_leaves(nnx.to_pure_dict(ga)), jax.tree_util.tree_leaves(nnx.to_pure_dict(gb))
    assert len(fa) == len(fb) > 10
    for x, y in zip(fa, fb):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)
    assert max(float(jnp.abs(x).max()) for x in fa) > 1e-4


# --- reference initialisation --------------------------------------------------------------------------------
def test_reference_init_statistics(fresh_params):
    cfg, p = ENC, fresh_params
    blk = p["blocks"]["blocks"]
    for i in range(cfg.depth):  # block i+1 (1-based): proj and fc2 std 0.02 / sqrt(2 (i+1)); others 0.02
        for name, kernel, scale in (
            ("qkv", blk["attn"]["qkv"]["kernel"][i], 1.0),
            ("fc1", blk["mlp"]["fc1"]["kernel"][i], 1.0),
            ("proj", blk["attn"]["proj"]["kernel"][i], 1 / math.sqrt(2 * (i + 1))),
            ("fc2", blk["mlp"]["fc2"]["kernel"][i], 1 / math.sqrt(2 * (i + 1))),
        ):
            k = np.asarray(kernel)
            want = 0.02 * scale
            tol = 4 * want / math.sqrt(2 * k.size)  # 4 standard errors of a std estimate
            assert abs(k.std() - want) < tol, (name, i, k.std(), want)
            assert abs(k.mean()) < 4 * want / math.sqrt(k.size), (name, i)
        for bias in (blk["attn"]["qkv"]["bias"][i], blk["attn"]["proj"]["bias"][i], blk["mlp"]["fc1"]["bias"][i],
                     blk["mlp"]["fc2"]["bias"][i], blk["norm1"]["bias"][i], blk["norm2"]["bias"][i]):
            assert not np.any(np.asarray(bias))
        assert np.all(np.asarray(blk["norm1"]["scale"][i]) == 1) and np.all(np.asarray(blk["norm2"]["scale"][i]) == 1)
    pe = np.asarray(p["patch_embed"]["kernel"])
    assert abs(pe.std() - 0.02) < 4 * 0.02 / math.sqrt(2 * pe.size) and not np.any(np.asarray(p["patch_embed"]["bias"]))
    # truncation at ABSOLUTE +-2 (the reference's trunc_normal_ default) is no truncation at std 0.02
    assert np.abs(np.asarray(blk["attn"]["qkv"]["kernel"])).max() < 2
    pred = _params(Predictor(PredictorConfig(embed_dim=64, width=64, depth=3, num_heads=2, mlp_dim=128),
                             rngs=nnx.Rngs(0)))
    assert not np.any(np.asarray(pred["mask_tokens"]))  # zero-initialised mask tokens
    proj = np.asarray(pred["blocks"]["blocks"]["attn"]["proj"]["kernel"])  # the predictor's blocks are rescaled too
    assert proj[0].std() / proj[2].std() == pytest.approx(math.sqrt(3), rel=0.1)


def test_residual_ac_predictor_starts_as_copy_last_frame():
    from jepa.models import ACPredictor, ACPredictorConfig

    cfg = ACPredictorConfig(embed_dim=16, width=32, depth=1, num_heads=2, mlp_dim=64, grid_size=2, residual=True)
    model = ACPredictor(cfg, rngs=nnx.Rngs(0))
    frames = jax.random.normal(jax.random.key(1), (2, 3, 2, 2, 16))
    out = model(frames, jnp.ones((2, 3, 7)), jnp.ones((2, 3, 7)))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(frames))  # zero-initialised change
    assert not ACPredictorConfig().residual  # the released architecture predicts frames directly


def test_ac_predictor_position_embedding():
    """The optional absolute position embedding reaches every patch token's output and checks its grid."""
    from jepa.models import ACPredictor, ACPredictorConfig

    cfg = ACPredictorConfig(embed_dim=16, width=32, depth=1, num_heads=2, mlp_dim=64, grid_size=2, pos_embed=True)
    model = ACPredictor(cfg, rngs=nnx.Rngs(0))
    frames, a, s = jax.random.normal(jax.random.key(1), (1, 2, 2, 2, 16)), jnp.ones((1, 2, 7)), jnp.ones((1, 2, 7))
    graphdef, params = nnx.split(model, nnx.Param)

    def per_token(p, i, j):
        return nnx.merge(graphdef, p)(frames, a, s)[0, -1, i, j].sum()

    for i, j in ((0, 0), (1, 1)):
        g = np.asarray(jax.grad(per_token)(params, i, j)["pos_embed"][...])
        assert np.abs(g[2 * i + j]).max() > 0  # a token's own position embedding changes its output
    with pytest.raises(ValueError, match="2x2"):
        model(jnp.ones((1, 2, 4, 4, 16)), a, s)
    assert not ACPredictorConfig().pos_embed  # not in the released architecture


@pytest.mark.parametrize("regime", ["batched", "per_example", "per_head"])
@pytest.mark.parametrize("mask_kind", ["none", "shared", "per_example_and_head"])
def test_cpu_attention_regimes_match_plain_softmax_attention(regime, mask_kind, monkeypatch):
    """The CPU attention picks one of three layouts by size (all heads batched; a loop over examples with heads
    batched; a loop over (example, head)); each must be plain masked softmax attention, values and gradients,
    forced here at a small size through the thresholds."""
    from jepa.models import layers

    forced = {"batched": (1 << 40, 1 << 40, 0), "per_example": (0, 0, 1 << 40), "per_head": (0, 0, 0)}[regime]
    for name, value in zip(("LOOP_BYTES", "LOOP_MIN_HEAD", "EXAMPLE_BYTES"), forced):
        monkeypatch.setattr(layers, name, value)
    rng = np.random.default_rng(0)
    b, nq, nk, h, hd = 3, 12, 16, 2, 8
    q, k, v = (jnp.asarray(rng.normal(size=(b, n, h, hd)).astype(np.float32)) for n in (nq, nk, nk))
    mask = {"none": None, "shared": jnp.asarray(np.tril(np.ones((nq, nk), bool), 4)),
            "per_example_and_head": jnp.asarray(rng.random((b, h, nq, nk)) < 0.7).at[..., 0].set(True)}[mask_kind]

    def plain(q, k, v):
        s = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd)
        s = s if mask is None else np.where(np.asarray(mask), s, -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        return np.einsum("bhqk,bkhd->bqhd", p / p.sum(-1, keepdims=True), v)

    out = jax.jit(lambda q, k, v: layers.attention(q, k, v, mask))(q, k, v)
    np.testing.assert_allclose(np.asarray(out), plain(*map(np.asarray, (q, k, v))), atol=2e-6, rtol=1e-5)

    w = jnp.asarray(rng.normal(size=out.shape).astype(np.float32))
    grads = jax.jit(jax.grad(lambda *x: (layers.attention(*x, mask) * w).sum(), argnums=(0, 1, 2)))(q, k, v)
    eps = 1e-3  # central differences in float64 on the plain statement, along one random direction per input
    for i, g in enumerate(grads):
        d = rng.normal(size=g.shape)
        args = [np.asarray(x, np.float64) for x in (q, k, v)]
        hi, lo = list(args), list(args)
        hi[i], lo[i] = args[i] + eps * d, args[i] - eps * d
        numeric = ((plain(*hi) - plain(*lo)) * np.asarray(w)).sum() / (2 * eps)
        np.testing.assert_allclose(float((np.asarray(g) * d).sum()), numeric, rtol=1e-3, atol=1e-4)
