"""The approved tag list's tables (schema v9): the list, its history, and `discover`'s proposals.

Apart from `mltagger.serving.tables` (which is at its length limit) and importing nothing of it,
so that `tables.MIGRATIONS` can name this module's step without an import cycle. The tables sit
on their own `MetaData`: nothing joins them to the product's other tables.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# One row a tag: its status (mltagger.models.tag_rule.TAG_STATUSES) and who changed it when.
tag_list = sa.Table(
    "tag_list",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("created_by", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_by", sa.String(64), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

# Append-only: every change of the list (seed, add, retire, remove, a promotion's changes,
# a proposal accepted or dismissed), with who made it and why.
tag_events = sa.Table(
    "tag_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tag", sa.String(64), nullable=False, index=True),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("detail", sa.JSON),
)

# What `mltagger discover` found in the stream: a proposal waits for an admin (accepted: the tag
# is added as pending; dismissed), never changes the list by itself.
tag_proposals = sa.Table(
    "tag_proposals",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("keywords", sa.JSON, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("growth", sa.Float, nullable=False),
    sa.Column("examples", sa.JSON, nullable=False),  # [{"id": int, "title": str}]
    sa.Column("window", sa.JSON, nullable=False),  # {"start": str, "end": str}
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),  # open|accepted|dismissed
    sa.Column("decided_by", sa.String(64)),
    sa.Column("decided_at", sa.DateTime(timezone=True)),
)


def create_tag_tables(conn: sa.Connection) -> None:
    """Schema v9's step. The list is seeded on first use (`TagList.seed`), not here: the seed
    comes from the data config, which the schema does not read."""
    for table in (tag_list, tag_events, tag_proposals):
        table.create(conn, checkfirst=True)


TAG_LIST_MIGRATION = (9, "the approved tag list, its history, tag proposals", create_tag_tables)
