"""The content store: items, their tags (by the model or by a person), feedback and reviews.

SQLAlchemy Core over any database it speaks to. The default is one SQLite file in WAL mode with
`synchronous=FULL`, so `make serve` needs nothing else and an acknowledged write survives the
process being killed. For PostgreSQL, set `store.url=postgresql+psycopg://user:pass@host/db`
(and `pip install -e ".[postgres]"`): the same tables and queries, no SQLite-only SQL.

The schema and its migrations live in `mltagger.serving.tables`; opening a store applies the
missing steps. Writers that must not interleave across processes (screen, then insert) hold
`Store.exclusive()`: a PostgreSQL advisory lock or SQLite's write lock, so several workers or
replicas over one database behave as one.

Over 400 lines because the one `Store` class holds every query of the product's tables; a split
by table would put queries that run in one transaction in different files.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import sqlalchemy as sa

from mltagger.models.queue import STRATEGIES
from mltagger.models.queue import order as strategy_order
from mltagger.models.rule import AUTO_REASONS, REASON_LOW_CONFIDENCE, REASON_OUT_OF_SCOPE
from mltagger.screen.screening import url_key
from mltagger.serving.tables import (
    ACTIVE,
    HELD_DUPLICATE,
    HUMAN,
    LATEST_VERSION,
    MIGRATIONS,
    MODEL,
    REJECTED,
    STATUSES,
    StoreError,
    api_keys,
    current_version,
    deployments,
    feedback,
    ingest_runs,
    items,
    make_engine,
    metadata,
    migrate,
    monitor_snapshots,
    now,
    reviews,
    schema_version,
)

__all__ = [
    "ACTIVE",
    "HELD_DUPLICATE",
    "HUMAN",
    "LATEST_VERSION",
    "MIGRATIONS",
    "MODEL",
    "QUEUE_ORDERS",
    "REJECTED",
    "STATUSES",
    "ReviewConflict",
    "Store",
    "StoreError",
    "api_keys",
    "current_version",
    "deployments",
    "describe",
    "feedback",
    "ingest_runs",
    "items",
    "make_engine",
    "metadata",
    "migrate",
    "monitor_snapshots",
    "now",
    "reviews",
    "schema_version",
]


# How the review queue can be read: the order a person works through it in. The label-value
# strategies (mltagger.models.queue) are ranked in numpy from the stored scores; the two others
# are plain SQL. Under every order an item that has waited `max_age` goes first.
# The label-value orders rank at most this many waiting items: every overdue one, then the
# least confident (a page past them is empty under those orders; `oldest` reaches every item).
RANK_WINDOW = 2000
QUEUE_ORDERS = {
    **STRATEGIES,
    "reported": "items readers reported as wrongly tagged first",
    "duplicates": "items held as likely duplicates first",
}


class ReviewConflict(StoreError):
    """Someone else decided the item after the person deciding now last saw it: nothing was
    stored; `other` is that decision (a review row as a dict)."""

    def __init__(self, item_id: int, other: dict) -> None:
        who = other.get("reviewer") or other.get("written_by") or "someone"
        super().__init__(
            f"item {item_id} was decided by {who} in the meantime (tag {other['tag']}); "
            "your decision was not stored"
        )
        self.item_id = item_id
        self.other = other


def _public(row: sa.Row) -> dict:
    """An item as the API returns it (no embedding bytes)."""
    d = dict(row._mapping)
    d.pop("embedding", None)
    d.pop("embedding_model", None)
    for key in ("created_at", "updated_at"):
        if d.get(key) is not None:
            d[key] = _iso(d[key])
    return d


def _utc(stamp: datetime) -> datetime:
    """A stored time as an aware UTC time; SQLite returns it without its zone."""
    return stamp.replace(tzinfo=timezone.utc) if stamp.tzinfo is None else stamp


def _iso(stamp: datetime) -> str:
    """UTC ISO time; SQLite returns the stored UTC time without its zone."""
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.isoformat()


class Store:
    """Items, feedback and reviews in one database; every method is one transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.migrations_applied = migrate(self.engine)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[sa.Connection]:
        """One transaction that no other writer holding `exclusive` (this process's threads,
        other workers, other replicas) runs beside: what a screen-then-insert needs so that two
        copies of one item sent to two workers at once are not both stored as new.

        PostgreSQL: a transaction-scoped advisory lock. SQLite: `BEGIN IMMEDIATE` (the database
        write lock; readers go on in WAL mode). Committed on a clean exit, rolled back on an
        error."""
        with self._lock, self.engine.connect() as conn:
            if self.engine.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK})
            elif self.engine.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    def close(self) -> None:
        self.engine.dispose()

    # -- items -------------------------------------------------------------------------------

    def add_items(self, rows: Sequence[dict], conn: sa.Connection | None = None) -> list[int]:
        """Insert items (dicts of `items` columns; embedding as a float32 array) in one
        transaction, or in `conn`'s (an `exclusive()` one); returns their ids in order."""
        stamp = now()
        ids = []
        with contextlib.nullcontext(conn) if conn is not None else self.engine.begin() as conn:
            for row in rows:
                values = dict(row)
                position = values.pop("duplicate_of_position", None)
                if position is not None:  # a duplicate of an earlier row of this call
                    values["duplicate_of"] = ids[position]
                if values.get("url") and "url_key" not in values:
                    values["url_key"] = url_key(values["url"])
                emb = values.get("embedding")
                if emb is not None:
                    values["embedding"] = np.asarray(emb, dtype=np.float32).tobytes()
                values.setdefault("created_at", stamp)
                values.setdefault("updated_at", stamp)
                ids.append(
                    int(conn.execute(items.insert().values(**values)).inserted_primary_key[0])
                )
        return ids

    def get_item(self, item_id: int) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(items).where(items.c.id == item_id)).first()
        return _public(row) if row else None

    def _first_ids(self, column: sa.Column, values: Iterable[str | None]) -> dict[str, int]:
        """The first (lowest) stored id for each value of `column` that is stored."""
        values = sorted({v for v in values if v})
        found: dict[str, int] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(values), 500):  # bound the IN list
                query = (
                    sa.select(column, sa.func.min(items.c.id))
                    .where(column.in_(values[start : start + 500]))
                    .group_by(column)
                )
                found.update({v: int(i) for v, i in conn.execute(query)})
        return found

    def ids_by_hash(self, hashes: Iterable[str]) -> dict[str, int]:
        """The first stored item of each known content hash."""
        return self._first_ids(items.c.content_hash, hashes)

    def ids_by_url(self, keys: Iterable[str | None]) -> dict[str, int]:
        """The first stored item of each known link key (`mltagger.screen.screening.url_key`)."""
        return self._first_ids(items.c.url_key, keys)

    def ids_by_hash_or_url(
        self, hashes: Iterable[str], keys: Iterable[str | None]
    ) -> tuple[dict[str, int], dict[str, int]]:
        """`ids_by_hash` and `ids_by_url` in one query (one round trip per batch: the exact
        stage's whole cost for a single item)."""
        hashes, keys = sorted(set(hashes)), sorted({k for k in keys if k})
        by_hash: dict[str, int] = {}
        by_url: dict[str, int] = {}
        if len(hashes) > 500 or len(keys) > 500:
            return self.ids_by_hash(hashes), self.ids_by_url(keys)
        query = sa.select(items.c.id, items.c.content_hash, items.c.url_key).where(
            sa.or_(items.c.content_hash.in_(hashes), items.c.url_key.in_(keys))
        )
        wanted_h, wanted_u = set(hashes), set(keys)
        with self.engine.connect() as conn:
            for item_id, h, u in conn.execute(query):
                if h in wanted_h and (h not in by_hash or item_id < by_hash[h]):
                    by_hash[h] = int(item_id)
                if u in wanted_u and (u not in by_url or item_id < by_url[u]):
                    by_url[u] = int(item_id)
        return by_hash, by_url

    def screen_rows(
        self, version: str
    ) -> tuple[list[int], np.ndarray | None, list[tuple[str, str]], list[dict]]:
        """What the duplicate screen loads at start: (ids, sketches, (title, description)) of
        items sketched by screen `version`, and the items sketched by another version (or not
        at all), which the caller sketches again and stores with `set_embeddings`."""
        ids, vectors, texts, stale = [], [], [], []
        query = sa.select(
            items.c.id,
            items.c.title,
            items.c.description,
            items.c.embedding,
            items.c.embedding_model,
        ).order_by(items.c.id)
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                if row.embedding is not None and row.embedding_model == version:
                    ids.append(int(row.id))
                    vectors.append(np.frombuffer(row.embedding, dtype=np.float32))
                    texts.append((row.title, row.description))
                else:
                    stale.append({"id": row.id, "title": row.title, "description": row.description})
        return ids, (np.stack(vectors) if vectors else None), texts, stale

    def screen_rows_after(
        self, after_id: int, version: str
    ) -> tuple[list[int], np.ndarray | None, list[tuple[str, str]], int]:
        """Items stored after `after_id` with a sketch of screen `version` (what another worker
        stored since this one last looked), and the highest id seen (sketched or not)."""
        ids, vectors, texts, last = [], [], [], after_id
        query = (
            sa.select(
                items.c.id,
                items.c.title,
                items.c.description,
                items.c.embedding,
                items.c.embedding_model,
            )
            .where(items.c.id > after_id)
            .order_by(items.c.id)
        )
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                last = max(last, int(row.id))
                if row.embedding is not None and row.embedding_model == version:
                    ids.append(int(row.id))
                    vectors.append(np.frombuffer(row.embedding, dtype=np.float32))
                    texts.append((row.title, row.description))
        return ids, (np.stack(vectors) if vectors else None), texts, last

    def unsketched(self, version: str) -> list[dict]:
        """Items without a sketch of screen `version` (another version's, or none), in id order:
        what the screen sketches before it indexes the store."""
        current = sa.and_(items.c.embedding.is_not(None), items.c.embedding_model == version)
        query = (
            sa.select(items.c.id, items.c.title, items.c.description)
            .where(sa.not_(current))
            .order_by(items.c.id)
        )
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def screen_marks(self, ids: Iterable[int]) -> tuple[int, dict[int, str]]:
        """The newest item's id (0: none stored) and the content hash of each of `ids` that is
        stored: what tells a saved screen index whether it was made from this store."""
        wanted = sorted({int(i) for i in ids})
        with self.engine.connect() as conn:
            newest = conn.execute(sa.select(sa.func.max(items.c.id))).scalar()
            found = conn.execute(
                sa.select(items.c.id, items.c.content_hash).where(items.c.id.in_(wanted))
            ).all()
        return int(newest or 0), {int(i): str(h) for i, h in found}

    def set_embeddings(self, ids: Sequence[int], vectors: np.ndarray, model: str) -> None:
        with self.engine.begin() as conn:
            for item_id, vec in zip(ids, vectors, strict=True):
                conn.execute(
                    items.update()
                    .where(items.c.id == item_id)
                    .values(embedding=np.asarray(vec, np.float32).tobytes(), embedding_model=model)
                )

    def list_items(
        self, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[dict], int]:
        """Stored items, newest first, optionally only one `status` (`active` is what the
        platform publishes), and the total."""
        where = items.c.status == status if status else sa.true()
        with self.engine.connect() as conn:
            total = conn.execute(
                sa.select(sa.func.count()).select_from(items).where(where)
            ).scalar()
            rows = conn.execute(
                sa.select(items)
                .where(where)
                .order_by(items.c.id.desc())
                .limit(limit)
                .offset(offset)
            ).all()
        return [_public(r) for r in rows], int(total or 0)

    def count_by_status(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(items.c.status, sa.func.count()).group_by(items.c.status))
            return {str(k): int(v) for k, v in rows}

    def review_queue(
        self,
        limit: int = 50,
        offset: int = 0,
        order: str = "oldest",
        *,
        max_age: timedelta | None = None,
        random_share: float = 0.0,
        at: datetime | None = None,
    ) -> tuple[list[dict], int]:
        """Items needing a person in one of `QUEUE_ORDERS` (ties: oldest first), and the total.

        An item that has waited `max_age` or longer comes first under every order (oldest first
        among them). `random_share` of the positions of a label-value strategy are random
        waiting items, seeded by the day of `at` (now), so a day's pages stay in one order.
        Each item also carries `reports` (its wrong-tag reports) and `last_review` (the id of
        its latest review, 0 if none): what a decision made on this view must still find
        (`review(seen_review=...)`), so a decision made meanwhile is never overwritten."""
        if order not in QUEUE_ORDERS:
            raise StoreError(f"unknown queue order {order!r}; one of {', '.join(QUEUE_ORDERS)}")
        at = (at or datetime.now(timezone.utc)).astimezone(timezone.utc)
        with self.engine.connect() as conn:
            total = conn.execute(
                sa.select(sa.func.count()).select_from(items).where(items.c.needs_review)
            ).scalar()
            if order in STRATEGIES and order != "oldest":
                ids = self._ranked_ids(conn, order, limit + offset, max_age, random_share, at)
                rows = self._queue_rows(conn, items.c.id.in_(ids[offset : offset + limit]))
                where = {r["id"]: r for r in rows}
                rows = [where[i] for i in ids[offset : offset + limit] if i in where]
            else:
                rows = self._queue_rows(conn, None, order, limit, offset, max_age, at)
        return rows, int(total or 0)

    def _ranked_ids(
        self,
        conn: sa.Connection,
        strategy: str,
        k: int,
        max_age: timedelta | None,
        random_share: float,
        at: datetime,
    ) -> list[int]:
        """The waiting items' ids in `strategy`'s order (mltagger.models.queue)."""
        cols = [items.c.id, items.c.created_at, items.c.scores, items.c.confidence]
        if strategy == "diverse_ties":
            cols.append(items.c.embedding)
        # The RANK_WINDOW waiting items a label is likely worth most on (every overdue one
        # first, then the least confident), so a page view never reads a whole long queue.
        overdue = [] if max_age is None else [
            sa.case((items.c.created_at <= at - max_age, 0), else_=1)
        ]  # fmt: skip
        waiting = conn.execute(
            sa.select(*cols)
            .where(items.c.needs_review)
            .order_by(*overdue, items.c.confidence.is_(None), items.c.confidence, items.c.id)
            .limit(RANK_WINDOW)
        ).all()
        waiting = sorted(waiting, key=lambda r: r.id)
        if not waiting:
            return []
        tags = sorted({t for r in waiting for t in (r.scores or {})})
        col = {t: j for j, t in enumerate(tags)}
        # rows with only the top probability kept spread the rest evenly over enough classes
        # that the top stays the top (more than 1/confidence of them)
        tops = [float(r.confidence) for r in waiting if not r.scores and r.confidence]
        width = max([len(tags), 2] + [int(1 / c) + 1 for c in tops if c > 0])
        probs = np.zeros((len(waiting), width))
        for i, r in enumerate(waiting):
            if r.scores:
                for t, p in r.scores.items():
                    probs[i, col[t]] = float(p)
            elif r.confidence is not None:
                probs[i] = (1.0 - float(r.confidence)) / (width - 1)
                probs[i, 0] = float(r.confidence)
            else:  # no model answer to rank on (a held copy): after every ranked item
                probs[i, 0] = 1.0
        hours = np.array([(at - _utc(r.created_at)).total_seconds() / 3600 for r in waiting])
        labelled = conn.execute(
            sa.select(reviews.c.tag, sa.func.count()).group_by(reviews.c.tag)
        ).all()
        counts = {col[t]: int(n) for t, n in labelled if t in col}
        emb = None
        if strategy == "diverse_ties":
            dim = next((len(r.embedding) // 4 for r in waiting if r.embedding), 1)
            emb = np.array(
                [
                    np.frombuffer(r.embedding, dtype=np.float32)
                    if r.embedding and len(r.embedding) == 4 * dim
                    else np.zeros(dim, dtype=np.float32)
                    for r in waiting
                ]
            )
        ranked = strategy_order(
            strategy,
            probs,
            hours,
            max_age=None if max_age is None else max_age.total_seconds() / 3600,
            random_share=0.0 if strategy == "oldest" else random_share,
            embeddings=emb,
            label_counts=counts,
            k=k,
            seed=at.date().toordinal(),
        )
        return [int(waiting[i].id) for i in ranked]

    def _queue_rows(
        self,
        conn: sa.Connection,
        where: Any,
        order: str = "oldest",
        limit: int | None = None,
        offset: int = 0,
        max_age: timedelta | None = None,
        at: datetime | None = None,
    ) -> list[dict]:
        """Waiting items with their report count and latest review id: those matching `where`,
        or a page in one of the SQL orders."""
        reports = (
            sa.select(feedback.c.item_id, sa.func.count().label("n"))
            .group_by(feedback.c.item_id)
            .subquery()
        )
        last = (
            sa.select(reviews.c.item_id, sa.func.max(reviews.c.id).label("rid"))
            .group_by(reviews.c.item_id)
            .subquery()
        )
        n_reports = sa.func.coalesce(reports.c.n, 0)
        query = (
            sa.select(
                items,
                n_reports.label("reports"),
                sa.func.coalesce(last.c.rid, 0).label("last_review"),
            )
            .outerjoin(reports, reports.c.item_id == items.c.id)
            .outerjoin(last, last.c.item_id == items.c.id)
            .where(items.c.needs_review)
        )
        if where is not None:
            return [_public(r) for r in conn.execute(query.where(where)).all()]
        first = {
            "oldest": [],
            "reported": [n_reports.desc()],
            "duplicates": [sa.case((items.c.status == HELD_DUPLICATE, 0), else_=1)],
        }[order]
        if max_age is not None:
            cutoff = (at or datetime.now(timezone.utc)) - max_age
            overdue = sa.case((items.c.created_at <= cutoff, 0), else_=1)
            first = [overdue, sa.case((items.c.created_at <= cutoff, items.c.id), else_=0), *first]
        rows = conn.execute(query.order_by(*first, items.c.id).limit(limit).offset(offset)).all()
        return [_public(r) for r in rows]

    def queue_reasons(self) -> dict[str, int]:
        """Why the waiting items wait: low confidence, the out-of-scope gate, audit sample, held
        near duplicate, reported by a reader (an item can count under several)."""
        reported = sa.select(feedback.c.item_id).distinct().scalar_subquery()
        waiting = items.c.needs_review
        with self.engine.connect() as conn:
            counts = conn.execute(
                sa.select(
                    sa.func.count().filter(items.c.reason == REASON_LOW_CONFIDENCE),
                    sa.func.count().filter(items.c.reason == REASON_OUT_OF_SCOPE),
                    sa.func.count().filter(items.c.audit),
                    sa.func.count().filter(items.c.status == HELD_DUPLICATE),
                    sa.func.count().filter(items.c.id.in_(reported)),
                ).where(waiting)
            ).one()
        return dict(
            zip(("low_confidence", "out_of_scope", "audit", "near_duplicate", "reported"),
                map(int, counts),
                strict=True)
        )  # fmt: skip

    def count_items(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(items)).scalar() or 0)

    # -- after release (mltagger monitor) -----------------------------------------------------

    def monitor_rows(self, last_n: int | None = None, since: datetime | None = None) -> list[dict]:
        """The model-tagged items of a window (the last `last_n`, or those stored `since`),
        oldest first, each with the tag of its first review (`review_tag`, None if never
        reviewed) and its number of wrong-tag reports (`reports`)."""
        first = (
            sa.select(reviews.c.item_id, sa.func.min(reviews.c.id).label("rid"))
            .group_by(reviews.c.item_id)
            .subquery()
        )
        first_tag = (
            sa.select(reviews.c.item_id, reviews.c.tag)
            .join(first, reviews.c.id == first.c.rid)
            .subquery()
        )
        reports = (
            sa.select(feedback.c.item_id, sa.func.count().label("n"))
            .group_by(feedback.c.item_id)
            .subquery()
        )
        cols = [
            items.c.id, items.c.title, items.c.description, items.c.source, items.c.status,
            items.c.tag, items.c.tagged_by, items.c.model_tag, items.c.model_version,
            items.c.confidence, items.c.reason, items.c.needs_review, items.c.author_tag,
            items.c.audit, items.c.shadow, items.c.created_at, items.c.secondary_tags,
            first_tag.c.tag.label("review_tag"), reports.c.n.label("reports"),
        ]  # fmt: skip
        query = (
            sa.select(*cols)
            .outerjoin(first_tag, first_tag.c.item_id == items.c.id)
            .outerjoin(reports, reports.c.item_id == items.c.id)
            .where(items.c.model_tag.is_not(None))
        )
        if since is not None:
            query = query.where(items.c.created_at >= since)
        query = query.order_by(items.c.id.desc())
        if last_n is not None:
            query = query.limit(int(last_n))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        out = []
        for r in reversed(rows):
            d = dict(r._mapping)
            d["reports"] = int(d["reports"] or 0)
            d["created_at"] = _iso(d["created_at"])
            out.append(d)
        return out

    def set_shadow(self, ids: Sequence[int], answers: Sequence[dict]) -> None:
        """The other model's answers of stored items (a rollout's shadow worker writes them)."""
        with self.engine.begin() as conn:
            for item_id, answer in zip(ids, answers, strict=True):
                conn.execute(items.update().where(items.c.id == item_id).values(shadow=answer))

    def review_backlog(self) -> dict:
        """Items waiting for a person and how long the oldest has waited (seconds)."""
        with self.engine.connect() as conn:
            n, oldest = conn.execute(
                sa.select(sa.func.count(), sa.func.min(items.c.created_at)).where(
                    items.c.needs_review
                )
            ).one()
        age = 0.0
        if oldest is not None:
            if oldest.tzinfo is None:
                oldest = oldest.replace(tzinfo=timezone.utc)
            age = max(0.0, (now() - oldest).total_seconds())
        return {"waiting": int(n or 0), "oldest_seconds": age}

    def coverage_windows(self, size: int = 100, last: int = 5000) -> list[dict]:
        """Auto-tag coverage per window of `size` model-tagged items (arrival order, the last
        `last` of them), each with the reviews made by its last item's arrival: the curve the
        stopping signal reads (mltagger.models.queue.stopping_point)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(items.c.created_at, items.c.reason, items.c.model_version)
                .where(items.c.model_version.is_not(None))
                .order_by(items.c.id.desc())
                .limit(last)
            ).all()[::-1]
            stamps = conn.execute(sa.select(reviews.c.created_at).order_by(reviews.c.id)).all()
        done = np.sort(np.array([_utc(r[0]).timestamp() for r in stamps]))
        out = []
        for start in range(0, len(rows) - size + 1, size):
            part = rows[start : start + size]
            end = _utc(part[-1].created_at).timestamp()
            auto = sum(r.reason in AUTO_REASONS for r in part)
            out.append(
                {
                    "items": len(part),
                    "coverage": auto / len(part),
                    "labels": int(np.searchsorted(done, end, side="right")),
                    "model_versions": sorted({str(r.model_version) for r in part}),
                }
            )
        return out

    def save_snapshot(self, summary: dict) -> int:
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    monitor_snapshots.insert().values(summary=summary, created_at=now())
                ).inserted_primary_key[0]
            )

    def latest_snapshot(self) -> dict | None:
        """The newest monitor summary, with `created_at`; None before the first monitor run."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(monitor_snapshots).order_by(monitor_snapshots.c.id.desc()).limit(1)
            ).first()
        if row is None:
            return None
        return {**row.summary, "created_at": _iso(row.created_at)}

    # -- people ------------------------------------------------------------------------------

    def add_feedback(
        self,
        item_id: int,
        correct_tag: str,
        comment: str | None,
        written_by: str | None = None,
        secondary_tags: Sequence[str] | None = None,
    ) -> dict:
        """Store a report of a wrong tag and put the item back in the review queue; the reporter
        may name topics that also apply (`secondary_tags`, less the reported tag itself)."""
        second = sorted({t for t in secondary_tags or [] if t != correct_tag}) or None
        stamp = now()
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(items.c.tag).where(items.c.id == item_id)).first()
            if row is None:
                raise StoreError(f"no item with id {item_id}")
            fid = conn.execute(
                feedback.insert().values(
                    item_id=item_id,
                    correct_tag=correct_tag,
                    previous_tag=row.tag,
                    comment=comment,
                    written_by=written_by,
                    created_at=stamp,
                    secondary_tags=second,
                )
            ).inserted_primary_key[0]
            conn.execute(
                items.update()
                .where(items.c.id == item_id)
                .values(needs_review=True, updated_at=stamp)
            )
        return {
            "id": int(fid),
            "item_id": item_id,
            "correct_tag": correct_tag,
            "previous_tag": row.tag,
            "comment": comment,
            "written_by": written_by,
            "secondary_tags": second,
            "created_at": stamp.isoformat(),
        }

    def review(
        self,
        item_id: int,
        tag: str,
        reviewer: str | None = None,
        duplicate: bool | None = None,
        written_by: str | None = None,
        *,
        seen_review: int | None = None,
        duplicate_of: int | None = None,
        reject: bool = False,
        secondary_tags: Sequence[str] | None = None,
    ) -> dict:
        """A person sets (or confirms) an item's tag: it leaves the review queue.

        `secondary_tags` (issue 35) replaces the topics applied beside the tag (an empty list
        removes them all); None keeps those the item has, less the new tag itself.

        An item held as a likely duplicate needs the person's answer too: `duplicate=True`
        keeps it out of what is published (`duplicate_of` names the item it repeats, when the
        screen did not), `False` publishes it (status `active`). `reject=True` is "not ML /
        spam": status `rejected`, never published, its tag (`other`) a training label.

        `seen_review`, when given, is the id of the item's latest review when the person looked
        (0: none). If another decision came in since, nothing is stored and `ReviewConflict`
        says what it was: a web page must not silently overwrite a colleague. The check and
        the write hold the store's write lock, so two people deciding at once cannot both
        pass it."""
        stamp = now()
        with self.exclusive() as conn:
            row = conn.execute(
                sa.select(
                    items.c.tag, items.c.status, items.c.duplicate_of, items.c.secondary_tags
                ).where(items.c.id == item_id)
            ).first()
            if row is None:
                raise StoreError(f"no item with id {item_id}")
            if seen_review is not None:
                latest = conn.execute(
                    sa.select(reviews).where(reviews.c.item_id == item_id)
                    .order_by(reviews.c.id.desc()).limit(1)
                ).first()  # fmt: skip
                if latest is not None and latest.id != seen_review:
                    other = {**latest._mapping, "created_at": _iso(latest.created_at)}
                    raise ReviewConflict(item_id, other)
            if duplicate_of is not None:
                if (
                    duplicate_of == item_id
                    or not conn.execute(
                        sa.select(items.c.id).where(items.c.id == duplicate_of)
                    ).first()
                ):
                    raise StoreError(
                        f"item {item_id} cannot be a duplicate of item {duplicate_of}: "
                        "give the id of another stored item"
                    )
                duplicate = True
            if row.status == HELD_DUPLICATE and duplicate is None and not reject:
                raise StoreError(
                    f"item {item_id} is held as a likely duplicate of item {row.duplicate_of}: "
                    "say duplicate: true (keep it out) or false (publish it)"
                )
            kept = list(row.secondary_tags or []) if secondary_tags is None else secondary_tags
            second = None if reject else (sorted({t for t in kept if t != tag}) or None)
            if reject:
                status = REJECTED
            else:
                status = {None: row.status, True: HELD_DUPLICATE, False: ACTIVE}[duplicate]
            conn.execute(
                reviews.insert().values(
                    item_id=item_id,
                    tag=tag,
                    previous_tag=row.tag,
                    reviewer=reviewer,
                    written_by=written_by,
                    created_at=stamp,
                    secondary_tags=second,
                )
            )
            values: dict[str, Any] = {
                "tag": tag, "tagged_by": HUMAN, "needs_review": False, "status": status,
                "updated_at": stamp, "secondary_tags": second,
            }  # fmt: skip
            if duplicate_of is not None:
                values["duplicate_of"] = duplicate_of
                values["duplicate_kind"] = "person"
            conn.execute(items.update().where(items.c.id == item_id).values(**values))
        item = self.get_item(item_id)
        assert item is not None
        return item

    def reviews_for(self, item_id: int) -> list[dict]:
        """An item's decisions, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(reviews).where(reviews.c.item_id == item_id).order_by(reviews.c.id)
            ).all()
        return [{**r._mapping, "created_at": _iso(r.created_at)} for r in rows]

    def feedback_for(self, item_id: int) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(feedback).where(feedback.c.item_id == item_id).order_by(feedback.c.id)
            ).all()
        return [{**r._mapping, "created_at": _iso(r.created_at)} for r in rows]

    def human_labels(self, include_unreviewed_feedback: bool = True) -> list[dict]:
        """Items whose tag a person set or confirmed in review (tagged_by=human), and, unless
        excluded, items reported wrong but not yet reviewed, with the latest reported tag."""
        out: dict[int, dict] = {}
        with self.engine.connect() as conn:
            for r in conn.execute(sa.select(items).where(items.c.tagged_by == HUMAN)):
                out[r.id] = {**_public(r), "label_source": "review"}
            if include_unreviewed_feedback:
                query = (
                    sa.select(
                        items,
                        feedback.c.correct_tag,
                        feedback.c.id.label("feedback_id"),
                        feedback.c.secondary_tags.label("reported_secondary"),
                    )
                    .join(feedback, feedback.c.item_id == items.c.id)
                    .where(items.c.tagged_by != HUMAN)
                    .order_by(feedback.c.id)
                )
                for r in conn.execute(query):  # later feedback overwrites earlier
                    d = _public(r)
                    d["tag"] = d.pop("correct_tag")
                    # the reporter's secondary tags, not the model's
                    d["secondary_tags"] = d.pop("reported_secondary")
                    d.pop("feedback_id", None)
                    out[r.id] = {**d, "label_source": "feedback"}
        return [out[k] for k in sorted(out)]

    # -- ingest ------------------------------------------------------------------------------

    def record_ingest(self, file: str, file_sha256: str, summary: dict) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                ingest_runs.insert().values(
                    file=file, file_sha256=file_sha256, summary=summary, created_at=now()
                )
            )

    def ingest_history(self, file_sha256: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(ingest_runs).where(ingest_runs.c.file_sha256 == file_sha256)
            ).all()
        return [
            {**r._mapping, "created_at": _iso(r.created_at), "summary": r.summary} for r in rows
        ]


# the advisory lock `exclusive` takes on PostgreSQL (any constant; "mlt" in ASCII)
WRITE_LOCK = 0x6D6C74


def describe(url: str) -> str:
    """The URL with any password hidden, for logs."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)
