"""The continual-learning cycle's records in the store, as the service reads them.

`mltagger cycle` (mltagger.cycle) writes these; the service reads them: the candidate it runs
beside the current model (`rollouts`, newest row wins, so the cycle moves a challenger from
shadow to canary on every worker without a restart), the pause an admin set, the cycle lock,
and the cycles and their events for the health page and /metrics. Kept in the serving layer
so that the pages and the service need nothing of the training stack.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from mltagger.core.errors import UserError
from mltagger.serving.tables import cycle_events, cycles, now, rollouts, settings

PAUSE_KEY = "cycle_paused"
LOCK_KEY = "cycle_lock"
OPEN = "open"
CLOSED = "closed"
# Outcomes that need a person's look: a gate tripped, or a promoted model was rolled back.
ALERT_OUTCOMES = ("rejected", "rolled_back", "failed")


class CycleBusy(UserError):
    """Another cycle holds the lock."""


def _utc(stamp: datetime | None) -> str | None:
    if stamp is None:
        return None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).isoformat()


def _row(r: sa.Row) -> dict:
    d = dict(r._mapping)
    for key in ("created_at", "started_at", "updated_at"):
        if key in d:
            d[key] = _utc(d[key])
    return d


# -- the candidate the service runs beside the current model ----------------------------------


def set_rollout(
    engine: sa.Engine,
    candidate_dir: str | None,
    mode: str,
    percent: float = 0.0,
    cycle_id: int | None = None,
) -> dict:
    """From now on every worker runs `candidate_dir` in `mode` (shadow | canary | off)."""
    if mode not in ("shadow", "canary", "off"):
        raise UserError(f"rollout mode {mode!r}: use shadow, canary or off")
    row = {
        "candidate_dir": None if mode == "off" else str(candidate_dir),
        "mode": mode,
        "percent": float(percent),
        "cycle_id": cycle_id,
        "created_at": now(),
    }
    with engine.begin() as conn:
        row["id"] = int(conn.execute(rollouts.insert().values(**row)).inserted_primary_key[0])
    return row


def current_rollout(engine: sa.Engine) -> dict | None:
    """The newest rollout row (None before the first: the serve config decides)."""
    with engine.connect() as conn:
        r = conn.execute(sa.select(rollouts).order_by(rollouts.c.id.desc()).limit(1)).first()
    return _row(r) if r else None


# -- events, pause and lock --------------------------------------------------------------------


def record_event(
    engine: sa.Engine,
    kind: str,
    name: str,
    outcome: str,
    *,
    cycle_id: int | None = None,
    detail: Any = None,
    by: str = "cycle",
    why: str | None = None,
) -> dict:
    """One gate figure, step, decision or admin action, with who and why."""
    row = {
        "cycle_id": cycle_id,
        "kind": kind,
        "name": name,
        "outcome": outcome,
        "detail": json.loads(json.dumps(detail, default=str)) if detail is not None else None,
        "by": by,
        "why": why,
        "created_at": now(),
    }
    with engine.begin() as conn:
        row["id"] = int(conn.execute(cycle_events.insert().values(**row)).inserted_primary_key[0])
    return row


def events(engine: sa.Engine, limit: int = 50, cycle_id: int | None = None) -> list[dict]:
    """The newest events first."""
    query = sa.select(cycle_events).order_by(cycle_events.c.id.desc()).limit(limit)
    if cycle_id is not None:
        query = query.where(cycle_events.c.cycle_id == cycle_id)
    with engine.connect() as conn:
        return [_row(r) for r in conn.execute(query)]


def _setting(engine: sa.Engine, name: str) -> dict | None:
    with engine.connect() as conn:
        value = conn.execute(sa.select(settings.c.value).where(settings.c.name == name)).scalar()
    return json.loads(value) if value else None


def paused(engine: sa.Engine) -> dict | None:
    """{by, why, at} while an admin has paused the cycle, else None."""
    return _setting(engine, PAUSE_KEY)


def set_paused(engine: sa.Engine, on: bool, by: str, why: str) -> None:
    with engine.begin() as conn:
        conn.execute(settings.delete().where(settings.c.name == PAUSE_KEY))
        if on:
            value = json.dumps({"by": by, "why": why, "at": now().isoformat()})
            conn.execute(settings.insert().values(name=PAUSE_KEY, value=value))


def _alive(holder: dict) -> bool:
    """Is the process that took the lock still running? Only this machine can tell; a lock
    from another host counts as alive until it is older than its `stale_after`."""
    if holder.get("host") != socket.gethostname():
        since = datetime.fromisoformat(holder["since"])
        return now() - since < timedelta(seconds=float(holder.get("stale_after", 6 * 3600)))
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire_lock(engine: sa.Engine, stale_after: float = 6 * 3600) -> dict:
    """Take the cycle lock (a row in the store, so two machines cannot both run a cycle), or
    raise CycleBusy with who holds it. A lock whose process died (killed cycle) is taken over."""
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": now().isoformat(),
        "stale_after": stale_after,
    }
    with engine.begin() as conn:
        value = conn.execute(
            sa.select(settings.c.value).where(settings.c.name == LOCK_KEY)
        ).scalar()
        if value:
            holder = json.loads(value)
            if _alive(holder):
                raise CycleBusy(
                    f"another cycle is running (pid {holder['pid']} on {holder['host']} since "
                    f"{holder['since']}): not starting a second one"
                )
            conn.execute(settings.delete().where(settings.c.name == LOCK_KEY))
        try:
            conn.execute(settings.insert().values(name=LOCK_KEY, value=json.dumps(me)))
        except sa.exc.IntegrityError:  # another process took it between the read and the write
            raise CycleBusy(
                "another cycle took the lock just now: not starting a second one"
            ) from None
    return me


def release_lock(engine: sa.Engine, holder: dict) -> None:
    with engine.begin() as conn:
        value = conn.execute(
            sa.select(settings.c.value).where(settings.c.name == LOCK_KEY)
        ).scalar()
        if value and json.loads(value).get("pid") == holder["pid"]:
            conn.execute(settings.delete().where(settings.c.name == LOCK_KEY))


# -- cycles -------------------------------------------------------------------------------------


def open_cycle(engine: sa.Engine) -> dict | None:
    """The cycle still in progress (at most one), or None."""
    with engine.connect() as conn:
        r = conn.execute(
            sa.select(cycles).where(cycles.c.status == OPEN).order_by(cycles.c.id.desc()).limit(1)
        ).first()
    return _row(r) if r else None


def latest_cycles(engine: sa.Engine, limit: int = 10) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(cycles).order_by(cycles.c.id.desc()).limit(limit)).all()
    return [_row(r) for r in rows]


def new_cycle(engine: sa.Engine, folder: str, champion_dir: str) -> dict:
    stamp = now()
    row = {
        "step": "labels",
        "status": OPEN,
        "folder": folder,
        "champion_dir": champion_dir,
        "started_at": stamp,
        "updated_at": stamp,
    }
    with engine.begin() as conn:
        row["id"] = int(conn.execute(cycles.insert().values(**row)).inserted_primary_key[0])
    return {**row, "started_at": _utc(stamp), "updated_at": _utc(stamp)}


def update_cycle(engine: sa.Engine, cycle_id: int, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(
            cycles.update().where(cycles.c.id == cycle_id).values(**values, updated_at=now())
        )


def alert_state(engine: sa.Engine) -> dict:
    """What /metrics and the health page's banner show: whether the newest closed cycle ended
    on a tripped gate or a rollback (until a later cycle closes otherwise), and the pause."""
    with engine.connect() as conn:
        last = conn.execute(
            sa.select(cycles).where(cycles.c.status == CLOSED).order_by(cycles.c.id.desc()).limit(1)
        ).first()
    out = {"paused": paused(engine), "tripped": None}
    if last is not None and last.outcome in ALERT_OUTCOMES:
        report = last.report or {}
        out["tripped"] = {
            "cycle": last.id,
            "outcome": last.outcome,
            "gates": report.get("failed_gates", []),
            "why": report.get("why"),
            "at": _utc(last.updated_at),
        }
    return out
