"""Secondary tags (issue 35): the other topics a reader following them would want an item under.

The primary tag keeps the product's rule (`mltagger.models.rule`) untouched; this is a separate
head, so adding it cannot move one primary figure. For each tag it scores "this tag belongs to
the item" (the gold tag or the gold `also`) from two things the service already has: the primary
model's calibrated probabilities and a word TF-IDF vector of the text (the gate's featuriser,
`mltagger.models.gate.Block`). It is fitted with scikit-learn (`mltagger.training.secondary`) on
the stream pool's `also` labels against the pool's out-of-fold probabilities, and scored here in
numpy, like the gate, so the service stays free of the training stack.

Only topics are ever secondary (an item is not "also out of scope"), only on items whose primary
tag is applied without review, and only above the threshold chosen on cross-validation for the
head's own precision target (`secondary.json` records both).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mltagger.models.gate import Block

SECONDARY_FILE = "secondary.json"


@dataclass
class SecondaryHead:
    """P(tag belongs to the item) per tag: sigmoid(probs . a_t + tfidf . w_t + b_t)."""

    labels: list[str]
    block: Block
    coef_words: np.ndarray  # (vocabulary, tags)
    coef_probs: np.ndarray  # (tags, tags): rows are the primary's probabilities
    intercept: np.ndarray  # (tags,)
    threshold: float
    fallback_tag: str = "other"
    max_tags: int = 2
    # How the threshold was chosen (CV figures, target), kept for the model card.
    provenance: dict = field(default_factory=dict)

    def scores(self, texts: Sequence[str], probs: np.ndarray) -> np.ndarray:
        """(items, tags) membership probabilities of texts whose primary probabilities are probs."""
        probs = np.asarray(probs, dtype=float)
        if probs.shape != (len(texts), len(self.labels)):
            raise ValueError(
                f"probabilities have shape {probs.shape}, expected "
                f"({len(texts)}, {len(self.labels)})"
            )
        z = probs @ self.coef_probs + self.intercept
        for i, text in enumerate(texts):
            cols, values = self.block.vector(text)
            if len(cols):
                z[i] += values @ self.coef_words[cols]
        return 1.0 / (1.0 + np.exp(-z))

    def secondary(
        self, primary: Sequence[str], needs_review: Sequence[bool], scores: np.ndarray
    ) -> list[list[tuple[str, float]]]:
        """For each item, its secondary tags with their scores, best first (the rule above)."""
        out: list[list[tuple[str, float]]] = []
        for tag, review, row in zip(primary, needs_review, scores, strict=True):
            if review:
                out.append([])
                continue
            picks = [
                (t, float(s))
                for t, s in zip(self.labels, row, strict=True)
                if t not in (tag, self.fallback_tag) and s >= self.threshold
            ]
            out.append(sorted(picks, key=lambda p: -p[1])[: self.max_tags])
        return out

    def to_dict(self) -> dict:
        return {
            "kind": "tfidf+probs",
            "labels": self.labels,
            "threshold": self.threshold,
            "fallback_tag": self.fallback_tag,
            "max_tags": self.max_tags,
            "intercept": self.intercept.tolist(),
            "coef_probs": self.coef_probs.tolist(),
            "block": {
                "analyzer": self.block.analyzer,
                "ngram_range": list(self.block.ngram_range),
                "terms": sorted(self.block.vocabulary, key=self.block.vocabulary.__getitem__),
                "idf": self.block.idf.tolist(),
            },
            "coef_words": self.coef_words.tolist(),
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, raw: dict) -> SecondaryHead:
        if raw.get("kind") != "tfidf+probs":
            raise ValueError(
                f"secondary head kind {raw.get('kind')!r}: this version reads tfidf+probs"
            )
        b = raw["block"]
        labels = list(raw["labels"])
        coef_words = np.asarray(raw["coef_words"], dtype=float)
        if coef_words.shape != (len(b["terms"]), len(labels)) or len(b["idf"]) != len(b["terms"]):
            raise ValueError("secondary head: terms, idf and word weights differ in shape")
        return cls(
            labels=labels,
            block=Block(
                analyzer=b["analyzer"],
                ngram_range=(int(b["ngram_range"][0]), int(b["ngram_range"][1])),
                vocabulary={t: i for i, t in enumerate(b["terms"])},
                idf=np.asarray(b["idf"], dtype=float),
            ),
            coef_words=coef_words,
            coef_probs=np.asarray(raw["coef_probs"], dtype=float).reshape(len(labels), len(labels)),
            intercept=np.asarray(raw["intercept"], dtype=float),
            threshold=float(raw["threshold"]),
            fallback_tag=str(raw.get("fallback_tag", "other")),
            max_tags=int(raw.get("max_tags", 2)),
            provenance=dict(raw.get("provenance", {})),
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
