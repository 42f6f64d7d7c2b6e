"""The package pool's labelling functions: a tag only when exactly one tag votes; packages the
fresh set cites never enter the pool."""

from __future__ import annotations

import json

from mltagger.data.package_pool import build, fresh_package_names, label, votes, write_candidates


def test_one_voting_tag_labels_none_or_two_abstain():
    assert label("prophet-lite: Fast time series forecasting for business data") == "time-series"
    assert label("gymx: Gymnasium environments for reinforcement learning agents") == (
        "reinforcement-learning"
    )
    assert label("boosty: gradient boosting trees for tabular data") == "other"
    assert label("webthing: a small web framework for Python") is None  # no vote
    # forecasting + reinforcement learning: two tags vote, the pool leaves it out
    assert label("rlcast: reinforcement learning for demand forecasting") is None
    assert set(votes("rlcast: reinforcement learning for demand forecasting")) == {
        "time-series",
        "reinforcement-learning",
    }


def test_packages_the_fresh_set_cites_are_excluded_by_name(tmp_path):
    root = tmp_path
    (root / "data" / "eval").mkdir(parents=True)
    fresh = [
        {
            "id": 100001,
            "created_on": "2025-01-01",
            "title": "Chronos Bolt",
            "description": "A pretrained forecasting model family.",
            "tag": "time-series",
            "reference": "pypi:Chronos_Forecasting==2.0 (2025-01)",
        }
    ]
    (root / "data" / "eval" / "fresh.json").write_text(json.dumps(fresh))
    for name in ("projects", "other"):
        (root / "data" / f"{name}.json").write_text("[]")
    assert fresh_package_names(root / "data" / "eval" / "fresh.json") == {"chronos-forecasting"}
    rows = [
        {
            "name": "chronos-forecasting",
            "version": "2.1",
            "month": "2025-06",
            "rank": "",
            "summary": "Chronos: pretrained models for time series forecasting",
        },
        {
            "name": "tscast",
            "version": "0.3",
            "month": "2024-02",
            "rank": "",
            "summary": "Probabilistic time series forecasting with deep models",
        },
        {
            "name": "oldcast",
            "version": "0.1",
            "month": "2021-02",
            "rank": "",
            "summary": "Time series forecasting from before the date range",
        },
    ]
    write_candidates(rows, root / "reg.tsv")
    items, _, report = build(root / "reg.tsv", root)
    assert [(it["title"], it["tag"], it["id"]) for it in items] == [
        ("tscast", "time-series", 300001)
    ]
    assert report["excluded_fresh_packages"] == 1
