"""`mltagger cycle`: one idempotent job that takes the stream's labels to a promoted model, with
a person only when a gate trips.

Each run takes the cycle lock (a row in the store), then moves the open cycle as far as it can
and exits; the next run (cron, systemd timer or an orchestrator; deploy/) goes on from there:

    labels -> dataset -> train -> evaluate (gates) -> shadow -> canary -> watch -> closed

- **labels** (mltagger.cycle.labels): gold labels, weighted author tags, the recent window, the
  quarantine, and the label-data gates, all before training.
- **dataset**: the labels as a versioned file (`cycle.datasets`/v<N>.json, sha256, changelog)
  beside the default training data; the same labels never make a second file.
- **train** (mltagger.training.continual): a warm start of the champion with rehearsal rows
  that keep the shipped teacher's soft labels; the challenger's per-tag operating points are
  chosen on the champion recipe's out-of-fold file plus the stream labels as the serving model
  scored them when they arrived (never in-sample). No soft labels, or only one global
  threshold, fails a gate.
- **evaluate**: both models on the test split, the recent window, the audit sample and the
  fresh set (reported, never gated on); the gates of mltagger.cycle.gates.
- **shadow / canary / watch**: the store's rollout row makes every worker run the challenger
  beside the champion; promotion needs a non-inferiority test on author agreement and audit
  precision over the canary's items; after promotion the old champion runs in shadow and a
  precision alarm or a disagreement alarm rolls back within `watch.windows` windows.

Every step writes its file in the cycle's folder before the store records the step, so a
killed run repeats at most the step it was in, reusing what that step had finished.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from mltagger.core.errors import UserError
from mltagger.cycle.context import (
    RELEASED_KEY,
    Context,
    close_cycle,
    make_context,
    released_batches,
)
from mltagger.cycle.judge import step_evaluate
from mltagger.cycle.learn import (
    maybe_start,
    new_labels_count,
    step_dataset,
    step_labels,
    step_train,
)
from mltagger.cycle.release import promote, rollback, step_canary, step_shadow, step_watch
from mltagger.serving.cycles import (
    acquire_lock,
    latest_cycles,
    open_cycle,
    paused,
    record_event,
    release_lock,
    set_paused,
    update_cycle,
)
from mltagger.serving.tables import settings

# What callers use from here; make_context comes from mltagger.cycle.context.
__all__ = ["STEP_FUNCS", "admin", "advance", "make_context", "run_cycle", "step_train"]

log = logging.getLogger(__name__)

STEP_FUNCS: dict[str, Callable] = {
    "labels": step_labels,
    "dataset": step_dataset,
    "evaluate": step_evaluate,
    "shadow": step_shadow,
    "canary": step_canary,
    "watch": step_watch,
}


def advance(ctx: Context, cyc: dict, trainer: Callable | None = None) -> dict:
    """Run the open cycle's steps until it waits for the stream or closes."""
    while True:
        step = cyc["step"]
        func = STEP_FUNCS.get(step)
        started = time.perf_counter()
        try:
            nxt = step_train(ctx, cyc, trainer) if step == "train" else func(ctx, cyc)
        except UserError as err:
            return close_cycle(ctx, cyc, "failed", f"step {step}: {err}")
        if isinstance(nxt, dict):
            return nxt
        record_event(
            ctx.engine,
            "step",
            step,
            "done",
            cycle_id=cyc["id"],
            detail={"seconds": round(time.perf_counter() - started, 1)},
        )
        update_cycle(ctx.engine, cyc["id"], step=nxt)
        cyc = next(c for c in latest_cycles(ctx.engine, 50) if c["id"] == cyc["id"])


def run_cycle(
    ctx: Context, *, if_new_labels: int | None = None, trainer: Callable | None = None
) -> dict:
    """One run of the job (see the module docstring)."""
    holder = acquire_lock(ctx.engine)
    try:
        pause = paused(ctx.engine)
        if pause:
            ctx.say(f"the cycle is paused by {pause['by']} ({pause['why']}): nothing done")
            return {"status": "paused"}
        cyc = open_cycle(ctx.engine)
        if cyc is None:
            if if_new_labels is not None and new_labels_count(ctx.engine) < if_new_labels:
                n = new_labels_count(ctx.engine)
                ctx.say(f"{n} new labels since the last cycle (< {if_new_labels}): nothing to do")
                return {"status": "no_new_labels", "new_labels": n}
            cyc = maybe_start(ctx)
            if cyc is None:
                return {"status": "no_new_labels"}
        return advance(ctx, cyc, trainer)
    finally:
        release_lock(ctx.engine, holder)


# -- admin -------------------------------------------------------------------------------------


def admin(ctx: Context, action: str, by: str, why: str, batch: str | None = None) -> dict:
    """pause | resume | veto | force | release, each recorded with who and why."""
    if not by or not why:
        raise UserError(f"cycle {action}: say who (--by) and why (--why); both are recorded")
    engine = ctx.engine
    cyc = open_cycle(engine)
    if action in ("pause", "resume"):
        set_paused(engine, action == "pause", by, why)
        record_event(
            engine, "admin", action, "done", by=by, why=why, cycle_id=cyc["id"] if cyc else None
        )
        return {"action": action}
    if action == "release":
        if not batch:
            raise UserError("cycle release: name the batch (e.g. reviewer:ana@2026-12-01)")
        done = sorted({*released_batches(engine), batch})
        with engine.begin() as conn:
            conn.execute(settings.delete().where(settings.c.name == RELEASED_KEY))
            conn.execute(settings.insert().values(name=RELEASED_KEY, value=json.dumps(done)))
        record_event(engine, "admin", "release", "done", by=by, why=why, detail={"batch": batch})
        return {"action": action, "batch": batch}
    if cyc is None:
        raise UserError(f"cycle {action}: no cycle is open")
    holder = acquire_lock(engine)
    try:
        record_event(engine, "admin", action, "done", cycle_id=cyc["id"], by=by, why=why)
        if action == "veto":
            if cyc["step"] == "watch":
                return rollback(ctx, cyc, by=by, why=f"vetoed: {why}", gates=["admin.veto"])
            return close_cycle(ctx, cyc, "vetoed", f"vetoed by {by}: {why}")
        if action == "force":
            if cyc["step"] not in ("shadow", "canary"):
                raise UserError(
                    f"cycle {cyc['id']} is at step {cyc['step']}: force promotes a challenger "
                    "in shadow or canary"
                )
            nxt = promote(ctx, cyc, by=by, why=f"forced by {by}: {why}")
            update_cycle(engine, cyc["id"], step=nxt)
            return {"action": action, "cycle": cyc["id"]}
        raise UserError(f"unknown cycle action {action!r}")
    finally:
        release_lock(engine, holder)
