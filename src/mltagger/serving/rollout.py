"""A candidate model beside the current one, and switching between them.

- **Shadow** (`rollout=shadow`): the candidate scores every item; its answers are stored beside
  the current model's (`items.shadow`), never shown.
- **Canary** (`rollout=canary:<percent>`): a stable hash of the item's normalised text picks the
  model that tags it, so the same item always meets the same model and a resubmission cannot
  flip its tag; the other model's answer is stored in `items.shadow`.
- **Promote / rollback**: the service's `model_dir` is a link (models/export); `promote` points it
  at the candidate and keeps the old target as `<link>.previous`, `rollback` points it back, and
  both record the model now deployed in the store (`deployments`). Every worker and replica
  reading that store notices the new row within `RELOAD_SECONDS` and loads the model; once a row
  exists it decides what serves, also after a restart (the link is the fallback of a store that
  never saw a promote), so a promote made on one machine reaches all of them.

The audit sample (auto-tagged items sent to review at random, so reviews measure auto-tag
precision without bias) draws from another part of the same hash, independent of the canary's.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timezone
from pathlib import Path

import sqlalchemy as sa

from mltagger.core.errors import UserError
from mltagger.models.modelio import read_model_metadata
from mltagger.serving.cycles import current_rollout
from mltagger.serving.tables import deployments, now
from mltagger.serving.tag_list import SYSTEM, TagList

log = logging.getLogger(__name__)

SHADOW = "shadow"
CANARY = "canary"
RELOAD_SECONDS = 2.0


class RolloutError(UserError):
    """A rollout setting or a model switch that cannot work, said in one line."""


def _fraction(content_hash: str, part: slice) -> float:
    """A number in [0, 1) from 8 hex digits of the item's sha256: uniform and stable."""
    return int(content_hash[part], 16) / 0x1_0000_0000


def audit_pick(content_hash: str, share: float) -> bool:
    """Is this auto-tagged item in the audit sample? (digits 8-15 of its hash)."""
    return share > 0 and _fraction(content_hash, slice(8, 16)) < share


@dataclass(frozen=True)
class Rollout:
    mode: str  # SHADOW or CANARY
    percent: float = 0.0  # canary: the share of items the candidate tags

    @classmethod
    def parse(cls, text: str | None) -> Rollout:
        """`shadow` or `canary:<percent>` (0 < percent <= 100)."""
        text = (text or SHADOW).strip()
        if text == SHADOW:
            return cls(SHADOW)
        mode, _, value = text.partition(":")
        if mode == CANARY:
            try:
                percent = float(value)
            except ValueError:
                percent = -1.0
            if 0 < percent <= 100:
                return cls(CANARY, percent)
        raise RolloutError(f"rollout={text!r}: use shadow or canary:<percent> (0 < percent <= 100)")

    def serves_candidate(self, content_hash: str) -> bool:
        """Does the candidate tag this item? (digits 0-7 of its hash; never under shadow)."""
        return self.mode == CANARY and _fraction(content_hash, slice(0, 8)) * 100 < self.percent

    def __str__(self) -> str:
        return SHADOW if self.mode == SHADOW else f"{CANARY}:{self.percent:g}"


def check_candidate(candidate: str | Path, labels: list[str]) -> Path:
    """The candidate must be a model folder with the current model's labels, in order."""
    folder = Path(candidate)
    if not folder.is_dir():
        raise RolloutError(f"candidate={candidate}: no such model folder")
    try:
        cand_labels, _ = read_model_metadata(folder)
    except (FileNotFoundError, ValueError, KeyError, UserError) as err:
        raise RolloutError(f"candidate={candidate} is not a model folder: {err}") from None
    if list(cand_labels) != list(labels):
        raise RolloutError(
            f"candidate={candidate} has labels {list(cand_labels)}, the current model "
            f"{list(labels)}: a candidate must answer with the same tags"
        )
    return folder


def store_rollout(engine: sa.Engine, seen: int | None, candidate, labels: list[str], loader):
    """The candidate the store's newest rollout row names, when that row is new to this worker:
    (row id, candidate or None, Rollout or None); None when nothing changed or no row exists
    (the serve config's candidate stays). A candidate that cannot load is logged and not run:
    the current model keeps answering every item."""
    row = current_rollout(engine)
    if row is None or row["id"] == seen:
        return None
    if row["mode"] == "off" or not row["candidate_dir"]:
        return row["id"], None, None
    folder = Path(row["candidate_dir"])
    try:
        if candidate is None or Path(candidate.folder).resolve() != folder.resolve():
            check_candidate(folder, labels)
            candidate = loader(folder)
    except (UserError, OSError) as err:
        log.error("rollout %s of %s not started: %s", row["mode"], folder, err)
        return row["id"], None, None
    rollout = Rollout(row["mode"], float(row["percent"] or 0.0))
    log.info("now running %s beside the current model: %s", folder, rollout)
    return row["id"], candidate, rollout


def _previous(link: Path) -> Path:
    return link.with_name(link.name + ".previous")


def _point(link: Path, target: Path) -> None:
    """Re-point `link` at `target` atomically (a relative link, as models/latest)."""
    tmp = link.with_name(link.name + ".tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(os.path.relpath(target.resolve(), link.parent.resolve()))
    os.replace(tmp, link)


def promote(
    link: str | Path, candidate: str | Path, check: Callable[[list[str]], None] | None = None
) -> dict:
    """Point the serving link at the candidate; the old target becomes `<link>.previous`.

    `check` (the store's tag list, `mltagger promote`) judges the candidate's labels, so a
    model that answers a pending tag or drops a retiring one can be promoted; without it the
    candidate must answer exactly the current model's tags."""
    link = Path(link)
    if not link.is_symlink():
        raise RolloutError(
            f"{link} is not a link: promote re-points the service's model_dir link "
            "(models/export is one after make export)"
        )
    current = link.resolve()
    if check is not None:
        target = Path(candidate)
        if not target.is_dir():
            raise RolloutError(f"candidate={candidate}: no such model folder")
        check(list(read_model_metadata(target)[0]))
        target = target.resolve()
    else:
        labels, _ = read_model_metadata(current)
        target = check_candidate(candidate, list(labels)).resolve()
    if target == current:
        raise RolloutError(f"{link} already points at {target}")
    _point(_previous(link), current)
    _point(link, target)
    return {"link": str(link), "from": str(current), "to": str(target)}


def rollback(link: str | Path) -> dict:
    """Point the serving link back at what it pointed at before the last promote."""
    link = Path(link)
    previous = _previous(link)
    if not (link.is_symlink() and previous.is_symlink() and previous.resolve().is_dir()):
        raise RolloutError(
            f"nothing to roll back to: {previous} does not point at a model folder "
            "(make promote CANDIDATE=... first)"
        )
    current, target = link.resolve(), previous.resolve()
    _point(link, target)
    _point(previous, current)
    return {"link": str(link), "from": str(current), "to": str(target)}


class ShadowWorker:
    """Scores items with the model that does not answer them, off the request path: one thread,
    a bounded queue. When the queue is full new work is dropped and counted (`dropped`), so a
    slow candidate can never slow the service or grow its memory without bound."""

    def __init__(self, max_jobs: int = 1000) -> None:
        self.jobs: queue.Queue = queue.Queue(maxsize=max_jobs)
        self.dropped = 0
        self.failed = 0
        threading.Thread(target=self._run, name="shadow", daemon=True).start()

    def submit(self, job: Callable[[], None]) -> bool:
        try:
            self.jobs.put_nowait(job)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            try:
                job()
            except Exception:  # a failing candidate must not stop the worker; it is counted
                self.failed += 1
                log.exception("shadow scoring failed")
            finally:
                self.jobs.task_done()

    def wait(self) -> None:
        """Block until every submitted job is done (batch jobs and tests)."""
        self.jobs.join()


def record_deployment(
    engine: sa.Engine, folder: str | Path, action: str, actor: str = SYSTEM
) -> dict:
    """The model every worker over this store should answer with from now on. The store's tag
    list must accept its labels first (else TagListError, nothing recorded); what the switch
    changes in the list (pending tags it answers -> active, retiring ones it drops -> retired;
    a rollback restores what the older model answers) is recorded under `actor`."""
    folder = Path(folder).resolve()
    labels, inference = read_model_metadata(folder)
    what = f"model {inference.model_version} ({folder})"
    TagList(engine).admit(labels, what, actor, action)
    row = {
        "model_dir": str(folder),
        "model_version": inference.model_version,
        "action": action,
        "created_at": now(),
    }
    with engine.begin() as conn:
        conn.execute(deployments.insert().values(**row))
    return {**row, "created_at": row["created_at"].isoformat()}


def deployed(engine: sa.Engine) -> Path | None:
    """The folder of the newest deployment recorded in the store; None before the first, or
    when that folder is gone from this machine (then the model_dir link serves)."""
    with engine.connect() as conn:
        folder = conn.execute(
            sa.select(deployments.c.model_dir).order_by(deployments.c.id.desc()).limit(1)
        ).scalar()
    return Path(folder) if folder and Path(folder).is_dir() else None


def deployment_history(engine: sa.Engine, limit: int = 10) -> list[dict]:
    """The newest recorded promotes and rollbacks first (what the health page lists)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(deployments).order_by(deployments.c.id.desc()).limit(limit)
        ).all()
    out = []
    for r in rows:
        stamp = r.created_at if r.created_at.tzinfo else r.created_at.replace(tzinfo=timezone.utc)
        out.append({**r._mapping, "created_at": stamp.isoformat()})
    return out
