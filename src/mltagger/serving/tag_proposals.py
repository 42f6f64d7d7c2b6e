"""Tags the stream asks for, as `mltagger discover` proposes them: stored, shown to admins on the
health page, and one click from the list (accepted: the tag is added as `pending`), never
added by themselves. Inserting proposals never touches the list.

A proposal is the JSON object `discover` writes:
{"name": str, "keywords": [str], "size": int, "growth": float,
 "examples": [{"id": int, "title": str}], "window": {"start": str, "end": str}}.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from mltagger.models.tag_rule import TagListError
from mltagger.serving.tables import now
from mltagger.serving.tag_list import TagConflict, TagList, UnknownTag, record, row_dict
from mltagger.serving.tag_tables import tag_proposals

OPEN, ACCEPTED, DISMISSED = "open", "accepted", "dismissed"
FIELDS = {"name": str, "keywords": list, "size": int, "growth": (int, float), "examples": list,
          "window": dict}  # fmt: skip


def check_proposal(p: Any, position: int = 0) -> dict:
    """A proposal in the agreed shape, or one line saying what is wrong with it."""
    where = f"proposal {position}"
    if not isinstance(p, dict):
        raise TagListError(f"{where}: not a JSON object")
    for key, kind in FIELDS.items():
        if key not in p:
            raise TagListError(f"{where}: no {key!r}")
        if not isinstance(p[key], kind) or isinstance(p[key], bool):
            raise TagListError(f"{where}: {key!r} has the wrong type")
    if not all(isinstance(k, str) for k in p["keywords"]):
        raise TagListError(f"{where}: keywords must be strings")
    for ex in p["examples"]:
        if not (isinstance(ex, dict) and isinstance(ex.get("id"), int)
                and isinstance(ex.get("title"), str)):  # fmt: skip
            raise TagListError(f"{where}: each example must be {{'id': int, 'title': str}}")
    if not all(isinstance(p["window"].get(k), str) for k in ("start", "end")):
        raise TagListError(f"{where}: window must be {{'start': str, 'end': str}}")
    return {key: p[key] for key in FIELDS}


def add_proposals(engine: sa.Engine, proposals: Sequence[dict]) -> list[int]:
    """Store `discover`'s proposals (all or none) as `open`; returns their ids. The tag list is
    not touched: a person decides each one."""
    rows = [check_proposal(p, i) for i, p in enumerate(proposals)]
    stamp = now()
    ids = []
    with engine.begin() as conn:
        for row in rows:
            done = conn.execute(tag_proposals.insert().values(**row, created_at=stamp, status=OPEN))
            ids.append(int(done.inserted_primary_key[0]))
    return ids


def list_proposals(engine: sa.Engine, status: str | None = OPEN, limit: int = 50) -> list[dict]:
    """The largest open proposals first (None: every proposal, newest first)."""
    query = sa.select(tag_proposals).limit(limit)
    if status is not None:
        query = query.where(tag_proposals.c.status == status).order_by(
            tag_proposals.c.size.desc(), tag_proposals.c.id
        )
    else:
        query = query.order_by(tag_proposals.c.id.desc())
    with engine.connect() as conn:
        return [row_dict(r) for r in conn.execute(query).all()]


def _open_proposal(conn: sa.Connection, proposal_id: int) -> sa.Row:
    """The proposal, if it is still open; else UnknownTag or TagConflict (one line)."""
    row = conn.execute(sa.select(tag_proposals).where(tag_proposals.c.id == proposal_id)).first()
    if row is None:
        raise UnknownTag(f"no tag proposal with id {proposal_id}")
    if row.status != OPEN:
        raise TagConflict(f"proposal {proposal_id} ({row.name}) was already {row.status}")
    return row


def _decide(engine: sa.Engine, proposal_id: int, status: str, actor: str) -> dict:
    with engine.begin() as conn:
        row = _open_proposal(conn, proposal_id)
        conn.execute(
            tag_proposals.update()
            .where(tag_proposals.c.id == proposal_id, tag_proposals.c.status == OPEN)
            .values(status=status, decided_by=actor, decided_at=now())
        )
        if status == DISMISSED:
            record(conn, row.name, "dismiss", actor, {"proposal": proposal_id})
    return dict(row._mapping)


def accept_proposal(tags: TagList, proposal_id: int, actor: str) -> dict:
    """One click: the proposed tag joins the list as `pending` (a promoted model that answers
    it makes it active). A name already in the list is a conflict and nothing changes."""
    with tags.engine.connect() as conn:
        row = _open_proposal(conn, proposal_id)
    description = "proposed by discover: " + ", ".join(row.keywords[:8])
    added = tags.add(row.name, actor, description, {"proposal": proposal_id})
    _decide(tags.engine, proposal_id, ACCEPTED, actor)
    return added


def dismiss_proposal(engine: sa.Engine, proposal_id: int, actor: str) -> dict:
    """The admin does not want this tag; the proposal is kept, marked dismissed."""
    row = _decide(engine, proposal_id, DISMISSED, actor)
    return {"id": proposal_id, "name": row["name"], "status": DISMISSED}
