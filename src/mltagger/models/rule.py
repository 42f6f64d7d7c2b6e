"""The product's decision rule: probabilities in, one approved tag out, or the fallback tag and
`needs_review` when the model is not confident enough for that tag.

The bottom of the model layer on purpose: the service applies exactly this code (with numpy
only), and evaluation scores exactly what the service would do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities from logits at a temperature: one function for training, calibration
    and every predictor, so the served probabilities are the ones the thresholds were chosen on."""
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


REASON_CLASSIFIER = "classifier"  # the model's top class, confident enough to apply
REASON_LOW_CONFIDENCE = "low_confidence"  # below the threshold: fallback tag + human review
# The out-of-scope gate (mltagger.models.gate) says the item may be about none of the topics:
# the fallback tag and human review. Not applied: on the default recipe's cross-fitted
# out-of-fold rows the items the shipped gate stops are out of scope 60% of the time, so an
# applied `other` would break the promise for `other` (docs/evaluation.md).
REASON_OUT_OF_SCOPE = "out_of_scope"
REASONS = (REASON_CLASSIFIER, REASON_LOW_CONFIDENCE, REASON_OUT_OF_SCOPE)
# The reasons of a tag applied without review (the product's automation).
AUTO_REASONS = (REASON_CLASSIFIER,)
# The reasons an item waits for a person.
REVIEW_REASONS = (REASON_LOW_CONFIDENCE, REASON_OUT_OF_SCOPE)


def reason(needs_review: bool, out_of_scope: bool = False) -> str:
    """Why an item got its tag: the classifier's answer, the fallback for low confidence, or the
    fallback because the gate put it out of scope (`other` can be any of the three, which is why
    the answer says so)."""
    if out_of_scope:
        return REASON_OUT_OF_SCOPE
    return REASON_LOW_CONFIDENCE if needs_review else REASON_CLASSIFIER


def gate_mask(in_scope: np.ndarray | None, gate_threshold: float | None, n: int) -> np.ndarray:
    """Which of n items the gate puts out of scope: in-scope probability below the threshold.

    No threshold: none. A threshold without the gate's probabilities is a configuration error
    (a rule that silently ran without its gate would auto-tag what the gate was meant to stop).
    """
    if gate_threshold is None:
        return np.zeros(n, dtype=bool)
    if in_scope is None:
        raise ValueError("a gate threshold needs the gate's in-scope probabilities")
    p = np.asarray(in_scope, dtype=float)
    if p.shape != (n,):
        raise ValueError(f"in-scope probabilities have shape {p.shape}, expected ({n},)")
    return p < float(gate_threshold)


Thresholds = float | Mapping[str, float]


def threshold_vector(threshold: Thresholds, label_names: Sequence[str]) -> np.ndarray:
    """One review threshold per class: a per-tag mapping, or the same number for every class.

    A mapping must name every class: a tag without a threshold would have no rule at all.
    """
    if isinstance(threshold, Mapping):
        missing = [t for t in label_names if t not in threshold]
        if missing:
            raise ValueError(f"per-tag thresholds miss the classes {missing}")
        return np.array([float(threshold[t]) for t in label_names], dtype=float)
    return np.full(len(label_names), float(threshold), dtype=float)


def is_per_tag(threshold: Thresholds | None) -> bool:
    return isinstance(threshold, Mapping)


def apply_threshold(
    probs: np.ndarray,
    label_names: Sequence[str],
    threshold: Thresholds,
    fallback_tag: str = "other",
    out_of_scope: np.ndarray | None = None,
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The product's decision rule: (tags, confidence, needs_review) for each row of probs.

    Confidence is the top probability. Below the threshold of the top class (one number for all
    classes, or one per tag) the tag is the fallback tag and the item needs review; otherwise the
    top class is applied automatically. Rows the gate put out of scope (`out_of_scope`, from
    `gate_mask`) get the fallback tag and review, whatever the topic softmax says: the softmax's
    errors on such items are confident, so no topic threshold would stop them.
    """
    probs = np.asarray(probs, dtype=float)
    top = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    review = conf < threshold_vector(threshold, label_names)[top]
    tags = [fallback_tag if r else label_names[k] for k, r in zip(top, review, strict=True)]
    if out_of_scope is not None:
        out = np.asarray(out_of_scope, dtype=bool)
        if out.shape != review.shape:
            raise ValueError(f"out_of_scope has shape {out.shape}, expected {review.shape}")
        review = review | out
        tags = [fallback_tag if o else t for t, o in zip(tags, out, strict=True)]
    return tags, conf, review


def with_gate(probs: np.ndarray, in_scope: np.ndarray, other: int) -> np.ndarray:
    """Class probabilities with an in-scope gate: each topic's share of the topics times the
    gate's probability that the item is in scope at all, and `other` the rest.

    The softmax alone does two jobs (which topic, and whether any); its errors on out-of-scope
    items are confident, so no topic threshold removes them. Under the gate the same per-tag
    rule (`apply_threshold`) applies unchanged, and `other` wins when the gate says no.
    """
    probs = np.asarray(probs, dtype=float)
    p_in = np.clip(np.asarray(in_scope, dtype=float), 0.0, 1.0)
    topics = probs.copy()
    topics[:, other] = 0.0
    total = topics.sum(axis=1, keepdims=True)
    even = np.full_like(topics, 1.0 / max(probs.shape[1] - 1, 1))
    even[:, other] = 0.0
    topics = np.where(total > 0, topics / np.where(total > 0, total, 1.0), even)
    out = topics * p_in[:, None]
    out[:, other] = 1.0 - p_in
    return out


NEVER = 1.01  # a threshold no probability reaches: the tag always goes to review
# The product's promise: automatic tags right more often than this, per tag (read on the lower
# bound of each tag's precision wherever the promise is reported).
PROMISE = 0.85


def threshold_json(threshold: Thresholds | None) -> float | dict | None:
    """A threshold as JSON: a number, a {tag: number} mapping, None for "never auto-tag"."""
    if threshold is None:
        return None
    if is_per_tag(threshold):
        return {t: (float(v) if np.isfinite(v) else None) for t, v in threshold.items()}
    return float(threshold) if np.isfinite(threshold) else None
