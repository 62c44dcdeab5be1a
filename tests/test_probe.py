"""Attentive probes on frozen features (jepa.probe.train): they learn what the tokens hold, and only that."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jepa.models import ENCODERS, AttentiveProbe, ProbeConfig, VisionTransformer
from jepa.probe.train import best, extract_features, train_probes


def _tokens(n: int, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noise tokens [n, 16, 32]; one token (its position varies) is marked in dimension 4 and holds the class in
    dimensions 0-3: the probe has to find it and read it."""
    x = rng.standard_normal((n, 16, 32)).astype(np.float32)
    where = rng.integers(0, 16, n)
    x[np.arange(n), where, :4] += 4.0 * np.eye(4, dtype=np.float32)[labels]
    x[np.arange(n), where, 4] += 6.0
    return x


def test_probe_learns_the_class_in_one_token_and_nothing_from_noise():
    rng = np.random.default_rng(0)
    y_tr, y_va = rng.integers(0, 4, 512), rng.integers(0, 4, 256)
    train, val = (_tokens(512, y_tr, rng), y_tr), (_tokens(256, y_va, rng), y_va)
    cfg = ProbeConfig(embed_dim=32, num_classes=(4,), num_heads=4, depth=0)
    res = train_probes(train, val, cfg, lrs=(3e-3, 1e-2), wds=(0.01,), epochs=30, progress=False)
    assert len(res) == 2
    assert best(res).val_accuracy > 0.9, res
    # Control: labels unrelated to the tokens cannot be predicted on held-out data.
    shuffled = (train[0], rng.permutation(y_tr))
    res = train_probes(shuffled, val, cfg, lrs=(3e-3, 1e-2), wds=(0.01,), epochs=30, progress=False)
    assert best(res).val_accuracy < 0.45, res


def _square_clips(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Noise clips [n, 2, 32, 32, 3], each with one 8x8 square of its class's colour (4 classes) at a random place."""
    labels = rng.integers(0, 4, n)
    colours = np.array([[1.5, 0, 0], [0, 1.5, 0], [0, 0, 1.5], [1.5, 1.5, 0]], np.float32)
    video = rng.normal(0.0, 0.5, (n, 2, 32, 32, 3)).astype(np.float32)
    for i, (top, left) in enumerate(rng.integers(0, 25, (n, 2))):
        video[i, :, top:top + 8, left:left + 8] += colours[labels[i]]
    return video, labels


def _batches(video: np.ndarray, labels: np.ndarray, size: int = 128):
    for i in range(0, len(video), size):
        yield {"video": video[i:i + size], "label": labels[i:i + size]}


def test_probe_on_a_frozen_encoder_learns_a_visible_class():
    """Features of a frozen (random-init) tiny encoder: the probe trained for 240 steps reads the square's colour on
    held-out clips, far above chance and above the same probe untrained; the reported accuracy of the untrained
    probe is the accuracy of its own predictions, recomputed here."""
    rng = np.random.default_rng(0)
    # 64 wide, 2 x 4 x 4 = 16 tokens per clip; initialised under jit (much faster than eagerly on CPU)
    encoder = nnx.jit(lambda: VisionTransformer(ENCODERS["vit_test"], rngs=nnx.Rngs(1)))()
    train = extract_features(encoder, _batches(*_square_clips(512, rng)), 512, progress=False)
    val = extract_features(encoder, _batches(*_square_clips(256, rng)), 256, progress=False)
    assert train[0].shape == (512, 16, 64) and val[0].shape == (256, 16, 64) and val[1].shape == (256,)
    cfg = ProbeConfig(embed_dim=64, num_classes=(4,), num_heads=4, depth=0)
    kw = dict(lrs=(3e-3, 1e-2), wds=(0.01,), batch_size=64, seed=0, progress=False)
    untrained = train_probes(train, val, cfg, epochs=0, **kw)
    trained = train_probes(train, val, cfg, epochs=30, **kw)  # 8 steps an epoch
    print("untrained", untrained, "\ntrained", trained)
    chance = 0.25
    for r in untrained + trained:  # accuracies are counts of held-out clips
        assert abs(r.val_accuracy * 256 - round(r.val_accuracy * 256)) < 1e-6, r
    assert best(untrained).val_accuracy < chance + 0.2, untrained
    assert best(trained).val_accuracy > 0.9 and best(trained).train_accuracy > 0.9, trained
    assert best(trained).val_accuracy > best(untrained).val_accuracy + 0.5
    # the untrained probe is the seed's initial probe: its reported accuracy is that of its predictions
    probe = AttentiveProbe(cfg, rngs=nnx.Rngs(0))
    predicted = np.argmax(np.asarray(probe(jnp.asarray(val[0]))[0]), -1)
    for r in untrained:
        assert abs(r.val_accuracy - np.mean(predicted == val[1])) <= 1 / 256, (r, np.mean(predicted == val[1]))


def test_probe_trains_with_a_single_step():
    """A one-step schedule (one epoch of one batch) runs and reports one result per (lr, wd), counted on the data."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 8)
    x = rng.standard_normal((8, 4, 8)).astype(np.float32)
    res = train_probes((x, y), (x, y), ProbeConfig(embed_dim=8, num_classes=(3,), num_heads=2, depth=0),
                       lrs=(1e-3,), wds=(0.0,), epochs=1, batch_size=64, progress=False)
    assert [(r.lr, r.weight_decay) for r in res] == [(1e-3, 0.0)]
    # validation and training sets are the same 8 examples here: both accuracies count the same predictions
    assert res[0].val_accuracy == res[0].train_accuracy and res[0].val_accuracy * 8 == round(res[0].val_accuracy * 8)
