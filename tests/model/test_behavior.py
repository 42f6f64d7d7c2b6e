"""CheckList-style behavioural tests of a trained model (`make test-model`).

Each family must reach its minimum pass rate (mltagger.behavior.MIN_PASS_RATE); a failure lists
the cases the model got wrong, which is the useful part.
"""

from __future__ import annotations

import pytest

from mltagger.evaluation.behavior import MIN_PASS_RATE


def _explain(family: dict) -> str:
    lines = [f"{family['family']}: {family['passed']}/{family['total']} passed"]
    lines += [f"  {f['case'][:110]} -> {f['got']}" for f in family["failures"][:15]]
    return "\n".join(lines)


@pytest.mark.parametrize("family", list(MIN_PASS_RATE))
def test_family_reaches_its_minimum_pass_rate(suite, family):
    result = suite[family]
    assert result["total"] > 0
    assert result["pass_rate"] >= MIN_PASS_RATE[family], _explain(result)


def test_minimum_functionality_holds_for_every_tag(suite):
    """No tag may be unusable: at least half of its clear-cut cases right."""
    by_tag = suite["minimum_functionality"]["by_tag"]
    weak = {tag: rate for tag, rate in by_tag.items() if rate < 0.5}
    assert not weak, f"tags failing most clear-cut cases: {weak}"
