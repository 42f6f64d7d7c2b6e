"""The cycle's labels from a real SQLite store: gold, weak, recent window, exclusions,
quarantine of a poisoned batch, and the label-data gates."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from mltagger.cycle.labels import (
    LabelSettings,
    chi2_sf,
    collect,
    find_poisoned,
    label_gates,
    two_proportion_p,
)
from mltagger.serving.store import Store
from mltagger.serving.tables import items, reviews

TAGS = ["natural-language-processing", "computer-vision", "mlops", "other"]
T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


def _item(store: Store, k: int, top: str, author: str | None = None) -> int:
    scores = {t: (0.7 if t == top else 0.1) for t in TAGS}
    return store.add_items(
        [
            {
                "title": f"item {k}",
                "description": f"text {k}",
                "content_hash": f"{k:064x}",
                "tag": "other",
                "tagged_by": "model",
                "model_version": "v1",
                "scores": scores,
                "reason": "low_confidence",
                "needs_review": True,
                "model_tag": "other",
                "author_tag": author,
                "source": "api",
            }
        ]
    )[0]


def _review(store: Store, item_id: int, tag: str, who: str, day: int) -> None:
    store.review(item_id, tag, reviewer=who)
    with store.engine.begin() as conn:
        rid = conn.execute(sa.select(sa.func.max(reviews.c.id))).scalar()
        conn.execute(
            reviews.update()
            .where(reviews.c.id == rid)
            .values(created_at=T0 + timedelta(days=day, hours=1))
        )


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'store.db'}")
    yield s
    s.close()


def fill(store: Store, days: int = 4, per_day: int = 30, poison: str | None = None, seed=0):
    """Items whose serving model's top answer is right 80% of the time, reviewed correctly by
    two reviewers; `poison`: "shuffle" (reviewer b's answers of the last day permuted) or
    "flip" (30% of the last day's answers changed)."""
    rng = random.Random(seed)
    topics = TAGS[:3]
    k = 0
    for day in range(days):
        todo = []
        for j in range(per_day):
            gold = topics[(k + j) % 3]
            top = gold if rng.random() < 0.8 else rng.choice([t for t in topics if t != gold])
            author = gold if rng.random() < 0.8 else None  # most items carry the author's tag
            todo.append((_item(store, k, top, author=author), gold, "a" if j % 2 else "b"))
            k += 1
        last = day == days - 1
        if last and poison == "shuffle":
            mine = [i for i, t in enumerate(todo) if t[2] == "b"]
            tags = [todo[i][1] for i in mine]
            rng.shuffle(tags)
            for i, t in zip(mine, tags, strict=True):
                todo[i] = (todo[i][0], t, "b")
        if last and poison == "flip":
            for i in rng.sample(range(len(todo)), k=round(0.3 * len(todo))):
                item_id, gold, who = todo[i]
                todo[i] = (item_id, rng.choice([t for t in topics if t != gold]), who)
        for item_id, tag, who in todo:
            _review(store, item_id, tag, who, day)


def test_gold_recent_window_and_weights(store):
    fill(store, days=3, per_day=20)
    s = LabelSettings(recent=15, min_batch=5)
    out = collect(store.engine, TAGS, settings=s)
    assert len(out.recent) == 15 and len(out.train) == 45
    # the recent window is the newest labels, kept out of training
    assert min(r["review_id"] for r in out.recent) > max(r["review_id"] for r in out.train)
    assert not out.weak  # every authored item was reviewed: nothing weak is left
    assert out.author_weight == 1.0 and 30 < out.author_overlap < 60  # ~80% carry one
    assert out.new_gold == 60


def test_left_out_counted_by_reason(store):
    fill(store, days=2, per_day=20)
    ids = [_item(store, 900 + j, "mlops") for j in range(3)]
    store.review(ids[0], "quantum-computing", reviewer="a")  # not an approved tag
    store.review(ids[1], "mlops", reviewer="a")
    with store.engine.begin() as conn:  # the item was deleted later (SQLite, no FK enforcement)
        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        conn.execute(items.delete().where(items.c.id == ids[1]))
    held = {"item 902 text 902"}
    store.review(ids[2], "mlops", reviewer="a")
    from mltagger.data.duplicates import dedup_key

    out = collect(
        store.engine,
        TAGS,
        held_out_keys={dedup_key(k) for k in held},
        settings=LabelSettings(recent=10),
    )
    assert out.left_out["tag_not_approved"] == [ids[0]]
    assert out.left_out["item_gone"] == [ids[1]]
    assert out.left_out["repeats_test_or_fresh"] == [ids[2]]
    kept = {r["item_id"] for r in (*out.train, *out.recent)}
    assert not kept & set(ids)


@pytest.mark.parametrize(
    "kind, batch", [("shuffle", "reviewer:b@2026-03-04"), ("flip", "day:2026-03-04")]
)
def test_a_poisoned_batch_is_quarantined_and_the_rest_trains(store, kind, batch):
    fill(store, days=4, per_day=40, poison=kind, seed=3)
    out = collect(store.engine, TAGS, settings=LabelSettings(recent=20, min_batch=10))
    assert batch in out.quarantined
    assert all(
        not name.startswith("reviewer:a@2026-03-0") or name.endswith("04")
        for name in out.quarantined
    )
    assert len(out.train) + len(out.recent) > 80  # the clean days still train
    bad = set(out.left_out["quarantined"])
    assert not bad & {r["item_id"] for r in (*out.train, *out.recent)}


def test_clean_labels_quarantine_nothing(store):
    for seed in range(3):
        fill(store, days=4, per_day=40, seed=seed)
    out = collect(store.engine, TAGS, settings=LabelSettings(recent=20, min_batch=10))
    assert out.quarantined == {}


def test_a_person_can_release_a_batch(store):
    fill(store, days=4, per_day=40, poison="shuffle", seed=3)
    out = collect(
        store.engine,
        TAGS,
        released={"reviewer:b@2026-03-04"},
        settings=LabelSettings(recent=20, min_batch=10),
    )
    assert "reviewer:b@2026-03-04" not in out.quarantined


def test_label_gates_one_reviewer_and_shift(store):
    fill(store, days=2, per_day=30)
    out = collect(store.engine, TAGS, settings=LabelSettings(recent=10))
    earlier = ["mlops"] * 60
    rows = {g["name"]: g for g in label_gates(out, earlier, LabelSettings(min_share_labels=20))}
    assert rows["labels.one_reviewer"]["status"] == "pass"  # a and b half each
    assert rows["labels.distribution_shift"]["status"] == "fail"  # thirds vs all mlops
    same = label_gates(out, [r["tag"] for r in out.train], LabelSettings(min_share_labels=20))
    assert {g["name"]: g["status"] for g in same}["labels.distribution_shift"] == "pass"
    for r in out.train + out.recent:
        r["reviewer"] = "solo"
    rows = {g["name"]: g for g in label_gates(out, earlier, LabelSettings(min_share_labels=20))}
    assert rows["labels.one_reviewer"]["status"] == "fail"


def test_too_few_labels_is_not_enough_evidence(store):
    fill(store, days=1, per_day=10)
    out = collect(store.engine, TAGS, settings=LabelSettings(recent=5))
    rows = label_gates(out, [], LabelSettings())
    assert {g["status"] for g in rows} == {"not_enough_evidence"}


def test_statistics():
    assert two_proportion_p(10, 40, 80, 100) < 1e-6
    assert two_proportion_p(40, 50, 40, 50) == pytest.approx(0.5)
    assert chi2_sf(0.0, 3) == 1.0
    assert chi2_sf(7.815, 3) == pytest.approx(0.05, abs=1e-3)  # the textbook 95% point
    assert chi2_sf(3.841, 1) == pytest.approx(0.05, abs=1e-3)


def test_find_poisoned_needs_enough_labels():
    rows = [{"tag": "a", "model_top": "b", "reviewer": "x", "created_at": T0} for _ in range(5)]
    rows += [
        {"tag": "a", "model_top": "a", "reviewer": "y", "created_at": T0 + timedelta(days=1)}
        for _ in range(50)
    ]
    found, table = find_poisoned(rows, LabelSettings(min_batch=10))
    assert found == {}
    assert {r["batch"] for r in table} >= {"reviewer:x@2026-03-01", "day:2026-03-02"}
    found, _ = find_poisoned(rows * 3, LabelSettings(min_batch=10))
    assert "reviewer:x@2026-03-01" in found
