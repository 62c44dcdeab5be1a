"""Probe training on clips of S temporal segments: `grid.tokens` / `grid.train_step` on video [B, S, T, H, W, C]
encode each segment separately and concatenate the segments' tokens, the layout evaluation gives one view."""
from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from jepa.models import AttentiveProbe, ProbeConfig, VisionTransformer  # noqa: E402
from jepa.models.config import ViTConfig  # noqa: E402
from jepa.probe import grid as pg  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    enc = VisionTransformer(ViTConfig(width=32, depth=2, num_heads=2, mlp_dim=64, patch_size=8, tubelet_size=2),
                            rngs=nnx.Rngs(0))
    cfg = ProbeConfig(embed_dim=32, num_classes=(5,), num_heads=2, depth=1)
    g = pg.make(enc, cfg, pg.Grid((1e-3, 3e-4), (0.01, 0.4)), task="classification", total_steps=10,
                warmup_steps=1)
    state = pg.init_state(g, 0)
    state = {**state, "step": jnp.ones((), jnp.int32)}  # past the warmup: lr scale 1, the update is not zero
    video = jnp.asarray(np.random.default_rng(0).normal(size=(3, 2, 4, 32, 32, 3)), jnp.float32)  # B S T H W C
    labels = jnp.asarray([0, 3, 4], jnp.int32)
    return enc, g, state, video, labels


def test_tokens_of_segments_are_each_segments_tokens_concatenated(setup):
    enc, g, _, video, _ = setup
    enc_params = nnx.split(enc)[1]
    got = np.asarray(jax.jit(lambda p, v: pg.tokens(g, p, v))(enc_params, video))
    want = np.concatenate([np.asarray(enc(video[:, s])) for s in range(2)], axis=1)
    assert got.shape == (3, 2 * 32, 32) and want.shape == got.shape  # 2 x 4 x 4 tokens per 4 x 32 x 32 segment
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    # The layout evaluation gives one view of the same segments.
    ev = np.asarray(pg.view_tokens(g, enc_params, video[:, None]))[:, 0]
    np.testing.assert_allclose(got, ev, atol=1e-6, rtol=1e-6)
    # Single-segment clips are as before.
    np.testing.assert_allclose(np.asarray(pg.tokens(g, enc_params, video[:, 0])), want[:, :32], atol=1e-5,
                               rtol=1e-5)
    with pytest.raises(ValueError, match=r"\[B, S, T, H, W, C\]"):
        pg.tokens(g, enc_params, video[0, 0])


def test_train_step_on_segments_equals_the_step_on_concatenated_tokens(setup):
    """train_step on [B, 2, T, ...] stated independently: each segment encoded, tokens concatenated by hand, each
    probe's cross-entropy, AdamW (decay on the decayed parameters) at lr * schedule."""
    enc, g, state, video, labels = setup
    new, metrics = jax.jit(lambda s, p, b: pg.train_step(g, s, p, b))(state, nnx.split(enc)[1],
                                                                     {"video": video, "label": labels})
    toks = jnp.concatenate([enc(video[:, s]) for s in range(2)], axis=1)  # [B, 2 N, D]
    scale = float(g.schedule(1))
    assert scale > 0.5

    @jax.jit
    def by_hand(p, lr, wd):
        def loss(q):
            lg = nnx.merge(g.graphdef, q)(toks)[0]
            return optax.softmax_cross_entropy_with_integer_labels(lg, labels).mean()

        value, grads = jax.value_and_grad(loss)(p)
        opt = optax.adamw(lr * scale, weight_decay=wd, mask=g.mask)
        updates, _ = opt.update(grads, opt.init(p), p)
        return value, optax.apply_updates(p, updates)

    for h, (lr, wd) in enumerate(g.grid.pairs):
        p = jax.tree.map(lambda x: x[h], state["params"])
        value, want = by_hand(p, lr, wd)
        np.testing.assert_allclose(float(metrics["loss"][h]), float(value), rtol=1e-6, atol=1e-6)
        got = jax.tree.map(lambda x: x[h], new["params"])
        moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), want, p)
        assert max(jax.tree.leaves(moved)) > 1e-4  # the step does change the probe
        jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6),
                     got, want)
    # Training on the first segment only would not be the same step.
    first, _ = jax.jit(lambda s, p, b: pg.train_step(g, s, p, b))(state, nnx.split(enc)[1],
                                                                 {"video": video[:, 0], "label": labels})
    assert not np.allclose(np.asarray(jax.tree.leaves(first["params"])[0]),
                           np.asarray(jax.tree.leaves(new["params"])[0]), atol=1e-6)
