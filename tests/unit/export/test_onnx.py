"""The parity figures an export is judged by, on probabilities worked out by hand."""

import numpy as np
import pytest

from mltagger.export.onnx import parity


def test_parity_counts_top_class_agreement_and_the_largest_difference():
    ref = np.array([[0.7, 0.3], [0.4, 0.6], [0.5, 0.5001]])
    cand = np.array([[0.69, 0.31], [0.61, 0.39], [0.5001, 0.5]])
    p = parity(ref, cand)
    assert p["num_samples"] == 3
    assert p["label_agreement"] == pytest.approx(1 / 3)  # rows 2 and 3 flip their top class
    assert p["max_prob_diff"] == pytest.approx(0.21)
    assert p["mean_prob_diff"] == pytest.approx((0.01 * 2 + 0.21 * 2 + 0.0001 * 2) / 6)


def test_identical_and_empty_outputs():
    ref = np.array([[0.2, 0.8]])
    assert parity(ref, ref.copy()) == {
        "max_prob_diff": 0.0, "mean_prob_diff": 0.0, "label_agreement": 1.0, "num_samples": 1,
    }  # fmt: skip
    empty = parity(np.zeros((0, 2)), np.zeros((0, 2)))
    assert empty["label_agreement"] == 1.0 and empty["num_samples"] == 0
