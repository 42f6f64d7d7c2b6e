"""Secondary tags (issue 35): the other topics a reader following them would want an item under.

The primary tag keeps the product's rule (`mltagger.models.rule`) untouched; this is a separate
scorer, so adding it cannot move one primary figure. It scores "this tag belongs to the item"
(the gold tag or the gold `also`) either with the primary model's own calibrated probabilities
(`second-score`) or with a small head over those probabilities and a word TF-IDF vector of the
text (`tfidf+probs`, the gate's featuriser `mltagger.models.gate.Block`), fitted with
scikit-learn (`mltagger.training.secondary`) and scored here in numpy so the service stays free
of the training stack. Which kind, and both thresholds, are chosen on the stream pool's folds.

Only topics are ever secondary (an item is not "also out of scope"). A secondary tag is applied
only beside a primary tag applied without review, and only at or above a threshold that reached
the precision target on cross-validation; below it (or with none) the tag can still be offered
to a reviewer, who adds or drops it on the review page.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mltagger.models.gate import Block

SECONDARY_FILE = "secondary.json"
KINDS = ("second-score", "tfidf+probs")


def _threshold(value: object) -> float | None:
    """A threshold from secondary.json: a probability, or null for "never"."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"threshold {value!r} is not a probability in [0, 1] or null")
    return float(value)


@dataclass
class SecondaryHead:
    """P(tag belongs to the item) per tag, and the two thresholds that turn it into tags.

    Kinds: `second-score` scores each tag with the primary model's own calibrated probability
    (no parameters); `tfidf+probs` with sigmoid(probs . a_t + tfidf . w_t + b_t). Which one a
    folder ships is chosen on cross-validation (`mltagger.training.secondary`).

    `apply_threshold`: a secondary tag at or above it is applied with the primary one (None: no
    threshold reached the precision target on CV, so none is applied). `suggest_threshold`: at
    or above it the tag is offered to a reviewer, who adds or drops it (None: never offered).
    """

    labels: list[str]
    apply_threshold: float | None
    suggest_threshold: float | None = None
    kind: str = "second-score"
    block: Block | None = None
    coef_words: np.ndarray | None = None  # (vocabulary, tags)
    coef_probs: np.ndarray | None = None  # (tags, tags): rows are the primary's probabilities
    intercept: np.ndarray | None = None  # (tags,)
    fallback_tag: str = "other"
    max_tags: int = 2
    # How the thresholds were chosen (CV figures, targets), kept for the model card.
    provenance: dict = field(default_factory=dict)

    def scores(self, texts: Sequence[str], probs: np.ndarray) -> np.ndarray:
        """(items, tags) membership scores of texts whose primary probabilities are probs."""
        probs = np.asarray(probs, dtype=float)
        if probs.shape != (len(texts), len(self.labels)):
            raise ValueError(
                f"probabilities have shape {probs.shape}, expected "
                f"({len(texts)}, {len(self.labels)})"
            )
        if self.kind == "second-score":
            return probs.copy()
        z = probs @ self.coef_probs + self.intercept
        for i, text in enumerate(texts):
            cols, values = self.block.vector(text)
            if len(cols):
                z[i] += values @ self.coef_words[cols]
        return 1.0 / (1.0 + np.exp(-z))

    def candidates(self, primary: str, row: np.ndarray, threshold: float | None) -> list:
        """(tag, score) of the topics other than `primary` at or above threshold, best first."""
        if threshold is None:
            return []
        picks = [
            (t, float(s))
            for t, s in zip(self.labels, row, strict=True)
            if t not in (primary, self.fallback_tag) and s >= threshold
        ]
        return sorted(picks, key=lambda p: -p[1])[: self.max_tags]

    def secondary(
        self, primary: Sequence[str], needs_review: Sequence[bool], scores: np.ndarray
    ) -> list[list[tuple[str, float]]]:
        """For each item, its applied secondary tags with their scores: only beside a primary
        tag applied without review, only topics, only at or above apply_threshold."""
        return [
            [] if review else self.candidates(tag, row, self.apply_threshold)
            for tag, review, row in zip(primary, needs_review, scores, strict=True)
        ]

    def suggestions(self, top_tag: str, row: np.ndarray) -> list[tuple[str, float]]:
        """What a reviewer is offered beside the model's top tag (never applied by itself)."""
        return self.candidates(top_tag, row, self.suggest_threshold)

    def to_dict(self) -> dict:
        out = {
            "kind": self.kind,
            "labels": self.labels,
            "apply_threshold": self.apply_threshold,
            "suggest_threshold": self.suggest_threshold,
            "fallback_tag": self.fallback_tag,
            "max_tags": self.max_tags,
            "provenance": self.provenance,
        }
        if self.kind == "tfidf+probs":
            out |= {
                "intercept": self.intercept.tolist(),
                "coef_probs": self.coef_probs.tolist(),
                "block": {
                    "analyzer": self.block.analyzer,
                    "ngram_range": list(self.block.ngram_range),
                    "terms": sorted(self.block.vocabulary, key=self.block.vocabulary.__getitem__),
                    "idf": self.block.idf.tolist(),
                },
                "coef_words": self.coef_words.tolist(),
            }
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> SecondaryHead:
        kind = raw.get("kind")
        if kind not in KINDS:
            raise ValueError(f"secondary head kind {kind!r}: this version reads {KINDS}")
        labels = list(raw["labels"])
        fitted: dict = {}
        if kind == "tfidf+probs":
            b = raw["block"]
            coef_words = np.asarray(raw["coef_words"], dtype=float)
            if coef_words.shape != (len(b["terms"]), len(labels)) or len(b["idf"]) != len(
                b["terms"]
            ):
                raise ValueError("secondary head: terms, idf and word weights differ in shape")
            fitted = {
                "block": Block(
                    analyzer=b["analyzer"],
                    ngram_range=(int(b["ngram_range"][0]), int(b["ngram_range"][1])),
                    vocabulary={t: i for i, t in enumerate(b["terms"])},
                    idf=np.asarray(b["idf"], dtype=float),
                ),
                "coef_words": coef_words,
                "coef_probs": np.asarray(raw["coef_probs"], dtype=float).reshape(
                    len(labels), len(labels)
                ),
                "intercept": np.asarray(raw["intercept"], dtype=float),
            }
        return cls(
            labels=labels,
            apply_threshold=_threshold(raw.get("apply_threshold")),
            suggest_threshold=_threshold(raw.get("suggest_threshold")),
            kind=kind,
            fallback_tag=str(raw.get("fallback_tag", "other")),
            max_tags=int(raw.get("max_tags", 2)),
            provenance=dict(raw.get("provenance", {})),
            **fitted,
        )

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / SECONDARY_FILE
        path.write_text(json.dumps(self.to_dict()))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> SecondaryHead | None:
        """The folder's head, or None when the folder has none (a model made before issue 35)."""
        path = Path(folder) / SECONDARY_FILE
        if not path.is_file():
            return None
        return cls.from_dict(json.loads(path.read_text()))


def tags_field(
    primary: str, confidence: float, secondary: Sequence[tuple[str, float]]
) -> list[dict]:
    """The API's `tags`: the primary tag first, then the secondary ones, with confidences."""
    return [{"tag": primary, "confidence": round(float(confidence), 6), "primary": True}] + [
        {"tag": t, "confidence": round(s, 6), "primary": False} for t, s in secondary
    ]
