"""Shadow, canary, promotion, watch and rollback: the challenger meets the stream."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from mltagger.cycle import gates as G
from mltagger.cycle.context import Context, CycleSettings, close_cycle, judge_gates, max_item_id
from mltagger.evaluation.paired import noninferiority_paired
from mltagger.evaluation.stats import wilson_bounds
from mltagger.models.modelio import read_model_metadata
from mltagger.serving.cycles import (
    record_event,
    set_rollout,
    update_cycle,
)
from mltagger.serving.rollout import record_deployment
from mltagger.serving.tables import items, reviews

log = logging.getLogger(__name__)
Z_ONE_SIDED = 1.6449  # one-sided 95%


def _paired_since(engine: sa.Engine, since: int, challenger_version: str) -> list[dict]:
    """Items stored after `since` with both models' answers: (served, shadow) put in
    (champion, challenger) order, with the author tag, audit flag and a reviewer's tag."""
    latest = (
        sa.select(reviews.c.item_id, sa.func.max(reviews.c.id).label("rid"))
        .group_by(reviews.c.item_id)
        .subquery()
    )
    q = (
        sa.select(
            items.c.id,
            items.c.model_tag,
            items.c.model_version,
            items.c.shadow,
            items.c.author_tag,
            items.c.audit,
            items.c.needs_review,
            items.c.reason,
            reviews.c.tag.label("review_tag"),
        )
        .outerjoin(latest, latest.c.item_id == items.c.id)
        .outerjoin(reviews, reviews.c.id == latest.c.rid)
        .where(items.c.id > since, items.c.shadow.is_not(None))
        .order_by(items.c.id)
    )
    out = []
    with engine.connect() as conn:
        for r in conn.execute(q):
            sh = r.shadow if isinstance(r.shadow, dict) else json.loads(r.shadow)
            served = {"tag": r.model_tag, "auto": not _was_review(r), "version": r.model_version}
            other = {
                "tag": sh["tag"],
                "auto": not sh["needs_review"],
                "version": sh["model_version"],
            }
            if served["version"] == challenger_version:
                champ, chall = other, served
            else:
                champ, chall = served, other
            out.append(
                {
                    "id": r.id,
                    "champion": champ,
                    "challenger": chall,
                    "served_by_challenger": served["version"] == challenger_version,
                    "author_tag": r.author_tag,
                    "audit": bool(r.audit),
                    "review_tag": r.review_tag,
                }
            )
    return out


def _was_review(r) -> bool:
    """Whether the model sent the item to review (a person's later decision does not count)."""
    return r.reason not in (None, "classifier") if r.reason is not None else bool(r.needs_review)


def step_shadow(ctx: Context, cyc: dict) -> str | dict:
    rep = cyc.get("report") or {}
    _, inference = read_model_metadata(Path(cyc["challenger_dir"]))
    rows = _paired_since(ctx.engine, int(rep.get("shadow_from_item", 0)), inference.model_version)
    if len(rows) < ctx.s.shadow_items:
        ctx.say(
            f"cycle {cyc['id']}: shadow, {len(rows)}/{ctx.s.shadow_items} items so far: waiting"
        )
        return {"cycle": cyc["id"], "status": "waiting", "step": "shadow"}
    differ = float(np.mean([r["champion"]["tag"] != r["challenger"]["tag"] for r in rows]))
    g = G.gate(
        "shadow.disagreement",
        differ <= ctx.s.max_shadow_disagreement,
        f"the challenger's tag differs from the champion's on {differ:.1%} of "
        f"{len(rows)} items (max {ctx.s.max_shadow_disagreement:.0%})",
        figure=differ,
    )
    record_event(ctx.engine, "gate", g["name"], g["status"], cycle_id=cyc["id"], detail=g)
    rep = {**rep, "gates": [*rep.get("gates", []), g]}
    if g["status"] == G.FAIL:
        return close_cycle(
            ctx, {**cyc, "report": rep}, "rejected", g["why"], {"failed_gates": [g["name"]]}
        )
    row = set_rollout(ctx.engine, cyc["challenger_dir"], "canary", ctx.s.canary_percent, cyc["id"])
    update_cycle(
        ctx.engine,
        cyc["id"],
        report={**rep, "canary_row": row["id"], "canary_from_item": max_item_id(ctx.engine)},
    )
    record_event(
        ctx.engine,
        "decision",
        "canary",
        "started",
        cycle_id=cyc["id"],
        detail={"percent": ctx.s.canary_percent},
    )
    ctx.say(f"cycle {cyc['id']}: shadow passed; canary at {ctx.s.canary_percent:g}%")
    return "canary"


def _non_inferior(name: str, rows: list[dict], need: int, right, what: str, s) -> dict:
    """One paired non-inferiority gate over `rows` (both models' answers on each), or not
    enough evidence below `need` rows. `right(answer, row)`: whether an answer counts."""
    if len(rows) < need:
        return G.gate(name, None, f"{len(rows)}/{need} canary items with {what}")
    a = np.array([right(r["champion"], r) for r in rows])
    b = np.array([right(r["challenger"], r) for r in rows])
    t = noninferiority_paired(a, b, margin=s.canary_margin)
    return G.gate(
        name,
        bool(t["non_inferior"]),
        f"{a.mean():.3f} -> {b.mean():.3f} on {len(rows)} items with {what}; lower bound of "
        f"the difference {t['lower']:+.3f} (margin -{s.canary_margin})",
        figure=t["lower"],
    )


def canary_tests(rows: list[dict], s: CycleSettings) -> tuple[list[dict], bool]:
    """Non-inferiority (margin `canary_margin`) of the challenger against the champion, both
    answers on the same canary items: agreement with the author's tag, and precision on the
    audited items (an audited item counts against a model only when it applied a wrong tag by
    itself). Returns the gate rows and whether there is enough evidence to decide."""
    out = [
        _non_inferior(
            "canary.author_agreement",
            [r for r in rows if r["author_tag"]],
            s.canary_author_items,
            lambda a, r: a["tag"] == r["author_tag"],
            "an author tag",
            s,
        ),
        _non_inferior(
            "canary.audit_precision",
            [r for r in rows if r["audit"] and r["review_tag"]],
            s.canary_audit_items,
            lambda a, r: _not_wrong(a, r["review_tag"]),
            "an audit decision",
            s,
        ),
    ]
    return out, all(g["status"] != G.UNKNOWN for g in out)


def _not_wrong(answer: dict, truth: str) -> bool:
    """An audited item counts against a model only when it applied a wrong tag by itself:
    sending the item to a person is not an error of precision."""
    return not answer["auto"] or answer["tag"] == truth


def step_canary(ctx: Context, cyc: dict) -> str | dict:
    rep = cyc.get("report") or {}
    _, inference = read_model_metadata(Path(cyc["challenger_dir"]))
    rows = _paired_since(ctx.engine, int(rep.get("canary_from_item", 0)), inference.model_version)
    tests, enough = canary_tests(rows, ctx.s)
    if not enough:
        ctx.say(
            f"cycle {cyc['id']}: canary waiting: "
            + "; ".join(t["why"] for t in tests if t["status"] == G.UNKNOWN)
        )
        return {"cycle": cyc["id"], "status": "waiting", "step": "canary"}
    rep = {**rep, "gates": [*rep.get("gates", []), *tests]}
    stop = judge_gates(ctx, cyc, rep, tests, "canary not non-inferior")
    if stop is not None:
        return stop
    return promote(ctx, {**cyc, "report": rep}, by="cycle", why="every gate and the canary passed")


def promote(ctx: Context, cyc: dict, by: str, why: str) -> str:
    rep = cyc.get("report") or {}
    record_deployment(ctx.engine, cyc["challenger_dir"], "promote", actor=by)
    set_rollout(ctx.engine, cyc["champion_dir"], "shadow", cycle_id=cyc["id"])
    rep = {**rep, "promoted_by": by, "watch_from_item": max_item_id(ctx.engine), "windows": []}
    update_cycle(ctx.engine, cyc["id"], report=rep)
    record_event(ctx.engine, "decision", "promote", "promoted", cycle_id=cyc["id"], by=by, why=why)
    ctx.say(f"cycle {cyc['id']}: promoted ({why}); the old champion runs in shadow while watched")
    return "watch"


def author_precision_gap(rows: list[dict], margin: float) -> dict | None:
    """The new model's automatic tags against the authors' tags, beside the old champion's
    (its shadow answers) on the same window: the upper end of a one-sided 95% Newcombe interval
    of the difference. Authors are wrong now and then, but equally for both models, so the
    difference is the signal. None when either model applied nothing to an authored item."""
    authored = [r for r in rows if r["author_tag"]]
    counts = {}
    for who in ("champion", "challenger"):
        auto = [r for r in authored if r[who]["auto"]]
        counts[who] = (sum(r[who]["tag"] == r["author_tag"] for r in auto), len(auto))
    (ka, na), (kb, nb) = counts["champion"], counts["challenger"]
    if not na or not nb:
        return None
    (la, _), (_, ub) = wilson_bounds(ka, na, Z_ONE_SIDED), wilson_bounds(kb, nb, Z_ONE_SIDED)
    pa, pb = ka / na, kb / nb
    upper = (pb - pa) + float(np.sqrt((ub - pb) ** 2 + (pa - la) ** 2))
    return {
        "champion": (ka, na),
        "challenger": (kb, nb),
        "difference": pb - pa,
        "upper": upper,
        "alarm": upper < -margin,
    }


def watch_window(rows: list[dict], s: CycleSettings) -> dict:
    """One monitor window after promotion. Alarms: the new model's own precision, against the
    authors' tags beside the old champion on the same items (worse by more than the canary
    margin, one-sided 95%), or on the audited items it tagged (the upper Wilson bound under the
    floor); and its disagreement with the old champion's shadow answers. Input drift alone never
    rolls back. (The first design had only the audit and disagreement alarms; the regression
    trial showed them too weak on 100-item windows: docs/cycle.md.)"""
    differ = float(np.mean([r["champion"]["tag"] != r["challenger"]["tag"] for r in rows]))
    audited = [r for r in rows if r["audit"] and r["review_tag"] and r["challenger"]["auto"]]
    alarm, why = [], []
    if differ > s.watch_max_disagreement:
        alarm.append("watch.disagreement")
    why.append(f"disagreement {differ:.1%} (max {s.watch_max_disagreement:.0%})")
    gap = author_precision_gap(rows, s.canary_margin)
    if gap is not None:
        if gap["alarm"]:
            alarm.append("watch.author_precision")
        (ka, na), (kb, nb) = gap["champion"], gap["challenger"]
        why.append(
            f"precision against authors {kb}/{nb} vs the old model's {ka}/{na} "
            f"(difference {gap['difference']:+.3f}, upper bound {gap['upper']:+.3f})"
        )
    if len(audited) >= s.watch_min_audit:
        k = sum(r["challenger"]["tag"] == r["review_tag"] for r in audited)
        high = float(wilson_bounds(k, len(audited))[1])
        if high < s.watch_floor:
            alarm.append("watch.precision")
        why.append(f"audit precision {k}/{len(audited)} (upper bound {high:.3f})")
    else:
        why.append(f"{len(audited)} audited items (precision judged from {s.watch_min_audit})")
    return {"items": len(rows), "alarms": alarm, "why": "; ".join(why)}


def step_watch(ctx: Context, cyc: dict) -> str | dict:
    rep = cyc.get("report") or {}
    _, inference = read_model_metadata(Path(cyc["challenger_dir"]))
    rows = _paired_since(ctx.engine, int(rep.get("watch_from_item", 0)), inference.model_version)
    windows = list(rep.get("windows", []))
    size = ctx.s.watch_items
    while len(windows) < ctx.s.watch_windows and len(rows) >= size * (len(windows) + 1):
        w = watch_window(rows[size * len(windows) : size * (len(windows) + 1)], ctx.s)
        windows.append(w)
        record_event(
            ctx.engine,
            "gate",
            "watch.window",
            "alarm" if w["alarms"] else "pass",
            cycle_id=cyc["id"],
            detail=w,
        )
        if w["alarms"]:
            return rollback(
                ctx,
                {**cyc, "report": {**rep, "windows": windows}},
                by="cycle",
                why=f"window {len(windows)}: {w['why']}",
                gates=w["alarms"],
            )
    rep = {**rep, "windows": windows}
    update_cycle(ctx.engine, cyc["id"], report=rep)
    if len(windows) >= ctx.s.watch_windows:
        return close_cycle(
            ctx,
            {**cyc, "report": rep},
            "promoted",
            f"promoted and watched for {len(windows)} windows without an alarm",
        )
    ctx.say(
        f"cycle {cyc['id']}: watching, {len(rows)} items since promotion "
        f"({len(windows)}/{ctx.s.watch_windows} windows judged)"
    )
    return {"cycle": cyc["id"], "status": "waiting", "step": "watch"}


def rollback(ctx: Context, cyc: dict, by: str, why: str, gates: list[str]) -> dict:
    record_deployment(ctx.engine, cyc["champion_dir"], "rollback", actor=by)
    record_event(
        ctx.engine, "decision", "rollback", "rolled_back", cycle_id=cyc["id"], by=by, why=why
    )
    return close_cycle(ctx, cyc, "rolled_back", why, {"failed_gates": gates})
