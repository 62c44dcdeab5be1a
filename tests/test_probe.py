"""Attentive probes on frozen features (jepa.probe.train): they learn what the tokens hold, and only that."""
from __future__ import annotations

import numpy as np

from jepa.models import ProbeConfig
from jepa.probe.train import best, train_probes


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


def test_probe_trains_with_a_single_step():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 8)
    x = rng.standard_normal((8, 4, 8)).astype(np.float32)
    res = train_probes((x, y), (x, y), ProbeConfig(embed_dim=8, num_classes=(3,), num_heads=2, depth=0),
                       lrs=(1e-3,), wds=(0.0,), epochs=1, batch_size=64, progress=False)
    assert len(res) == 1 and 0.0 <= res[0].val_accuracy <= 1.0
