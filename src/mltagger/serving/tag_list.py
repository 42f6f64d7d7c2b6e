"""The approved tag list, kept by the store: what admins change and what every model is held to.

Before, the tags a model could answer came from its own folder (`inference.json`'s
`approved_tags`), so a folder that declared another tag got it served. Now the store keeps the
list (`tag_list`, every change in `tag_events` with who and when) and every way a model comes to
serve (service start, a promote or rollback recorded in `deployments`, a reload after one)
checks the model's labels against it with `mltagger.models.tag_rule` and applies what the
promotion changes. The list is seeded on first use from the data config's `tags` (as `active`,
actor `system`).

Changing the list never stops the service: the list is only read when a model is admitted, and
the model keeps answering with its own labels; a pending tag is answered once a promoted model
answers it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from mltagger.core.config import load_data_config
from mltagger.core.paths import conf_dir
from mltagger.models.modelio import read_model_metadata
from mltagger.models.tag_rule import (
    ACTIVE,
    FALLBACK_TAG,
    PENDING,
    RETIRED,
    RETIRING,
    TagListError,
    after,
    bad_tag_name,
    promotion_changes,
    refusal,
    rollback_changes,
)
from mltagger.serving.tables import now
from mltagger.serving.tag_tables import tag_events, tag_list

log = logging.getLogger(__name__)

SYSTEM = "system"
# The data config whose `tags` seed an empty list: the tags the shipped models were trained on.
SEED_DATA = "projects"
PROMOTE, ROLLBACK, START = "promote", "rollback", "start"


class TagConflict(TagListError):
    """The change conflicts with the list as it is (HTTP 409): nothing was changed."""


class UnknownTag(TagListError):
    """No such tag in the list (HTTP 404)."""


class BadTagName(TagListError):
    """The name cannot be a tag (HTTP 422)."""


@dataclass(frozen=True)
class Serving:
    """The model that answers now: its version and labels (what `remove` must not take away)."""

    version: str
    labels: tuple[str, ...]


def seed_tags() -> list[str]:
    """Today's approved tags, from conf/data/projects.yaml (read as a file: no Hydra compose)."""
    return [str(t) for t in load_data_config(str(conf_dir() / "data" / f"{SEED_DATA}.yaml")).tags]


def _stamp(value):
    return value.isoformat() if value is not None else None


def row_dict(row: sa.Row) -> dict:
    d = dict(row._mapping)
    for key in ("created_at", "updated_at", "at", "decided_at"):
        if key in d:
            d[key] = _stamp(d[key])
    return d


def record(conn: sa.Connection, tag: str, action: str, actor: str, detail=None) -> None:
    """One line of the list's history (append-only)."""
    conn.execute(
        tag_events.insert().values(tag=tag, action=action, actor=actor, at=now(), detail=detail)
    )


class TagList:
    """The store's tag list. Each method is one transaction; reads for the service may come
    from a cache at most `ttl` seconds old (`statuses(cached=True)`), and every write made
    through this object empties it."""

    def __init__(self, engine: sa.Engine, seed: Sequence[str] | None = None, ttl: float = 2.0):
        self.engine = engine
        self._seed = list(seed) if seed is not None else None
        self.ttl = ttl
        self._cache: tuple[float, dict[str, str]] | None = None
        self._lock = threading.Lock()
        self._refused: set[Path] = set()

    # -- reading ---------------------------------------------------------------------------

    def _seed_if_empty(self, conn: sa.Connection) -> None:
        if conn.execute(sa.select(sa.func.count()).select_from(tag_list)).scalar():
            return
        stamp = now()
        for name in self._seed if self._seed is not None else seed_tags():
            conn.execute(
                tag_list.insert().values(
                    name=name, status=ACTIVE, description=None, created_by=SYSTEM,
                    created_at=stamp, updated_by=SYSTEM, updated_at=stamp,
                )
            )  # fmt: skip
            record(conn, name, "seed", SYSTEM, {"status": ACTIVE, "from": f"data={SEED_DATA}"})

    def ensure_seeded(self) -> None:
        """Seed an empty list (two processes seeding at once: the second finds it seeded)."""
        try:
            with self.engine.begin() as conn:
                self._seed_if_empty(conn)
        except sa.exc.IntegrityError:
            pass  # another worker seeded it between our count and our insert

    def statuses(self, cached: bool = False) -> dict[str, str]:
        """tag -> status, seeded first if the list is empty."""
        with self._lock:
            if cached and self._cache and time.monotonic() - self._cache[0] < self.ttl:
                return dict(self._cache[1])
        self.ensure_seeded()
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(tag_list.c.name, tag_list.c.status)).all()
        got = {r.name: r.status for r in rows}
        with self._lock:
            self._cache = (time.monotonic(), got)
        return dict(got)

    def rows(self) -> list[dict]:
        """Every tag with its status, description and who changed it when (by status, name)."""
        self.ensure_seeded()
        order = sa.case({s: i for i, s in enumerate((ACTIVE, PENDING, RETIRING, RETIRED))},
                        value=tag_list.c.status)  # fmt: skip
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(tag_list).order_by(order, tag_list.c.name)).all()
        return [row_dict(r) for r in rows]

    def history(self, limit: int = 50, tag: str | None = None) -> list[dict]:
        """The newest changes first."""
        query = sa.select(tag_events).order_by(tag_events.c.id.desc()).limit(limit)
        if tag is not None:
            query = query.where(tag_events.c.tag == tag)
        with self.engine.connect() as conn:
            return [row_dict(r) for r in conn.execute(query).all()]

    # -- models ----------------------------------------------------------------------------

    def check(self, labels: Iterable[str], what: str, cached: bool = False) -> None:
        """Refuse (TagListError, one line) a model whose labels the list does not accept."""
        why = refusal(labels, self.statuses(cached=cached))
        if why is not None:
            raise TagListError(
                f"{what} is refused by the store's tag list: {why} (`mltagger tags list`)"
            )

    def serves(self, folder: Path) -> bool:
        """May the model in `folder` replace the serving one (a reload after a promote)? A
        refused one is logged (once) and the current model keeps answering: a list changed
        between a promote and the reload never stops the service."""
        labels, _ = read_model_metadata(folder)
        why = refusal(labels, self.statuses(cached=True))
        if why is not None and folder not in self._refused:
            log.error("not loading %s: the store's tag list refuses it: %s", folder, why)
            self._refused.add(folder)
        return why is None

    def admit(self, labels: Iterable[str], what: str, actor: str, action: str = PROMOTE) -> dict:
        """A model becomes the serving one (service start, promote, rollback): check it, then
        apply what that changes in the list, in one transaction. Returns tag -> new status."""
        labels = list(labels)
        self.ensure_seeded()
        for _ in range(3):  # another worker admitting the same model at once: read again
            try:
                return self._admit(labels, what, actor, action)
            except TagConflict:
                continue
        return self._admit(labels, what, actor, action)

    def _admit(self, labels: list[str], what: str, actor: str, action: str) -> dict:
        with self.engine.begin() as conn:
            rows = conn.execute(sa.select(tag_list.c.name, tag_list.c.status)).all()
            current = {r.name: r.status for r in rows}
            if action == ROLLBACK:
                changes = rollback_changes(labels, current)
                why = refusal(labels, after(current, changes))
            else:
                why, changes = refusal(labels, current), promotion_changes(labels, current)
            if why is not None:
                raise TagListError(
                    f"{what} is refused by the store's tag list: {why} (`mltagger tags list`)"
                )
            for tag, status in changes.items():
                self._set(conn, tag, current[tag], status, actor, {"by": action, "model": what})
        self._cache = None
        return changes

    def _set(self, conn, tag: str, old: str, new: str, actor: str, detail=None) -> None:
        """One tag's status from `old` to `new`, only if nobody changed it meanwhile."""
        done = conn.execute(
            tag_list.update()
            .where(tag_list.c.name == tag, tag_list.c.status == old)
            .values(status=new, updated_by=actor, updated_at=now())
        )
        if done.rowcount != 1:
            raise TagConflict(f"tag {tag!r} changed meanwhile; nothing was changed, try again")
        record(conn, tag, new, actor, {"from": old, **(detail or {})})

    # -- admins ----------------------------------------------------------------------------

    def _current(self, conn: sa.Connection, name: str) -> dict:
        row = conn.execute(sa.select(tag_list).where(tag_list.c.name == name)).first()
        if row is None:
            raise UnknownTag(f"no tag {name!r} in the list (`mltagger tags list`)")
        return dict(row._mapping)

    def add(self, name: str, actor: str, description: str | None = None, detail=None) -> dict:
        """A new tag, `pending` until a promoted model answers it."""
        problem = bad_tag_name(name)
        if problem:
            raise BadTagName(problem)
        self.ensure_seeded()
        stamp = now()
        try:
            with self.engine.begin() as conn:
                row = conn.execute(sa.select(tag_list).where(tag_list.c.name == name)).first()
                if row is not None:
                    raise TagConflict(f"tag {name!r} is already in the list ({row.status})")
                conn.execute(
                    tag_list.insert().values(
                        name=name, status=PENDING, description=description, created_by=actor,
                        created_at=stamp, updated_by=actor, updated_at=stamp,
                    )
                )  # fmt: skip
                record(conn, name, "add", actor, {"status": PENDING, **(detail or {})})
        except sa.exc.IntegrityError:
            raise TagConflict(f"tag {name!r} is already in the list") from None
        self._cache = None
        return self.get(name)

    def get(self, name: str) -> dict:
        with self.engine.connect() as conn:
            return {k: _stamp(v) if k.endswith("_at") else v
                    for k, v in self._current(conn, name).items()}  # fmt: skip

    def retire(self, name: str, actor: str) -> dict:
        """An active tag becomes `retiring`: the serving model still answers it; the next
        promoted model may leave it out, which retires it."""
        if name == FALLBACK_TAG:
            raise TagConflict(f"tag {name!r} is the fallback tag: it can never be retired")
        self.ensure_seeded()
        with self.engine.begin() as conn:
            status = self._current(conn, name)["status"]
            if status == PENDING:
                raise TagConflict(
                    f"tag {name!r} is pending (no model answers it): remove it instead"
                )
            if status != ACTIVE:
                raise TagConflict(f"tag {name!r} is already {status}")
            self._set(conn, name, ACTIVE, RETIRING, actor)
        self._cache = None
        return self.get(name)

    def remove(self, name: str, actor: str, serving: Serving | None) -> dict:
        """Drop a tag the serving model does not answer (pending or retired); the row goes, its
        history stays."""
        if name == FALLBACK_TAG:
            raise TagConflict(f"tag {name!r} is the fallback tag: it can never be removed")
        self.ensure_seeded()
        with self.engine.begin() as conn:
            row = self._current(conn, name)
            answered = serving is not None and name in serving.labels
            if answered or row["status"] in (ACTIVE, RETIRING):
                model = f"the serving model {serving.version}" if serving else "the serving model"
                raise TagConflict(
                    f"tag {name!r} is answered by {model}; retire it first and promote a model "
                    "without it"
                )
            conn.execute(tag_list.delete().where(tag_list.c.name == name))
            record(conn, name, "remove", actor, {"status": row["status"]})
        self._cache = None
        return {"name": name, "removed": True, "status": row["status"]}


def admit_start(engine: sa.Engine, predictor) -> TagList:
    """A service or batch job starts with `predictor`: the store's list must accept its labels
    (the folder's own `approved_tags` do not count), and the pending tags it answers become
    active. Returns the list the service keeps reading."""
    tags = TagList(engine)
    version = predictor.inference.model_version
    folder = getattr(predictor, "folder", None)
    tags.admit(predictor.labels, f"model {version} ({folder})", SYSTEM, START)
    return tags
