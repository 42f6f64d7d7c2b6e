"""The content store on a real SQLite file: WAL mode, versioned migrations, items, feedback,
reviews and the human labels that feed the next training set. The same tests run on a
throw-away PostgreSQL (tests/pg.py) wherever its binaries are installed."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

import numpy as np
import pytest
import sqlalchemy as sa

from mltagger.serving import store as store_module
from mltagger.serving.store import (
    ACTIVE,
    HELD_DUPLICATE,
    HUMAN,
    LATEST_VERSION,
    MODEL,
    ReviewConflict,
    Store,
    StoreError,
    make_engine,
    migrate,
)


@pytest.fixture
def url(store_url):
    return store_url


def row(title: str, tag: str = "computer-vision", **extra) -> dict:
    return {
        "title": title,
        "description": "",
        "content_hash": f"hash-{title}",
        "tag": tag,
        "tagged_by": MODEL,
        "needs_review": False,
        "source": "test",
        **extra,
    }


def test_sqlite_file_is_in_wal_mode_with_every_migration(tmp_path):
    path = tmp_path / "sub" / "store.db"
    store = Store(f"sqlite:///{path}")
    assert store.migrations_applied == list(range(1, LATEST_VERSION + 1))
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_version")]
    assert versions == list(range(1, LATEST_VERSION + 1))
    assert Store(f"sqlite:///{path}").migrations_applied == []  # reopening changes nothing


def test_an_old_database_is_migrated_with_its_data_and_a_newer_one_refused(url):
    engine = make_engine(url)
    assert migrate(engine, target=1) == [1]
    stamp = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with engine.begin() as conn:
        conn.execute(
            store_module.items.insert().values(
                **row("kept", tag="mlops"), created_at=stamp, updated_at=stamp
            )
        )
    engine.dispose()
    store = Store(url)
    assert store.migrations_applied == list(range(2, LATEST_VERSION + 1))
    assert store.get_item(1)["title"] == "kept"
    store.record_ingest("drop.jsonl", "abc", {"stored": 1})  # the v2 table works
    with store.engine.begin() as conn:
        conn.execute(
            store_module.schema_version.insert().values(
                version=99, description="from the future", applied_at=stamp
            )
        )
    store.close()
    with pytest.raises(StoreError, match="newer than this mltagger"):
        Store(url)


def test_items_feedback_review_and_human_labels(url):
    store = Store(url)
    emb = np.arange(4, dtype=np.float32)
    a, b, c = store.add_items(
        [row("a", embedding=emb, embedding_model="m1"), row("b"), row("c", tag="mlops")]
    )
    assert store.ids_by_hash(["hash-a", "hash-c", "nope"]) == {"hash-a": a, "hash-c": c}
    ids, matrix, texts, stale = store.screen_rows("m1")
    assert ids == [a] and np.array_equal(matrix[0], emb) and texts == [("a", "")]
    assert [s["id"] for s in stale] == [b, c]  # no sketch yet: the caller sketches them

    with pytest.raises(StoreError, match="no item with id 999"):
        store.add_feedback(999, "mlops", None)
    fb = store.add_feedback(a, "natural-language-processing", "it is about text")
    assert fb["previous_tag"] == "computer-vision"
    assert store.get_item(a)["needs_review"] is True
    queue, total = store.review_queue(limit=10)
    assert total == 1 and queue[0]["id"] == a and "embedding" not in queue[0]

    reviewed = store.review(c, "time-series", reviewer="ana")
    assert reviewed["tag"] == "time-series" and reviewed["tagged_by"] == HUMAN
    labels = {r["id"]: (r["tag"], r["label_source"]) for r in store.human_labels()}
    assert labels == {a: ("natural-language-processing", "feedback"), c: ("time-series", "review")}
    assert [r["id"] for r in store.human_labels(include_unreviewed_feedback=False)] == [c]
    # Reviewing the reported item settles it: the person's tag wins over the report.
    store.review(a, "computer-vision")
    assert store.review_queue()[1] == 0
    assert {r["id"]: r["tag"] for r in store.human_labels()}[a] == "computer-vision"


def test_human_labels_carry_the_persons_secondary_tags_never_the_models(url):
    store = Store(url)
    reported, reviewed = store.add_items([
        row("Reported item", tag="computer-vision", secondary_tags=["mlops"]),
        row("Reviewed item", tag="computer-vision", secondary_tags=["mlops"]),
    ])  # fmt: skip
    store.add_feedback(reported, "time-series", None, secondary_tags=["graph-learning"])
    store.review(reviewed, "natural-language-processing", secondary_tags=["time-series"])
    got = {r["id"]: r["secondary_tags"] for r in store.human_labels()}
    assert got == {reported: ["graph-learning"], reviewed: ["time-series"]}
    assert store.get_item(reported)["secondary_tags"] == ["mlops"]  # the model's, untouched


def test_duplicate_of_can_point_at_an_earlier_row_of_the_same_insert(url):
    store = Store(url)
    first, second = store.add_items([row("x"), row("y", duplicate_of_position=0)])
    assert store.get_item(second)["duplicate_of"] == first


def test_feedback_and_review_records_are_complete_and_move_updated_at(url):
    store = Store(url)
    (item_id,) = store.add_items([row("Feedback record item", tag="computer-vision")])
    created = store.get_item(item_id)["updated_at"]
    record = store.add_feedback(item_id, "mlops", "really mlops")
    assert set(record) == {
        "id", "item_id", "correct_tag", "previous_tag", "comment", "written_by",
        "secondary_tags", "created_at",
    }  # fmt: skip
    assert record["secondary_tags"] is None
    assert (record["item_id"], record["correct_tag"], record["previous_tag"]) == (
        item_id,
        "mlops",
        "computer-vision",
    )
    assert record["comment"] == "really mlops"
    assert datetime.fromisoformat(record["created_at"]).tzinfo is not None
    (stored,) = store.feedback_for(item_id)
    assert stored["id"] == record["id"] and stored["comment"] == "really mlops"
    after_feedback = store.get_item(item_id)
    assert after_feedback["needs_review"] is True and after_feedback["updated_at"] > created
    reviewed = store.review(item_id, "mlops", reviewer="ana")
    assert reviewed["updated_at"] > after_feedback["updated_at"]
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(store_module.reviews)).all()
    assert [(r.item_id, r.tag, r.previous_tag, r.reviewer) for r in rows] == [
        (item_id, "mlops", "computer-vision", "ana")
    ]
    with pytest.raises(StoreError, match="no item with id 999"):
        store.review(999, "mlops")
    with pytest.raises(StoreError, match="no item with id 999"):
        store.add_feedback(999, "mlops", None)
    store.close()


def test_review_queue_pages_oldest_first(url):
    store = Store(url)
    ids = store.add_items([row(f"Queued item {k}", needs_review=True) for k in range(60)])
    store.add_items([row("Not queued")])
    first, total = store.review_queue()
    assert total == 60 and [it["id"] for it in first] == ids[:50]  # default page: 50
    page, _ = store.review_queue(limit=2, offset=3)
    assert [it["id"] for it in page] == ids[3:5]
    store.close()


def test_embeddings_round_trip_and_hash_lookup_in_chunks(url):
    store = Store(url)
    vec = np.array([0.25, -0.5, 1.0], dtype=np.float32)
    hashes = [f"h{k:05d}" for k in range(1200)]  # looked up 500 at a time
    stored = {hashes[0]: None, hashes[500]: None, hashes[1000]: None, hashes[1199]: None}
    rows = [
        row(f"Embedded {h}", content_hash=h, embedding=vec, embedding_model="m@layer1")
        for h in stored
    ]
    rows.append(row("Not embedded", content_hash="zzz"))
    ids = store.add_items(rows)
    found = store.ids_by_hash(hashes)
    assert found == dict(zip(stored, ids[:4], strict=True))
    got_ids, matrix, _, stale = store.screen_rows("m@layer1")
    assert got_ids == ids[:4] and [s["id"] for s in stale] == [ids[4]]
    np.testing.assert_array_equal(matrix, np.tile(vec, (4, 1)))
    assert matrix.dtype == np.float32
    store.close()


def test_float64_embeddings_are_stored_as_float32(url):
    store = Store(url)
    vec = np.array([0.1, 0.2, 0.3])  # float64, as numpy makes by default
    (item_id,) = store.add_items([row("Float64 vector", embedding=vec, embedding_model="m")])
    ids, matrix, _, _ = store.screen_rows("m")
    assert ids == [item_id] and matrix.shape == (1, 3)
    np.testing.assert_allclose(matrix[0], vec, rtol=1e-6)
    store.close()


# The tables as schema versions 1 and 2 made them (items before status and url_key, v3, and before
# author_tag, model_tag, audit and shadow, v4): frozen here, so the v3 and v4 steps are tested on
# a database an earlier mltagger really wrote.
_LATER = ("status", "url_key", "author_tag", "model_tag", "audit", "shadow")
_v2 = sa.MetaData()
_v2_items = sa.Table(
    "items",
    _v2,
    *[
        sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
        for c in store_module.items.columns
        if c.name not in _LATER
    ],
)
_v2_schema = store_module.schema_version.to_metadata(_v2)
_v2_feedback = store_module.feedback.to_metadata(_v2)
_v2_reviews = store_module.reviews.to_metadata(_v2)


def _v2_store(url: str) -> tuple[sa.Engine, datetime]:
    """An empty store as mltagger 0.x left it at schema version 2."""
    engine = make_engine(url)
    _v2.create_all(engine)
    stamp = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with engine.begin() as conn:
        for version in (1, 2):
            conn.execute(
                _v2_schema.insert().values(version=version, description="old", applied_at=stamp)
            )
    return engine, stamp


def test_a_filled_v2_store_upgrades_in_place_to_status_and_link_keys(url):
    engine, stamp = _v2_store(url)
    with engine.begin() as conn:
        for k in range(30):
            conn.execute(
                _v2_items.insert().values(
                    **row(
                        f"old item {k}",
                        url=f"https://www.github.com/org/repo{k}/" if k % 3 else None,
                    ),
                    created_at=stamp,
                    updated_at=stamp,
                )
            )
        conn.execute(
            _v2_items.insert().values(
                **row(
                    "old near copy",
                    duplicate_of=2,
                    duplicate_kind="near",
                    duplicate_similarity=0.91,
                ),
                created_at=stamp,
                updated_at=stamp,
            )
        )
    engine.dispose()
    store = Store(url)
    assert store.migrations_applied == list(range(3, LATEST_VERSION + 1))
    assert store.count_items() == 31  # nothing lost
    # v4: the model's own tag is kept beside `tag`; nothing is an audit or has an author tag yet
    old = store.get_item(5)
    assert (old["model_tag"], old["audit"], old["author_tag"], old["shadow"]) == (
        "computer-vision", False, None, None,
    )  # fmt: skip
    assert len(store.monitor_rows()) == 31
    assert store.count_by_status() == {ACTIVE: 30, HELD_DUPLICATE: 1}
    assert store.get_item(31)["status"] == HELD_DUPLICATE  # a flagged copy is held
    assert store.get_item(2)["url_key"] == "github.com/org/repo1"
    assert store.get_item(1)["url_key"] is None
    assert store.ids_by_url(["github.com/org/repo4", "nowhere.org/x", None]) == {
        "github.com/org/repo4": 5
    }
    assert store.ids_by_hash_or_url(
        ["hash-old item 7", "hash-nope"], ["github.com/org/repo4", None]
    ) == ({"hash-old item 7": 8}, {"github.com/org/repo4": 5})
    # new rows get their link key and status from add_items
    (new,) = store.add_items([row("new", url="http://github.com/Org/Repo4?x=1")])
    assert store.get_item(new)["url_key"] == "github.com/org/repo4"
    assert store.get_item(new)["status"] == ACTIVE
    store.close()
    assert Store(url).migrations_applied == []  # reopening changes nothing


def test_listing_by_status_and_the_duplicate_decision_in_review(url):
    store = Store(url)
    first, held = store.add_items(
        [
            row("published"),
            row("held copy", duplicate_of_position=0, status=HELD_DUPLICATE, needs_review=True),
        ]
    )
    items, total = store.list_items(ACTIVE)
    assert total == 1 and [it["id"] for it in items] == [first]
    assert [it["id"] for it in store.list_items()[0]] == [held, first]  # newest first
    with pytest.raises(StoreError, match=f"likely duplicate of item {first}"):
        store.review(held, "mlops")  # a held item needs the duplicate question answered
    assert store.get_item(held)["needs_review"] is True  # nothing changed
    kept_out = store.review(held, "mlops", duplicate=True)
    assert (kept_out["status"], kept_out["needs_review"]) == (HELD_DUPLICATE, False)
    published = store.review(held, "mlops", duplicate=False)
    assert published["status"] == ACTIVE and published["tag"] == "mlops"
    assert store.count_by_status() == {ACTIVE: 2}
    store.close()


def test_a_decision_made_on_a_stale_view_is_refused_and_names_the_newer_one(url):
    store = Store(url)
    item, other_item = store.add_items([row("decided twice"), row("decided elsewhere")])
    store.review(other_item, "time-series", "cleo", seen_review=0)  # another item's review
    first = store.review(item, "mlops", "ana", seen_review=0)  # no review yet: 0
    assert first["tag"] == "mlops"
    (r1,) = store.reviews_for(item)
    with pytest.raises(ReviewConflict) as err:  # bob also saw no review
        store.review(item, "graph-learning", "bob", seen_review=0)
    decided = err.value.other
    assert (decided["id"], decided["tag"], decided["reviewer"]) == (r1["id"], "mlops", "ana")
    assert datetime.fromisoformat(decided["created_at"]) == datetime.fromisoformat(
        r1["created_at"]
    )  # as text, as an API answer carries it
    assert str(err.value).startswith(f"item {item} was decided by ana in the meantime")
    assert store.get_item(item)["tag"] == "mlops" and len(store.reviews_for(item)) == 1
    second = store.review(item, "graph-learning", "bob", seen_review=r1["id"])
    assert second["tag"] == "graph-learning"
    r2 = store.reviews_for(item)[-1]
    with pytest.raises(ReviewConflict) as err:  # the newest decision is the one that counts
        store.review(item, "time-series", "cleo", seen_review=r1["id"])
    assert err.value.other["id"] == r2["id"]
    assert store.review(item, "time-series", "cleo", seen_review=r2["id"])["tag"] == "time-series"
    store.close()


def test_a_person_names_which_item_one_repeats(url):
    store = Store(url)
    first, second, third = store.add_items([row("original"), row("repeat"), row("another")])
    kept_out = store.review(second, "mlops", "ana", duplicate_of=first)
    assert (kept_out["status"], kept_out["duplicate_of"], kept_out["duplicate_kind"]) == (
        HELD_DUPLICATE,
        first,
        "person",
    )
    for target in (third, 999):  # itself, or no stored item
        with pytest.raises(StoreError) as err:
            store.review(third, "mlops", "ana", duplicate_of=target)
        assert str(err.value) == (
            f"item {third} cannot be a duplicate of item {target}: give the id of another "
            "stored item"
        )
    assert store.get_item(third)["status"] == ACTIVE  # nothing changed
    plain = store.review(third, "mlops", "ana")  # no duplicate named: nothing of it is set
    assert (plain["status"], plain["duplicate_of"], plain["duplicate_kind"]) == (
        ACTIVE,
        None,
        None,
    )
    store.close()


def test_a_held_item_reviewed_without_an_answer_says_how_to_answer(url):
    store = Store(url)
    first, held = store.add_items(
        [row("shown"), row("held", duplicate_of_position=0, status=HELD_DUPLICATE)]
    )
    with pytest.raises(StoreError) as err:
        store.review(held, "mlops")
    assert str(err.value) == (
        f"item {held} is held as a likely duplicate of item {first}: say duplicate: true "
        "(keep it out) or false (publish it)"
    )
    store.close()


def test_listing_pages_of_fifty_newest_first_and_feedback_records_its_writer(url):
    store = Store(url)
    ids = store.add_items([row(f"listed {k}") for k in range(52)])
    page, total = store.list_items()
    assert total == 52 and [it["id"] for it in page] == ids[::-1][:50]
    page, _ = store.list_items(limit=2, offset=1)
    assert [it["id"] for it in page] == [ids[-2], ids[-3]]
    assert store.add_feedback(ids[0], "mlops", None, "crawler")["written_by"] == "crawler"
    assert store.feedback_for(ids[0])[0]["written_by"] == "crawler"
    store.close()


def test_each_queue_order_and_what_each_queued_item_carries(url):
    store = Store(url)
    old, sure, unsure, held, reported = store.add_items(
        [
            row("oldest", needs_review=True, confidence=0.6),
            row("sure", needs_review=True, confidence=0.9),
            row("unsure", needs_review=True, confidence=0.3),
            row("held", needs_review=True, status=HELD_DUPLICATE, duplicate_of_position=0),
            row("reported", confidence=0.8),
        ]
    )
    store.review(reported, "mlops", "ana")  # decided, then reported twice: back in the queue
    store.add_feedback(reported, "time-series", None)
    store.add_feedback(reported, "graph-learning", None)
    store.add_feedback(sure, "mlops", None)

    def ids(order: str) -> list[int]:
        return [it["id"] for it in store.review_queue(order=order)[0]]

    assert ids("oldest") == [old, sure, unsure, held, reported]
    # no confidence stored (held) after every number
    assert ids("least_confident") == [unsure, old, reported, sure, held]
    assert ids("reported") == [reported, sure, old, unsure, held]
    assert ids("duplicates") == [held, old, sure, unsure, reported]
    queued = {it["id"]: it for it in store.review_queue()[0]}
    assert {i: it["reports"] for i, it in queued.items()} == {
        old: 0, sure: 1, unsure: 0, held: 0, reported: 2
    }  # fmt: skip
    latest = store.reviews_for(reported)[-1]["id"]
    assert {i: it["last_review"] for i, it in queued.items()} == {
        old: 0, sure: 0, unsure: 0, held: 0, reported: latest
    }  # fmt: skip
    with pytest.raises(StoreError) as err:
        store.review_queue(order="newest")
    assert str(err.value) == (
        "unknown queue order 'newest'; one of oldest, least_confident, breaking_ties, "
        "diverse_ties, rare_tags, reported, duplicates"
    )
    store.close()


def test_v4_keeps_the_models_tag_of_items_a_person_already_retagged(url):
    engine, stamp = _v2_store(url)
    with engine.begin() as conn:
        retagged = row("retagged", tag="mlops", tagged_by="human", model_version="m1")
        conn.execute(_v2_items.insert().values(**retagged, created_at=stamp, updated_at=stamp))
        for previous, tag in (("computer-vision", "natural-language-processing"),
                              ("natural-language-processing", "mlops")):  # fmt: skip
            conn.execute(
                _v2_reviews.insert().values(
                    item_id=1, tag=tag, previous_tag=previous, created_at=stamp
                )
            )
    engine.dispose()
    store = Store(url)
    item = store.get_item(1)
    assert (item["tag"], item["model_tag"]) == ("mlops", "computer-vision")  # the first review's
    (r,) = store.monitor_rows()
    assert r["review_tag"] == "natural-language-processing" and r["reports"] == 0
    store.close()


def test_a_link_key_is_made_from_the_link_unless_the_caller_gives_one(url):
    store = Store(url)
    made, given = store.add_items(
        [
            row("made", url="https://www.X.org/a/"),
            row("given", url="https://x.org/b", url_key="x.org/b-as-given"),
        ]
    )
    assert store.ids_by_url(["x.org/a", "x.org/b-as-given", "x.org/b"]) == {
        "x.org/a": made,
        "x.org/b-as-given": given,
    }
    store.close()
