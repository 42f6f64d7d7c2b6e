"""Baselines: the rule tagger's scoring and the TF-IDF model's interface."""

from __future__ import annotations

import numpy as np
import pytest

from mltagger.data.validation import RawRow, validate_rows
from mltagger.models.baselines import RuleTagger, TfidfLogReg


def test_rule_tagger_scores_keywords_with_title_weight():
    tagger = RuleTagger({"cv": ["image*", "yolo"], "nlp": ["text"]}, title_weight=2, smoothing=0.1)
    tagger.fit([], ["cv", "nlp", "other"])
    item = {"title": "YOLO for images", "description": "Reads text in images."}
    assert tagger.scores(item).tolist() == [2 + 2 + 1, 1, 0]
    probs = tagger.predict_proba([item])
    assert probs.sum() == pytest.approx(1.0)
    assert probs[0].tolist() == pytest.approx([5.1 / 6.3, 1.1 / 6.3, 0.1 / 6.3])


def test_rule_tagger_without_match_is_uniform():
    tagger = RuleTagger({"cv": ["image"]}).fit([], ["cv", "nlp"])
    probs = tagger.predict_proba([{"title": "Nothing", "description": "here"}])
    assert probs.tolist() == [[0.5, 0.5]]


def test_rule_tagger_matches_whole_words_only():
    tagger = RuleTagger({"rl": ["rl"]}).fit([], ["rl"])
    assert tagger.scores({"title": "world", "description": "curl"}).tolist() == [0]
    assert tagger.scores({"title": "Deep RL", "description": "RLs"}).tolist() == [3]


def test_tfidf_learns_the_tiny_data(raw_items, tags):
    items = validate_rows([RawRow(i, r) for i, r in enumerate(raw_items, 1)], tags).items
    labels = tags[:6]
    model = TfidfLogReg(seed=0).fit(items, labels)
    probs = model.predict_proba(items)
    assert probs.shape == (len(items), 6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    train_acc = np.mean(
        [labels[k] == it["tag"] for k, it in zip(probs.argmax(1), items, strict=True)]
    )
    assert train_acc > 0.9
