"""Each tag's operating point, side by side on CV, test and fresh (the model card and the lines
`make train` ends with)."""

from __future__ import annotations

import numpy as np

from mltagger.evaluation.metrics import evaluate_predictions
from mltagger.training.card import per_tag_points

LABELS = ["natural-language-processing", "mlops", "other"]


def report(gold, probs, thresholds):
    return evaluate_predictions(
        [{"id": i, "text": f"t{i}", "tag": g} for i, g in enumerate(gold)],
        np.asarray(probs),
        LABELS,
        threshold=thresholds,
        fallback_tag="other",
    )


def test_per_tag_points_show_cv_test_and_fresh_per_tag():
    thresholds = {"natural-language-processing": 0.6, "mlops": 0.9, "other": 0.5}
    # test: both NLP items auto-tagged and right; the mlops item below its threshold
    test = report(
        ["natural-language-processing", "natural-language-processing", "mlops"],
        [[0.9, 0.05, 0.05], [0.7, 0.2, 0.1], [0.1, 0.8, 0.1]],
        thresholds,
    )
    # fresh: an out-of-scope item confidently tagged NLP (the sink the issue describes)
    fresh = report(
        ["natural-language-processing", "other", "mlops", "mlops"],
        [[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.05, 0.95, 0.0], [0.3, 0.6, 0.1]],
        thresholds,
    )
    decision = {
        "thresholds": thresholds,
        "per_tag_detail": {"mlops": {"precision": 1.0, "num_auto": 9, "pooled_lower": 0.946}},
    }
    lines = per_tag_points(decision, test, fresh)
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in lines[2:]}
    nlp, mlops = rows["natural-language-processing"], rows["mlops"]
    # tag | threshold | CV prec (n) | CV lower | test cov | test prec (n) | test low | fresh ...
    assert nlp[1] == "0.600" and nlp[2] == "—"  # no out-of-fold detail for NLP here
    assert nlp[4] == "1.000" and nlp[5] == "1.000 (2)"
    assert nlp[7] == "1.000" and nlp[8] == "0.500 (2)"  # half of fresh's NLP tags are wrong
    assert mlops[2] == "1.000 (9)" and mlops[3] == "0.946"
    assert mlops[4] == "0.000" and mlops[5] == "—"  # test's mlops item went to review
    assert mlops[7] == "0.500" and mlops[8] == "1.000 (1)"
    assert float(mlops[9].strip(" |")) < 0.5  # the lower bound of one right answer is low
