"""The figures the cycle reports for each model on a set of items."""

import numpy as np
import pytest

from mltagger.cycle.evaluate import figures


def test_figures_of_the_decision_rule_as_run():
    gold = ["a", "a", "b", "other", "other"]
    ans = {
        "tag": np.array(["a", "other", "a", "b", "other"], dtype=object),
        "auto": np.array([True, False, True, True, False]),
        "top": ["a", "a", "a", "b", "other"],
    }
    f = figures(gold, ans)
    assert f["coverage"] == pytest.approx(3 / 5)
    assert f["precision"] == pytest.approx(1 / 3)  # a right; b-as-a and other-as-b wrong
    assert f["topic_coverage"] == pytest.approx(2 / 3)  # topic items given a topic by itself
    assert f["oos_harm"] == pytest.approx(1 / 2) and f["oos_items"] == 2
    assert f["top1"] == pytest.approx(3 / 5)


def test_figures_of_nothing_applied():
    f = figures(
        ["a"], {"tag": np.array(["other"], dtype=object), "auto": np.array([False]), "top": ["b"]}
    )
    assert f["precision"] is None and f["coverage"] == 0.0 and f["top1"] == 0.0
