"""The prequential replay: decisions made before learning, gold read only through reviewers."""

from __future__ import annotations

import numpy as np
import pytest

from mltagger.core.errors import UserError
from mltagger.evaluation.replay import (
    ReplaySettings,
    Reviewer,
    choose_thresholds,
    replay,
    windows,
)

K = 4


def blobs(n: int, classes: np.ndarray, seed: int, spread: float = 1.2) -> np.ndarray:
    """Points around one centre per class, in 8 dimensions."""
    rng = np.random.default_rng(seed)
    centres = np.eye(K, 8) * 4
    return centres[classes] + rng.normal(scale=spread, size=(n, 8))


def world(seed: int = 0):
    rng = np.random.default_rng(seed)
    base_y = rng.choice(3, size=120)  # class 3 never seen before the stream
    val_y = rng.choice(3, size=60)
    pool_y = rng.choice(K, size=240, p=[0.2, 0.2, 0.2, 0.4])
    return (
        (blobs(120, base_y, seed + 1), base_y),
        (blobs(60, val_y, seed + 2), val_y),
        blobs(240, pool_y, seed + 3),
        pool_y,
    )


def run(strategy: str, gold: np.ndarray, pool_x, base, val, **kw):
    settings = ReplaySettings(strategy, day_size=20, budget=6, min_support=5, **kw)
    return replay(pool_x, Reviewer(gold, K, settings.error_rate, 0), base, val, settings, K)


@pytest.mark.parametrize("strategy", ["oldest", "breaking_ties", "diverse_ties", "rare_tags"])
def test_decisions_never_read_the_gold_tag_of_an_unreviewed_item(strategy):
    base, val, pool_x, gold = world()
    first = run(strategy, gold, pool_x, base, val)
    unreviewed = np.setdiff1d(np.arange(len(gold)), first.reviewed)
    permuted = gold.copy()
    permuted[unreviewed] = np.random.default_rng(5).permutation(gold[unreviewed])
    assert (permuted != gold).any()
    second = run(strategy, permuted, pool_x, base, val)
    assert second.reviewed == first.reviewed
    np.testing.assert_array_equal(second.auto, first.auto)
    np.testing.assert_array_equal(second.tag, first.tag)


def test_each_day_is_scored_before_the_model_learns_from_it_and_within_budget():
    base, val, pool_x, gold = world()
    log = run("breaking_ties", gold, pool_x, base, val)
    assert np.diff([0, *log.labels_by_day]).max() <= 6
    # only queued items are reviewed, and an item is reviewed on or after its day
    position = {int(i): k for k, i in enumerate(log.order)}
    assert all(not log.auto[position[i]] for i in log.reviewed)
    # the new class is learned from the reviewers' answers only: never its tag on day one,
    # applied automatically (and rightly) later
    new = gold[log.order] == 3
    assert not (log.tag == 3)[:20].any()
    assert (log.auto & new & (log.tag == 3))[120:].any()


def test_windows_report_the_rule_as_run_with_wilson_intervals():
    base, val, pool_x, gold = world()
    log = run("least_confident", gold, pool_x, base, val)
    rows = windows(log, gold, size=100)
    assert [r["items"] for r in rows] == [100, 100, 40]
    for r in rows:
        assert r["precision_low"] <= r["precision"] <= r["precision_high"]
    auto = log.auto[:100]
    right = (log.tag == gold[log.order])[:100]
    assert rows[0]["coverage"] == pytest.approx(auto.mean())
    assert rows[0]["precision"] == pytest.approx(right[auto].mean())
    assert rows[-1]["labels"] == log.labels_by_day[-1]


def test_thresholds_are_the_lowest_point_that_keeps_the_target():
    probs = np.array([[0.95, 0.05], [0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.4, 0.6]])
    labels = np.array([0, 0, 1, 0, 1])
    # class 0: top-3 by p has 2 of 3 right (0.67), top-4 has 3 of 4 (0.75), top-2 has 2 of 2
    got = choose_thresholds(probs, labels, target=0.75, min_support=2)
    assert got[0] == pytest.approx(0.7)
    got = choose_thresholds(probs, labels, target=0.9, min_support=2)
    assert got[0] == pytest.approx(0.9)
    assert got[1] == pytest.approx(1.01)  # one item whose top is class 1: below min_support


def test_bad_settings_are_one_line_errors():
    with pytest.raises(UserError, match="budget must be at least 1"):
        ReplaySettings("oldest", budget=0)
    with pytest.raises(UserError, match="unknown review strategy 'fastest'"):
        ReplaySettings("fastest")
    with pytest.raises(UserError, match=r"error_rate must be in \[0, 1\)"):
        ReplaySettings("oldest", error_rate=1.0)


def test_a_reviewer_errs_at_its_rate():
    gold = np.zeros(2000, dtype=int)
    reviewer = Reviewer(gold, K, 0.2, seed=1)
    wrong = np.mean([reviewer.answer(i) != 0 for i in range(2000)])
    assert 0.17 < wrong < 0.23
    assert len(reviewer.asked) == 2000


def test_weights_count_an_item_as_often_as_it_stands_for():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]])
    labels = np.array([0, 1, 0])
    # unweighted, the top two are 1 of 2 right: a 0.9 target needs the first alone
    assert choose_thresholds(probs, labels, 0.9, 1)[0] == pytest.approx(0.9)
    # the first stands for 9 items: 9 of 10 right down to 0.8, 10 of 11 down to 0.7
    got = choose_thresholds(probs, labels, 0.9, 1, weights=np.array([9.0, 1.0, 1.0]))
    assert got[0] == pytest.approx(0.7)


def test_the_audit_spends_part_of_the_budget_on_applied_tags():
    base, val, pool_x, gold = world()
    log = run("breaking_ties", gold, pool_x, base, val, audit_per_day=2, thresholds="stream")
    position = {int(i): k for k, i in enumerate(log.order)}
    audited = [i for i in log.reviewed if log.auto[position[i]]]
    assert log.audited == len(audited) > 0
    assert np.diff([0, *log.labels_by_day]).max() <= 6
    # an audited item stands for the day's applied items: its weight is at least 1
    assert min(log.weights) >= 1.0 and len(log.weights) == len(log.answers)
    with pytest.raises(UserError, match="audit_per_day must be in"):
        ReplaySettings("oldest", budget=2, audit_per_day=3)
    with pytest.raises(UserError, match="thresholds must be val or stream"):
        ReplaySettings("oldest", thresholds="best")


def test_with_the_audit_and_stream_thresholds_gold_is_still_read_only_by_reviewers():
    base, val, pool_x, gold = world()
    kw = {"audit_per_day": 2, "thresholds": "stream"}
    first = run("rare_tags", gold, pool_x, base, val, **kw)
    unreviewed = np.setdiff1d(np.arange(len(gold)), first.reviewed)
    permuted = gold.copy()
    permuted[unreviewed] = np.random.default_rng(9).permutation(gold[unreviewed])
    second = run("rare_tags", permuted, pool_x, base, val, **kw)
    assert second.reviewed == first.reviewed
    np.testing.assert_array_equal(second.auto, first.auto)


def out_of_scope_world(seed: int = 0):
    """Class 3 is `other`; the stream brings out-of-scope items from a direction the train split
    never showed (the negatives do), which the topic head alone files under a topic."""
    base, val, pool_x, gold = world(seed)
    rng = np.random.default_rng(seed + 11)
    far = np.zeros(8)
    far[5] = 4.0
    stray = far + rng.normal(scale=1.0, size=(80, 8))
    negatives = far + rng.normal(scale=1.0, size=(200, 8))
    return base, val, np.vstack([pool_x, stray]), np.concatenate([gold, np.full(80, 3)]), negatives


def test_the_gate_files_out_of_scope_items_under_other():
    base, val, pool_x, gold, negatives = out_of_scope_world()
    stray = np.arange(240, 320)
    arrival = np.random.default_rng(3).permutation(len(gold))
    topic_on_stray = {}
    for gate in ("none", "logistic", "as_other"):
        settings = ReplaySettings("oldest", day_size=20, budget=6, min_support=5, gate=gate)
        log = replay(
            pool_x, Reviewer(gold, K, 0.0, 0), base, val, settings, K,
            arrival=arrival, negatives=negatives, other=3,
        )  # fmt: skip
        on_stray = np.isin(log.order, stray) & log.auto
        topic_on_stray[gate] = int((on_stray & (log.tag != 3)).sum())
    assert topic_on_stray["logistic"] < topic_on_stray["none"]
    assert topic_on_stray["as_other"] < topic_on_stray["none"]


def test_gated_decisions_never_read_the_gold_tag_of_an_unreviewed_item():
    base, val, pool_x, gold, negatives = out_of_scope_world()
    settings = ReplaySettings(
        "breaking_ties", day_size=20, budget=6, min_support=5, gate="logistic"
    )

    def go(g):
        return replay(
            pool_x, Reviewer(g, K, 0.0, 0), base, val, settings, K, negatives=negatives, other=3
        )

    first = go(gold)
    unreviewed = np.setdiff1d(np.arange(len(gold)), first.reviewed)
    permuted = gold.copy()
    permuted[unreviewed] = np.random.default_rng(4).permutation(gold[unreviewed])
    assert (permuted != gold).any()
    second = go(permuted)
    assert second.reviewed == first.reviewed
    np.testing.assert_array_equal(second.auto, first.auto)
    np.testing.assert_array_equal(second.tag, first.tag)


def test_a_gate_needs_its_negatives_and_a_known_name():
    base, val, pool_x, gold = world()
    settings = ReplaySettings("oldest", gate="logistic")
    with pytest.raises(UserError, match="needs the negatives"):
        replay(pool_x, Reviewer(gold, K, 0.0, 0), base, val, settings, K)
    with pytest.raises(UserError, match="gate must be one of none, as_other, logistic"):
        ReplaySettings("oldest", gate="mahalanobis")


def test_precision_also_credits_the_defensible_second_tag_only_beside_the_strict_one():
    base, val, pool_x, gold = world()
    log = run("oldest", gold, pool_x, base, val)
    wrong = log.auto & (log.tag != gold[log.order])
    assert wrong.any()
    also = np.full(len(gold), -1)
    also[log.order[wrong]] = log.tag[wrong]  # every wrong applied tag was defensible
    rows = windows(log, gold, size=100, also=also)
    for r in rows:
        if r["auto"]:
            assert r["precision_also"] == pytest.approx(1.0)
            assert r["precision"] < 1.0 or not wrong.any()
    strict = windows(log, gold, size=100)
    assert [r["precision"] for r in rows] == [r["precision"] for r in strict]
