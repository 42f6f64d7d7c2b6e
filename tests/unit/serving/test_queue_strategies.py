"""The review queue's label-value strategies as the service runs them: on the store's own scores,
with the maximum age and the random share of conf/serve.yaml, through GET /review and the page."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mltagger.core.config import compose_config
from mltagger.core.errors import ConfigError
from mltagger.serving.api import create_app
from mltagger.serving.store import MODEL, Store

KEY = "k" * 32
TAGS = ["computer-vision", "mlops", "other"]


def queued(title: str, scores: list[float], **extra) -> dict:
    return {
        "title": title,
        "description": "",
        "content_hash": f"hash-{title}",
        "tag": "other",
        "tagged_by": MODEL,
        "model_version": "m1",
        "needs_review": True,
        "confidence": max(scores),
        "reason": "low_confidence",
        "scores": dict(zip(TAGS, scores, strict=True)),
        "source": "test",
        **extra,
    }


@pytest.fixture
def store(store_url):
    s = Store(store_url)
    yield s
    s.close()


def titles(store, order, **kw) -> list[str]:
    return [it["title"] for it in store.review_queue(10, 0, order, **kw)[0]]


def test_each_strategy_ranks_the_stored_scores(store):
    store.add_items(
        [
            queued("wide", [0.40, 0.30, 0.30]),  # least confident, margin 0.10
            queued("tie", [0.50, 0.45, 0.05]),  # margin 0.05
            queued("sure", [0.80, 0.15, 0.05]),
        ]
    )
    assert titles(store, "oldest") == ["wide", "tie", "sure"]
    assert titles(store, "least_confident") == ["wide", "tie", "sure"]
    assert titles(store, "breaking_ties") == ["tie", "wide", "sure"]
    # a page is a slice of the same order
    assert [it["title"] for it in store.review_queue(1, 1, "breaking_ties")[0]] == ["wide"]


def test_rare_tags_uses_the_reviews_per_tag(store):
    store.add_items([queued("cv", [0.55, 0.45, 0.0]), queued("ops", [0.0, 0.58, 0.42])])
    assert titles(store, "breaking_ties") == ["cv", "ops"]
    done = store.add_items([queued(f"seen{i}", [0.9, 0.1, 0.0]) for i in range(8)])
    for i in done:
        store.review(i, "computer-vision", "ana")
    assert titles(store, "rare_tags") == ["ops", "cv"]


def test_diverse_ties_uses_the_stored_sketches(store):
    same = np.array([1.0, 0.0], dtype=np.float32)
    store.add_items(
        [
            queued("a", [0.50, 0.50, 0.0], embedding=same),
            queued("a-copy", [0.51, 0.49, 0.0], embedding=same),
            queued("b", [0.60, 0.40, 0.0], embedding=np.array([0.0, 1.0], dtype=np.float32)),
        ]
    )
    assert titles(store, "breaking_ties") == ["a", "a-copy", "b"]
    got = [it["title"] for it in store.review_queue(2, 0, "diverse_ties")[0]]
    assert got == ["a", "b"]


def test_an_overdue_item_goes_first_under_every_order(store):
    now = datetime.now(timezone.utc)
    store.add_items(
        [
            queued("tie", [0.5, 0.5, 0.0], created_at=now - timedelta(hours=1)),
            queued("old", [0.9, 0.1, 0.0], created_at=now - timedelta(hours=100)),
        ]
    )
    assert titles(store, "breaking_ties")[0] == "tie"
    assert titles(store, "reported", max_age=None)[0] == "tie"  # lower id first
    for order in ("least_confident", "breaking_ties", "diverse_ties", "rare_tags", "reported",
                  "duplicates"):  # fmt: skip
        got = titles(store, order, max_age=timedelta(hours=72), at=now)
        assert got[0] == "old", order
    assert titles(store, "breaking_ties", max_age=timedelta(hours=200), at=now)[0] == "tie"


def test_the_random_share_is_stable_within_a_day_and_moves_between_days(store):
    store.add_items([queued(f"i{k:02d}", [0.5 + k / 100, 0.5 - k / 100, 0.0]) for k in range(30)])
    day = datetime(2026, 12, 7, 9, tzinfo=timezone.utc)
    plain = titles(store, "breaking_ties", at=day)
    one = titles(store, "breaking_ties", random_share=0.5, at=day)
    again = titles(store, "breaking_ties", random_share=0.5, at=day + timedelta(hours=3))
    other_day = titles(store, "breaking_ties", random_share=0.5, at=day + timedelta(days=1))
    assert one == again
    assert one != plain and other_day != one


def test_get_review_offers_the_strategies_and_the_configured_default(tagger, tmp_path):
    cfg = compose_config(
        "serve",
        [f"model_dir={tmp_path / 'model'}", f"api_key={KEY}", "review.order=breaking_ties"],
    )
    tagger.store.add_items([queued("wide", [0.40, 0.30, 0.30]), queued("tie", [0.50, 0.45, 0.05])])
    with TestClient(create_app(tagger, cfg)) as c:
        head = {"X-API-Key": KEY}
        assert [it["title"] for it in c.get("/review", headers=head).json()["items"]] == [
            "tie", "wide"
        ]  # fmt: skip
        r = c.get("/review?order=least_confident", headers=head)
        assert [it["title"] for it in r.json()["items"]] == ["wide", "tie"]
        r = c.get("/review?order=fastest", headers=head)
        assert r.status_code == 422
        assert "breaking_ties" in r.json()["detail"] and "diverse_ties" in r.json()["detail"]
        spec = c.get("/openapi.json").json()
        (param,) = [
            p for p in spec["paths"]["/review"]["get"]["parameters"] if p["name"] == "order"
        ]
        assert param["schema"]["default"] == "breaking_ties"
        assert "rare_tags" in param["schema"]["enum"]


def test_a_bad_review_setting_is_one_config_error(tagger, tmp_path):
    for override, key in (("review.order=fastest", "review.order"),
                          ("review.random_share=1.5", "review.random_share"),
                          ("review.max_age_hours=0", "review.max_age_hours")):  # fmt: skip
        from mltagger.serving.config_rules import check_serve_config

        cfg = compose_config("serve", [f"model_dir={tmp_path / 'model'}", override])
        with pytest.raises(ConfigError, match=key):
            check_serve_config(cfg)


def test_coverage_windows_count_the_reviews_made_by_each_window(store):
    sure = {"needs_review": False, "reason": "classifier"}
    first = store.add_items([queued(f"a{i}", [0.5, 0.5, 0.0]) for i in range(4)])
    for i in first[:2]:
        store.review(i, "mlops", "ana")
    store.add_items([queued(f"b{i}", [0.9, 0.1, 0.0], **sure) for i in range(4)])
    rows = store.coverage_windows(size=4)
    assert [r["coverage"] for r in rows] == [0.0, 1.0]
    assert [r["labels"] for r in rows] == [0, 2]
    assert [r["model_versions"] for r in rows] == [["m1"], ["m1"]]
    # one model version: the signal is not measurable, whatever coverage did
    from mltagger.serving.pages.health import labels_pay

    assert labels_pay(rows)["versions"] == ["m1"]
