"""Probe-grid metrics (jepa.probe.metrics) and their report (jepa.probe.report), checked against numbers worked
out by hand."""
from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jepa.probe.metrics import (Accumulator, AnticipationAccumulator, action_labels, action_mapping, action_scores,
                                focal_loss)
from jepa.probe.report import best_probe, write_results

C = 7
LABELS = np.array([0, 1, 2, 3, 0, 6])          # classes 4 and 5 never occur


def _probs(order):
    """Probabilities over C classes where order[0] scores highest, order[1] next, ..."""
    s = np.zeros(C)
    s[list(order)] = np.arange(C, 0, -1)
    return s / s.sum()


# Rankings, best first, for 3 probes x 6 examples. Probe 2 is uniform: every class ties, and the tie rule (equal
# scores ranked by class index) makes class c rank c, with top-1 prediction 0.
RANKINGS = [
    [[0, 1, 2, 3, 4, 5, 6],     # y=0: rank 0 -> top-1 and top-5 hit
     [1, 0, 2, 3, 4, 5, 6],     # y=1: rank 0 -> hit, hit
     [3, 2, 0, 1, 4, 5, 6],     # y=2: rank 1 -> top-1 miss (pred 3), top-5 hit
     [3, 0, 1, 2, 4, 5, 6],     # y=3: rank 0 -> hit, hit
     [1, 2, 3, 4, 5, 0, 6],     # y=0: rank 5 -> miss (pred 1), top-5 miss
     [6, 0, 1, 2, 3, 4, 5]],    # y=6: rank 0 -> hit, hit
    [[5, 4, 3, 2, 1, 0, 6],     # y=0: rank 5 -> miss (pred 5), miss
     [2, 3, 4, 5, 1, 0, 6],     # y=1: rank 4 -> miss (pred 2), top-5 hit
     [2, 0, 1, 3, 4, 5, 6],     # y=2: rank 0 -> hit, hit
     [0, 1, 2, 4, 5, 6, 3],     # y=3: rank 6 -> miss (pred 0), miss
     [0, 1, 2, 3, 4, 5, 6],     # y=0: rank 0 -> hit, hit
     [0, 1, 2, 3, 4, 5, 6]],    # y=6: rank 6 -> miss (pred 0), miss
]
PROBS = np.stack([np.stack([_probs(o) for o in probe]) for probe in RANKINGS]
                 + [np.full((6, C), 1.0 / C)])                   # [3, 6, 7]

# By hand:
#   probe 0: top-1 hits b0 b1 b3 b5 = 4/6; top-5 misses only b4 -> 5/6;
#            recall@5 per class: c0 1/2 (b0 hit, b4 miss), c1 1, c2 1, c3 1, c6 1 -> mean (0.5+1+1+1+1)/5 = 0.9
#   probe 1: top-1 hits b2 b4 = 2/6; top-5 hits b1 b2 b4 = 3/6;
#            c0 1/2 (b0 miss, b4 hit), c1 1, c2 1, c3 0, c6 0 -> mean 2.5/5 = 0.5
#   probe 2: predictions all 0, so top-1 hits b0 b4 = 2/6; rank(c) = c < 5 for c0..c3, rank 6 for c6 -> 5/6;
#            c0 1, c1 1, c2 1, c3 1, c6 0 -> mean 4/5 = 0.8
TOP1 = [4 / 6, 2 / 6, 2 / 6]
TOP5 = [5 / 6, 3 / 6, 5 / 6]
MEAN_R5 = [0.9, 0.5, 0.8]
NAN = float("nan")
PER_CLASS_R5 = [[0.5, 1, 1, 1, NAN, NAN, 1],
                [0.5, 1, 1, 0, NAN, NAN, 0],
                [1.0, 1, 1, 1, NAN, NAN, 0]]
# Confusion (true, predicted) -> count, one entry per example (row = true class, column = top-1 prediction).
CONFUSION = [{(0, 0): 1, (1, 1): 1, (2, 3): 1, (3, 3): 1, (0, 1): 1, (6, 6): 1},
             {(0, 5): 1, (1, 2): 1, (2, 2): 1, (3, 0): 1, (0, 0): 1, (6, 0): 1},
             {(0, 0): 2, (1, 0): 1, (2, 0): 1, (3, 0): 1, (6, 0): 1}]


def _check_hand_numbers(res):
    np.testing.assert_allclose(res["top1"], TOP1)
    np.testing.assert_allclose(res["top5"], TOP5)
    np.testing.assert_allclose(res["mean_class_recall5"], MEAN_R5)
    np.testing.assert_allclose(res["per_class_recall5"], PER_CLASS_R5)      # NaN == NaN here
    assert int(res["count"]) == 6
    np.testing.assert_array_equal(res["class_count"], [2, 1, 1, 1, 0, 0, 1])
    for h in range(3):
        expected = np.zeros((C, C), np.int64)
        for (t, p), n in CONFUSION[h].items():
            expected[t, p] = n
        np.testing.assert_array_equal(res["confusion"][h], expected, err_msg=f"probe {h}")


def test_accumulator_matches_hand_computed_metrics():
    acc = Accumulator(3, C)
    acc.update(PROBS, LABELS)
    _check_hand_numbers(acc.result())


def test_streaming_two_batches_equals_one_batch():
    one = Accumulator(3, C)
    one.update(PROBS, LABELS)
    two = Accumulator(3, C)
    two.update(PROBS[:, :4], LABELS[:4])
    two.update(PROBS[:, 4:], LABELS[4:])
    _check_hand_numbers(two.result())
    a, b = one.result(), two.result()
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # merge (e.g. across hosts) gives the same again
    m1, m2 = Accumulator(3, C), Accumulator(3, C)
    m1.update(PROBS[:, :3], LABELS[:3])
    m2.update(PROBS[:, 3:], LABELS[3:])
    _check_hand_numbers(m1.merge(m2).result())


def test_invalid_rows_are_ignored():
    # Interleave junk rows: one with label -1 (padding), one with a real label whose scores would hit top-1 in every
    # probe and so change every number if it were counted.
    junk_probs = np.stack([np.full((3, C), 1.0 / C), np.tile(_probs([4, 0, 1, 2, 3, 5, 6]), (3, 1))], axis=1)
    probs = np.concatenate([PROBS[:, :3], junk_probs, PROBS[:, 3:]], axis=1)
    labels = np.concatenate([LABELS[:3], [-1, 4], LABELS[3:]])
    valid = np.array([True] * 3 + [False, False] + [True] * 3)
    acc = Accumulator(3, C)
    acc.update(probs, labels, valid)
    acc.update(PROBS[:, :2], np.array([99, 99]), np.zeros(2, bool))          # an all-invalid batch
    _check_hand_numbers(acc.result())
    with pytest.raises(ValueError):                                          # a valid row with a bad label is an error
        Accumulator(3, C).update(probs, labels, np.ones(8, bool))


def test_confusion_can_be_left_out_and_k_caps_at_num_classes():
    acc = Accumulator(3, C, confusion=False)
    acc.update(PROBS, LABELS)
    res = acc.result()
    assert "confusion" not in res and acc.confusion is None
    np.testing.assert_allclose(res["top1"], TOP1)
    small = Accumulator(1, 3)                    # k = min(5, 3): top-5 is always right with 3 classes
    small.update(np.array([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2]]), np.array([0, 2]))
    r = small.result()
    np.testing.assert_allclose(r["top1"], [0.0])  # predictions 2 and 0, labels 0 and 2
    np.testing.assert_allclose(r["top5"], [1.0])


# ---------------------------------------------------------------------------------------------------------------
# focal loss

X = np.array([[2.0, -1.0, 0.5], [-3.0, 0.0, 4.0]])
Y = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def _focal_numpy(x, y, alpha, gamma):
    p = 1.0 / (1.0 + np.exp(-x))
    p_t = np.where(y == 1, p, 1 - p)
    alpha_t = np.where(y == 1, alpha, 1 - alpha)
    return (-alpha_t * (1 - p_t) ** gamma * np.log(p_t)).sum(-1).mean()     # sum over classes, mean over batch


def test_focal_loss_matches_numpy():
    for alpha, gamma in [(0.25, 2.0), (0.5, 1.0), (0.75, 3.0)]:
        got = float(focal_loss(jnp.asarray(X), jnp.asarray(Y), alpha=alpha, gamma=gamma))
        np.testing.assert_allclose(got, _focal_numpy(X, Y, alpha, gamma), rtol=1e-5)
    # one element by hand: x = 2, y = 1, alpha .25, gamma 2: p = 0.880797, loss = .25 * 0.119203^2 * 0.126928
    one = float(focal_loss(jnp.array([[2.0]]), jnp.array([[1.0]])))
    np.testing.assert_allclose(one, 0.25 * 0.119203 ** 2 * 0.126928, rtol=1e-4)


def test_focal_loss_gamma0_is_alpha_weighted_bce():
    alpha = 0.25
    p = 1.0 / (1.0 + np.exp(-X))
    bce = -(alpha * Y * np.log(p) + (1 - alpha) * (1 - Y) * np.log(1 - p))
    got = float(focal_loss(jnp.asarray(X), jnp.asarray(Y), alpha=alpha, gamma=0.0))
    np.testing.assert_allclose(got, bce.sum(-1).mean(), rtol=1e-5)


def test_focal_loss_is_stable_and_weights_drop_rows():
    x = jnp.array([[100.0, -100.0, 0.0], [-100.0, 100.0, 30.0]])
    y = jnp.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    loss, grad = jax.value_and_grad(lambda z: focal_loss(z, y))(x)
    assert np.isfinite(float(loss)) and np.all(np.isfinite(np.asarray(grad)))
    # confident wrong answers: loss ~ alpha_t * |x| each (p_t -> e^{-100}, (1 - p_t)^2 -> 1)
    assert float(loss) > 50.0
    # weight 0 on the second row = the first row alone
    w = focal_loss(jnp.asarray(X), jnp.asarray(Y), weights=jnp.array([1.0, 0.0]))
    np.testing.assert_allclose(float(w), _focal_numpy(X[:1], Y[:1], 0.25, 2.0), rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# actions = (verb, noun) pairs seen in training

# 2 verbs x 3 nouns; training has 5 of the 6 pairs -- (1, 1) never occurs -- with action ids given out of order and
# repeated as one per training row.
TRAIN = [(0, 0, 0), (1, 2, 4), (0, 1, 1), (0, 2, 2), (1, 0, 3), (0, 0, 0), (1, 2, 4)]


def test_action_scores_by_hand_with_unseen_pair_dropped():
    m = action_mapping(TRAIN)
    assert m.num_actions == 5
    assert m.verb_noun_to_action == {(0, 0): 0, (0, 1): 1, (0, 2): 2, (1, 0): 3, (1, 2): 4}
    verb = np.array([[0.7, 0.3]])
    noun = np.array([[0.5, 0.3, 0.2]])
    # columns = actions 0..4 = pairs (0,0) (0,1) (0,2) (1,0) (1,2):
    #   .7*.5 = .35, .7*.3 = .21, .7*.2 = .14, .3*.5 = .15, .3*.2 = .06; (1,1) = .3*.3 = .09 has no column
    np.testing.assert_allclose(action_scores(verb, noun, m), [[0.35, 0.21, 0.14, 0.15, 0.06]])
    np.testing.assert_allclose(np.asarray(action_scores(jnp.asarray(verb), jnp.asarray(noun), m)),
                               [[0.35, 0.21, 0.14, 0.15, 0.06]], rtol=1e-6)
    labels, seen = action_labels([1, 0, 1], [2, 0, 1], m)
    np.testing.assert_array_equal(labels, [4, 0, -1])
    np.testing.assert_array_equal(seen, [True, True, False])


def test_action_mapping_from_pairs_and_conflicts():
    m = action_mapping([(1, 0), (0, 2), (1, 0)])                 # ids by sorted pair: (0,2) -> 0, (1,0) -> 1
    assert m.verb_noun_to_action == {(0, 2): 0, (1, 0): 1}
    np.testing.assert_array_equal(m.verbs, [0, 1])
    np.testing.assert_array_equal(m.nouns, [2, 0])
    with pytest.raises(ValueError):
        action_mapping([(0, 0, 0), (0, 0, 1)])                   # one pair, two ids
    with pytest.raises(ValueError):
        action_mapping([(0, 0, 0), (0, 1, 0)])                   # one id, two pairs


def _anticipation_case():
    m = action_mapping(TRAIN)
    # H = 1; the tests use k = 1 (with 2 verbs, 3 nouns and 5 actions every row would be a top-5 hit).
    # Rows: (verb, noun) = (0,0) seen, (1,2) seen, (1,1) unseen in training.
    verb = np.array([[[0.7, 0.3], [0.4, 0.6], [0.1, 0.9]]])
    noun = np.array([[[0.5, 0.3, 0.2], [0.6, 0.1, 0.3], [0.2, 0.7, 0.1]]])
    return m, verb, noun, np.array([0, 1, 1]), np.array([0, 2, 1])


def test_anticipation_unseen_pairs_count_for_verb_and_noun_only():
    m, verb, noun, vl, nl = _anticipation_case()
    acc = AnticipationAccumulator(1, 2, 3, m, k=1)
    acc.update(verb, noun, vl, nl)
    r = acc.result()
    # verb top-1: argmax 0, 1, 1 vs labels 0, 1, 1 -> 3/3; noun: argmax 0, 0, 1 vs 0, 2, 1 -> 2/3
    assert int(r["verb"]["count"]) == 3 and int(r["noun"]["count"]) == 3
    np.testing.assert_allclose(r["verb"]["top1"], [1.0])
    np.testing.assert_allclose(r["noun"]["top1"], [2 / 3])
    # action: only the 2 seen rows. Row 0 scores .35 .21 .14 .15 .06 -> argmax (0,0) = label 0: hit.
    # Row 1: (0,0) .4*.6=.24, (0,1) .04, (0,2) .12, (1,0) .6*.6=.36, (1,2) .6*.3=.18 -> argmax (1,0), label (1,2): miss
    assert int(r["action"]["count"]) == 2
    np.testing.assert_allclose(r["action"]["top1"], [0.5])
    np.testing.assert_allclose(r["action"]["mean_class_recall5"], [0.5])     # classes 0 (1/1) and 4 (0/1)
    strict = AnticipationAccumulator(1, 2, 3, m, k=1, drop_unseen=True)
    strict.update(verb, noun, vl, nl)
    assert int(strict.result()["verb"]["count"]) == 2
    # direct action-head scores are used when given: make row 1 right
    direct = AnticipationAccumulator(1, 2, 3, m, k=1)
    direct.update(verb, noun, vl, nl, action_probs=np.array([[[1, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0.2] * 5]]))
    np.testing.assert_allclose(direct.result()["action"]["top1"], [1.0])


# ---------------------------------------------------------------------------------------------------------------
# report

GRID = [(1e-3, 0.01), (3e-4, 0.1), (1e-4, 0.4)]


def _close(a, b):
    return (a is None and (b is None or math.isnan(b))) or (a is not None and b is not None and
                                                            math.isclose(a, b, rel_tol=1e-12))


def test_classification_report_files_and_json_round_trip(tmp_path):
    acc = Accumulator(3, C)
    acc.update(PROBS, LABELS)
    res = acc.result()
    assert best_probe(res, "classification") == 0                  # top-1 4/6 > 2/6
    summary = write_results(tmp_path, res, GRID, "classification", class_names=[f"c{i}" for i in range(C)])
    for name in ("results.json", "results.md", "confusion.png"):
        assert (tmp_path / name).is_file() and (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loaded = json.loads((tmp_path / "results.json").read_text())
    assert loaded == summary
    assert loaded["best_index"] == 0 and loaded["best"]["lr"] == 1e-3 and loaded["best"]["wd"] == 0.01
    for h, p in enumerate(loaded["probes"]):
        assert (p["lr"], p["wd"]) == GRID[h]
        for k in ("top1", "top5", "mean_class_recall5"):
            assert _close(p[k], float(res[k][h])), (h, k)
    assert all(_close(a, b) for a, b in zip(loaded["best"]["per_class_recall5"], PER_CLASS_R5[0]))
    assert loaded["best"]["per_class_recall5"][4] is None          # absent class -> null, not NaN
    md = (tmp_path / "results.md").read_text().splitlines()
    rows = [line for line in md if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 3
    assert "**best**" in rows[0] and "**66.67**" in rows[0] and "**best**" not in rows[1] + rows[2]
    with pytest.raises(ValueError):
        write_results(tmp_path, res, GRID[:2], "classification")   # grid must match the probes


def test_report_accepts_run_dict_with_label_and_meta(tmp_path):
    acc = Accumulator(3, C, confusion=False)
    acc.update(PROBS, LABELS)
    run = {"label": acc.result(), "clips": 6, "train_seconds": np.float64(1.5), "skipped": object()}
    summary = write_results(tmp_path, run, GRID, "classification")
    assert summary["best_index"] == 0 and summary["probes"][1]["top5"] == pytest.approx(3 / 6)
    assert summary["meta"] == {"clips": 6, "train_seconds": 1.5}        # what JSON cannot hold is left out
    assert "confusion.png" not in summary["files"] and not (tmp_path / "confusion.png").exists()
    assert json.loads((tmp_path / "results.json").read_text()) == summary


def test_classification_report_many_classes(tmp_path):
    rng = np.random.default_rng(0)
    acc = Accumulator(2, 200)
    acc.update(rng.random((2, 500, 200)), rng.integers(0, 200, 500))
    write_results(tmp_path, acc.result(), GRID[:2], "classification", class_names=[str(i) for i in range(200)])
    assert (tmp_path / "confusion.png").stat().st_size > 0


def test_anticipation_report_files_and_json_round_trip(tmp_path):
    m, verb, noun, vl, nl = _anticipation_case()
    acc = AnticipationAccumulator(2, 2, 3, m, k=1)
    # probe 0 as in the case above (action top-1 1/2); probe 1 gets the actions right via direct scores
    action = np.stack([action_scores(verb[0], noun[0], m),
                       np.array([[1, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0.2] * 5])])
    acc.update(np.concatenate([verb, verb]), np.concatenate([noun, noun]), vl, nl, action_probs=action)
    res = acc.result()
    assert best_probe(res, "anticipation") == 1
    summary = write_results(tmp_path, res, GRID[:2], "anticipation",
                            class_names={"verb": ["take", "put"], "noun": ["plate", "cup", "knife"]})
    for name in ("results.json", "results.md", "recall5.png"):
        assert (tmp_path / name).is_file() and (tmp_path / name).stat().st_size > 0, name
    loaded = json.loads((tmp_path / "results.json").read_text())
    assert loaded == summary and loaded["best_index"] == 1
    assert loaded["count"] == {"verb": 3, "noun": 3, "action": 2}
    for h in range(2):
        for head in ("verb", "noun", "action"):
            assert _close(loaded["probes"][h][head]["mean_class_recall5"],
                          float(res[head]["mean_class_recall5"][h])), (h, head)
    assert loaded["best"]["action"]["per_class_recall5"] == [1.0, None, None, None, 1.0]
    md = (tmp_path / "results.md").read_text()
    assert "| 1 | 0.0003 | 0.1 |" in md and "**best**" in md
