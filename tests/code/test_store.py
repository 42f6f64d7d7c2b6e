"""The content store on a real SQLite file: WAL mode, versioned migrations, items, feedback,
reviews and the human labels that feed the next training set."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
import sqlalchemy as sa

from mltagger.store import HUMAN, LATEST_VERSION, MODEL, Store, StoreError, make_engine, migrate


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


def test_an_old_database_is_migrated_with_its_data_and_a_newer_one_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    assert migrate(engine, target=1) == [1]
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO items (title, description, content_hash, tag, tagged_by, "
                "needs_review, source, created_at, updated_at) VALUES ('kept', '', 'h', "
                "'mlops', 'model', 0, 'test', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        )
    engine.dispose()
    store = Store(url)
    assert store.migrations_applied == [2]
    assert store.get_item(1)["title"] == "kept"
    store.record_ingest("drop.jsonl", "abc", {"stored": 1})  # the v2 table works
    with store.engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO schema_version VALUES (99, 'from the future', '2030-01-01')")
        )
    store.close()
    with pytest.raises(StoreError, match="newer than this mltagger"):
        Store(url)


def test_items_feedback_review_and_human_labels(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    emb = np.arange(4, dtype=np.float32)
    a, b, c = store.add_items(
        [row("a", embedding=emb, embedding_model="m1"), row("b"), row("c", tag="mlops")]
    )
    assert store.ids_by_hash(["hash-a", "hash-c", "nope"]) == {"hash-a": a, "hash-c": c}
    ids, matrix, stale = store.embeddings("m1")
    assert ids == [a] and np.array_equal(matrix[0], emb)
    assert [s["id"] for s in stale] == [b, c]  # no embedding yet: the caller re-embeds them

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


def test_duplicate_of_can_point_at_an_earlier_row_of_the_same_insert(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    first, second = store.add_items([row("x"), row("y", duplicate_of_position=0)])
    assert store.get_item(second)["duplicate_of"] == first
