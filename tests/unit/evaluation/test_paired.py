"""Champion against challenger on the same items: the exact McNemar p-value on hand-computed
cases, paired bootstrap intervals that see a difference an unpaired one cannot, and the
non-inferiority bounds on cases whose answer is known."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mltagger.evaluation.paired import (
    mcnemar,
    noninferiority,
    noninferiority_paired,
    paired_bootstrap,
)
from mltagger.evaluation.stats import wilson_bounds


def correctness(both, a_only, b_only, neither):
    a = [True] * both + [True] * a_only + [False] * b_only + [False] * neither
    b = [True] * both + [False] * a_only + [True] * b_only + [False] * neither
    return np.array(a), np.array(b)


# --- McNemar -----------------------------------------------------------------------------------


def test_mcnemar_matches_the_binomial_tail_computed_by_hand():
    a, b = correctness(both=30, a_only=1, b_only=9, neither=7)
    out = mcnemar(a, b)
    assert (out["n"], out["a_only"], out["b_only"]) == (47, 1, 9)
    # 2 * P(X <= 1; 10, 1/2) = 2 * (1 + 10) / 1024
    assert out["p_value"] == pytest.approx(2 * 11 / 1024)


def test_mcnemar_is_one_when_the_discordant_items_split_evenly_or_do_not_exist():
    assert mcnemar(*correctness(20, 5, 5, 3))["p_value"] == pytest.approx(1.0)
    same = np.array([True, False, True, True])
    assert mcnemar(same, same)["p_value"] == 1.0


def test_mcnemar_refuses_answers_for_different_items():
    with pytest.raises(ValueError):
        mcnemar([True, False], [True])


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=0, max_size=60))
def test_mcnemar_p_value_is_a_probability_and_ignores_which_model_is_called_a(pairs):
    a = np.array([p[0] for p in pairs], dtype=bool)
    b = np.array([p[1] for p in pairs], dtype=bool)
    ab, ba = mcnemar(a, b), mcnemar(b, a)
    assert 0.0 <= ab["p_value"] <= 1.0
    assert ab["p_value"] == pytest.approx(ba["p_value"])
    assert (ab["a_only"], ab["b_only"]) == (ba["b_only"], ba["a_only"])


# --- paired bootstrap --------------------------------------------------------------------------


def model_answers(rng, n, accuracy, auto_share=1.0):
    gold = rng.integers(0, 5, size=n)
    right = rng.random(n) < accuracy
    answer = np.where(right, gold, (gold + 1) % 5)
    auto = rng.random(n) < auto_share
    return gold, answer, auto


def test_identical_models_differ_by_exactly_zero():
    rng = np.random.default_rng(0)
    gold, tag, auto = model_answers(rng, 300, accuracy=0.8, auto_share=0.7)
    out = paired_bootstrap(gold, tag, auto, tag, auto, n_boot=500, seed=1)
    for stat in ("coverage", "precision"):
        assert out[stat]["difference"] == 0.0
        assert out[stat]["low"] <= 0.0 <= out[stat]["high"]
    assert out["precision"]["dropped"] == 0
    assert out["n"] == 300 and out["n_boot"] == 500


def test_a_challenger_right_on_many_more_items_has_an_interval_above_zero():
    rng = np.random.default_rng(2)
    gold, a_tag, a_auto = model_answers(rng, 400, accuracy=0.6, auto_share=0.6)
    fixed = rng.random(400) < 0.5
    b_tag = np.where(fixed, gold, a_tag)
    b_auto = a_auto | (rng.random(400) < 0.5)
    out = paired_bootstrap(gold, a_tag, a_auto, b_tag, b_auto, seed=3)
    assert out["precision"]["b"] > out["precision"]["a"]
    assert out["precision"]["low"] > 0.0
    assert out["coverage"]["low"] > 0.0
    assert out["coverage"]["difference"] == pytest.approx(b_auto.mean() - a_auto.mean())


def test_words_are_labels_as_well_as_numbers():
    gold = np.array(["nlp", "cv", "nlp", "other"] * 25)
    a_tag = np.array(["nlp", "nlp", "nlp", "other"] * 25)
    auto = np.ones(100, dtype=bool)
    out = paired_bootstrap(gold, a_tag, auto, gold, auto, n_boot=200)
    assert out["precision"]["a"] == pytest.approx(0.75)
    assert out["precision"]["b"] == 1.0
    assert out["precision"]["difference"] == pytest.approx(0.25)


def test_the_same_seed_gives_the_same_intervals():
    rng = np.random.default_rng(4)
    gold, a_tag, a_auto = model_answers(rng, 200, accuracy=0.7, auto_share=0.8)
    _, b_tag, b_auto = model_answers(rng, 200, accuracy=0.7, auto_share=0.8)
    first = paired_bootstrap(gold, a_tag, a_auto, b_tag, b_auto, n_boot=300, seed=7)
    second = paired_bootstrap(gold, a_tag, a_auto, b_tag, b_auto, n_boot=300, seed=7)
    assert first == second


def test_pairing_sees_a_small_difference_that_independent_resampling_hides():
    # B is A plus 5 more right answers over 400 items: every resample favours B or ties.
    n = 400
    gold = np.zeros(n, dtype=int)
    a_tag = np.where(np.arange(n) < 200, 0, 1)
    b_tag = np.where(np.arange(n) < 205, 0, 1)
    auto = np.ones(n, dtype=bool)
    paired = paired_bootstrap(gold, a_tag, auto, b_tag, auto, n_boot=2000, seed=0)["precision"]
    assert paired["low"] > 0.0

    rng = np.random.default_rng(0)
    a_right, b_right = a_tag == gold, b_tag == gold
    unpaired = b_right[rng.integers(0, n, size=(2000, n))].mean(axis=1) - a_right[
        rng.integers(0, n, size=(2000, n))
    ].mean(axis=1)
    low, high = np.quantile(unpaired, [0.025, 0.975])
    assert low < 0.0 < high
    assert (paired["high"] - paired["low"]) * 3 < high - low


def test_resamples_where_a_model_tags_nothing_are_dropped_from_precision_only():
    n = 10
    gold = np.zeros(n, dtype=int)
    tag = np.zeros(n, dtype=int)
    a_auto = np.ones(n, dtype=bool)
    b_auto = np.zeros(n, dtype=bool)
    b_auto[0] = True  # a resample misses it with probability 0.9**10, about 0.35
    out = paired_bootstrap(gold, tag, a_auto, tag, b_auto, n_boot=2000, seed=5)
    assert 550 < out["precision"]["dropped"] < 850
    assert out["precision"]["low"] == out["precision"]["high"] == 0.0
    assert out["coverage"]["difference"] == pytest.approx(-0.9)

    never = paired_bootstrap(gold, tag, a_auto, tag, np.zeros(n, bool), n_boot=100, seed=5)
    assert never["precision"]["dropped"] == 100
    assert math.isnan(never["precision"]["b"]) and math.isnan(never["precision"]["low"])


def test_the_items_mask_is_the_same_as_keeping_those_items_by_hand():
    rng = np.random.default_rng(6)
    gold, a_tag, a_auto = model_answers(rng, 300, accuracy=0.7, auto_share=0.7)
    _, b_tag, b_auto = model_answers(rng, 300, accuracy=0.75, auto_share=0.8)
    keep = rng.random(300) < 0.4
    masked = paired_bootstrap(gold, a_tag, a_auto, b_tag, b_auto, items=keep, n_boot=300)
    by_hand = paired_bootstrap(
        gold[keep], a_tag[keep], a_auto[keep], b_tag[keep], b_auto[keep], n_boot=300
    )
    assert masked == by_hand
    assert masked["n"] == int(keep.sum())


def test_paired_bootstrap_refuses_mismatched_or_empty_inputs():
    ones = np.ones(5, dtype=bool)
    with pytest.raises(ValueError):
        paired_bootstrap(np.zeros(5), np.zeros(4), ones, np.zeros(5), ones)
    with pytest.raises(ValueError):
        paired_bootstrap(np.zeros(5), np.zeros(5), ones, np.zeros(5), ones, items=~ones)


# --- non-inferiority ---------------------------------------------------------------------------


def test_equal_proportions_on_many_items_are_non_inferior():
    out = noninferiority(900, 1000, 900, 1000, margin=0.03)
    assert out["difference"] == 0.0
    assert -0.03 < out["lower"] < 0.0
    assert out["non_inferior"] is True
    assert (out["n_a"], out["n_b"]) == (1000, 1000)


def test_a_challenger_ten_points_worse_is_not_non_inferior():
    out = noninferiority(800, 1000, 900, 1000, margin=0.03)
    assert out["difference"] == pytest.approx(-0.1)
    assert out["non_inferior"] is False


def test_the_lower_bound_is_newcombes_hybrid_of_one_sided_wilson_bounds():
    out = noninferiority(170, 200, 88, 100, margin=0.05, alpha=0.05)
    low_b, _ = wilson_bounds(170, 200, 1.6449)
    _, high_a = wilson_bounds(88, 100, 1.6449)
    expected = (0.85 - 0.88) - math.sqrt((0.85 - low_b) ** 2 + (high_a - 0.88) ** 2)
    assert out["lower"] == pytest.approx(expected, abs=1e-4)


def test_no_items_on_either_side_is_never_non_inferior():
    for args in [(0, 0, 90, 100), (90, 100, 0, 0)]:
        out = noninferiority(*args)
        assert out["non_inferior"] is False
        assert out["reason"] == "no items"


def test_paired_non_inferiority_on_the_same_items():
    a, b = correctness(both=850, a_only=10, b_only=10, neither=130)
    same = noninferiority_paired(a, b, margin=0.03)
    assert same["difference"] == 0.0
    assert same["non_inferior"] is True
    # var = (10 + 10 - 0) / 1000² ; lower = -1.6449 * sqrt(var)
    assert same["lower"] == pytest.approx(-1.6449 * math.sqrt(20) / 1000, abs=1e-6)

    a, b = correctness(both=700, a_only=120, b_only=20, neither=160)
    worse = noninferiority_paired(a, b, margin=0.03)
    assert worse["difference"] == pytest.approx(-0.1)
    assert worse["non_inferior"] is False
    assert (worse["a_only"], worse["b_only"]) == (120, 20)

    empty = noninferiority_paired(np.array([], bool), np.array([], bool))
    assert empty["non_inferior"] is False and empty["reason"] == "no items"
