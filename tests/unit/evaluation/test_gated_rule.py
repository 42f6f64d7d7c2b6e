"""Choosing the gate threshold and the topic thresholds behind it on out-of-fold rows."""

from __future__ import annotations

import numpy as np
import pytest

from mltagger.core.errors import ConfigError
from mltagger.evaluation.metrics import scope_report
from mltagger.evaluation.thresholds import choose_gated_rule, rule_thresholds
from mltagger.models.rule import NEVER

LABELS = ["a", "b", "other"]


def _rows(seed=0, n=300):
    """Topic items a/b (confident, right) and out-of-scope items the softmax calls `a` with the
    same confidence - only the gate tells them apart (in_scope low for them, high for topics)."""
    rng = np.random.default_rng(seed)
    gold, probs, p_in = [], [], []
    for i in range(n):
        kind = i % 3
        conf = rng.uniform(0.7, 1.0)
        if kind == 2:  # out of scope, confidently `a`
            gold.append("other")
            probs.append([conf, (1 - conf) / 2, (1 - conf) / 2])
            p_in.append(rng.uniform(0.0, 0.3))
        else:
            gold.append("ab"[kind])
            row = [(1 - conf) / 2] * 3
            row[kind] = conf
            probs.append(row)
            p_in.append(rng.uniform(0.6, 1.0))
    folds = [f"0:{i % 4}" for i in range(n)]
    return np.array(probs), gold, np.array(p_in), folds


@pytest.mark.parametrize("rule", ["pooled", "own", "point", "global"])
def test_a_useful_gate_is_chosen_and_removes_the_harm(rule):
    probs, gold, p_in, folds = _rows()
    out = choose_gated_rule(probs, gold, p_in, folds, LABELS, "other", 0.9, rule=rule)
    assert out["met"] and out["gate_threshold"] == 0.3  # the lowest that stops every one
    best = out["cross_fitted"]
    assert best["oos_auto_topic"] == 0.0 and best["topic_coverage"] > 0.9
    no_gate = out["table"][0]
    # without the gate, `a` cannot keep its promise (half its confident answers are
    # out-of-scope items), so its items go to review: the gate buys coverage, not just safety
    assert no_gate["gate_threshold"] == 0.0 and no_gate["topic_coverage"] < 0.6
    # behind the gate `a` keeps its promise, so its threshold is a real one
    thr = out["thresholds"]
    assert (thr if rule == "global" else thr["a"]) < NEVER


def test_without_a_harm_limit_the_lowest_gate_with_the_most_coverage_wins():
    probs, gold, p_in, folds = _rows()
    out = choose_gated_rule(probs, gold, p_in, folds, LABELS, "other", 0.5, max_harm=1.0)
    top = max(r["topic_coverage"] for r in out["table"])
    assert out["cross_fitted"]["topic_coverage"] == top
    lowest = min(r["gate_threshold"] for r in out["table"] if r["topic_coverage"] == top)
    assert (out["gate_threshold"] or 0.0) == lowest  # None stands for 0.0: no gate


def test_a_useless_gate_that_cannot_meet_the_limit_is_reported_as_missed():
    probs, gold, _, folds = _rows()
    rng = np.random.default_rng(1)
    noise = rng.uniform(0, 1, len(gold))  # the gate knows nothing
    out = choose_gated_rule(probs, gold, noise, folds, LABELS, "other", 0.5, max_harm=0.0,
                            grid=(0.0, 0.5))  # fmt: skip
    assert out["met"] is False
    assert out["cross_fitted"]["oos_auto_topic"] == min(r["oos_auto_topic"] for r in out["table"])


def test_bad_arguments_are_refused():
    probs, gold, p_in, folds = _rows(n=30)
    with pytest.raises(ConfigError, match="rule must be one of"):
        choose_gated_rule(probs, gold, p_in, folds, LABELS, "other", 0.9, rule="magic")
    with pytest.raises(ValueError, match="one row per item"):
        choose_gated_rule(probs, gold, p_in[:-1], folds, LABELS, "other", 0.9)


def test_one_global_threshold_keeps_its_lower_bound_or_sends_everything_to_review():
    probs = np.array([[0.9, 0.05, 0.05]] * 50)
    assert rule_thresholds(probs, ["a"] * 50, LABELS, 0.9, "global") == pytest.approx(0.9)
    assert rule_thresholds(probs, ["b"] * 50, LABELS, 0.9, "global") == NEVER


def test_the_scope_report_counts_what_the_gate_stopped():
    probs = np.array([[0.9, 0.05, 0.05]] * 4)
    gold = ["a", "a", "other", "other"]
    out = np.array([False, True, True, False])
    plain = scope_report(gold, probs, LABELS, 0.5, "other")
    gated = scope_report(gold, probs, LABELS, 0.5, "other", out)
    assert plain["out_of_scope"]["auto_topic"] == 1.0 and plain["out_of_scope"]["gated"] == 0.0
    assert gated["out_of_scope"]["auto_topic"] == 0.5
    # stopped items go to review: neither applied as `other` nor lost without anyone seeing
    assert gated["out_of_scope"]["to_review"] == 0.5 and gated["out_of_scope"]["gated"] == 0.5
    assert gated["out_of_scope"]["as_other"] == 0.0
    assert gated["topics"]["lost_to_other"] == 0.0 and gated["topics"]["gated"] == 0.5
    assert gated["topics"]["coverage"] == 0.5


def test_harm_is_reported_apart_for_items_not_ml_at_all_and_out_of_scope_ml():
    from mltagger.evaluation.metrics import evaluate_predictions, summary_metrics

    items = [
        {"id": 1, "text": "x", "tag": "a"},
        {"id": 2, "text": "x", "tag": "other", "non_ml": True},
        {"id": 3, "text": "x", "tag": "other", "non_ml": True},
        {"id": 4, "text": "x", "tag": "other", "non_ml": False},
    ]
    probs = np.array([[0.9, 0.05, 0.05]] * 4)
    out = np.array([False, True, False, False])  # the gate stops one not-ML item
    report = evaluate_predictions(items, probs, LABELS, threshold=0.5, out_of_scope=out,
                                  slice_names=[])  # fmt: skip
    scope = report["scope"]["out_of_scope"]
    assert (scope["auto_topic_not_ml"], scope["num_not_ml"]) == (0.5, 2)
    assert (scope["auto_topic_ml"], scope["num_ml"]) == (1.0, 1)
    flat = summary_metrics(report, "fresh/")
    assert flat["fresh/oos_auto_topic_rate_not_ml"] == 0.5
    assert flat["fresh/oos_auto_topic_rate_ml"] == 1.0
    # data that does not mark them (test) reports the total only
    plain = [{k: v for k, v in it.items() if k != "non_ml"} for it in items]
    flat = summary_metrics(evaluate_predictions(plain, probs, LABELS, threshold=0.5,
                                                slice_names=[]), "test/")  # fmt: skip
    assert "test/oos_auto_topic_rate_ml" not in flat and flat["test/oos_auto_topic_rate"] == 1.0


def test_a_topic_item_the_gate_stops_does_not_count_as_covered():
    from mltagger.evaluation.metrics import evaluate_predictions

    items = [{"id": i, "text": "x", "tag": t} for i, t in enumerate(["a", "a", "other"])]
    probs = np.array([[0.9, 0.05, 0.05]] * 3)
    out = np.array([True, False, True])
    report = evaluate_predictions(items, probs, LABELS, threshold=0.5, out_of_scope=out,
                                  slice_names=[])  # fmt: skip
    cov = report["coverage"]["at_threshold"]["per_class_coverage"]
    assert cov == {"a": 0.5, "other": 0.0}  # stopped items wait for a person: nothing covered
    # an `other` item given a topic is harm, never `other`'s coverage; given `other`, it is
    sure = np.array([[0.05, 0.05, 0.9]] * 3)
    both = evaluate_predictions(items, np.vstack([probs[:2], sure[:1]]), LABELS, threshold=0.5,
                                slice_names=[])  # fmt: skip
    assert both["coverage"]["at_threshold"]["per_class_coverage"]["other"] == 1.0
    harm = evaluate_predictions(items, probs, LABELS, threshold=0.5, slice_names=[])
    assert harm["coverage"]["at_threshold"]["per_class_coverage"]["other"] == 0.0


def test_each_fold_is_judged_by_thresholds_of_its_own_seeds_other_folds():
    """Seed 1 repeats seed 0's rows in other folds: its copy of a held-out row is no held-out
    evidence. Seed 0's fold 0 holds confident wrong `a` answers (out of scope), fold 1 right
    ones; fitted on fold 1 alone, `a` keeps a low threshold and the wrong answers get through.
    A fit that also read seed 1 (which holds copies of them) would see them coming."""
    wrong = [[0.95, 0.03, 0.02]] * 20  # out of scope, answered `a` confidently
    right = [[0.95, 0.03, 0.02]] * 20  # topic `a`, right
    probs = np.array(wrong + right + wrong + right)
    gold = ["other"] * 20 + ["a"] * 20 + ["other"] * 20 + ["a"] * 20
    folds = ["0:0"] * 20 + ["0:1"] * 20 + ["1:1"] * 20 + ["1:0"] * 20
    p_in = np.ones(80)
    out = choose_gated_rule(probs, gold, p_in, folds, LABELS, "other", 0.85, rule="point",
                            grid=(0.0,))  # fmt: skip
    assert out["table"][0]["oos_auto_topic"] == 1.0  # honest: nothing warned the fold
