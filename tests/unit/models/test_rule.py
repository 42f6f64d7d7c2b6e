"""The predictor's decision rule on known logits: temperature, threshold, fallback, reasons."""

from __future__ import annotations

import numpy as np
import pytest

from tests.fakes import LABELS, TEMPERATURE, THRESHOLD, FakePredictor, make_model_folder


@pytest.fixture
def predictor(tmp_path):
    return FakePredictor(make_model_folder(tmp_path / "model"))


def test_probabilities_are_softmax_of_logits_over_the_temperature(predictor):
    assert predictor.inference.temperature == TEMPERATURE != 1.0
    logits = np.array([[3.0, 1.0, 0.0, 0.0, -2.0, 0.5, 1.5]])
    z = logits / TEMPERATURE
    expected = np.exp(z) / np.exp(z).sum()
    np.testing.assert_allclose(predictor.probabilities(logits), expected, rtol=1e-12)


def test_confident_items_are_auto_tagged_and_unsure_ones_go_to_review(predictor):
    items = [
        {"id": 1, "text": "Image segmentation"},  # one keyword: sure
        {"id": 2, "text": "Nothing to go on"},  # no keyword: uniform scores
        {"id": 3, "text": "Graph forecast"},  # two keywords: split between two tags
    ]
    sure, blank, split = predictor.predict(items)
    assert sure["tag"] == "computer-vision" and sure["needs_review"] is False
    assert sure["reason"] == "classifier" and sure["confidence"] > THRESHOLD
    for p in (blank, split):
        assert p["tag"] == "other" and p["needs_review"] is True
        assert p["reason"] == "low_confidence" and p["confidence"] < THRESHOLD
    assert blank["confidence"] == pytest.approx(1 / len(LABELS), abs=1e-6)
    assert split["scores"]["graph-learning"] == pytest.approx(split["scores"]["time-series"])
    assert [p["id"] for p in (sure, blank, split)] == [1, 2, 3]
    assert sure["model_version"] == "fake-1"


def test_probabilities_stay_finite_for_large_logits_row_by_row(predictor):
    logits = np.array([[2000.0, 0.0, 0, 0, 0, 0, 0], [0.0, -10.0, 0, 0, 0, 0, 0]])
    probs = predictor.probabilities(logits)
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert probs[0, 0] == pytest.approx(1.0)
    # The second row is its own softmax: [0, -10/T, 0, ...] with T = 2.
    assert probs[1, 0] == pytest.approx(1 / (6 + np.exp(-10 / TEMPERATURE)), rel=1e-12)


def test_probabilities_of_float32_logits_are_computed_in_float64(predictor):
    logits = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]], dtype=np.float32)
    z = logits.astype(np.float64) / TEMPERATURE
    expected = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    probs = predictor.probabilities(logits)
    assert probs.dtype == np.float64
    np.testing.assert_allclose(probs, expected, rtol=1e-12)


def test_decide_rounds_to_six_decimals_and_uses_the_folders_fallback(tmp_path):
    from mltagger.models.modelio import InferenceConfig, write_model_metadata

    folder = make_model_folder(tmp_path / "m")
    write_model_metadata(
        folder,
        list(LABELS),
        InferenceConfig(
            threshold=0.8,
            temperature=2.0,
            fallback_tag="mlops",
            approved_tags=list(LABELS),
            model_version="f",
        ),
    )
    predictor = FakePredictor(folder)
    probs = np.array([[0.1234567, 0.8765433, 0, 0, 0, 0, 0], [0.5, 0.5, 0, 0, 0, 0, 0]])
    sure, unsure = predictor.decide([{"id": 1}, {"id": 2}], probs)
    assert (
        sure["confidence"] == 0.876543 and sure["scores"]["natural-language-processing"] == 0.123457
    )
    assert unsure["tag"] == "mlops" and unsure["needs_review"] is True


def test_decide_refuses_probabilities_that_do_not_match_the_items_or_the_labels(tmp_path):
    predictor = FakePredictor(make_model_folder(tmp_path / "m"))
    items = [{"id": 1}, {"id": 2}]
    width = len(LABELS)
    with pytest.raises(ValueError):  # one row for two items: never a silently shorter answer
        predictor.decide(items, np.full((1, width), 1 / width))
    for wrong in (width - 1, width + 1):  # a row per item, but not one per label
        with pytest.raises(ValueError):
            predictor.decide(items, np.full((2, wrong), 1 / wrong))


def test_a_folder_with_per_tag_thresholds_applies_each_tags_own(tmp_path):
    """The same confident computer-vision item is auto-tagged under a low CV threshold and sent
    to review under a high one; the global threshold in the folder is not used then."""
    from mltagger.models.modelio import ModelNotAvailable, read_model_metadata

    item = [{"id": 1, "text": "Image segmentation"}]
    conf = FakePredictor(make_model_folder(tmp_path / "g")).predict(item)[0]["confidence"]
    low = dict.fromkeys(LABELS, 0.99) | {"computer-vision": conf - 0.01}
    high = dict.fromkeys(LABELS, 0.0) | {"computer-vision": conf + 0.01}
    auto = FakePredictor(make_model_folder(tmp_path / "low", threshold=0.999, thresholds=low))
    review = FakePredictor(make_model_folder(tmp_path / "high", threshold=0.0, thresholds=high))
    assert auto.predict(item)[0]["tag"] == "computer-vision"
    assert review.predict(item)[0]["needs_review"] is True
    assert read_model_metadata(tmp_path / "low")[1].thresholds == low
    # Thresholds that do not name exactly the model's classes are refused when opening.
    make_model_folder(tmp_path / "bad", thresholds={"computer-vision": 0.5})
    with pytest.raises(ModelNotAvailable, match="per-tag thresholds"):
        read_model_metadata(tmp_path / "bad")


def test_the_gate_scales_the_topics_and_gives_other_the_rest():
    from mltagger.models.rule import with_gate

    probs = np.array([[0.6, 0.2, 0.2], [0.1, 0.1, 0.8], [0.0, 0.0, 1.0]])
    got = with_gate(probs, np.array([0.5, 1.0, 0.3]), other=2)
    np.testing.assert_allclose(got.sum(axis=1), 1.0)
    np.testing.assert_allclose(got[:, 2], [0.5, 0.0, 0.7])
    # the topics keep their ratio (0.6 : 0.2), scaled to the in-scope share
    np.testing.assert_allclose(got[0, :2], [0.375, 0.125])
    np.testing.assert_allclose(got[1, :2], [0.5, 0.5])
    # no topic mass at all: the in-scope share is split evenly over the topics
    np.testing.assert_allclose(got[2, :2], [0.15, 0.15])


def test_the_gate_stops_items_whatever_the_topic_softmax_says():
    from mltagger.models.rule import apply_threshold, gate_mask, reason

    probs = np.array([[0.99, 0.01], [0.99, 0.01], [0.4, 0.6]])
    labels = ["natural-language-processing", "other"]
    out = gate_mask(np.array([0.1, 0.5, 0.1]), 0.5, 3)
    assert out.tolist() == [True, False, True]  # at the threshold an item passes
    tags, conf, review = apply_threshold(probs, labels, 0.9, "other", out)
    assert tags == ["other", "natural-language-processing", "other"]
    assert review.tolist() == [True, False, True]  # stopped items go to a person
    assert conf.tolist() == [0.99, 0.99, 0.6]
    assert [reason(r, o) for r, o in zip(review, out, strict=True)] == [
        "out_of_scope", "classifier", "out_of_scope",
    ]  # fmt: skip
    assert reason(True) == "low_confidence" and reason(True, True) == "out_of_scope"
    # no gate threshold: nobody is stopped; a threshold without scores is an error, not "no gate"
    assert not gate_mask(None, None, 3).any()
    with pytest.raises(ValueError, match="in-scope probabilities"):
        gate_mask(None, 0.5, 3)
    with pytest.raises(ValueError, match="shape"):
        gate_mask(np.array([0.1, 0.2]), 0.5, 3)
    with pytest.raises(ValueError, match="shape"):
        apply_threshold(probs, labels, 0.9, "other", np.array([True]))


def test_a_folder_with_a_gate_answers_out_of_scope_with_the_gates_confidence(tmp_path):
    from mltagger.models.modelio import ModelNotAvailable, read_model_metadata

    items = [
        {"id": 1, "text": "Cheap flights and hotel deals"},
        {"id": 2, "text": "Image segmentation of street scenes"},
    ]
    plain = FakePredictor(make_model_folder(tmp_path / "plain", threshold=0.0)).predict(items)
    gated = FakePredictor(
        make_model_folder(tmp_path / "gated", threshold=0.0, gate_threshold=0.5)
    ).predict(items)
    assert "in_scope" not in plain[0] and plain[0]["reason"] == "classifier"
    spam, image = gated
    assert spam["in_scope"] < 0.5 < image["in_scope"]
    assert (spam["tag"], spam["reason"], spam["needs_review"]) == ("other", "out_of_scope", True)
    assert spam["confidence"] == pytest.approx(1 - spam["in_scope"], abs=1e-6)
    assert spam["scores"] == plain[0]["scores"]  # the topic softmax is still reported
    assert image["tag"] == plain[1]["tag"] and image["reason"] == "classifier"
    never = FakePredictor(make_model_folder(tmp_path / "zero", threshold=0.0, gate_threshold=0.0))
    assert [p["reason"] for p in never.predict(items)] == ["classifier", "classifier"]
    # a gate threshold without the gate's model, or outside [0, 1]: refused when opening
    (tmp_path / "gated" / "gate.json").unlink()
    with pytest.raises(ModelNotAvailable, match=r"no gate\.json"):
        read_model_metadata(tmp_path / "gated")
    import json

    bad = tmp_path / "zero" / "inference.json"
    bad.write_text(json.dumps({**json.loads(bad.read_text()), "gate_threshold": 1.5}))
    with pytest.raises(ModelNotAvailable, match="not a probability"):
        read_model_metadata(tmp_path / "zero")


def test_a_gated_folder_says_which_items_its_gate_stops_for_evaluation(tmp_path):
    items = [
        {"text": "Cheap flights and hotel deals"},
        {"text": "Graph neural network for molecules"},
    ]
    plain = FakePredictor(make_model_folder(tmp_path / "plain"))
    gated = FakePredictor(make_model_folder(tmp_path / "gated", gate_threshold=0.5))
    assert plain.stopped(items) is None and plain.stopped_splits(items, items) is None
    val, test = gated.stopped_splits(items, items[:1])
    assert val.tolist() == [True, False] and test.tolist() == [True]
