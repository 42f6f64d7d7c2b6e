"""The store's schema: its tables and the append-only list of migrations that builds them.

Kept apart from `Store` (the queries) so that a table's columns and the step that added them sit
together, and so the key and deployment code can use the tables without the whole store class.
Opening a database applies the missing steps (`migrate`); a database written by a newer mltagger
is refused rather than guessed at.

Over 400 lines because every table and every migration step live here together, by design.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from mltagger.core.errors import UserError
from mltagger.screen.screening import url_key
from mltagger.serving.tag_tables import TAG_LIST_MIGRATION

HUMAN = "human"
MODEL = "model"
ACTIVE = "active"
HELD_DUPLICATE = "duplicate"
# a person said "not ML / spam" (schema v6): tagged `other` for training, never published
REJECTED = "rejected"
STATUSES = (ACTIVE, HELD_DUPLICATE, REJECTED)

metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)

items = sa.Table(
    "items",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("url", sa.Text),
    sa.Column("content_hash", sa.String(64), nullable=False, index=True),
    sa.Column("tag", sa.String(64), nullable=False),
    # who set `tag`: "model" (then model_version says which) or "human"
    sa.Column("tagged_by", sa.String(16), nullable=False),
    sa.Column("model_version", sa.Text),
    sa.Column("confidence", sa.Float),
    sa.Column("reason", sa.String(32)),
    sa.Column("scores", sa.JSON),
    sa.Column("needs_review", sa.Boolean, nullable=False, default=False, index=True),
    sa.Column("duplicate_of", sa.Integer, sa.ForeignKey("items.id")),
    sa.Column("duplicate_kind", sa.String(16)),
    sa.Column("duplicate_similarity", sa.Float),
    sa.Column("source", sa.Text, nullable=False, default="api"),
    # float32 bytes of the duplicate screen's sketch, and the screen version that made it
    sa.Column("embedding", sa.LargeBinary),
    sa.Column("embedding_model", sa.Text),
    # active: publishable; duplicate: held back as a likely copy of `duplicate_of` until a
    # person decides (schema v3)
    sa.Column("status", sa.String(16), nullable=False, default="active", index=True),
    # the normalised link (no scheme, www., query or fragment): the same link is an exact copy
    sa.Column("url_key", sa.Text, index=True),
    # schema v4, for knowing how the model does after release (mltagger monitor):
    # the tag the submitter chose, if any (an approved tag)
    sa.Column("author_tag", sa.String(64)),
    # the model's own answer, kept when a person later changes `tag`
    sa.Column("model_tag", sa.String(64)),
    # an auto-tagged item drawn at random for review, so reviews measure auto-tag precision
    sa.Column("audit", sa.Boolean, nullable=False, default=False),
    # the other model's answer under a shadow or canary rollout (never shown)
    sa.Column("shadow", sa.JSON),
    # the API key (its name) that stored the item; "cli" for `mltagger ingest` (schema v5)
    sa.Column("written_by", sa.String(64)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # topics applied beside `tag` (schema v10, issue 35): by the model's secondary head, or set
    # by the person who reviewed the item; a JSON list of tags
    sa.Column("secondary_tags", sa.JSON),
)

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("item_id", sa.Integer, sa.ForeignKey("items.id"), nullable=False, index=True),
    sa.Column("correct_tag", sa.String(64), nullable=False),
    sa.Column("previous_tag", sa.String(64), nullable=False),
    sa.Column("comment", sa.Text),
    # the key's name, or "public" for a report sent without a key (schema v5)
    sa.Column("written_by", sa.String(64)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("secondary_tags", sa.JSON),  # topics the reporter says also apply (schema v10)
)

reviews = sa.Table(
    "reviews",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("item_id", sa.Integer, sa.ForeignKey("items.id"), nullable=False, index=True),
    sa.Column("tag", sa.String(64), nullable=False),
    sa.Column("previous_tag", sa.String(64), nullable=False),
    sa.Column("reviewer", sa.Text),
    sa.Column("written_by", sa.String(64)),  # the key's name (schema v5)
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("secondary_tags", sa.JSON),  # what the person set beside `tag` (schema v10)
)

# mltagger monitor's latest figures, which the service exports on /metrics (schema v4)
monitor_snapshots = sa.Table(
    "monitor_snapshots",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("summary", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

ingest_runs = sa.Table(
    "ingest_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("file", sa.Text, nullable=False),
    sa.Column("file_sha256", sa.String(64), nullable=False, index=True),
    sa.Column("summary", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

# API keys with a role (schema v5): only the SHA-256 of a key is stored; `name` is what the rows
# a key writes record (`written_by`).
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
)

# Which model the service answers with (schema v5): the newest row wins, so a promote made on
# one machine reaches every worker and replica that reads the same store.
deployments = sa.Table(
    "deployments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_dir", sa.Text, nullable=False),
    sa.Column("model_version", sa.Text),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

# Reviewers' web sessions (schema v6): made by logging in with a key of role review or admin on
# /ui/login. Only the SHA-256 of the cookie's token is stored; `csrf` is the session's form token.
# A session lasts until `expires_at`, and no longer than its key (a revoke ends it).
ui_sessions = sa.Table(
    "ui_sessions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("key_name", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
    # the SHA-256 of the key that made the session (schema v7): a session lives no longer than
    # that very key (a new key of the same name, or a changed config key, ends it)
    sa.Column("key_hash", sa.String(64)),
)

# Settings every worker and replica must share (schema v6), e.g. the secret that signs the
# anti-forgery tokens of the forms used before a login (the login form, the report form).
settings = sa.Table(
    "settings",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

# The continual-learning cycle (schema v8, `mltagger cycle`): one row a cycle, the step it has
# reached and its report; every gate, decision and admin action as an event; and the candidate
# the service runs beside the current model (shadow or canary), set by the cycle so that every
# worker and replica follows it without a restart (the newest row wins, like deployments).
cycles = sa.Table(
    "cycles",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    # labels -> dataset -> train -> evaluate -> shadow -> canary -> watch, then an end state
    sa.Column("step", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),  # open | closed
    sa.Column("outcome", sa.String(32)),  # promoted | rejected | rolled_back | vetoed | ...
    sa.Column("folder", sa.Text, nullable=False),
    sa.Column("champion_dir", sa.Text, nullable=False),
    sa.Column("challenger_dir", sa.Text),
    # the sha256 of the label set the challenger learnt from: a rolled-back challenger is not
    # trained again on the same labels
    sa.Column("labels_sha256", sa.String(64)),
    sa.Column("dataset_sha256", sa.String(64)),
    sa.Column("report", sa.JSON),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
cycle_events = sa.Table(
    "cycle_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("cycle_id", sa.Integer, index=True),  # null: an admin action between cycles
    # gate | step | decision | admin | alert
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("detail", sa.JSON),
    sa.Column("by", sa.String(64)),  # "cycle" or the person
    sa.Column("why", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
rollouts = sa.Table(
    "rollouts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("candidate_dir", sa.Text),  # null: no candidate (the rollout ended)
    sa.Column("mode", sa.String(16), nullable=False),  # shadow | canary | off
    sa.Column("percent", sa.Float, nullable=False, default=0.0),
    sa.Column("cycle_id", sa.Integer),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

WRITTEN_BY = ("items", "feedback", "reviews")


def _create(*tables: sa.Table) -> Callable[[sa.Connection], None]:
    def step(conn: sa.Connection) -> None:
        for table in tables:
            table.create(conn, checkfirst=True)

    return step


def _v3_status_and_links(conn: sa.Connection) -> None:
    """items.status (near duplicates stored before are held: status `duplicate`) and
    items.url_key (filled from the stored links), both indexed."""

    have = {c["name"] for c in sa.inspect(conn).get_columns("items")}
    if "status" not in have:
        conn.execute(
            sa.text("ALTER TABLE items ADD COLUMN status VARCHAR(16) NOT NULL DEFAULT 'active'")
        )
    if "url_key" not in have:
        conn.execute(sa.text("ALTER TABLE items ADD COLUMN url_key TEXT"))
    conn.execute(sa.text("CREATE INDEX IF NOT EXISTS ix_items_status ON items (status)"))
    conn.execute(sa.text("CREATE INDEX IF NOT EXISTS ix_items_url_key ON items (url_key)"))
    conn.execute(
        items.update().where(items.c.duplicate_of.is_not(None)).values(status=HELD_DUPLICATE)
    )
    rows = conn.execute(sa.select(items.c.id, items.c.url).where(items.c.url.is_not(None))).all()
    for row in rows:
        key = url_key(row.url)
        if key:
            conn.execute(items.update().where(items.c.id == row.id).values(url_key=key))


def _v4_monitoring(conn: sa.Connection) -> None:
    """items.author_tag, items.model_tag (filled: the model's tag, or for items a person has
    re-tagged the tag their first review replaced), items.audit, items.shadow; and the
    monitor_snapshots table."""
    have = {c["name"] for c in sa.inspect(conn).get_columns("items")}
    for name, ddl in (
        ("author_tag", "VARCHAR(64)"),
        ("model_tag", "VARCHAR(64)"),
        ("audit", "BOOLEAN NOT NULL DEFAULT FALSE"),
        ("shadow", "JSON"),
    ):
        if name not in have:
            conn.execute(sa.text(f"ALTER TABLE items ADD COLUMN {name} {ddl}"))
    conn.execute(
        items.update()
        .where(items.c.tagged_by == MODEL, items.c.model_tag.is_(None))
        .values(model_tag=items.c.tag)
    )
    first = (
        sa.select(reviews.c.item_id, sa.func.min(reviews.c.id).label("rid"))
        .group_by(reviews.c.item_id)
        .subquery()
    )
    rows = conn.execute(
        sa.select(reviews.c.item_id, reviews.c.previous_tag)
        .join(first, reviews.c.id == first.c.rid)
        .join(items, items.c.id == reviews.c.item_id)
        .where(items.c.model_tag.is_(None), items.c.model_version.is_not(None))
    ).all()
    for row in rows:
        conn.execute(
            items.update().where(items.c.id == row.item_id).values(model_tag=row.previous_tag)
        )
    monitor_snapshots.create(conn, checkfirst=True)


def _v5_keys_and_deployments(conn: sa.Connection) -> None:
    """written_by on items, feedback and reviews; the api_keys and deployments tables."""
    for table in WRITTEN_BY:
        have = {c["name"] for c in sa.inspect(conn).get_columns(table)}
        if "written_by" not in have:
            conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN written_by VARCHAR(64)"))
    api_keys.create(conn, checkfirst=True)
    deployments.create(conn, checkfirst=True)


def _v6_web_pages(conn: sa.Connection) -> None:
    """The reviewers' sessions and the shared settings tables (status `rejected` needs no DDL:
    items.status is a free string)."""
    ui_sessions.create(conn, checkfirst=True)
    settings.create(conn, checkfirst=True)


def _v7_sessions_bound_to_keys(conn: sa.Connection) -> None:
    """ui_sessions.key_hash; the sessions made before it are ended (nothing says which key
    made them)."""
    if "key_hash" not in {c["name"] for c in sa.inspect(conn).get_columns("ui_sessions")}:
        conn.execute(sa.text("ALTER TABLE ui_sessions ADD COLUMN key_hash VARCHAR(64)"))
    conn.execute(ui_sessions.delete())


def _v10_secondary_tags(conn: sa.Connection) -> None:
    """secondary_tags on items, reviews and feedback (JSON lists; NULL on older rows)."""
    for table in ("items", "reviews", "feedback"):
        if "secondary_tags" not in {c["name"] for c in sa.inspect(conn).get_columns(table)}:
            conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN secondary_tags JSON"))


# Append-only: (version, description, step). Never edit a released step; add a new one.
MIGRATIONS: list[tuple[int, str, Callable[[sa.Connection], None]]] = [
    (1, "items, feedback and reviews", _create(items, feedback, reviews)),
    (2, "ingest runs (one row per batch file, with its summary)", _create(ingest_runs)),
    (
        3,
        "items.status (held duplicates) and items.url_key (same-link copies)",
        _v3_status_and_links,
    ),
    (
        4,
        "author tags, the model's own tag, audit samples, shadow answers, monitor snapshots",
        _v4_monitoring,
    ),
    (5, "API keys with roles, who wrote each row, the deployed model", _v5_keys_and_deployments),
    (6, "reviewers' web sessions, shared settings", _v6_web_pages),
    (7, "web sessions bound to the key that made them", _v7_sessions_bound_to_keys),
    (
        8,
        "the continual-learning cycle: cycles, their events, store-set rollouts",
        _create(cycles, cycle_events, rollouts),
    ),
    TAG_LIST_MIGRATION,  # mltagger.serving.tag_tables (9)
    (10, "secondary tags on items, reviews and reports", _v10_secondary_tags),
]
LATEST_VERSION = MIGRATIONS[-1][0]


class StoreError(UserError):
    """A problem with the store a user can act on (unknown item, newer schema...)."""


def now() -> datetime:
    return datetime.now(timezone.utc)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cur.execute("PRAGMA synchronous=FULL")  # a commit is on disk before it is acknowledged
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def make_engine(url: str) -> sa.Engine:
    """An engine for `url`; SQLite files get WAL mode and their folder is created. A URL that
    SQLAlchemy cannot read, or for a database it has no driver for, is one StoreError line."""
    try:
        return _engine(url)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ModuleNotFoundError) as err:
        raise StoreError(
            f"store.url={url!r}: {err} (e.g. sqlite:///var/mltagger.db or "
            "postgresql+psycopg://user:pass@host/db)"
        ) from None


def _engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def current_version(engine: sa.Engine) -> int:
    if not sa.inspect(engine).has_table("schema_version"):
        return 0
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0


def migrate(engine: sa.Engine, target: int = LATEST_VERSION) -> list[int]:
    """Apply the missing migration steps up to `target`; returns the versions applied."""
    version = current_version(engine)
    if version > LATEST_VERSION:
        raise StoreError(
            f"the database is at schema version {version}, newer than this mltagger "
            f"({LATEST_VERSION}); upgrade mltagger instead of opening it with an old one"
        )
    applied = []
    for number, description, step in MIGRATIONS:
        if version < number <= target:
            with engine.begin() as conn:
                schema_version.create(conn, checkfirst=True)
                step(conn)
                conn.execute(
                    schema_version.insert().values(
                        version=number, description=description, applied_at=now()
                    )
                )
            applied.append(number)
    return applied
