"""A prequential replay of the labelled stream pool: what a review-queue strategy buys per label.

The stream is replayed in `created_on` order, one simulated day (`day_size` items) at a time:
1. the day's items are scored by the current model and decided by the decision rule as run
   (auto-tag when the top probability reaches its tag's threshold, else the review queue) -
   before the model learns anything from them;
2. reviewers answer at most `budget` queued items, in the strategy's order
   (mltagger.models.queue, the code the service runs), with an error rate;
3. the model learns from every answer so far, and the thresholds are chosen again.

The gold tags are read in two places only: by the simulated reviewer (`Reviewer`), for the items
it is asked about, and by `windows`, after the replay, to score the decisions. Nothing the replay
decides can depend on the gold tag of an item nobody reviewed (a test permutes those tags and
checks every decision is the same).

The learner is the cheap update the issue allows for many runs: a multinomial logistic head on
frozen embeddings of the current encoder, trained on the shipped recipe's train split plus the
reviewed pool items. Thresholds are re-chosen from labelled items only: per tag, the lowest
threshold at which at least `min_support` labelled items reach it and `precision_target` of them
are right, on the val split (out of sample for the head) and the reviewed pool items scored as
they were scored on their day (before the model learned from them). A tag with no such point is
never applied automatically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from sklearn.linear_model import LogisticRegression

from mltagger.core.errors import UserError
from mltagger.evaluation.stats import wilson_bounds
from mltagger.models.queue import check_strategy
from mltagger.models.queue import order as queue_order
from mltagger.models.rule import with_gate


@dataclass(frozen=True)
class ReplaySettings:
    """One replay: the strategy and the simulated people (defaults: the issue's)."""

    strategy: str
    day_size: int = 30
    budget: int = 8
    error_rate: float = 0.0
    # None: off. With more items queued a day than the budget, any maximum age hands every
    # label to the overdue items in the end, and every strategy becomes oldest-first.
    max_age_days: float | None = None
    random_share: float = 0.1
    precision_target: float = 0.92
    min_support: int = 10
    pool_weight: float = 2.0
    # Labels a day spent on uniformly random auto-tagged items of that day (the product's audit
    # sample): the only labels that say how precise the applied tags are.
    audit_per_day: int = 0
    # "val": thresholds on the val split plus the reviewed pool items (as first run);
    # "stream": per tag on the pool's own labels, each weighted by the inverse of its chance of
    # being asked (audit and queue apart), the val threshold until a tag has min_support of them.
    thresholds: str = "val"
    # How out-of-scope items are told apart (the negatives: real texts of no topic, train only):
    # "none" (the head's `other` class as shipped), "as_other" (the negatives join the head's
    # `other` class), "logistic" (a separate in-scope head on the same embeddings, trained on
    # the train split's topic/other split, the negatives and the reviewed items, combined with
    # the topic head by models.rule.with_gate).
    gate: str = "none"
    seed: int = 0

    def __post_init__(self) -> None:
        check_strategy(self.strategy)
        if self.budget < 1:
            raise UserError(f"budget must be at least 1 label a day, not {self.budget}")
        if self.day_size < 1:
            raise UserError(f"day_size must be at least 1, not {self.day_size}")
        if not 0.0 <= self.error_rate < 1.0:
            raise UserError(f"error_rate must be in [0, 1), not {self.error_rate}")
        if not 0 <= self.audit_per_day <= self.budget:
            raise UserError(f"audit_per_day must be in [0, budget], not {self.audit_per_day}")
        if self.thresholds not in ("val", "stream"):
            raise UserError(f"thresholds must be val or stream, not {self.thresholds!r}")
        if not 0.0 < self.precision_target <= 1.0:
            raise UserError(f"precision_target must be in (0, 1], not {self.precision_target}")
        if self.gate not in GATES:
            raise UserError(f"gate must be one of {', '.join(GATES)}, not {self.gate!r}")


GATES = ("none", "as_other", "logistic")


class Reviewer:
    """The only holder of the pool's gold tags during a replay: answers for the items it is
    asked about (a wrong tag, uniformly among the others, with `error_rate`)."""

    def __init__(self, gold: np.ndarray, n_classes: int, error_rate: float, seed: int) -> None:
        self._gold = np.asarray(gold)
        self._n = n_classes
        self._error = error_rate
        self._rng = np.random.default_rng(seed)
        self.asked: list[int] = []

    def answer(self, i: int) -> int:
        self.asked.append(int(i))
        gold = int(self._gold[i])
        if self._error and self._rng.random() < self._error:
            return int(self._rng.choice([c for c in range(self._n) if c != gold]))
        return gold


def choose_thresholds(
    probs: np.ndarray,
    labels: np.ndarray,
    target: float,
    min_support: int,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Per class, the lowest top-probability at which at least `min_support` labelled items
    whose top class it is reach it, `target` of them right (weighted by `weights`, the inverse
    of each item's chance of being labelled, when given); 1.01 (never) when none does."""
    n_classes = probs.shape[1]
    out = np.full(n_classes, 1.01)
    top = probs.argmax(axis=1)
    w_all = np.ones(len(labels)) if weights is None else np.asarray(weights, dtype=float)
    for c in range(n_classes):
        mine = top == c
        p = probs[mine, c]
        right = labels[mine] == c
        order = np.argsort(-p, kind="stable")
        w = w_all[mine][order]
        hits = np.cumsum(w * right[order])
        n = np.arange(1, len(order) + 1)
        ok = (n >= min_support) & (hits >= target * np.cumsum(w) - 1e-9)
        if ok.any():
            out[c] = p[order][np.flatnonzero(ok).max()]
    return out


@dataclass
class ReplayLog:
    """What the replay did, item by item (indices into the pool, in replay order)."""

    order: np.ndarray  # pool indices in the order they arrived
    day: np.ndarray  # the day each arrived
    probs: np.ndarray  # scores on arrival (before the model learned from that day)
    auto: np.ndarray  # applied automatically (True) or queued for a person
    tag: np.ndarray  # the top class on arrival
    labels_by_day: list[int] = field(default_factory=list)  # labels spent by the end of each day
    weights: list[float] = field(default_factory=list)  # 1 / chance of being asked, per answer
    audited: int = 0  # answers spent on the audit sample
    overdue_labels: int = 0  # labels that went to items past the maximum age
    reviewed: list[int] = field(default_factory=list)  # pool indices, in answer order
    answers: list[int] = field(default_factory=list)
    thresholds: list[np.ndarray] = field(default_factory=list)  # in force on each day


def _fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, seed: int, previous=None):
    """The cheap update: a multinomial logistic head (a class with no example scores 0),
    started from the previous day's weights when the classes are the same (fewer iterations
    to the same optimum)."""
    if previous is not None and set(np.unique(y)) == set(previous.classes_):
        previous.fit(x, y, sample_weight=w)
        return previous
    head = LogisticRegression(C=1.0, max_iter=300, random_state=seed, warm_start=True)
    head.fit(x, y, sample_weight=w)
    return head


def _proba(head, x: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.zeros((len(x), n_classes))
    out[:, head.classes_] = head.predict_proba(x)
    return out


class Learner(Protocol):
    """What the replay learns with: fit on the labelled pool items so far (pool indices and the
    reviewers' answers), then score pool items and the val split."""

    def fit(self, pool_ix: np.ndarray, labels: np.ndarray) -> None: ...

    def proba(self, pool_ix: np.ndarray) -> np.ndarray: ...

    def proba_val(self) -> np.ndarray: ...


class HeadLearner:
    """The cheap update with its gate: the topic head on frozen embeddings, and (gate
    "logistic") an in-scope head on the same embeddings; `proba` is what the rule reads."""

    def __init__(
        self,
        pool_x: np.ndarray,
        base: tuple[np.ndarray, np.ndarray],
        val_x: np.ndarray,
        settings: ReplaySettings,
        n_classes: int,
        negatives: np.ndarray | None = None,
        other: int | None = None,
    ) -> None:
        s = settings
        if s.gate != "none" and (negatives is None or other is None):
            raise UserError(f"gate {s.gate!r} needs the negatives and the `other` class")
        self.s, self.n, self.other = s, n_classes, other
        self.pool_x, self.val_x = pool_x, val_x
        self.base_x, self.base_y = base
        self.neg = negatives if s.gate != "none" else None
        self.head = None
        self.gate = (
            InScopeGate(self.base_x, self.base_y, self.neg, other, s)
            if s.gate == ("logistic")
            else None
        )
        self.fit(np.zeros(0, dtype=int), np.zeros(0, dtype=int))

    def fit(self, pool_ix: np.ndarray, labels: np.ndarray) -> None:
        """Train on the base split, the negatives (as the gate says) and the labelled items."""
        s = self.s
        lx = self.pool_x[np.asarray(pool_ix, dtype=int)]
        xs, ys = [self.base_x, lx], [self.base_y, np.asarray(labels, dtype=int)]
        ws = [np.ones(len(self.base_y)), np.full(len(lx), s.pool_weight)]
        if s.gate == "as_other":
            xs.insert(1, self.neg)
            ys.insert(1, np.full(len(self.neg), self.other))
            ws.insert(1, np.ones(len(self.neg)))
        self.head = _fit(np.vstack(xs), np.concatenate(ys), np.concatenate(ws), s.seed, self.head)
        if self.gate is not None:
            self.gate.fit(lx, labels)

    def _scores(self, x: np.ndarray) -> np.ndarray:
        p = _proba(self.head, x, self.n)
        return p if self.gate is None else with_gate(p, self.gate.in_scope(x), self.other)

    def proba(self, pool_ix: np.ndarray) -> np.ndarray:
        return self._scores(self.pool_x[np.asarray(pool_ix, dtype=int)])

    def proba_val(self) -> np.ndarray:
        return self._scores(self.val_x)


class InScopeGate:
    """Whether an item belongs to any topic: a logistic head on frozen embeddings, trained on
    the base split (topic items against `other` ones), the negatives (real texts of no topic,
    always out of scope) and the labelled pool items (weighted like the topic head's)."""

    def __init__(
        self,
        base_x: np.ndarray,
        base_y: np.ndarray,
        negatives: np.ndarray,
        other: int,
        settings: ReplaySettings,
    ) -> None:
        self.x = np.vstack([base_x, negatives])
        self.y = np.concatenate([base_y != other, np.zeros(len(negatives), dtype=bool)])
        self.other, self.s, self.head = other, settings, None

    def fit(self, lx: np.ndarray, labels: np.ndarray) -> None:
        x = np.vstack([self.x, lx])
        y = np.concatenate([self.y, np.asarray(labels) != self.other]).astype(int)
        w = np.concatenate([np.ones(len(self.y)), np.full(len(lx), self.s.pool_weight)])
        self.head = _fit(x, y, w, self.s.seed, self.head)

    def in_scope(self, x: np.ndarray) -> np.ndarray:
        return self.head.predict_proba(x)[:, list(self.head.classes_).index(1)]


def replay(
    pool_x: np.ndarray,
    reviewer: Reviewer,
    base: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    settings: ReplaySettings,
    n_classes: int,
    arrival: Sequence[int] | None = None,
    negatives: np.ndarray | None = None,
    other: int | None = None,
    learner: Learner | None = None,
) -> ReplayLog:
    """Replay the pool (`arrival`: pool indices in stream order; default as given) and log
    every decision; the learner starts from `base` (the train split: embeddings, labels) and,
    under a gate, `negatives` (embeddings of texts of no topic; `other`: that class's index).
    `learner`: another learner than the cheap head (the warm-start fine-tune)."""
    s = settings
    arrival = np.arange(len(pool_x)) if arrival is None else np.asarray(arrival)
    val_x, val_y = val
    if learner is None:
        learner = HeadLearner(pool_x, base, val_x, s, n_classes, negatives, other)
    thresholds = choose_thresholds(learner.proba_val(), val_y, s.precision_target, s.min_support)
    audit_rng = np.random.default_rng([s.seed, 7])
    n = len(arrival)
    log = ReplayLog(
        order=arrival,
        day=np.zeros(n, dtype=int),
        probs=np.zeros((n, n_classes)),
        auto=np.zeros(n, dtype=bool),
        tag=np.zeros(n, dtype=int),
    )
    queue: list[int] = []  # positions in `arrival` waiting for a person
    labelled: list[int] = []  # positions answered
    for d, start in enumerate(range(0, n, s.day_size)):
        today = np.arange(start, min(start + s.day_size, n))
        p = learner.proba(arrival[today])
        top = p.argmax(axis=1)
        auto = p[np.arange(len(today)), top] >= thresholds[top]
        log.day[today], log.probs[today], log.tag[today], log.auto[today] = d, p, top, auto
        log.thresholds.append(thresholds.copy())
        queue += [int(i) for i in today[~auto]]
        applied = today[auto]
        n_audit = min(s.audit_per_day, len(applied))
        for pos in audit_rng.choice(applied, size=n_audit, replace=False) if n_audit else []:
            log.reviewed.append(int(arrival[pos]))
            log.answers.append(reviewer.answer(int(arrival[pos])))
            log.weights.append(len(applied) / n_audit)
            labelled.append(int(pos))
            log.audited += 1
        room = s.budget - n_audit
        if queue and room:
            q = np.asarray(queue)
            counts = np.bincount(np.asarray(log.answers, dtype=int), minlength=n_classes)
            ranked = queue_order(
                s.strategy,
                log.probs[q],
                (d - log.day[q]).astype(float),
                max_age=s.max_age_days,
                random_share=0.0 if s.strategy == "oldest" else s.random_share,
                embeddings=pool_x[arrival[q]] if s.strategy == "diverse_ties" else None,
                label_counts=dict(enumerate(counts.tolist())),
                k=room,
                seed=s.seed * 100_003 + d,
            )
            taken = [int(q[i]) for i in ranked[:room]]
            if s.max_age_days is not None:
                log.overdue_labels += sum(d - int(log.day[i]) >= s.max_age_days for i in taken)
            for pos in taken:
                log.reviewed.append(int(arrival[pos]))
                log.answers.append(reviewer.answer(int(arrival[pos])))
                log.weights.append(len(q) / len(taken))
                labelled.append(pos)
            queue = [i for i in queue if i not in set(taken)]
        learned = len(labelled) > (log.labels_by_day[-1] if log.labels_by_day else 0)
        log.labels_by_day.append(len(labelled))
        if learned:
            ly = np.asarray(log.answers)
            learner.fit(arrival[labelled], ly)
            val_p = learner.proba_val()
            if s.thresholds == "val":
                thresholds = choose_thresholds(
                    np.vstack([val_p, log.probs[labelled]]),
                    np.concatenate([val_y, ly]),
                    s.precision_target,
                    s.min_support,
                )
            else:
                thresholds = _stream_thresholds(
                    val_p, val_y, log.probs[labelled], ly, np.asarray(log.weights), s
                )
    return log


def _stream_thresholds(
    val_p: np.ndarray,
    val_y: np.ndarray,
    pool_p: np.ndarray,
    pool_y: np.ndarray,
    weights: np.ndarray,
    s: ReplaySettings,
) -> np.ndarray:
    """Per tag: from the pool's own weighted labels once `min_support` of them have that tag
    on top; until then from the val split."""
    from_val = choose_thresholds(val_p, val_y, s.precision_target, s.min_support)
    from_pool = choose_thresholds(pool_p, pool_y, s.precision_target, s.min_support, weights)
    enough = np.bincount(pool_p.argmax(axis=1), minlength=val_p.shape[1]) >= s.min_support
    return np.where(enough, from_pool, from_val)


def windows(
    log: ReplayLog, gold: np.ndarray, size: int = 100, also: np.ndarray | None = None
) -> list[dict]:
    """Auto-tag coverage and precision per window of `size` arriving items (the decision rule as
    run), with the precision's 95% Wilson interval and the labels spent by the window's end.

    `also` (per pool item, the class a careful reader could defend beside the gold one, -1 for
    none): adds `precision_also`, the share of applied tags that are the gold or that class.
    Only the strict precision is read against the targets."""
    right = log.tag == np.asarray(gold)[log.order]
    defensible = right if also is None else right | (log.tag == np.asarray(also)[log.order])
    out = []
    for start in range(0, len(log.order), size):
        sl = slice(start, min(start + size, len(log.order)))
        auto, ok = log.auto[sl], right[sl] & log.auto[sl]
        n_auto = int(auto.sum())
        lo, hi = wilson_bounds(int(ok.sum()), n_auto) if n_auto else (np.nan, np.nan)
        last_day = int(log.day[sl].max())
        out.append(
            {
                "items": int(sl.stop - sl.start),
                "coverage": float(auto.mean()),
                "auto": n_auto,
                "precision": float(ok.sum() / n_auto) if n_auto else float("nan"),
                "precision_low": float(lo),
                "precision_high": float(hi),
                "precision_also": float((defensible[sl] & auto).sum() / n_auto)
                if n_auto
                else float("nan"),
                "labels": int(log.labels_by_day[last_day]),
            }
        )
    return out
