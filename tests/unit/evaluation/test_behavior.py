"""The behavioural suite's machinery, on a predictor whose answers are known: the suite must
count a wrong answer as a failure, and every family must have enough cases."""

from __future__ import annotations

import random
from typing import ClassVar

import numpy as np
import pytest

from mltagger.evaluation.behavior import CLEAR_CUT, MIN_PASS_RATE, STRONG_WORDS, run_suite, typo
from mltagger.models.modelio import InferenceConfig
from mltagger.models.rule import apply_threshold
from tests.conftest import TAGS


class KeywordPredictor:
    """Answers by keywords; `broken` maps every text to one tag."""

    labels = TAGS
    inference = InferenceConfig(threshold=0.5, approved_tags=TAGS)
    KEYS: ClassVar[dict[str, tuple[str, ...]]] = {
        "natural-language-processing": ("text", "language", "translat", "sentiment", "bert"),
        "computer-vision": ("image", "object", "face", "pose", "segment"),
        "mlops": ("deploy", "production", "mlflow", "docker", "kubernetes", "feature store"),
        "reinforcement-learning": ("agent", "reward", "reinforcement", "ppo", "q-learning"),
        "graph-learning": ("graph", "node"),
        "time-series": ("time series", "forecast", "price"),
    }

    def __init__(self, broken: str | None = None) -> None:
        self.broken = broken

    def predict_proba(self, texts):
        out = np.full((len(texts), len(TAGS)), 0.01)
        for i, t in enumerate(texts):
            low = t.lower()
            hits = [sum(k in low for k in self.KEYS.get(tag, ())) for tag in TAGS]
            j = TAGS.index(self.broken) if self.broken else int(np.argmax(hits))
            if not self.broken and max(hits) == 0:
                j = TAGS.index("other")
            out[i, j] += 1 + max(hits)
            if not self.broken:  # a broken model ignores the text altogether
                for k, h in enumerate(hits):
                    out[i, k] += 0.1 * h
        return out / out.sum(axis=1, keepdims=True)

    def predict(self, items):
        probs = self.predict_proba([it["text"] for it in items])
        tags, conf, review = apply_threshold(probs, TAGS, 0.5, "other")
        return [
            {
                "tag": t,
                "confidence": float(c),
                "needs_review": bool(r),
                "scores": dict(zip(TAGS, map(float, row), strict=True)),
            }
            for t, c, r, row in zip(tags, conf, review, probs, strict=True)
        ]


def test_every_family_has_cases_and_every_tag_five_clear_cut_items():
    assert all(len(pairs) >= 5 for pairs in CLEAR_CUT.values())
    assert set(CLEAR_CUT) == set(TAGS) and set(STRONG_WORDS) == set(TAGS) - {"other"}
    suite = run_suite(KeywordPredictor())
    assert set(suite) == set(MIN_PASS_RATE)
    assert suite["approved_output"]["pass_rate"] == 1.0
    assert suite["minimum_functionality"]["total"] == sum(map(len, CLEAR_CUT.values()))


def test_a_model_that_answers_one_tag_fails_minimum_functionality_and_direction():
    suite = run_suite(KeywordPredictor(broken="mlops"))
    mft = suite["minimum_functionality"]
    assert mft["by_tag"]["mlops"] == 1.0 and mft["by_tag"]["computer-vision"] == 0.0
    assert mft["pass_rate"] == pytest.approx(1 / 7, abs=0.01)
    assert suite["invariance"]["pass_rate"] == 1.0  # constant answers are invariant, trivially
    assert suite["directional"]["pass_rate"] < MIN_PASS_RATE["directional"]
    assert mft["failures"] and "got" in mft["failures"][0]


def test_typo_changes_one_word_by_one_swap():
    rng = random.Random(3)
    original = "Forecasting electricity demand"
    changed = typo(original, rng)
    assert changed != original and len(changed) == len(original)
    assert sorted(changed) == sorted(original)


def test_suite_runs_on_the_tiny_trained_model(trained):
    """On a model that learned the tiny topics: the suite's minimum-functionality rate is the
    share of clear-cut items whose top class is their tag, counted here independently, and the
    model gets most of them right (their words are the tiny data's)."""
    from mltagger.evaluation.behavior import text
    from mltagger.models.predict import Predictor

    predictor = Predictor(trained / "run" / "model")
    suite = run_suite(predictor)
    assert suite["approved_output"]["pass_rate"] == 1.0
    cases = [
        (tag, text(t, d))
        for tag, pairs in CLEAR_CUT.items()
        if tag in predictor.labels
        for t, d in pairs
    ]
    probs = predictor.predict_proba([c[1] for c in cases])
    right = [
        predictor.labels[k] == tag for k, (tag, _) in zip(probs.argmax(axis=1), cases, strict=True)
    ]
    mft = suite["minimum_functionality"]
    assert mft["total"] == len(cases) and mft["passed"] == sum(right)
    assert mft["pass_rate"] == pytest.approx(sum(right) / len(cases))
    assert mft["pass_rate"] >= 0.5, mft["failures"]
    assert len(mft["failures"]) == len(cases) - sum(right)
