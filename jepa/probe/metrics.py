"""Validation metrics for a grid of frozen-encoder probes, as V-JEPA 2 reports them.

A grid of H probes (learning rate x weight decay) is scored on the same validation clips; the best is reported.

* Classification (SSv2, Diving-48, ...): top-1 (the headline number) and top-5 accuracy, plus class-mean recall@5
  and an optional confusion matrix.
* EK100 action anticipation: three heads (verb, noun, action), each scored by class-mean Recall@5: the mean, over
  the classes present in the validation set, of the fraction of that class's examples whose true class is among the
  5 highest scores. Actions are the (verb, noun) pairs seen in training (`ActionMapping`); a validation row whose
  pair was never seen in training still counts for the verb and noun heads, not for the action head.

Everything is streaming (`update` batch by batch, `result` at the end): the state is a few counters per probe and
per class (and the optional [H, C, C] confusion matrix), nothing grows with the number of examples.

Ranking rule (ties): classes are ranked by decreasing score, equal scores by increasing class index -- the order of a
stable descending sort. So the top-1 prediction is `argmax` (first maximum) and "top-1 correct" is exactly
"argmax == label", consistent with the confusion matrix, and the result does not depend on an arbitrary tie break.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable

import numpy as np

__all__ = ["Accumulator", "AnticipationAccumulator", "ActionMapping", "action_mapping", "action_scores",
           "action_labels", "true_class_rank", "focal_loss"]


def true_class_rank(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """0-based rank of the true class in `scores` [..., B, C] for `labels` [B] (0 = top-1), with the tie rule of
    the module docstring: #classes scoring strictly higher + #classes with a lower index scoring the same.
    Labels must lie in [0, C)."""
    scores = np.asarray(scores)
    c = scores.shape[-1]
    labels = np.asarray(labels, np.int64)
    true = np.take_along_axis(scores, np.broadcast_to(labels[:, None], scores.shape[:-1] + (1,)), axis=-1)
    higher = (scores > true).sum(-1)
    earlier = np.arange(c) < labels[:, None]                     # [B, C]
    ties_before = ((scores == true) & earlier).sum(-1)
    return higher + ties_before


class Accumulator:
    """Streaming top-1 / top-k / class-mean recall@k / confusion for H probes over C classes.

    `update(probs [H, B, C], labels [B], valid [B])` may be called any number of times; `result()` gives the
    metrics of everything seen so far. Only the ranking of the scores matters, so logits work as well as
    probabilities. Rows with `valid` False are ignored entirely (their label may be anything, e.g. -1).

    `confusion=True` keeps an int64 [H, C, C] matrix (rows: true class, columns: top-1 prediction) -- fine for C up
    to a few hundred; pass `confusion=False` for large C (EK100 has thousands of actions).
    """

    def __init__(self, num_probes: int, num_classes: int, *, k: int = 5, confusion: bool = True):
        if num_probes < 1 or num_classes < 1 or k < 1:
            raise ValueError(f"need num_probes, num_classes, k >= 1, got {num_probes}, {num_classes}, {k}")
        self.num_probes, self.num_classes = int(num_probes), int(num_classes)
        self.k = min(int(k), self.num_classes)
        self.count = 0                                                     # valid examples seen
        self.top1_correct = np.zeros(self.num_probes, np.int64)            # [H]
        self.topk_correct = np.zeros(self.num_probes, np.int64)            # [H]
        self.class_count = np.zeros(self.num_classes, np.int64)            # [C] examples per true class
        self.class_topk = np.zeros((self.num_probes, self.num_classes), np.int64)   # [H, C] top-k hits per class
        self.confusion = (np.zeros((self.num_probes, self.num_classes, self.num_classes), np.int64)
                          if confusion else None)

    def update(self, probs, labels, valid=None) -> None:
        """Adds one batch: probs [H, B, C] (or [B, C] when H == 1), labels [B] int, valid [B] bool (default all)."""
        probs = np.asarray(probs)
        if probs.ndim == 2 and self.num_probes == 1:
            probs = probs[None]
        labels = np.asarray(labels).reshape(-1)
        b = labels.shape[0]
        if probs.shape != (self.num_probes, b, self.num_classes):
            raise ValueError(f"probs shape {probs.shape}, expected {(self.num_probes, b, self.num_classes)}")
        valid = np.ones(b, bool) if valid is None else np.asarray(valid, bool).reshape(-1)
        if valid.shape != (b,):
            raise ValueError(f"valid shape {valid.shape}, expected {(b,)}")
        if not valid.any():
            return
        probs, labels = probs[:, valid], labels[valid].astype(np.int64)
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"valid labels must lie in [0, {self.num_classes}), got {labels.min()}..{labels.max()}")

        rank = true_class_rank(probs, labels)                      # [H, B']
        hit1, hitk = rank == 0, rank < self.k
        self.count += labels.shape[0]
        self.top1_correct += hit1.sum(1)
        self.topk_correct += hitk.sum(1)
        self.class_count += np.bincount(labels, minlength=self.num_classes)
        for h in range(self.num_probes):                           # H is small (~20); bincount is O(B + C)
            self.class_topk[h] += np.bincount(labels, weights=hitk[h], minlength=self.num_classes).astype(np.int64)
        if self.confusion is not None:
            pred = probs.argmax(-1)                                # [H, B'] first maximum, as the tie rule
            h_idx = np.broadcast_to(np.arange(self.num_probes)[:, None], pred.shape)
            np.add.at(self.confusion, (h_idx, np.broadcast_to(labels, pred.shape), pred), 1)

    def merge(self, other: "Accumulator") -> "Accumulator":
        """Adds another accumulator's counts (e.g. from another host) into this one; returns self."""
        if (other.num_probes, other.num_classes, other.k) != (self.num_probes, self.num_classes, self.k):
            raise ValueError("accumulators differ in num_probes, num_classes or k")
        self.count += other.count
        self.top1_correct += other.top1_correct
        self.topk_correct += other.topk_correct
        self.class_count += other.class_count
        self.class_topk += other.class_topk
        if self.confusion is not None:
            if other.confusion is None:
                raise ValueError("cannot merge an accumulator without a confusion matrix into one with it")
            self.confusion += other.confusion
        return self

    def result(self) -> dict[str, np.ndarray]:
        """Metrics per probe, as fractions in [0, 1] (NaN where there is nothing to average):

        top1 [H], top5 [H] (top-k for the accumulator's k), mean_class_recall5 [H] (mean over classes with at least
        one valid example), per_class_recall5 [H, C] (NaN for classes without examples), count (valid examples,
        0-d), class_count [C], and confusion [H, C, C] when kept."""
        n = self.count
        with np.errstate(invalid="ignore", divide="ignore"):
            top1 = self.top1_correct / n if n else np.full(self.num_probes, np.nan)
            topk = self.topk_correct / n if n else np.full(self.num_probes, np.nan)
            present = self.class_count > 0
            per_class = np.where(present, self.class_topk / np.maximum(self.class_count, 1), np.nan)
            mean_class = (per_class[:, present].mean(1) if present.any() else np.full(self.num_probes, np.nan))
        out = {"top1": np.asarray(top1, np.float64), "top5": np.asarray(topk, np.float64),
               "mean_class_recall5": np.asarray(mean_class, np.float64),
               "per_class_recall5": np.asarray(per_class, np.float64),
               "count": np.asarray(n, np.int64), "class_count": self.class_count.copy()}
        if self.confusion is not None:
            out["confusion"] = self.confusion.copy()
        return out


# ----------------------------------------------------------------------------------------------------------------
# Sigmoid focal loss (the EK100 anticipation probe's training loss)

def focal_loss(logits, targets_onehot, alpha: float = 0.25, gamma: float = 2.0, weights=None):
    """Sigmoid focal loss (Lin et al. 2017), jax.numpy, numerically stable.

    Per element, with p = sigmoid(x), y in {0, 1}:
        p_t = p if y else 1 - p,   alpha_t = alpha if y else 1 - alpha,
        loss = -alpha_t * (1 - p_t) ** gamma * log(p_t)
    log(p_t) is computed as log_sigmoid(+-x) and 1 - p_t as sigmoid(-+x), so large |x| gives neither NaN nor inf.
    With gamma = 0 it is the alpha-weighted binary cross-entropy. Soft targets in [0, 1] are accepted (the two
    terms are then mixed linearly in y).

    Reduction: summed over classes, averaged over examples (all leading axes; with `weights` [...] a weighted mean,
    e.g. 0 for padding rows). Why: each class is an independent binary problem, and with one positive per example
    this is RetinaNet's "sum, divided by the number of positives". Averaging over classes instead would divide the
    loss -- and so the effective learning rate -- by C, which differs by 40x between the verb (97), noun (300) and
    action (thousands) heads that share one optimiser.
    """
    import jax
    import jax.numpy as jnp

    x = jnp.asarray(logits, jnp.float32)
    y = jnp.asarray(targets_onehot, x.dtype)
    log_p, log_not_p = jax.nn.log_sigmoid(x), jax.nn.log_sigmoid(-x)
    pos = alpha * jnp.exp(gamma * log_not_p) * (-log_p)              # y = 1: (1 - p)^gamma = sigmoid(-x)^gamma
    neg = (1.0 - alpha) * jnp.exp(gamma * log_p) * (-log_not_p)      # y = 0: p^gamma
    per_example = (y * pos + (1.0 - y) * neg).sum(-1)
    if weights is None:
        return per_example.mean()
    w = jnp.broadcast_to(jnp.asarray(weights, x.dtype), per_example.shape)
    return (per_example * w).sum() / jnp.maximum(w.sum(), 1e-12)


# ----------------------------------------------------------------------------------------------------------------
# EK100 actions = (verb, noun) pairs seen in training

@dataclasses.dataclass(frozen=True)
class ActionMapping:
    """The action vocabulary: the (verb, noun) pairs seen in training.

    Column j of an action score array is action `actions[j]` = pair (`verbs[j]`, `nouns[j]`); columns are sorted by
    action id, so when the ids are 0..A-1 the column is the id."""
    verb_noun_to_action: dict          # (verb, noun) -> action id
    actions: np.ndarray                # [A] action ids, increasing
    verbs: np.ndarray                  # [A] verb class of each column
    nouns: np.ndarray                  # [A] noun class of each column
    pair_to_column: dict               # (verb, noun) -> column

    @property
    def num_actions(self) -> int:
        return int(self.actions.shape[0])


def action_mapping(pairs_train: Iterable) -> ActionMapping:
    """Builds the action vocabulary from training rows.

    `pairs_train` holds (verb, noun, action) triples -- repeats are fine, one per training row is the usual input --
    or (verb, noun) pairs, in which case action ids 0..A-1 are given in sorted (verb, noun) order. A pair mapped to
    two action ids, or an id given to two pairs, is an error."""
    pair_to_action: dict[tuple[int, int], int] = {}
    action_to_pair: dict[int, tuple[int, int]] = {}
    pairs_only = None
    for row in pairs_train:
        row = tuple(int(v) for v in row)
        if len(row) not in (2, 3):
            raise ValueError(f"expected (verb, noun) or (verb, noun, action), got {row}")
        if pairs_only is None:
            pairs_only = len(row) == 2
        elif pairs_only != (len(row) == 2):
            raise ValueError("mixed (verb, noun) and (verb, noun, action) rows")
        pair = row[:2]
        if pairs_only:
            pair_to_action.setdefault(pair, -1)
            continue
        a = row[2]
        if pair_to_action.setdefault(pair, a) != a:
            raise ValueError(f"pair {pair} has two action ids: {pair_to_action[pair]} and {a}")
        if action_to_pair.setdefault(a, pair) != pair:
            raise ValueError(f"action {a} is given to two pairs: {action_to_pair[a]} and {pair}")
    if pairs_only:
        pair_to_action = {p: i for i, p in enumerate(sorted(pair_to_action))}
    order = sorted(pair_to_action.items(), key=lambda kv: kv[1])
    return ActionMapping(
        verb_noun_to_action=dict(pair_to_action),
        actions=np.array([a for _, a in order], np.int64),
        verbs=np.array([p[0] for p, _ in order], np.int64),
        nouns=np.array([p[1] for p, _ in order], np.int64),
        pair_to_column={p: j for j, (p, _) in enumerate(order)})


def action_scores(verb_probs, noun_probs, mapping: ActionMapping):
    """Action scores [..., A] from verb [..., V] and noun [..., N] probabilities: p(verb) * p(noun) for each
    (verb, noun) pair seen in training, in the column order of `mapping` (pairs never seen in training get no
    column, i.e. are dropped). Treats verb and noun as independent given the clip; works on numpy and jax arrays.
    Feed probabilities (softmax or sigmoid), not logits: a product of logits does not rank pairs sensibly."""
    return verb_probs[..., mapping.verbs] * noun_probs[..., mapping.nouns]


def action_labels(verb_labels, noun_labels, mapping: ActionMapping) -> tuple[np.ndarray, np.ndarray]:
    """Maps validation (verb, noun) labels [B] to action columns: returns (labels [B] int64, seen [B] bool); rows
    whose pair was not seen in training get label -1 and seen False. Use `valid & seen` for the action head."""
    v = np.asarray(verb_labels, np.int64).reshape(-1)
    n = np.asarray(noun_labels, np.int64).reshape(-1)
    cols = np.array([mapping.pair_to_column.get((int(a), int(b)), -1) for a, b in zip(v, n)], np.int64)
    return cols, cols >= 0


class AnticipationAccumulator:
    """EK100 anticipation metrics for H probes: one `Accumulator` per head ('verb', 'noun', 'action').

    `update(verb_probs [H,B,V], noun_probs [H,B,N], verb_labels [B], noun_labels [B], valid [B], action_probs=None)`:
    `action_probs` [H, B, A] are the action head's scores in `mapping`'s column order; when None they are
    `action_scores(verb_probs, noun_probs, mapping)`. Rows whose (verb, noun) pair was not seen in training count for
    verb and noun and not for action -- or for nothing with `drop_unseen=True` (the stricter reading "validation
    rows with unseen pairs dropped"). `result()` -> {'verb': ..., 'noun': ..., 'action': ...}, each as
    `Accumulator.result()`; the reported metric is 'mean_class_recall5'. Confusion matrices are off by default."""

    heads = ("verb", "noun", "action")

    def __init__(self, num_probes: int, num_verbs: int, num_nouns: int, mapping: ActionMapping, *, k: int = 5,
                 confusion: bool = False, drop_unseen: bool = False):
        self.mapping, self.drop_unseen = mapping, drop_unseen
        self.acc = {"verb": Accumulator(num_probes, num_verbs, k=k, confusion=confusion),
                    "noun": Accumulator(num_probes, num_nouns, k=k, confusion=confusion),
                    "action": Accumulator(num_probes, mapping.num_actions, k=k, confusion=confusion)}

    def update(self, verb_probs, noun_probs, verb_labels, noun_labels, valid=None, action_probs=None) -> None:
        verb_probs, noun_probs = np.asarray(verb_probs), np.asarray(noun_probs)
        b = np.asarray(verb_labels).reshape(-1).shape[0]
        valid = np.ones(b, bool) if valid is None else np.asarray(valid, bool).reshape(-1)
        cols, seen = action_labels(verb_labels, noun_labels, self.mapping)
        vn_valid = valid & seen if self.drop_unseen else valid
        self.acc["verb"].update(verb_probs, verb_labels, vn_valid)
        self.acc["noun"].update(noun_probs, noun_labels, vn_valid)
        if action_probs is None:
            action_probs = action_scores(verb_probs, noun_probs, self.mapping)
        self.acc["action"].update(action_probs, cols, valid & seen)

    def result(self) -> dict[str, dict[str, np.ndarray]]:
        return {h: self.acc[h].result() for h in self.heads}

