"""The tag list's acceptance rule and what a promotion or rollback changes (pure functions)."""

from __future__ import annotations

import pytest

from mltagger.models.tag_rule import (
    ACTIVE,
    PENDING,
    RETIRED,
    RETIRING,
    bad_tag_name,
    promotion_changes,
    refusal,
    rollback_changes,
)

LIST = {"nlp": ACTIVE, "cv": ACTIVE, "other": ACTIVE, "audio": PENDING, "old": RETIRING,
        "gone": RETIRED}  # fmt: skip


@pytest.mark.parametrize(
    "labels",
    [
        ["nlp", "cv", "other", "old"],  # what serves now: the retiring tag still answered
        ["nlp", "cv", "other"],  # a new model drops the retiring tag
        ["nlp", "cv", "other", "audio"],  # ... and answers the pending one
        ["other", "audio", "cv", "nlp", "old"],  # order does not matter
    ],
)
def test_accepted(labels):
    assert refusal(labels, LIST) is None


def test_a_missing_active_tag_is_named():
    why = refusal(["nlp", "other"], LIST)
    assert why is not None and "['cv']" in why and "allow" not in why


@pytest.mark.parametrize("extra, status", [("gone", "retired"), ("quantum", "not in the list")])
def test_an_unexpected_tag_is_named_with_its_status(extra, status):
    why = refusal(["nlp", "cv", "other", extra], LIST)
    assert why is not None and f"{extra} ({status})" in why and "active tags" not in why


def test_both_problems_in_one_line():
    why = refusal(["nlp", "quantum"], LIST)
    assert "\n" not in why and "cv" in why and "quantum" in why


def test_promotion_activates_answered_pending_and_retires_dropped_retiring():
    assert promotion_changes(["nlp", "cv", "other", "audio"], LIST) == {
        "audio": ACTIVE,
        "old": RETIRED,
    }
    assert promotion_changes(["nlp", "cv", "other", "old"], LIST) == {}


def test_after_a_promotion_the_active_tags_are_the_models_labels():
    labels = ["nlp", "cv", "other", "audio"]
    new = {**LIST, **promotion_changes(labels, LIST)}
    assert {t for t, s in new.items() if s == ACTIVE} == set(labels)


def test_rollback_restores_what_the_older_model_answers():
    now = {"nlp": ACTIVE, "cv": ACTIVE, "other": ACTIVE, "audio": ACTIVE, "old": RETIRED}
    older = ["nlp", "cv", "other", "old"]
    changes = rollback_changes(older, now)
    assert changes == {"audio": PENDING, "old": RETIRING}
    assert refusal(older, {**now, **changes}) is None


@pytest.mark.parametrize("name", ["audio", "recommender-systems", "ai-policy-2", "x" * 40])
def test_good_names(name):
    assert bad_tag_name(name) is None


@pytest.mark.parametrize(
    "name", ["", "Audio", "audio systems", "audio_systems", "-audio", "audio-", "a--b", "x" * 41]
)
def test_bad_names(name):
    why = bad_tag_name(name)
    assert why and "\n" not in why


def test_a_model_without_an_other_class_still_answers_the_fallback_tag():
    """A six-topic model gives `other` through the rule (low confidence, out of scope)."""
    statuses = {"nlp": ACTIVE, "cv": ACTIVE, "other": ACTIVE}
    assert refusal(["nlp", "cv"], statuses) is None
    assert "['cv']" in refusal(["nlp"], statuses)
