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


def reason(needs_review: bool) -> str:
    """Why an item got its tag: the classifier's answer, or the fallback for low confidence
    (`other` can be either, which is why the answer says so)."""
    return REASON_LOW_CONFIDENCE if needs_review else REASON_CLASSIFIER


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
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The product's decision rule: (tags, confidence, needs_review) for each row of probs.

    Confidence is the top probability. Below the threshold of the top class (one number for all
    classes, or one per tag) the tag is the fallback tag and the item needs review; otherwise the
    top class is applied automatically.
    """
    probs = np.asarray(probs, dtype=float)
    top = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    review = conf < threshold_vector(threshold, label_names)[top]
    tags = [fallback_tag if r else label_names[k] for k, r in zip(top, review, strict=True)]
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


def threshold_json(threshold: Thresholds | None) -> float | dict | None:
    """A threshold as JSON: a number, a {tag: number} mapping, None for "never auto-tag"."""
    if threshold is None:
        return None
    if is_per_tag(threshold):
        return {t: (float(v) if np.isfinite(v) else None) for t, v in threshold.items()}
    return float(threshold) if np.isfinite(threshold) else None
