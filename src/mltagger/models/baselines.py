"""Baseline models behind the same interface as the encoders (`predict_proba`): a keyword rule
tagger and TF-IDF + logistic regression. The fine-tuned model has to beat them on the same
splits to be worth its cost (`mltagger baselines`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence

import numpy as np

from mltagger.core.errors import ConfigError

log = logging.getLogger(__name__)


class RuleTagger:
    """Scores each tag by keyword matches: the 'manual before ML' baseline.

    Probabilities are smoothed match counts, so a single weak hit is not a confident answer and no
    hit at all is a uniform score (the item goes to review at any sensible threshold).
    """

    def __init__(
        self,
        keywords: Mapping[str, Sequence[str]],
        title_weight: float = 2.0,
        smoothing: float = 0.1,
    ) -> None:
        if smoothing <= 0:
            raise ConfigError("smoothing must be > 0 (it keeps every probability defined)")
        self.keywords = {tag: list(words) for tag, words in keywords.items()}
        self.title_weight = title_weight
        self.smoothing = smoothing
        self.patterns = {tag: self._compile(words) for tag, words in self.keywords.items()}
        self.label_names: list[str] = []

    @staticmethod
    def _compile(words: Sequence[str]) -> re.Pattern:
        parts = []
        for w in words:
            w = w.strip().lower()
            if w.endswith("*"):
                parts.append(re.escape(w[:-1]) + r"[\w-]*")
            else:
                parts.append(re.escape(w) + r"(?:s|es)?")
        return re.compile(r"(?<![\w-])(?:" + "|".join(parts) + r")(?![\w-])", re.IGNORECASE)

    def fit(self, items: Sequence[dict], label_names: Sequence[str]) -> RuleTagger:
        unknown = set(self.keywords) - set(label_names)
        if unknown:
            log.warning("keyword lists for tags the data does not have: %s", sorted(unknown))
        self.label_names = list(label_names)
        return self

    def scores(self, item: dict) -> np.ndarray:
        counts = np.zeros(len(self.label_names))
        for k, tag in enumerate(self.label_names):
            rx = self.patterns.get(tag)
            if rx is not None:
                counts[k] = self.title_weight * len(rx.findall(item["title"])) + len(
                    rx.findall(item["description"])
                )
        return counts

    def predict_proba(self, items: Sequence[dict]) -> np.ndarray:
        if not self.label_names:
            raise RuntimeError("call fit() before predict_proba()")
        counts = np.array([self.scores(it) for it in items]).reshape(len(items), -1)
        smoothed = counts + self.smoothing
        return smoothed / smoothed.sum(axis=1, keepdims=True)


class TfidfLogReg:
    """Word and character TF-IDF features with a class-weighted logistic regression."""

    def __init__(
        self,
        word_ngrams: Sequence[int] = (1, 2),
        char_ngrams: Sequence[int] | None = (2, 5),
        min_df: int = 1,
        sublinear_tf: bool = True,
        C: float = 10.0,
        class_weight: str | None = "balanced",
        max_iter: int = 3000,
        seed: int = 0,
    ) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import FeatureUnion, make_pipeline

        features = [
            (
                "word",
                TfidfVectorizer(
                    ngram_range=tuple(word_ngrams),
                    min_df=min_df,
                    sublinear_tf=sublinear_tf,
                    lowercase=True,
                ),
            )
        ]
        if char_ngrams:
            features.append(
                (
                    "char",
                    TfidfVectorizer(
                        analyzer="char_wb",
                        ngram_range=tuple(char_ngrams),
                        min_df=min_df,
                        sublinear_tf=sublinear_tf,
                        lowercase=True,
                    ),
                )
            )
        self.model = make_pipeline(
            FeatureUnion(features),
            LogisticRegression(
                C=C, class_weight=class_weight, max_iter=max_iter, random_state=seed
            ),
        )
        self.label_names: list[str] = []

    def fit(self, items: Sequence[dict], label_names: Sequence[str]) -> TfidfLogReg:
        index = {t: i for i, t in enumerate(label_names)}
        self.model.fit([it["text"] for it in items], [index[it["tag"]] for it in items])
        self.label_names = list(label_names)
        return self

    def predict_proba(self, items: Sequence[dict]) -> np.ndarray:
        proba = self.model.predict_proba([it["text"] for it in items])
        # Classes absent from training get probability 0 in their column.
        out = np.zeros((len(items), len(self.label_names)))
        out[:, self.model.classes_] = proba
        return out
