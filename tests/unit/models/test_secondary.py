"""The secondary-tag head (issue 35): its rule, its file, its numpy scorer against scikit-learn,
and the figures and threshold choice it is judged and shipped by."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mltagger.evaluation.secondary import (
    choose_threshold,
    precision_curve,
    secondary_figures,
    suggestion_figures,
)
from mltagger.models.secondary import SECONDARY_FILE, SecondaryHead, tags_field
from mltagger.training.secondary import average_precision, fit_head, membership

TAGS = ["nlp", "cv", "mlops", "other"]


def head(apply: float | None = 0.3, suggest: float | None = 0.1) -> SecondaryHead:
    return SecondaryHead(labels=TAGS, apply_threshold=apply, suggest_threshold=suggest)


def test_secondary_tags_are_topics_beside_an_applied_tag_only():
    scores = np.array(
        [
            [0.5, 0.35, 0.1, 0.4],  # applied nlp: cv is above 0.3, other never counts
            [0.5, 0.35, 0.1, 0.4],  # the same scores, but the item waits for review
            [0.1, 0.25, 0.6, 0.05],  # nothing above the threshold
        ]
    )
    got = head().secondary(["nlp", "other", "mlops"], [False, True, False], scores)
    assert got == [[("cv", 0.35)], [], []]
    assert head(apply=None).secondary(["nlp"], [False], scores[:1]) == [[]]
    # a reviewer is offered more, beside the top tag, whatever the review state
    assert head().suggestions("mlops", scores[2]) == [("cv", 0.25), ("nlp", 0.1)]


def test_at_most_max_tags_best_first():
    h = head(apply=0.1)
    h.max_tags = 1
    assert h.secondary(["other"], [False], np.array([[0.3, 0.5, 0.2, 0.0]])) == [[("cv", 0.5)]]


def test_tags_field_puts_the_primary_first():
    assert tags_field("nlp", 0.91234567, [("cv", 0.4)]) == [
        {"tag": "nlp", "confidence": 0.912346, "primary": True},
        {"tag": "cv", "confidence": 0.4, "primary": False},
    ]


def test_the_file_round_trips_and_a_bad_one_is_refused(tmp_path):
    h = head(apply=None, suggest=0.22)
    h.save(tmp_path)
    back = SecondaryHead.load(tmp_path)
    assert (back.kind, back.apply_threshold, back.suggest_threshold) == ("second-score", None, 0.22)
    assert SecondaryHead.load(tmp_path / "nowhere") is None
    raw = json.loads((tmp_path / SECONDARY_FILE).read_text())
    for bad in ({**raw, "kind": "magic"}, {**raw, "apply_threshold": 1.5}):
        (tmp_path / SECONDARY_FILE).write_text(json.dumps(bad))
        with pytest.raises(ValueError):
            SecondaryHead.load(tmp_path)


def test_the_numpy_head_gives_scikit_learns_probabilities(tmp_path):
    """The service scores the fitted head in numpy; it must be the model that was fitted."""
    from scipy.sparse import csr_matrix, hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    words = ["llm serving", "image labels", "deploy models", "graph rag", "pandas tables"]
    texts = [" ".join(rng.choice(words, 2)) + f" item{i % 5}" for i in range(60)]
    probs = rng.dirichlet(np.ones(len(TAGS)), size=len(texts))
    items = [
        {"tag": TAGS[int(p.argmax())], "also": "mlops" if "deploy" in t else ""}
        for t, p in zip(texts, probs, strict=True)
    ]
    y = membership(items, TAGS)
    fitted = fit_head(texts, probs, y, TAGS)
    fitted.save(tmp_path)
    got = SecondaryHead.load(tmp_path).scores(texts, probs)
    vec = TfidfVectorizer(analyzer="word", sublinear_tf=True, ngram_range=(1, 2), min_df=2)
    x = hstack([csr_matrix(probs), vec.fit_transform(texts)]).tocsr()
    for j in range(len(TAGS)):
        if len(set(y[:, j])) < 2:
            continue
        ref = LogisticRegression(C=1.0, max_iter=3000, random_state=0).fit(x, y[:, j])
        np.testing.assert_allclose(got[:, j], ref.predict_proba(x)[:, 1], atol=1e-9)


def test_figures_count_the_gold_tag_or_also_as_right():
    gold = [
        {"tag": "mlops", "also": "nlp"},
        {"tag": "nlp", "also": None},
        {"tag": "cv", "also": ""},
        {"tag": "mlops", "also": "nlp"},
    ]

    def rec(tag, review, *second):
        return {
            "tag": tag,
            "needs_review": review,
            "tags": tags_field(tag, 0.9, [(t, 0.5) for t in second]),
        }

    records = [
        rec("mlops", False, "nlp"),  # right primary, right secondary
        rec("nlp", False, "cv"),  # wrong secondary
        rec("nlp", False),  # wrong primary, not an `also`
        rec("nlp", False, "mlops"),  # primary is the also, secondary is the gold: both right
    ]
    f = secondary_figures(records, gold, "other")
    assert (f["secondary_applied"], f["secondary_precision"]) == (3, round(2 / 3, 4))
    assert (f["gold_also"], f["also_recall"]) == (2, 0.5)
    assert f["primary_precision"] == 0.5 and f["primary_precision_acceptable"] == 0.75
    assert f["every_applied_tag_precision"] == round(5 / 7, 4)
    s = suggestion_figures([["nlp"], ["cv"], [], []], gold)
    assert (s["offered"], s["precision"], s["also_recall"]) == (2, 0.5, 0.5)


def test_the_threshold_is_the_lowest_that_reaches_the_target_with_support():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    right = np.array([True, True, True, False, True, False])
    curve = precision_curve(scores, right, [0.4, 0.5, 0.6, 0.7])
    assert [r["applied"] for r in curve] == [6, 5, 4, 3]
    assert choose_threshold(curve, 0.8, 3)["threshold"] == 0.5
    assert choose_threshold(curve, 0.8, 6) is None  # no support at 0.8 precision
    assert choose_threshold(curve, 1.0, 3)["threshold"] == 0.7
    assert average_precision(scores, right) == round((1 + 1 + 1 + 4 / 5) / 4, 4)
    assert average_precision(scores, np.zeros(6, dtype=bool)) is None
