"""Evaluation maths against numbers worked out by hand, and the report files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mltagger.core.errors import ConfigError
from mltagger.data import slices
from mltagger.evaluation.markdown import per_class_table, write_report
from mltagger.evaluation.metrics import Metric, calibration, evaluate_predictions, summary_metrics
from mltagger.evaluation.thresholds import choose_precision_threshold
from mltagger.models.rule import apply_threshold

LABELS = ["a", "b", "c"]
GOLD = ["a", "a", "b", "c", "b"]
PROBS = np.array(
    [
        [0.9, 0.05, 0.05],  # a, right, conf .9
        [0.4, 0.5, 0.1],  # b, wrong, conf .5
        [0.2, 0.7, 0.1],  # b, right, conf .7
        [0.1, 0.3, 0.6],  # c, right, conf .6
        [0.6, 0.3, 0.1],  # a, wrong, conf .6
    ]
)
ITEMS = [
    {"id": i, "title": f"t{i}", "description": "", "text": f"t{i}", "tag": g}
    for i, g in enumerate(GOLD)
]


def report(**kw):
    kw.setdefault("slice_names", [])
    return evaluate_predictions(ITEMS, PROBS, LABELS, fallback_tag="c", **kw)


def test_overall_and_per_class_by_hand():
    r = report(precision_target=0.85)
    o = r["overall"]
    assert o[Metric.ACCURACY] == pytest.approx(3 / 5)
    assert o[Metric.PRECISION_MACRO] == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert o[Metric.PRECISION_WEIGHTED] == pytest.approx((2 * 0.5 + 2 * 0.5 + 1) / 5)
    assert o[Metric.F1_WEIGHTED] == pytest.approx(0.6)
    pc = r["per_class"]
    assert pc["a"].pop("precision_ci95") == pytest.approx((0.0945, 0.9055), abs=1e-3)
    assert pc["a"] == {
        "precision": 0.5,
        "recall": 0.5,
        "f1": 0.5,
        "num_samples": 2,
        "num_predicted": 2,
    }
    assert pc["c"]["precision"] == 1.0 and pc["c"]["num_samples"] == 1
    assert r["confusion_matrix"]["matrix"] == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]


def test_threshold_is_the_smallest_reaching_the_target():
    conf, correct = PROBS.max(axis=1), np.array([1, 0, 1, 1, 0], dtype=float)
    assert choose_precision_threshold(conf, correct, 0.85) == pytest.approx(0.7)  # {.9,.7}: 2/2
    assert choose_precision_threshold(conf, correct, 0.75) == pytest.approx(
        0.6
    )  # {.9,.7,.6,.6}: 3/4
    assert choose_precision_threshold(conf, correct, 0.5) == pytest.approx(0.5)  # all: 3/5
    assert choose_precision_threshold(conf, np.zeros(5), 0.5) is None


def test_coverage_at_the_chosen_threshold():
    at = report(precision_target=0.85)["coverage"]["at_threshold"]
    assert at[Metric.THRESHOLD] == pytest.approx(0.7)
    assert at[Metric.AUTO_PRECISION] == 1.0
    assert at[Metric.COVERAGE] == pytest.approx(0.4)
    assert (at["num_auto"], at["num_review"]) == (2, 3)
    assert at["per_class_precision"] == {"a": 1.0, "b": 1.0}


def test_given_threshold_is_applied_and_own_threshold_still_reported():
    cov = report(precision_target=0.85, threshold=0.55)["coverage"]
    assert cov["threshold_chosen_on"] == "given"
    assert cov["at_threshold"][Metric.COVERAGE] == pytest.approx(0.8)
    assert cov["at_threshold"][Metric.AUTO_PRECISION] == pytest.approx(0.75)
    assert cov["threshold_for_target"] == pytest.approx(0.7)


def test_unreachable_target_sends_everything_to_review():
    r = evaluate_predictions(ITEMS[1:2], PROBS[1:2], LABELS, precision_target=0.9, slice_names=[])
    assert r["coverage"]["target_reachable"] is False
    assert r["coverage"]["at_threshold"][Metric.COVERAGE] == 0.0
    json.dumps(r, allow_nan=False)  # still valid JSON


def test_apply_threshold_is_the_decision_rule():
    tags, conf, review = apply_threshold(PROBS, LABELS, 0.7, fallback_tag="other")
    assert tags == ["a", "other", "b", "other", "other"]
    assert review.tolist() == [False, True, False, True, True]
    assert conf.tolist() == pytest.approx([0.9, 0.5, 0.7, 0.6, 0.6])


def test_expected_calibration_error_by_hand():
    cal = calibration(PROBS.max(axis=1), np.array([1, 0, 1, 1, 0], dtype=float), n_bins=10)
    # bins: (.8,.9] acc 1 conf .9; (.6,.7] 1/.7; (.5,.6] .5/.6 (two items); (.4,.5] 0/.5
    assert cal[Metric.ECE] == pytest.approx((0.1 + 0.3 + 2 * 0.1 + 0.5) / 5)
    assert [b["num_samples"] for b in cal["bins"]] == [0, 0, 0, 0, 1, 2, 1, 0, 1, 0]


def test_slices_report_counts_and_noise_flag():
    slices.register_tag_slices(["a", "b"])
    r = report(slice_names=["tag=a", "tag=b"], min_slice_size=3)
    s = r["slices"]["tag=a"]
    assert s[Metric.NUM_SAMPLES] == 2 and s["noisy"] is True
    assert s[Metric.ACCURACY] == pytest.approx(0.5)  # = recall of a
    assert s["per_class_precision"] == {"a": 1.0, "b": 0.0}


def test_summary_metrics_use_the_declared_keys():
    flat = summary_metrics(report(), prefix="val/")
    assert {k.removeprefix("val/") for k in flat} <= set(Metric.ALL)
    assert flat["val/" + Metric.COVERAGE] == pytest.approx(0.4)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="expected \\(5, 3\\)"):
        evaluate_predictions(ITEMS, PROBS[:, :2], LABELS)


def test_write_report_files(tmp_path):
    out = write_report(report(), tmp_path / "r", "toy", predictions=[{"id": 1}])
    for name in (
        "metrics.json",
        "report.md",
        "confusion_matrix.png",
        "precision_coverage.png",
        "reliability.png",
        "predictions.jsonl",
    ):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "metrics.json").read_text())["overall"][Metric.ACCURACY] == 0.6
    assert "| a | 0.500 | 0.09–0.91 | 0.500 | 0.500 | 2 |" in (out / "report.md").read_text()


def test_wilson_interval_known_values():
    from mltagger.evaluation.metrics import wilson_interval

    assert wilson_interval(0, 0) is None
    lo, hi = wilson_interval(5, 5)
    # 5/5 right is far from proof of perfection: the interval reaches down to ~0.57.
    assert lo == pytest.approx(0.5655, abs=1e-3) and hi == pytest.approx(1.0)
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    assert report(precision_target=0.85)["per_class"]["a"]["precision_ci95"][0] < 0.5


def test_wilson_interval_stays_inside_0_1_and_takes_its_z():
    from mltagger.evaluation.metrics import wilson_interval

    # the formula's upper end for 5 of 5 is 1 + 2e-16 in floating point, its lower end for
    # 0 of 5 just below 0: the interval is clipped to [0, 1]
    assert wilson_interval(5, 5)[1] == 1.0 and wilson_interval(0, 5)[0] == 0.0
    lo, hi = wilson_interval(50, 100, z=1.0)  # one standard error instead of 1.96
    assert lo == pytest.approx(0.45025, abs=1e-5) and hi == pytest.approx(0.54975, abs=1e-5)


def test_per_tag_figures_of_a_tag_never_predicted_are_zero_without_a_warning():
    import warnings

    from mltagger.evaluation.metrics import _per_class

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn warns unless told what 0/0 is
        out = _per_class(["a", "b"], ["a", "a"], ["a", "b"])
    assert (out["b"]["precision"], out["b"]["recall"], out["b"]["num_predicted"]) == (0.0, 0.0, 0)
    assert out["a"]["precision"] == 0.5 and out["a"]["precision_ci95"] is not None


def test_a_precision_short_of_the_target_only_by_rounding_reaches_it():
    conf, correct = np.array([0.9, 0.8]), np.array([True, False])
    # at 0.8 the precision is 1/2; a target 1e-12 above that still accepts it
    assert choose_precision_threshold(conf, correct, 0.5 + 1e-12) == 0.8
    assert choose_precision_threshold(conf, correct, 0.5 + 1e-9) == 0.9


def test_operating_points_choose_on_val_and_apply_to_test():
    from mltagger.evaluation.protocol import operating_points

    # Val = ITEMS: target 1.0 needs threshold 0.7 (items at .9 and .7 are right, .6 has a miss).
    rows = operating_points(ITEMS, PROBS, ITEMS[:2], PROBS[:2], LABELS, [0.5, 1.0])
    assert rows[1]["threshold"] == pytest.approx(0.7)
    assert rows[1]["val_precision"] == 1.0 and rows[1]["val_coverage"] == pytest.approx(2 / 5)
    # Test = first two items: only the .9 one is auto-tagged at 0.7, and it is right.
    assert rows[1]["test_precision"] == 1.0 and rows[1]["test_coverage"] == pytest.approx(0.5)
    assert rows[0]["threshold"] == pytest.approx(0.5)
    assert rows[0]["test_coverage"] == 1.0 and rows[0]["test_precision"] == 0.5


def test_scope_report_separates_topic_and_out_of_scope_items_by_hand():
    from mltagger.evaluation.metrics import scope_report

    labels = ["a", "b", "other"]
    gold = ["a", "b", "a", "other", "other", "other", "other"]
    probs = np.array(
        [
            [0.9, 0.05, 0.05],  # a right, auto
            [0.3, 0.6, 0.1],  # b right, below .65: review
            [0.1, 0.1, 0.8],  # topic item answered other (auto): a wrong applied tag
            [0.05, 0.05, 0.9],  # out-of-scope answered other by the classifier
            [0.4, 0.3, 0.3],  # out-of-scope, low confidence: review
            [0.8, 0.1, 0.1],  # out-of-scope auto-tagged with topic a: the harmful case
            [0.3, 0.5, 0.2],  # out-of-scope, top class b but below threshold: review
        ]
    )
    s = scope_report(gold, probs, labels, threshold=0.65, fallback_tag="other")
    o = s["out_of_scope"]
    assert o[Metric.NUM_SAMPLES] == 4
    assert (o["as_other"], o["to_review"], o["auto_topic"]) == (0.25, 0.5, 0.25)
    assert o["top_is_topic"] == 0.75
    t = s["topics"]
    assert t[Metric.NUM_SAMPLES] == 3
    # Covered = a topic tag applied automatically: item 0 only (right). Item 2 got `other`
    # automatically: not coverage, not a precision error, but lost (nobody reviews it).
    assert t[Metric.COVERAGE] == pytest.approx(1 / 3)
    assert t[Metric.AUTO_PRECISION] == 1.0
    assert t["lost_to_other"] == pytest.approx(1 / 3)
    assert t["answered_other"] == pytest.approx(1 / 3)
    # A topic item auto-tagged with the wrong topic is covered and counts against precision.
    wrong = scope_report(["b", "other"], probs[[0, 3]], labels, 0.65, "other")["topics"]
    assert (wrong[Metric.COVERAGE], wrong[Metric.AUTO_PRECISION]) == (1.0, 0.0)
    assert scope_report(["a"], probs[:1], labels, 0.5, "other") is None


def test_report_has_scope_block_and_out_of_scope_slice_only_with_other_items():
    labels = ["a", "b", "other"]
    items = [
        {"id": i, "title": "t", "description": "", "text": "t", "tag": g}
        for i, g in enumerate(["a", "b", "other", "other"])
    ]
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.7, 0.2, 0.1]])
    r = evaluate_predictions(items, probs, labels, slice_names=["out_of_scope"], threshold=0.5)
    assert r["slices"]["out_of_scope"][Metric.NUM_SAMPLES] == 2
    assert r["scope"]["out_of_scope"]["auto_topic"] == 0.5
    flat = summary_metrics(r)
    assert flat[Metric.OOS_AUTO_TOPIC] == 0.5 and flat[Metric.TOPIC_AUTO_PRECISION] == 1.0
    no_oos = evaluate_predictions(items[:2], probs[:2], labels, slice_names=["out_of_scope"])
    assert no_oos["scope"] is None and "out_of_scope" not in no_oos["slices"]


def test_lower_bound_rule_asks_more_of_a_small_validation_set():
    # 20 items, sorted by confidence; the top 18 right, the two least confident wrong.
    conf = np.linspace(0.99, 0.5, 20)
    correct = np.array([1.0] * 18 + [0.0] * 2)
    # Point rule: all 20 auto-tagged give precision 0.9 >= 0.85.
    assert choose_precision_threshold(conf, correct, 0.85, "point") == pytest.approx(conf[-1])
    # Lower bound: even 18/18 right has a Wilson lower end of ~0.82 < 0.85: unreachable.
    assert choose_precision_threshold(conf, correct, 0.85, "lower_bound") is None
    # With a 0.8 target the lower bound is met by the top 18 only (18/20 -> 0.70 is too low).
    assert choose_precision_threshold(conf, correct, 0.8, "lower_bound") == pytest.approx(conf[17])
    with pytest.raises(ConfigError, match="threshold rule"):
        choose_precision_threshold(conf, correct, 0.8, "median")


def test_per_tag_precision_at_the_threshold_is_each_tags_own():
    """Two auto-tagged tags with different precision: each keeps its own figure."""
    labels = ["a", "b", "other"]
    gold = ["a", "a", "a", "b", "b", "other"]
    probs = np.array(
        [
            [0.9, 0.05, 0.05],  # a right
            [0.9, 0.05, 0.05],  # a right
            [0.05, 0.9, 0.05],  # b wrong (gold a)
            [0.05, 0.9, 0.05],  # b right
            [0.9, 0.05, 0.05],  # a wrong (gold b)
            [0.4, 0.3, 0.3],  # below the threshold: review
        ]
    )
    items = [
        {"id": i, "title": "t", "description": "", "text": "t", "tag": g}
        for i, g in enumerate(gold)
    ]
    r = evaluate_predictions(items, probs, labels, threshold=0.8, slice_names=[])
    at = r["coverage"]["at_threshold"]
    assert at[Metric.AUTO_PRECISION] == pytest.approx(3 / 5)
    assert at["per_class_precision"] == pytest.approx({"a": 2 / 3, "b": 1 / 2})
    assert (at["num_auto"], at["num_review"]) == (5, 1)


def test_val_test_protocol_applies_the_threshold_chosen_on_val(tmp_path):
    """Val and test would each choose a different threshold; test must get val's."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from mltagger.evaluation.protocol import evaluate_val_test

    labels = ["a", "b"]

    def split(rows):
        items = [
            {"id": i, "title": "t", "description": "", "text": "t", "tag": g}
            for i, (g, _) in enumerate(rows)
        ]
        return items, np.array([p for _, p in rows])

    # Val: right at .9 and .8, wrong at .7 -> target 1.0 needs threshold .8.
    val_items, val_probs = split([("a", [0.9, 0.1]), ("b", [0.2, 0.8]), ("b", [0.7, 0.3])])
    # Test on its own would need .95 (its .9 item is wrong).
    test_items, test_probs = split([("a", [0.95, 0.05]), ("a", [0.1, 0.9]), ("b", [0.15, 0.85])])
    data = SimpleNamespace(
        splits={"val": val_items, "test": test_items}, tags=labels, fallback_tag="b"
    )
    cfg = OmegaConf.create(
        {
            "precision_target": 1.0,
            "threshold_rule": "point",
            "min_slice_size": 1,
            "calibration_bins": 10,
            "operating_points": [1.0],
        }
    )
    val_r, test_r, applied = evaluate_val_test(data, labels, val_probs, test_probs, cfg)
    assert val_r["coverage"]["threshold"] == pytest.approx(0.8)
    assert applied == pytest.approx(0.8)
    assert test_r["coverage"]["threshold"] == pytest.approx(0.8)
    assert test_r["coverage"]["threshold_chosen_on"] == "given"
    assert test_r["coverage"]["threshold_for_target"] == pytest.approx(0.95)
    assert test_r["coverage"]["at_threshold"]["num_auto"] == 3
    # A threshold given by a shipped model folder is applied to both splits as it is.
    val_g, test_g, applied_g = evaluate_val_test(
        data, labels, val_probs, test_probs, cfg, threshold=0.6
    )
    assert applied_g == 0.6
    assert val_g["coverage"]["threshold"] == test_g["coverage"]["threshold"] == 0.6


def test_apply_threshold_falls_back_to_other_by_default():
    tags, _, review = apply_threshold(PROBS, LABELS, 0.7)
    assert tags == ["a", "other", "b", "other", "other"] and review.sum() == 3
    # Exactly at the threshold is confident enough.
    assert apply_threshold(np.array([[0.7, 0.3]]), ["a", "b"], 0.7)[0] == ["a"]


def test_reason_names_the_path_of_each_tag():
    from mltagger.models.rule import reason

    assert [reason(False), reason(True)] == ["classifier", "low_confidence"]


def test_per_class_intervals_count_the_right_predictions_of_each_tag():
    pc = report(precision_target=0.85)["per_class"]
    # a: 1 of 2 right; b: 1 of 2; c: 1 of 1 -> Wilson intervals of those counts.
    from mltagger.evaluation.metrics import wilson_interval

    assert pc["b"]["precision_ci95"] == pytest.approx(wilson_interval(1, 2))
    assert pc["c"]["precision_ci95"] == pytest.approx(wilson_interval(1, 1))
    never = evaluate_predictions(ITEMS[:1], PROBS[:1], LABELS, slice_names=[])["per_class"]
    assert never["a"]["precision"] == 1.0
    # c is neither gold nor predicted here: precision 0 by convention, never 1.
    assert never["c"]["precision"] == 0.0 and never["c"]["precision_ci95"] is None


@pytest.mark.parametrize("seed", range(6))
def test_lower_bound_threshold_matches_the_wilson_interval_at_every_cut(seed):
    """The vectorised rule equals the plain definition: the smallest observed confidence whose
    auto-tagged set has a Wilson lower bound >= target."""
    from mltagger.evaluation.metrics import wilson_interval

    rng = np.random.default_rng(seed)
    conf = np.round(rng.uniform(0.3, 1.0, size=60), 2)  # ties on purpose
    correct = (rng.uniform(size=60) < conf).astype(float)
    for target in (0.6, 0.75, 0.85):
        expected = None
        for t in sorted(set(conf)):
            auto = conf >= t
            lo = wilson_interval(int(correct[auto].sum()), int(auto.sum()))[0]
            if lo >= target - 1e-12:
                expected = float(t)
                break
        assert choose_precision_threshold(conf, correct, target, "lower_bound") == expected, target


def test_threshold_on_a_single_item_and_on_none():
    assert choose_precision_threshold(np.array([0.8]), np.array([1.0]), 0.9) == pytest.approx(0.8)
    assert choose_precision_threshold(np.array([]), np.array([]), 0.9) is None


def test_coverage_curve_rows_and_empty_input():
    from mltagger.evaluation.metrics import coverage_curve

    rows = coverage_curve(np.array([0.9, 0.5]), np.array([1.0, 0.0]), [0.6])
    assert rows == [{"threshold": 0.6, "coverage": 0.5, "precision": 1.0, "num_auto": 1}]
    empty = coverage_curve(np.array([]), np.array([]), [0.5])
    assert empty == [{"threshold": 0.5, "coverage": 0.0, "precision": None, "num_auto": 0}]


def test_lower_bound_rule_uses_the_exact_wilson_formula():
    """20 of 20 right: a target just above their Wilson lower bound is out of reach (a bound a
    little too generous, e.g. z^2/5n^2 for z^2/4n^2 in the root, would reach it)."""
    from mltagger.evaluation.metrics import wilson_interval

    lo = wilson_interval(20, 20)[0]
    conf, correct = np.full(20, 0.9), np.ones(20)
    assert choose_precision_threshold(conf, correct, lo, "lower_bound") == pytest.approx(0.9)
    assert choose_precision_threshold(conf, correct, lo + 0.004, "lower_bound") is None


def test_per_tag_thresholds_apply_the_top_class_own_threshold():
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
    labels = ["a", "b", "other"]
    tags, _, review = apply_threshold(probs, labels, {"a": 0.6, "b": 0.75, "other": 0.9})
    assert tags == ["a", "other", "other"]
    assert review.tolist() == [False, True, True]
    # The same numbers as one global threshold give another answer: the mapping is used.
    assert apply_threshold(probs, labels, 0.6)[0] == ["a", "b", "other"]
    with pytest.raises(ValueError, match="miss the classes"):
        apply_threshold(probs, labels, {"a": 0.5})


def _tag_data(n_small_right: int, n_small_wrong: int = 0):
    """Big tag a: 200 items, 95% right at confidence .9 (the wrong ones at .6); small tag b."""
    rows, gold = [], []
    for i in range(200):
        right = i % 20 != 0
        rows.append([0.9, 0.05, 0.05] if right else [0.6, 0.3, 0.1])
        gold.append("a" if right else "b")
    for _ in range(n_small_right):
        rows.append([0.05, 0.9, 0.05])
        gold.append("b")
    for _ in range(n_small_wrong):
        rows.append([0.3, 0.65, 0.05])
        gold.append("a")
    return np.array(rows), gold


def test_tag_thresholds_own_rule_cannot_prove_a_small_tag_but_pooled_can():
    from mltagger.evaluation.thresholds import choose_tag_thresholds
    from mltagger.models.rule import NEVER

    probs, gold = _tag_data(n_small_right=10, n_small_wrong=2)
    labels = ["a", "b", "other"]
    own = choose_tag_thresholds(probs, gold, labels, 0.85, rule="own")
    # 10 of 10 right at .9: Wilson lower bound 0.72 < .85, so the small tag never auto-tags.
    assert own["thresholds"]["b"] == NEVER
    # 190 of 200 right: its own lower bound (0.91) clears .85 down to the lowest confidence.
    assert own["thresholds"]["a"] == pytest.approx(0.6)
    pooled = choose_tag_thresholds(probs, gold, labels, 0.85, rule="pooled", prior_strength=20)
    b = pooled["per_tag"]["b"]
    assert pooled["thresholds"]["b"] == pytest.approx(0.9)
    assert b["num_auto"] == 10 and b["precision"] == 1.0
    assert b["own_lower"] < 0.85 <= b["pooled_lower"]
    # Prior centre at b's threshold .9: every item (any tag) with confidence >= .9 is right.
    assert b["prior_mean"] == pytest.approx(1.0, abs=1e-5)
    # At .65 the centre is 200/202 and b's own 10 of 12 pull the bound under .85: not chosen.
    from scipy.stats import beta

    centre = 200 / 202
    assert beta.ppf(0.025, 10 + 20 * centre, 2 + 20 * (1 - centre)) < 0.85
    # `other` is never the top class here: no items, never auto-tagged, nothing invented.
    assert pooled["per_tag"]["other"]["num_predicted"] == 0
    assert pooled["thresholds"]["other"] == NEVER


def test_tag_thresholds_pooling_does_not_rescue_a_tag_that_is_wrong():
    from mltagger.evaluation.thresholds import choose_tag_thresholds

    probs, gold = _tag_data(n_small_right=3, n_small_wrong=0)
    probs = np.vstack([probs, np.tile([0.05, 0.9, 0.05], (6, 1))])
    gold = [*gold, *["a"] * 6]  # six of nine confident b answers are wrong
    pooled = choose_tag_thresholds(probs, gold, ["a", "b", "other"], 0.85)
    assert pooled["thresholds"]["b"] > 1.0
    assert pooled["per_tag"]["b"]["pooled_lower"] is None


def test_evaluate_predictions_reports_per_tag_thresholds_and_their_precision():
    from mltagger.evaluation.metrics import evaluate_predictions

    labels = ["a", "b", "other"]
    items = [{"id": i, "text": "x", "tag": g} for i, g in enumerate(["a", "b", "a", "other"])]
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.7, 0.2], [0.1, 0.1, 0.8]])
    thr = {"a": 0.5, "b": 0.75, "other": 0.5}
    rep = evaluate_predictions(items, probs, labels, threshold=thr, slice_names=[])
    at = rep["coverage"]["at_threshold"]
    assert rep["coverage"]["threshold"] == thr and rep["coverage"]["per_tag"] is True
    assert at["num_auto"] == 3 and at[Metric.AUTO_PRECISION] == 1.0
    assert at["per_class_auto"]["b"]["num_auto"] == 1
    assert summary_metrics(rep)[Metric.COVERAGE] == pytest.approx(0.75)
    assert Metric.THRESHOLD not in summary_metrics(rep)
    table = per_class_table(rep)
    assert "| b | " in table and "0.750" in table
